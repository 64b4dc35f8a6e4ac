"""Median train-step time of a quantized detector over its full-precision twin, measured in the same run.

    python tools/benchmark/train_step.py                     # LIQ 4-bit fully quantized FCOS vs FP FCOS
    python tools/benchmark/train_step.py --steps 60 --batch-size 8 --threads 2
    python tools/benchmark/train_step.py --quant-config configs/liq/...py --fp-config configs/fcos/...py

A train step is what mmengine's ``train_step`` does: data preprocessing, forward with losses, backward,
gradient clipping and the SGD update. Both models see the same generated batch; their steps are interleaved
(FP, Q, FP, Q, ...) so that machine noise hits both alike; the first ``--warmup`` steps of each are dropped.
"""
import argparse
import os.path as osp
import platform
import statistics
import sys
import time

import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.structures import InstanceData

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.append(osp.join(ROOT, 'tools'))  # for mmaqd_tools
from mmaqd_tools.models import build_cpu_model  # noqa: E402

FP_CONFIG = 'configs/fcos/fcos_r18-c32_fpn_bn-head_synth.py'
Q_CONFIG = 'configs/liq/fcos_r18-c32_fpn_bn-head_liq-w4a4_synth.py'


def build(config: str):
    cfg = Config.fromfile(osp.join(ROOT, config))
    model = build_cpu_model(cfg)
    model.train()
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    return model, optim


def make_batch(batch_size: int, size: int, num_classes: int, seed: int = 0) -> dict:
    from mmdet.structures import DetDataSample
    g = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for _ in range(batch_size):
        inputs.append((torch.rand(3, size, size, generator=g) * 255).to(torch.uint8))
        n = 6
        xy = torch.rand(n, 2, generator=g) * size * 0.6
        wh = 12 + torch.rand(n, 2, generator=g) * size * 0.35
        sample = DetDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size), pad_shape=(size, size),
                                             scale_factor=(1.0, 1.0)))
        sample.gt_instances = InstanceData(bboxes=torch.cat([xy, (xy + wh).clamp(max=size - 1)], 1),
                                           labels=torch.randint(0, num_classes, (n,), generator=g))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--fp-config', default=FP_CONFIG)
    parser.add_argument('--quant-config', default=Q_CONFIG)
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--size', type=int, default=192, help='square input side, pixels (the benchmark data: 192)')
    parser.add_argument('--steps', type=int, default=40, help='timed steps per model')
    parser.add_argument('--warmup', type=int, default=3, help='untimed steps per model first')
    parser.add_argument('--threads', type=int, default=None, help='torch threads (default: torch decides)')
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    models = {'fp': build(args.fp_config), 'quant': build(args.quant_config)}
    num_classes = models['fp'][0].bbox_head.num_classes
    batch = make_batch(args.batch_size, args.size, num_classes)
    times = {k: [] for k in models}
    for step in range(args.warmup + args.steps):
        for name, (model, optim) in models.items():
            start = time.perf_counter()
            model.train_step(batch, optim)
            if step >= args.warmup:
                times[name].append(time.perf_counter() - start)

    med = {k: statistics.median(v) for k, v in times.items()}
    print(f'machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, '
          f'torch {torch.__version__}')
    print(f'batch {args.batch_size} x {args.size}x{args.size}, {args.steps} timed steps per model '
          f'(after {args.warmup} warm-up)')
    print('| model | config | median train step (s) |\n|---|---|---|')
    for name, config in (('fp', args.fp_config), ('quant', args.quant_config)):
        print(f'| {name} | {osp.basename(config)} | {med[name]:.3f} |')
    print(f'quantized / full precision train-step time: {med["quant"] / med["fp"]:.2f}x')


if __name__ == '__main__':
    main()
