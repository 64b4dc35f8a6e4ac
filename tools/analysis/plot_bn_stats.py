"""Figure 1 of AQD (arXiv 2007.06919v1): histograms of per-level batch mean and batch variance at a head BN layer.

"Histograms of batch statistics at the batch normalization layer of a 2-bit ResNet-18 FCOS detector. Level-x
denotes that the predictions are made on the x-th pyramid level." Two panels (batch mean, batch variance), one
histogram per pyramid level overlaid; each histogram pools every channel of every recorded batch.

    # from the records BNStatsHook wrote during training
    python tools/analysis/plot_bn_stats.py --records work_dir/bn_stats.pth [--layer NAME] [--out fig1.png]
    # from a checkpoint: N val batches (eval mode, no grad), statistics of the layer's input captured per level
    python tools/analysis/plot_bn_stats.py --config CFG --checkpoint CKPT --num-batches 20 [--layer NAME]

``--layer`` defaults to the only layer of the records file, or for a checkpoint to the last norm of the
classification tower (the last BN / multi-level norm under ``bbox_head.cls_convs``). Levels are named
Level-<log2 stride> from the head's strides when known, else Level-<index + --first-level> (P3 = Level-3).
An existing output is kept unless ``--force``.
"""
import argparse
import math
import os.path as osp
import sys
from itertools import islice
from typing import Dict, List, Optional

import torch

from mmaqd.engine.hooks.bn_stats_hook import LevelStatsRecorder, norm_candidates

sys.path.append(osp.dirname(osp.dirname(osp.abspath(__file__))))  # tools/, for mmaqd_tools
from mmaqd_tools.models import build_cpu_model  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description='Plot per-level BN batch statistics (AQD Figure 1)')
    p.add_argument('--records', help='a bn_stats.pth written by BNStatsHook')
    p.add_argument('--config', help='model config (with --checkpoint)')
    p.add_argument('--checkpoint', help='checkpoint to load into the config\'s model')
    p.add_argument('--num-batches', type=int, default=20, help='val batches to run (with --config)')
    p.add_argument('--layer', help='norm layer name (default: see the module docstring)')
    p.add_argument('--out', help='output PNG (default: bn_stats_<layer>.png beside the records / checkpoint)')
    p.add_argument('--last', type=int, help='use only the last N recorded iterations of the records file')
    p.add_argument('--first-level', type=int, default=3, help='pyramid level of level index 0 (P3: 3)')
    p.add_argument('--bins', type=int, default=60)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config keys')
    p.add_argument('--force', action='store_true', help='overwrite an existing output file')
    args = p.parse_args(argv)
    if bool(args.records) == bool(args.config) or bool(args.config) != bool(args.checkpoint):
        p.error('give either --records, or --config and --checkpoint')
    if args.num_batches < 1 or (args.last is not None and args.last < 1):
        p.error('--num-batches and --last must be >= 1')
    if args.out and osp.exists(args.out) and not args.force:  # before any work; a default --out: check_out
        sys.exit(f'{args.out} exists; pass --force to overwrite it')
    return args


def level_name(level: int, strides: Optional[list], first_level: int) -> str:
    """``Level-x`` of a level index: x = log2(stride) when the strides are known, else index + first_level."""
    if strides and 0 <= level < len(strides):
        s = strides[level]
        return f'Level-{round(math.log2(s[0] if isinstance(s, (tuple, list)) else s))}'
    return f'Level-{level + first_level}'


def plot(levels: Dict[int, dict], layer: str, names: Dict[int, str], out: str, bins: int = 60) -> None:
    """Two panels (batch mean, batch variance), one overlaid histogram per level, saved as a PNG to ``out``."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in zip(axes, ('mean', 'var'), ('batch mean', 'batch variance')):
        values = {lvl: r[key].float().flatten().numpy() for lvl, r in sorted(levels.items())}
        lo = min(v.min() for v in values.values())
        hi = max(max(v.max() for v in values.values()), lo + 1e-6)
        for lvl, v in values.items():
            ax.hist(v, bins=bins, range=(lo, hi), alpha=0.5, label=names[lvl])
        ax.set_xlabel(label)
        ax.set_ylabel('count (channels x batches)')
        ax.set_title(label)
        ax.legend()
    fig.suptitle(f'Per-level batch statistics of the input of {layer}')
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def capture(args: argparse.Namespace) -> tuple:
    """Run ``--num-batches`` val batches of ``--config``'s model; return (layer, levels, strides)."""
    from mmengine.config import Config
    from mmengine.runner import Runner, load_checkpoint

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    model = build_cpu_model(cfg, init_weights=False)
    load_checkpoint(model, args.checkpoint, map_location='cpu')
    model.to(args.device).eval()
    cands = norm_candidates(model)
    layer = args.layer or next(reversed([n for n in cands if n.startswith('bbox_head.cls_convs.')]), None)
    if layer not in cands:
        sys.exit(f'layer {layer!r} is not a BN / multi-level norm layer; candidates: {list(cands)}')
    check_out(args, layer, args.checkpoint)
    recorder = LevelStatsRecorder({layer: cands[layer]})
    recorder.attach()
    with torch.no_grad():
        for i, batch in enumerate(islice(Runner.build_dataloader(cfg.val_dataloader), args.num_batches)):
            data = model.data_preprocessor(batch, training=False)
            recorder.set_step(i + 1)
            model(**data, mode='tensor')
    recorder.detach()
    head = getattr(model, 'bbox_head', None)
    strides = getattr(head, 'strides', None) or getattr(getattr(head, 'prior_generator', None), 'strides', None)
    return layer, recorder.as_dict()[layer], strides


def check_out(args: argparse.Namespace, layer: str, beside: str) -> None:
    """Set ``args.out`` (default beside ``beside``); exit if it exists and ``--force`` is not given."""
    args.out = args.out or osp.join(osp.dirname(osp.abspath(beside)), f'bn_stats_{layer}.png')
    if osp.exists(args.out) and not args.force:
        sys.exit(f'{args.out} exists; pass --force to overwrite it')


def main(argv: Optional[List[str]] = None) -> str:
    args = parse_args(argv)
    if args.records:
        records = torch.load(args.records, map_location='cpu')
        layer = args.layer or (next(iter(records)) if len(records) == 1 else None)
        if layer not in records:
            sys.exit(f'choose --layer from the recorded layers: {list(records)}')
        check_out(args, layer, args.records)
        levels = {lvl: {k: r[k][-args.last:] if args.last else r[k] for k in ('mean', 'var')}
                  for lvl, r in records[layer].items()}
        strides = None
    else:
        layer, levels, strides = capture(args)
    if not levels:
        sys.exit(f'no statistics recorded at {layer}')
    names = {lvl: level_name(lvl, strides, args.first_level) for lvl in levels}
    plot(levels, layer, names, args.out, args.bins)
    print(f'saved {args.out}')
    return args.out


if __name__ == '__main__':
    main()
