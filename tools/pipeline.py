"""The main job: generated data -> full-precision detector -> COCO AP table.

    python tools/pipeline.py                       # everything, defaults
    python tools/pipeline.py --work-dir work_dirs/pipeline --cfg-options train_cfg.max_iters=500

Steps: generate ``data/synthetic_coco`` when it is missing (seeded, so every machine gets the same data), then
for each stage train its config with mmengine's Runner (resuming from the stage's own latest checkpoint, so a
rerun continues an interrupted job and a finished stage, found by its ``final.pth``, is only re-evaluated), evaluate it on the val split
with pycocotools (mmdet's ``CocoMetric``) and print one table of all stages. The table is also written to
``<work-dir>/results.md`` and ``<work-dir>/results.json``.
"""
import argparse
import json
import os
import os.path as osp
import sys
import time
from typing import Dict, List

from mmengine.config import Config, DictAction
from mmengine.runner import Runner

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

# (stage name, config, stage whose final weights initialise it or None, run by default)
STAGES = [
    ('fp', 'configs/fcos/fcos_r18-c32_fpn_bn-head_synth.py', None, True),
    ('liq-w4a4', 'configs/liq/fcos_r18-c32_fpn_bn-head_liq-w4a4_synth.py', 'fp', False),
]
METRICS = [('AP', 'bbox_mAP'), ('AP50', 'bbox_mAP_50'), ('AP75', 'bbox_mAP_75'), ('APs', 'bbox_mAP_s'),
           ('APm', 'bbox_mAP_m'), ('APl', 'bbox_mAP_l')]


def ensure_dataset(data_root: str) -> None:
    from mmaqd.datasets.synthetic_coco import PRESETS, generate_synthetic_coco
    start = time.time()
    if generate_synthetic_coco(data_root, PRESETS['benchmark']):
        print(f'[pipeline] generated the benchmark dataset in {data_root} ({time.time() - start:.0f} s)', flush=True)
    else:
        print(f'[pipeline] dataset found in {data_root}', flush=True)


def run_stage(name: str, config: str, work_dir: str, load_from, cfg_options, retrain: bool) -> Dict[str, float]:
    cfg = Config.fromfile(osp.join(ROOT, config))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.work_dir = work_dir
    cfg.experiment_name = name
    final = osp.join(work_dir, 'final.pth')
    if osp.isfile(final) and not retrain:
        print(f'[pipeline] stage {name}: {final} exists, evaluating it (--retrain trains again)', flush=True)
        cfg.load_from, cfg.resume = final, False
        return _coco_ap(Runner.from_cfg(cfg).test())
    # resume from this stage's latest checkpoint when an earlier run was interrupted
    cfg.resume = not retrain
    cfg.load_from = load_from
    print(f'[pipeline] stage {name}: training {config} in {work_dir}', flush=True)
    runner = Runner.from_cfg(cfg)
    runner.train()
    metrics = runner.test()
    runner.save_checkpoint(work_dir, 'final.pth', save_optimizer=False, save_param_scheduler=False)
    return _coco_ap(metrics)


def _coco_ap(metrics: dict) -> Dict[str, float]:
    if not metrics:  # mmdet's CocoMetric returns nothing when no box scored above test_cfg.score_thr
        print('[pipeline] the detector predicted no boxes on the val split: AP is 0', flush=True)
        return {label: 0.0 for label, _ in METRICS}
    return {label: 100 * float(metrics[f'coco/{key}']) for label, key in METRICS}


def format_table(rows: List[dict]) -> str:
    head = '| stage | config | ' + ' | '.join(label for label, _ in METRICS) + ' |'
    sep = '|' + '---|' * (len(METRICS) + 2)
    lines = [head, sep]
    for row in rows:
        vals = ' | '.join(f'{row["metrics"][label]:.1f}' for label, _ in METRICS)
        lines.append(f'| {row["stage"]} | {osp.basename(row["config"])} | {vals} |')
    return '\n'.join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--work-dir', default='work_dirs/pipeline')
    parser.add_argument('--data-root', default='data/synthetic_coco')
    parser.add_argument('--stages', nargs='+', default=[s[0] for s in STAGES if s[3]],
                        choices=[s[0] for s in STAGES], help='stages to run, in the order of STAGES')
    parser.add_argument('--retrain', action='store_true', help='train stages again even if they finished')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='overrides applied to every stage')
    args = parser.parse_args()
    os.chdir(ROOT)

    ensure_dataset(args.data_root)
    rows = []
    for name, config, init_stage, _ in STAGES:
        if name not in args.stages:
            continue
        load_from = osp.join(args.work_dir, init_stage, 'final.pth') if init_stage else None
        if load_from and not osp.isfile(load_from):
            sys.exit(f'stage {name} starts from stage {init_stage}, whose weights {load_from} do not exist; '
                     f'run with --stages {init_stage} {name}')
        start = time.time()
        metrics = run_stage(name, config, osp.join(args.work_dir, name), load_from, args.cfg_options, args.retrain)
        rows.append(dict(stage=name, config=config, metrics=metrics, seconds=round(time.time() - start, 1)))

    table = format_table(rows)
    with open(osp.join(args.work_dir, 'results.md'), 'w') as f:
        f.write(table + '\n')
    with open(osp.join(args.work_dir, 'results.json'), 'w') as f:
        json.dump(rows, f, indent=2)
    print('\nCOCO bbox AP on the generated benchmark (val split):\n' + table, flush=True)


if __name__ == '__main__':
    main()
