"""The main job: generated data -> full-precision FCOS -> AQD 4-bit FCOS -> integer-only FCOS -> results.

    python tools/pipeline.py                       # stages fp, aqd-w4a4-f8l8, and its integer artefact
    python tools/pipeline.py --stages fp fp-retinanet liq-w4a4
    python tools/pipeline.py --work-dir work_dirs/pipeline --cfg-options train_cfg.max_iters=500

Steps: generate ``data/synthetic_coco`` when it is missing (seeded, so every machine gets the same data), then
for each stage train its config with mmengine's Runner and evaluate it on the val split with pycocotools
(mmdet's ``CocoMetric``), and print one table of all stages, also written to ``<work-dir>/results.md`` and
``<work-dir>/results.json``. A stage trains in ``<work-dir>/<stage>``; rerunning resumes an interrupted stage
from its own latest checkpoint and only re-evaluates a finished one (found by its ``final.pth``; ``--retrain``
trains again). A quantized stage starts from the ``final.pth`` of the stage it names (mmaqd_tools.experiment).
The stages are the table of tools/mmaqd_tools/stages.py, which tools/benchmark/accuracy.py reads too, with the
same default work dir, so the two share finished stages.

A stage whose config is integer-deployable (first and last layers at 8 bits, ``-f8l8``) is then converted by
tools/deploy.py into ``<work-dir>/<stage>/integer/`` (an mmdet config + integer checkpoint, and the QDQ ONNX model)
and verified: the agreement of the integer and fake-quantized models per quantizer, and the AP of both and of
ONNX Runtime (``--no-deploy`` skips it).
"""
import argparse
import json
import os
import os.path as osp
import sys
from typing import List

from mmengine.config import DictAction

from mmaqd_tools.experiment import METRICS, ensure_dataset, markdown_table, run_stage
from mmaqd_tools.stages import BY_NAME, VARIANTS

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

#: the stages run without --stages
DEFAULT_STAGES = ('fp', 'aqd-w4a4-f8l8')


def log(msg: str) -> None:
    print(f'[pipeline] {msg}', flush=True)


def format_table(rows: List[dict]) -> str:
    """The stage table of ``results.md`` from ``results.json`` rows (stage, config, metrics)."""
    header = ['stage', 'config'] + [label for label, _ in METRICS]
    return markdown_table(header, [[r['stage'], osp.basename(r['config'])] + [r['metrics'][label] for label, _
                                                                              in METRICS] for r in rows])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--work-dir', default='work_dirs/pipeline')
    parser.add_argument('--data-root', default='data/synthetic_coco',
                        help='the generated dataset (written when missing); every stage reads it')
    parser.add_argument('--stages', nargs='+', default=list(DEFAULT_STAGES), choices=list(BY_NAME),
                        help='stages to run, in the order of the table (tools/mmaqd_tools/stages.py)')
    parser.add_argument('--retrain', action='store_true', help='train stages again even if they finished')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='overrides applied to every stage')
    parser.add_argument('--no-deploy', action='store_true', help='do not convert the -f8l8 stages to integers')
    parser.add_argument('--num-images', type=int, default=16, help='images for the integer agreement check')
    args = parser.parse_args(argv)
    os.chdir(ROOT)

    ensure_dataset(args.data_root, log)
    rows = []
    for stage in VARIANTS:
        name, config, init_stage = stage.name, stage.config, stage.fp
        if name not in args.stages:
            continue
        load_from = osp.join(args.work_dir, init_stage, 'final.pth') if init_stage else None
        if load_from and not osp.isfile(load_from):
            sys.exit(f'stage {name} starts from stage {init_stage}, whose weights {load_from} do not exist; '
                     f'run with --stages {init_stage} {name}')
        result = run_stage(name, config, osp.join(args.work_dir, name), load_from, args.cfg_options, args.retrain,
                           data_root=args.data_root, log=log)
        rows.append(dict(stage=name, config=config, metrics=result.metrics, seconds=result.seconds))

    table = format_table(rows)
    deployed = [] if args.no_deploy else deploy_stages(rows, args)
    with open(osp.join(args.work_dir, 'results.md'), 'w') as f:
        f.write(table + '\n' + (('\n' + deploy_table(deployed) + '\n') if deployed else ''))
    with open(osp.join(args.work_dir, 'results.json'), 'w') as f:
        json.dump(dict(stages=rows, integer=deployed), f, indent=2)
    print('\nCOCO bbox AP on the generated benchmark (val split):\n' + table, flush=True)
    if deployed:
        print('\nInteger-only models (tools/deploy.py):\n' + deploy_table(deployed), flush=True)


def deploy_stages(rows: List[dict], args) -> List[dict]:
    """Convert and verify every deployable stage of ``rows``; one result dict per stage."""
    import deploy  # tools/deploy.py, beside this script
    results = []
    by_name = {r['stage']: r for r in rows}
    for row in rows:
        if not BY_NAME[row['stage']].deploy:
            continue
        out = osp.join(args.work_dir, row['stage'], 'integer')
        ckpt = osp.join(args.work_dir, row['stage'], 'final.pth')
        log(f'stage {row["stage"]}: converting {ckpt} to an integer model in {out}')
        argv = [row['config'], ckpt, '--out', out, '--force', '--format', 'onnx', '--verify', '--num-images',
                str(args.num_images),
                '--cfg-options', f'test_dataloader.dataset.data_root={args.data_root.rstrip("/")}/',
                f'test_evaluator.ann_file={args.data_root.rstrip("/")}/annotations/instances_val.json']
        if deploy.main(argv) != 0:
            sys.exit(f'tools/deploy.py failed for stage {row["stage"]}')
        with open(osp.join(out, 'verify.json')) as f:
            verify = json.load(f)
        init = BY_NAME[row['stage']].fp
        fp_ap = by_name[init]['metrics']['AP'] if init in by_name else None
        results.append(dict(stage=row['stage'], artefact=out, fp_ap=fp_ap, **verify))
    return results


def deploy_table(deployed: List[dict]) -> str:
    header = ['stage', 'FP AP', 'fake-quant AP', 'integer AP', 'ONNX Runtime AP', 'ONNX integer convs',
              'equal %, lowest layer (exact ref.)', 'equal %, lowest layer (per op)',
              'equal %, lowest layer (float32 ref.)', 'integer model (MB)', 'FP32 weights (MB)']
    return markdown_table(header, [[d['stage'], d['fp_ap'], d['fake_ap']['AP'], d['integer_ap']['AP'],
                                    d['onnx']['ap']['AP'] if 'onnx' in d else '-',
                                    (f"{d['onnx']['kernels']['integer']} of "
                                     f"{d['onnx']['kernels']['integer'] + d['onnx']['kernels']['float']}")
                                    if 'onnx' in d else '-',
                                    f"{d['agreement']['end_to_end_exact']['lowest_equal_pct']:.3f}",
                                    f"{d['agreement']['per_op']['lowest_equal_pct']:.3f}",
                                    f"{d['agreement']['end_to_end_float32']['lowest_equal_pct']:.3f}",
                                    f"{d['sizes']['artefact_bytes'] / 1e6:.2f}",
                                    f"{d['sizes']['fp32_weights_bytes'] / 1e6:.2f}"] for d in deployed])


if __name__ == '__main__':
    main()
