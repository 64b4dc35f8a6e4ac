"""Where does a quantized detector lose its accuracy? Per quantizer its range and clipping, per BN its drift.

    python tools/analysis/quantizer_stats.py configs/aqd/fcos_r18-c32_fpn_aqd-w2a2_synth.py \
        work_dirs/pipeline/aqd-w2a2/final.pth --num-batches 3 --out-json /tmp/w2a2_stats.json
    python tools/analysis/quantizer_stats.py CONFIG CHECKPOINT --split val --num-batches 10 \
        --cfg-options val_dataloader.batch_size=4

The model of CONFIG is built on the CPU (``build_cpu_model``), CHECKPOINT is loaded into it (strictly: a checkpoint
of another model is an error) and ``--num-batches`` batches of the ``--split`` dataloader (default train, the data
the BN running statistics were estimated on) run through it in eval mode without gradients (data preprocessor,
then the ``tensor`` forward), as at test time. Forward hooks record:

1. **per quantizer** (weight, input, add operand and output quantizers): bits, signedness, its range
   (``range_names``, e.g. LIQ's ``alpha``; the mean over channels for a per-channel range), the share of its input
   values outside its unclipped range (``clip_bounds``; none for a quantizer that never clips), and the share of
   its grid levels that were hit: the number of distinct values of its output over all calls and batches, divided
   by its number of levels (2^bits; 2^bits - 1 for LIQ's zero-level grid). Counting distinct output values is
   cheap (a sort per call) and exact because the fake-quantized output is a value of the grid; for a per-channel
   quantizer (the weights) it is counted per channel (the weight is the same in every call) and averaged. The
   range and the clipped share reuse :mod:`mmaqd.engine.hooks.quantizer_health_hook` (``ClipCounter``,
   ``range_values``), which logs the same numbers during training.
2. **per BN** (``BatchNorm2d``; each level's own BN of a multi-level BN head; a BN folded into its conv, whose
   input is the folded conv's output and whose pre-BN statistics are recovered by undoing gamma / beta): the
   running statistics against the statistics of its actual inputs in the quantized model. Per channel, mu_b and
   sigma_b^2 are the per-call batch mean and unbiased variance (what a training forward normalizes with and the
   running statistics average), averaged over the batches; reported are, averaged over channels,

       mean drift = |mu_b - mu_run| / sqrt(var_run + eps)    (the shift in units of the running std)
       var drift  = |log((var_b + eps) / (var_run + eps))|    (0: same spread; log 4 = 1.39: 2x the std)

   A BN called several times per batch (a head BN shared by the FPN levels, i.e. without multi-level BN) is
   measured per call slot (the k-th call of a batch is level k) and the drifts averaged over the slots: in eval
   each level is normalized by the same pooled running statistics, so a level whose statistics differ from the
   pool drifts even when the pool's average matches. That the levels' statistics differ once the network is
   quantized is AQD's case for multi-level BN (arXiv 2007.06919v1, section 3.2, Figure 1).
3. **per part** (the first component of the module name: backbone / neck / bbox_head): the mean and max clipped
   share and mean levels used of its quantizers, the mean drifts of its BNs.

Both effects are known sources of the accuracy loss of low-bit detectors: a learned or calibrated range trades
clipping error against rounding error (Jacob et al., arXiv 1712.05877, section 3; FQN, Li et al., CVPR 2019,
section 3.5, percentile clipping of activations), and the BN statistics of a quantized network move away from the
ones it was trained or folded with and are unstable at low bits (FQN section 3.4, freezing BN statistics; Jacob
et al. section 3.2, BN folding).

Printed: markdown tables of the 15 most clipped quantizers, the 15 BNs with the largest drift (mean + var drift)
and the per-part summary. ``--out-json PATH`` writes every row (an existing file only with ``--force``).
"""
import argparse
import json
import math
import os.path as osp
import sys
from itertools import islice
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmaqd.engine.hooks.bn_stats_hook import batch_mean_var
from mmaqd.engine.hooks.quantizer_health_hook import ClipCounter, range_values, short_name
from mmaqd.models.layers.multi_level_norm import MultiLevelNorm
from mmaqd.quantization.layers.conv_bn import FoldedBN
from mmaqd.quantization.mode import quantizers
from mmaqd.quantization.quantizers.base import BaseQuantizer

sys.path.append(osp.dirname(osp.dirname(osp.abspath(__file__))))  # tools/, for mmaqd_tools
from mmaqd_tools.models import build_cpu_model  # noqa: E402

TOP = 15
#: the quantizer's attribute name in its layer -> what it quantizes
KINDS = {'weight_quantizer': 'weight', 'act_quantizer': 'input', 'a_quantizer': 'add operand',
         'b_quantizer': 'add operand', 'out_quantizer': 'output'}


# ----------------------------------------------------------------------------------------------- quantizers
def quantizer_kind(name: str, q: BaseQuantizer) -> str:
    """``'weight'``, ``'input'``, ``'add operand'`` or ``'output'`` from the attribute name (else the role)."""
    kind = KINDS.get(name.rsplit('.', 1)[-1])
    return kind or ('weight' if q.role == 'weight' else 'input')


def num_levels(q: BaseQuantizer) -> int:
    """Levels of ``q``'s grid: 2^bits, one fewer on LIQ's signed zero-level grid."""
    return 2 ** q.bits - (1 if getattr(q, 'zero_level', False) and q.signed else 0)


def _active(q: BaseQuantizer) -> bool:
    """The quantizer quantized this call (neither off nor passing its input through to calibrate)."""
    return q.enabled and not getattr(q, 'calibrating', False)


class LevelCounter:
    """Forward hooks collecting, per quantizer, the distinct values of its output (its grid levels hit).

    Per tensor: the union of the distinct values over all calls. Per channel (output dim 0 = ``num_channels``,
    i.e. a weight): the distinct values of each channel, the largest count over calls (a weight is the same in
    every call, so this is the union too).
    """

    def __init__(self, named: Dict[str, BaseQuantizer]) -> None:
        self.named = named
        self.values: Dict[str, torch.Tensor] = {}  # name -> sorted distinct values, per-tensor quantizers
        self.per_row: Dict[str, torch.Tensor] = {}  # name -> (C,) distinct counts, per-channel quantizers
        self.calls: Dict[str, int] = {}
        self._handles: list = []

    def attach(self) -> None:
        self.values, self.per_row, self.calls = {}, {}, {name: 0 for name in self.named}
        for name, q in self.named.items():
            self._handles.append(q.register_forward_hook(
                lambda mod, args, out, name=name: self._count(name, mod, out)))

    def detach(self) -> None:
        while self._handles:
            self._handles.pop().remove()

    @torch.no_grad()
    def _count(self, name: str, q: BaseQuantizer, out: torch.Tensor) -> None:
        if not _active(q):
            return
        self.calls[name] += 1
        y = out.detach()
        if q.per_channel and y.dim() > 0 and y.shape[0] == q.num_channels:
            rows = y.reshape(y.shape[0], -1).sort(dim=1).values  # (C, M)
            distinct = 1 + (rows[:, 1:] != rows[:, :-1]).sum(dim=1)  # (C,)
            prev = self.per_row.get(name)
            self.per_row[name] = distinct if prev is None else torch.maximum(prev, distinct)
        else:
            u = torch.unique(y)
            prev = self.values.get(name)
            self.values[name] = u if prev is None else torch.unique(torch.cat([prev, u]))

    def used_share(self, name: str) -> Optional[float]:
        """Distinct output values / grid levels (mean over channels when per channel); ``None``: never ran."""
        levels = num_levels(self.named[name])
        if name in self.per_row:
            return self.per_row[name].double().mean().item() / levels
        if name in self.values:
            return self.values[name].numel() / levels
        return None


def quantizer_rows(named: Dict[str, BaseQuantizer], clips: ClipCounter, levels: LevelCounter) -> List[dict]:
    """One row per quantizer: name (without ``_quantizer``), module, part, kind, bits, signed, per_channel,
    range ({name: value}), clip (share, ``None``: never clips / never ran), levels_used (share), calls."""
    shares = {n: s.item() for n, s in clips.shares().items()}
    rows = []
    for name, q in named.items():
        short = short_name(name)
        ranges = {k[len(short) + 1:]: v.item() for k, v in range_values({name: q}).items()}
        rows.append(dict(name=short, module=name, part=name.split('.', 1)[0], kind=quantizer_kind(name, q),
                         type=type(q).__name__, bits=q.bits, signed=q.signed, per_channel=q.per_channel,
                         range=ranges, clip=shares.get(name), levels_used=levels.used_share(name),
                         calls=levels.calls.get(name, 0)))
    return rows


# ----------------------------------------------------------------------------------------------- BN drift
def bn_layers(model: nn.Module) -> Dict[str, Tuple[_BatchNorm, Optional[int]]]:
    """name -> (BN, level): every BN with running statistics; ``level`` is the pyramid level of a multi-level
    norm's own BN (``<name>.norms.<level>``), ``None`` for the others."""
    levels = {}
    for name, m in model.named_modules():
        if isinstance(m, MultiLevelNorm):
            levels.update((f'{name}.norms.{i}', i) for i in range(m.num_levels))
    return {name: (m, levels.get(name)) for name, m in model.named_modules()
            if isinstance(m, _BatchNorm) and m.track_running_stats and m.running_mean is not None}


def drift(mean: torch.Tensor, var: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor,
          eps: float) -> Tuple[float, float]:
    """(mean drift, var drift) of batch statistics ``mean``, ``var`` (C,) against running ones, averaged over
    channels (see the module docstring); NaN channels (no information) are left out."""
    mean, var = mean.double(), var.double()
    rm, rv = running_mean.double(), running_var.double()
    d_mean = (mean - rm).abs() / (rv + eps).sqrt()
    d_var = ((var + eps) / (rv + eps)).log().abs()
    return d_mean.nanmean().item(), d_var.nanmean().item()


def unfold_stats(bn: _BatchNorm, mean_y: torch.Tensor, var_y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Statistics of the pre-BN conv output z of a folded BN from those of its input y = gamma (z - mu_run) /
    sqrt(var_run + eps) + beta (the folded conv's output); NaN where gamma = 0 (y carries nothing of z)."""
    rm, rv = bn.running_mean.double(), bn.running_var.double()
    gamma = bn.weight.detach().double() if bn.affine else torch.ones_like(rm)
    beta = bn.bias.detach().double() if bn.affine else torch.zeros_like(rm)
    scale = (rv + bn.eps).sqrt() / gamma  # z - mu_run = (y - beta) * scale
    scale = torch.where(gamma.abs() > 0, scale, torch.full_like(scale, math.nan))
    return (mean_y.double() - beta) * scale + rm, var_y.double() * scale * scale


class BNDriftRecorder:
    """Forward pre-hooks summing, per BN and per call slot of a batch, the per-call batch mean and unbiased
    variance of its input; :meth:`new_batch` before every batch restarts the slots."""

    def __init__(self, bns: Dict[str, Tuple[_BatchNorm, Optional[int]]]) -> None:
        self.bns = bns
        self.sums: Dict[str, Dict[int, list]] = {}  # name -> slot -> [sum of means, sum of vars, calls]
        self._calls: Dict[str, int] = {}
        self._handles: list = []

    def attach(self) -> None:
        self.sums = {name: {} for name in self.bns}
        self.new_batch()
        for name, (bn, _) in self.bns.items():
            self._handles.append(bn.register_forward_pre_hook(lambda mod, args, name=name: self._hook(name, args)))

    def detach(self) -> None:
        while self._handles:
            self._handles.pop().remove()

    def new_batch(self) -> None:
        self._calls = {name: 0 for name in self.bns}

    def _hook(self, name: str, args: tuple) -> None:
        x = args[0]
        mean, var = batch_mean_var(x)  # (C,), (C,): biased, float32
        n = x.numel() // x.shape[1]
        var = var.double() * (n / max(n - 1, 1))  # unbiased, as BN's running_var averages
        slot = self._calls[name]
        self._calls[name] += 1
        acc = self.sums[name].setdefault(slot, [0.0, 0.0, 0])
        acc[0], acc[1], acc[2] = acc[0] + mean.double(), acc[1] + var, acc[2] + 1

    def rows(self) -> List[dict]:
        """One row per BN that ran: name, part, kind (``bn`` / ``level bn`` / ``folded bn``), level, channels,
        calls_per_batch, mean_drift and var_drift (averaged over the call slots) and their per-slot values."""
        rows = []
        for name, (bn, level) in self.bns.items():
            slots = self.sums.get(name)
            if not slots:
                continue
            per_slot = []
            for slot in sorted(slots):
                s_mean, s_var, calls = slots[slot]
                mean, var = s_mean / calls, s_var / calls
                if isinstance(bn, FoldedBN):
                    mean, var = unfold_stats(bn, mean, var)
                per_slot.append(drift(mean, var, bn.running_mean, bn.running_var, bn.eps))
            kind = 'folded bn' if isinstance(bn, FoldedBN) else 'level bn' if level is not None else 'bn'
            rows.append(dict(name=name, part=name.split('.', 1)[0], kind=kind, level=level,
                             channels=bn.num_features, calls_per_batch=len(per_slot),
                             mean_drift=_mean([d[0] for d in per_slot]), var_drift=_mean([d[1] for d in per_slot]),
                             per_call=[dict(mean_drift=m, var_drift=v) for m, v in per_slot]))
        return rows


# ----------------------------------------------------------------------------------------------- collection
def _mean(values: Iterable[Optional[float]]) -> Optional[float]:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return sum(vals) / len(vals) if vals else None


def tensor_forward(model: nn.Module, batch) -> None:
    """An mmengine data batch through ``model``: the data preprocessor (test-time), then the ``tensor`` forward."""
    data = model.data_preprocessor(batch, False)
    model(data['inputs'], data.get('data_samples'), mode='tensor')


@torch.no_grad()
def collect(model: nn.Module, batches: Iterable, num_batches: int,
            forward: Callable[[nn.Module, object], None] = tensor_forward) -> dict:
    """Run the first ``num_batches`` of ``batches`` through ``model`` in eval mode without gradients (each with
    ``forward(model, batch)``) and return ``{'quantizers': rows, 'bns': rows, 'parts': rows, 'num_batches': n}``.
    The model's and its modules' training flags are restored."""
    named = dict(quantizers(model))
    clips, levels = ClipCounter(named), LevelCounter(named)
    recorder = BNDriftRecorder(bn_layers(model))
    modes = [(m, m.training) for m in model.modules()]
    ran = 0
    try:
        model.eval()
        clips.attach(), levels.attach(), recorder.attach()
        for batch in islice(iter(batches), num_batches):
            recorder.new_batch()
            forward(model, batch)
            ran += 1
    finally:
        clips.detach(), levels.detach(), recorder.detach()
        for module, training in modes:
            module.training = training
    if ran == 0:
        raise ValueError('quantizer_stats: the dataloader gave no batch')
    q_rows, bn_rows = quantizer_rows(named, clips, levels), recorder.rows()
    return dict(num_batches=ran, quantizers=q_rows, bns=bn_rows, parts=part_summary(q_rows, bn_rows))


def part_summary(q_rows: List[dict], bn_rows: List[dict]) -> List[dict]:
    """Per part (in order of appearance) and ``all``: quantizers, mean / max clip over those that clip, mean
    levels used; BNs, mean of mean drift and of var drift."""
    parts = list(dict.fromkeys([r['part'] for r in q_rows] + [r['part'] for r in bn_rows]))
    out = []
    for part in parts + ['all']:
        qs = [r for r in q_rows if part in ('all', r['part'])]
        bs = [r for r in bn_rows if part in ('all', r['part'])]
        clips = [r['clip'] for r in qs if r['clip'] is not None]
        out.append(dict(part=part, quantizers=len(qs), clip_mean=_mean(clips), clip_max=max(clips, default=None),
                        levels_used_mean=_mean(r['levels_used'] for r in qs), bns=len(bs),
                        mean_drift=_mean(r['mean_drift'] for r in bs), var_drift=_mean(r['var_drift'] for r in bs)))
    return out


# ----------------------------------------------------------------------------------------------- report
def _fmt(value, pct: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return '-'
    return f'{value:.2%}' if pct else f'{value:.3f}'


def markdown_table(header: List[str], rows: List[List[str]]) -> str:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join('---' for _ in header) + '|']
    return '\n'.join(lines + ['| ' + ' | '.join(r) + ' |' for r in rows])


def report(stats: dict, top: int = TOP) -> str:
    """The three markdown tables: most clipped quantizers, largest BN drifts, the per-part summary."""
    clipped = sorted((r for r in stats['quantizers'] if r['clip'] is not None), key=lambda r: -r['clip'])[:top]
    signed = {None: 'auto', True: 'yes', False: 'no'}
    q_table = markdown_table(
        ['quantizer', 'kind', 'bits', 'signed', 'range', 'clipped', 'levels used'],
        [[r['name'], r['kind'], str(r['bits']), signed[r['signed']],
          ', '.join(f'{k}={v:.4g}' for k, v in r['range'].items()) or '-', _fmt(r['clip'], True),
          _fmt(r['levels_used'], True)] for r in clipped])
    drifted = sorted(stats['bns'], key=lambda r: -((r['mean_drift'] or 0) + (r['var_drift'] or 0)))[:top]
    bn_table = markdown_table(
        ['BN', 'kind', 'calls / batch', 'mean drift', 'var drift'],
        [[r['name'], r['kind'], str(r['calls_per_batch']), _fmt(r['mean_drift']), _fmt(r['var_drift'])]
         for r in drifted])
    part_table = markdown_table(
        ['part', 'quantizers', 'mean clipped', 'max clipped', 'mean levels used', 'BNs', 'mean drift',
         'var drift'],
        [[r['part'], str(r['quantizers']), _fmt(r['clip_mean'], True), _fmt(r['clip_max'], True),
          _fmt(r['levels_used_mean'], True), str(r['bns']), _fmt(r['mean_drift']), _fmt(r['var_drift'])]
         for r in stats['parts']])
    n = stats['num_batches']
    return (f'## Top {top} most clipped quantizers ({n} batches)\n\n{q_table}\n\n'
            f'## Top {top} BNs by drift (mean + var drift)\n\n{bn_table}\n\n## Per part\n\n{part_table}\n')


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


# ----------------------------------------------------------------------------------------------- main
def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('config', help='model config')
    p.add_argument('checkpoint', help='checkpoint of that config (loaded strictly)')
    p.add_argument('--num-batches', type=int, default=5, help='batches to run (default 5)')
    p.add_argument('--split', choices=('train', 'val'), default='train',
                   help="the dataloader the batches come from: 'train' (default) or 'val'")
    p.add_argument('--seed', type=int, default=0,
                   help='random seed of the batches (the train sampler shuffles, the train pipeline flips)')
    p.add_argument('--out-json', help='write every row to this JSON file')
    p.add_argument('--force', action='store_true', help='overwrite an existing --out-json')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config keys (key=value)')
    args = p.parse_args(argv)
    if args.num_batches < 1:
        p.error(f'--num-batches must be >= 1, got {args.num_batches}')
    if not osp.isfile(args.checkpoint):
        p.error(f'checkpoint {args.checkpoint} does not exist')
    if args.out_json and osp.exists(args.out_json) and not args.force:  # before any work
        p.error(f'--out-json {args.out_json} exists; pass --force to overwrite it')
    return args


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    from mmengine.config import Config
    from mmengine.runner import Runner, load_checkpoint, set_random_seed

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    model = build_cpu_model(cfg, init_weights=False)
    load_checkpoint(model, args.checkpoint, map_location='cpu', strict=True)
    fresh = [n for n, q in quantizers(model) if q.data_init and not bool(q.initialized)]
    if fresh:
        print(f'warning: {len(fresh)} quantizers are not initialised by the checkpoint (e.g. {fresh[0]}); their '
              'ranges are set from the first batch of this run, not from training')
    set_random_seed(args.seed)  # the train pipeline's random flips: the same batches on every run
    loader_cfg = cfg[f'{args.split}_dataloader'].copy()
    loader_cfg.update(num_workers=0, persistent_workers=False)
    stats = collect(model, Runner.build_dataloader(loader_cfg, seed=args.seed), args.num_batches)
    print(report(stats))
    if args.out_json:
        meta = dict(config=args.config, checkpoint=osp.abspath(args.checkpoint), split=args.split)
        with open(args.out_json, 'w') as f:
            json.dump(_json_safe({**meta, **stats}), f, indent=1)
        print(f'wrote {args.out_json}')
    return stats


if __name__ == '__main__':
    main()
