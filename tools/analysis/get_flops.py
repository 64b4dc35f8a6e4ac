"""FLOPs, parameters and bit-operations (BOPs) of a detector config, quantized configs included.

    python tools/analysis/get_flops.py configs/aqd/fcos_r18-c32_fpn_aqd-w4a4_synth.py --num-images 10
    python tools/analysis/get_flops.py configs/aqd/fcos_r50_fpn_aqd-w4a4_90k_coco.py --shape 800 1333
    python tools/analysis/get_flops.py CONFIG --checkpoint work_dirs/.../iter_90000.pth --show-layers

mmdet's ``tools/analysis_tools/get_flops.py`` for mmaqd's configs. Its numbers are the same (mmengine's
``FlopAnalyzer`` on a ``torch.jit`` trace of the ``tensor``-mode forward, averaged over the first
``--num-images`` images of ``val_dataloader``, batch 1); added:

* **quantizer initialisation outside the trace.** A model built from a quantized config has uninitialised
  data-init quantizers (LIQ's alpha, LSQ's step ...). Each input first runs through the model eagerly (eval mode,
  no gradients), which initialises them as the first training batch would, so nothing is initialised inside the
  trace. With ``--checkpoint`` their state comes from the checkpoint instead.
* **BOPs** (:mod:`mmaqd.quantization.bops`): for every conv / linear, MACs x weight bits x activation bits, a
  full-precision side counting 32 bits; the measure quantization papers report beside FLOPs. Counted in the same
  eager pass with forward hooks.
* ``--shape H W``: a random input of that size (padded as the config's data preprocessor pads) instead of
  dataset images, for configs whose dataset is not on this machine (the COCO configs).

FLOPs count one multiply-add as one FLOP (as mmdet / fvcore: convs, linears, BN, upsampling); element-wise ops
(ReLU, adds, the fake quantizers) are not counted. MACs and BOPs count convs and linears only.
"""
import argparse
import math
import os.path as osp
import sys
from functools import partial
from itertools import islice
from typing import Iterator, List, Optional, Tuple

import numpy as np
import torch

from mmaqd.quantization import quantizers
from mmaqd.quantization.bops import BopsReport, count_bops, si

sys.path.append(osp.dirname(osp.dirname(osp.abspath(__file__))))  # tools/, for mmaqd_tools
from mmaqd_tools.models import build_cpu_model  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('config', help='model config')
    p.add_argument('--checkpoint', help='checkpoint to load (quantizer state included); default: none, quantizers '
                                        'are initialised from the first input')
    p.add_argument('--num-images', type=int, default=100, help='val images to average over (default 100, as mmdet)')
    p.add_argument('--shape', type=int, nargs='+', metavar='SIZE',
                   help='H W (or one size for both): count on one random input of this size, no dataset')
    p.add_argument('--show-layers', action='store_true', help='print MACs and BOPs of every conv / linear')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config keys (key=value)')
    args = p.parse_args(argv)
    if args.num_images < 1:
        p.error(f'--num-images must be >= 1, got {args.num_images}')
    if args.shape is not None and (len(args.shape) not in (1, 2) or min(args.shape) < 1):
        p.error(f'--shape takes H W or one size, each >= 1; got {args.shape}')
    return args


def build_model(cfg, checkpoint: Optional[str], device: str) -> torch.nn.Module:
    """The config's model in eval mode (SyncBN reverted), with ``checkpoint`` loaded when given."""
    from mmengine.runner import load_checkpoint

    model = build_cpu_model(cfg, init_weights=False)
    if checkpoint:
        load_checkpoint(model, checkpoint, map_location='cpu')
    return model.to(device).eval()


def _padded(size: int, divisor: int) -> int:
    return int(math.ceil(size / divisor) * divisor) if divisor > 1 else size


def random_input(model: torch.nn.Module, shape: List[int]) -> Tuple[torch.Tensor, None, tuple, tuple]:
    """``(inputs, data_samples, shape, padded shape)`` of one random, already normalized image."""
    h, w = shape if len(shape) == 2 else shape * 2
    divisor = getattr(model.data_preprocessor, 'pad_size_divisor', 1) or 1
    pad = (_padded(h, divisor), _padded(w, divisor))
    device = next(model.parameters()).device
    return torch.randn(1, 3, *pad, generator=torch.Generator().manual_seed(0)).to(device), None, (h, w), pad


def build_loader(cfg):
    """``val_dataloader`` at batch 1 in this process; exits naming the problem (and ``--shape``) when its data
    cannot be read."""
    from mmengine.runner import Runner
    loader_cfg = cfg.val_dataloader.copy()
    loader_cfg.update(batch_size=1, num_workers=0, persistent_workers=False)
    try:
        return Runner.build_dataloader(loader_cfg)
    except (FileNotFoundError, OSError) as e:
        sys.exit(f'cannot read the val_dataloader of {cfg.filename}: {e}\nPass --shape H W (e.g. --shape 800 1333) '
                 'to count on a random input of that size instead.')


def dataset_inputs(loader, model: torch.nn.Module, num: int) -> Iterator[Tuple[torch.Tensor, list, tuple, tuple]]:
    """``(inputs, data_samples, original shape, padded shape)`` of the first ``num`` images, preprocessed."""
    for batch in islice(loader, num):
        data = model.data_preprocessor(batch, training=False)
        sample = data['data_samples'][0]
        yield (data['inputs'], data['data_samples'], tuple(sample.ori_shape),
               tuple(getattr(sample, 'batch_input_shape', sample.pad_shape)))


def analyse(model: torch.nn.Module, inputs: torch.Tensor, data_samples) -> Tuple[int, BopsReport]:
    """FLOPs (mmengine, traced) and BOPs (eager) of one ``tensor``-mode forward; the eager pass runs first."""
    from mmengine.analysis import FlopAnalyzer

    forward = model.forward
    model.forward = partial(forward, data_samples=data_samples, mode='tensor')
    try:
        with torch.no_grad():
            report = count_bops(model, lambda: model(inputs))  # initialises data-init quantizers, outside the trace
        analyzer = FlopAnalyzer(model, (inputs, )).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        flops = analyzer.total()
    finally:
        del model.forward  # back to the class's forward
    return flops, report


def _pending(model: torch.nn.Module) -> int:
    return sum(1 for _, q in quantizers(model) if q.data_init and q.enabled and not bool(q.initialized))


def main(argv: Optional[List[str]] = None) -> dict:
    from mmengine.analysis import parameter_count
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    loader = None if args.shape else build_loader(cfg)  # before the model: a missing dataset fails fast
    model = build_model(cfg, args.checkpoint, args.device)
    pending = _pending(model)

    if args.shape:
        samples, source = [random_input(model, args.shape)], f'one random input of --shape {args.shape}'
    else:
        samples, source = dataset_inputs(loader, model, args.num_images), 'val_dataloader images, batch 1'
    flops, reports, shapes, left = [], [], [], 0
    for inputs, data_samples, shape, pad in samples:
        f, report = analyse(model, inputs, data_samples)
        if not reports:
            left = _pending(model)  # data-init quantizers the first input did not reach
        flops.append(f)
        reports.append(report)
        shapes.append((shape, pad))
    if not reports:
        sys.exit(f'the val_dataloader of {args.config} yielded no image')
    params = parameter_count(model)['']
    result = dict(flops=float(np.mean(flops)), params=params, macs=float(np.mean([r.macs for r in reports])),
                  bops=float(np.mean([r.bops for r in reports])), fp_bops=float(np.mean([r.fp_bops for r in reports])),
                  num_inputs=len(reports), first=reports[0], shapes=shapes)

    line = '=' * 30
    (shape, pad) = shapes[0]
    print(line)
    print(f'Compute type: {source} ({len(reports)} input(s))')
    print(f'Input shape: {pad}' + (f' (original size {shape})' if pad != shape else '')
          + (' [first input]' if len(reports) > 1 else ''))
    if pending:
        print(f'Quantizers: {pending - left} of {pending} uninitialised data-init quantizer(s) initialised from the '
              'first input, outside the trace' + (f'; {left} not reached, traced uninitialised' if left else ''))
    print(f'Flops: {si(result["flops"])}')
    print(f'Params: {si(params)}')
    print(f'MACs (conv / linear): {si(result["macs"])}')
    print(f'BOPs: {si(result["bops"])} (MACs x weight bits x activation bits; full precision counts 32 x 32)')
    ratio = result['fp_bops'] / result['bops'] if result['bops'] else float('nan')
    print(f'BOPs at full precision: {si(result["fp_bops"])} ({ratio:.1f}x the BOPs of this model)')
    print(line)
    print(f'BOPs by bit width [first input]:\n{reports[0].summary()}')
    if args.show_layers:
        print(f'\nper layer [first input]:\n{reports[0].table()}')
    print('FLOPs: one multiply-add = 1 FLOP (mmengine FlopAnalyzer, as mmdet\'s get_flops.py); element-wise ops '
          '(ReLU, adds, fake quantizers) are not counted.')
    return result


if __name__ == '__main__':
    main()
