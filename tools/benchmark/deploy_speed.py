"""End-to-end speed of the integer detector (an artefact of tools/deploy.py) against the FP32 detector in mmdet.

    python tools/benchmark/deploy_speed.py                 # the artefacts and checkpoints `make demo` writes
    python tools/benchmark/deploy_speed.py --artefact work_dirs/pipeline/aqd-w2a2-f8l8/integer --threads 1

Both run batch 1 on the same test images with the same thread count: mmdet's data preprocessor (normalization,
padding), the network (FP32: backbone, FPN and head convs in float; integer: the IntegerNetwork from the quantized
image to the prediction convs' int32 accumulators, their dequantization and the head's post-conv step) and the
box decoding + NMS (``predict_by_feat``). Prints the median milliseconds per image of each part and of the whole,
the ratio FP32 / integer, the compiled-ops path in use and the machine; target at 4 bits: whole >= 2x (a missed
target is printed as MISSED).
"""
import argparse
import os.path as osp
import platform
import statistics
import sys
import time
from typing import Dict, List

import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tools'))
TARGET = 2.0


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--artefact', default='work_dirs/pipeline/aqd-w4a4-f8l8/integer', help='tools/deploy.py --out')
    p.add_argument('--fp-config', default='configs/fcos/fcos_r18-c32_fpn_bn-head_synth.py')
    p.add_argument('--fp-checkpoint', default='work_dirs/pipeline/fp/final.pth')
    p.add_argument('--num-images', type=int, default=30)
    p.add_argument('--threads', nargs='+', type=int, default=[1, 2])
    args = p.parse_args(argv)
    for path in (args.artefact, args.fp_config, args.fp_checkpoint):
        if not osp.exists(path):
            p.error(f'{path} does not exist (run `make demo` first, or pass --artefact / --fp-* paths)')
    return args


def time_parts(model, batches: List[dict], integer: bool) -> Dict[str, float]:
    """Median seconds per image of preprocessing, network and post-processing (and their sum)."""
    parts = {'preprocess': [], 'network': [], 'postprocess': [], 'whole': []}
    head = model.bbox_head
    with torch.no_grad():
        for i, batch in enumerate(batches):
            t0 = time.perf_counter()
            data = model.data_preprocessor(batch, False)
            t1 = time.perf_counter()
            outs = model._forward(data['inputs'])
            t2 = time.perf_counter()
            metas = [s.metainfo for s in data['data_samples']]
            head.predict_by_feat(*outs, batch_img_metas=metas, rescale=True)
            t3 = time.perf_counter()
            if i == 0:
                continue  # warm-up (prepacks the integer weights once)
            for key, value in (('preprocess', t1 - t0), ('network', t2 - t1), ('postprocess', t3 - t2),
                               ('whole', t3 - t0)):
                parts[key].append(value)
    return {k: statistics.median(v) for k, v in parts.items()}


def main(argv=None) -> int:
    args = parse_args(argv)
    from deploy import build_trained_model, load_artefact_detector, load_config  # tools/deploy.py
    from mmengine.runner import Runner

    import mmaqd  # noqa: F401  (registers the plugin)
    from mmaqd.deploy.artefact import read_graph
    from mmaqd.ops import active_path
    int_det, int_cfg = load_artefact_detector(args.artefact)
    fp_cfg = load_config(args.fp_config, None)
    fp_model = build_trained_model(fp_cfg, args.fp_checkpoint)
    loader_cfg = int_cfg.test_dataloader.copy()
    loader_cfg.update(batch_size=1, num_workers=0, persistent_workers=False)
    batches = []
    for batch in Runner.build_dataloader(loader_cfg):
        batches.append(batch)
        if len(batches) > args.num_images:
            break
    graph = read_graph(args.artefact)
    bits = sorted({s['w_bits'] for s in graph['spec']['layers'] if s['type'] == 'conv'})
    print(f'machine: {platform.platform()}, torch {torch.__version__}, CPU capability '
          f'{torch.backends.cpu.get_cpu_capability()}; mmaqd ops: {active_path()}')
    print(f'integer artefact {args.artefact} (weight bits {bits}, kind {graph["kind"]}) vs FP32 {args.fp_config}; '
          f'{len(batches) - 1} images, batch 1, median ms per image\n')
    print('| threads | model | preprocess | network | postprocess | whole |')
    print('|---|---|---|---|---|---|')
    verdicts = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        fp = time_parts(fp_model, batches, False)
        it = time_parts(int_det, batches, True)
        for name, t in (('FP32 (mmdet)', fp), ('integer (mmaqd)', it)):
            print(f'| {threads} | {name} | ' + ' | '.join(f'{1e3 * t[k]:.1f}' for k in
                                                         ('preprocess', 'network', 'postprocess', 'whole')) + ' |')
        print(f'| {threads} | FP32 / integer | ' + ' | '.join(f'{fp[k] / it[k]:.2f}x' for k in
                                                            ('preprocess', 'network', 'postprocess', 'whole')) + ' |')
        verdicts.append((threads, fp['whole'] / it['whole']))
    print()
    four_bit = max(bits) <= 8 and 4 in bits
    for threads, ratio in verdicts:
        line = f'{threads} thread(s): integer detector {ratio:.2f}x the FP32 detector'
        if four_bit:
            line += f' (target at 4 bits >= {TARGET}x: {"met" if ratio >= TARGET else "MISSED"})'
        print(line)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
