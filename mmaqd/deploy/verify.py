"""Does the integer model compute what was trained? Per-quantizer agreement of integer and fake-quantized codes.

The fake-quantized model rounds in float32, the integer model in fixed point (Jacob et al., CVPR 2018, section
2.2: a 31-bit multiplier, round to nearest). They may disagree where a value lies within rounding error of a
quantization boundary, by one step; anything more is a bug. This module runs both on the same images and
compares, at every trained activation quantizer (every call of it: one per FPN level for the head's shared
convs), the integer values the fake model's quantizer produced (its output divided by its step) with the integer
network's values at the same place (the network's ``probes``), and the prediction outputs after dequantization.
"""
import copy
from collections import defaultdict
from typing import Dict, List, Tuple

import torch
from torch import nn

from ..quantization.layers import QConv2d
from .grids import act_grid, weight_grid
from .network import IntegerNetwork

__all__ = ['agreement', 'agreement_table', 'count_agreement', 'exact_reference', 'fake_values', 'summarize',
           'value_step', 'TARGET_EQUAL', 'TARGET_WITHIN_ONE']

TARGET_EQUAL = 0.999     # share of identical integer values at every layer
TARGET_WITHIN_ONE = 1.0  # share within one quantization step


@torch.no_grad()
def fake_values(model: nn.Module, net: IntegerNetwork, batch_inputs: torch.Tensor) -> Dict[str, torch.Tensor]:
    """``{probe: integer values}`` of the fake-quantized ``model`` on ``batch_inputs`` at every probe of ``net``:
    each quantizer's outputs, one per call, divided by its step."""
    names = sorted({p.rsplit('#', 1)[0] for p in net.probes})
    captured = defaultdict(list)
    # clone: an in-place ReLU follows the residual adds' output quantizers
    hooks = [model.get_submodule(n).register_forward_hook(
        lambda m, i, o, n=n: captured[n].append(o.detach().clone())) for n in names]
    try:
        model.eval()
        model(batch_inputs, mode='tensor')
    finally:
        for h in hooks:
            h.remove()
    values = {}
    for name in names:
        grid = act_grid(name, model.get_submodule(name))
        for k, out in enumerate(captured[name]):
            if f'{name}#{k}' not in net.probes:
                raise RuntimeError(f'{name} ran {len(captured[name])} times in the fake model but the integer '
                                   f'network has no probe {name}#{k}')
            values[f'{name}#{k}'] = grid.values(out)
    return values


def value_step(model: nn.Module, probe: str) -> int:
    """The step between neighbouring integer values at ``probe``'s quantizer: 2 on LIQ's odd signed grid, else 1."""
    name = probe.rsplit('#', 1)[0]
    return 2 if act_grid(name, model.get_submodule(name)).odd else 1


def agreement_table() -> Dict[str, List[int]]:
    """An empty table of :func:`count_agreement`: quantizer -> ``[values, equal, within one step, max steps]``."""
    return defaultdict(lambda: [0, 0, 0, 0])


def count_agreement(counts: Dict[str, List[int]], probe: str, ours: torch.Tensor, ref: torch.Tensor, step: int) -> None:
    """Accumulate ``[values, equal, within one step, max steps apart]`` of integer values ``ours`` against ``ref``
    into ``counts[quantizer]`` (``counts``: :func:`agreement_table`)."""
    diff = (ours.to(torch.int32) - ref.to(torch.int32)).abs()  # in integer units
    c = counts[probe.rsplit('#', 1)[0]]
    c[0] += diff.numel()
    c[1] += int((diff == 0).sum())
    c[2] += int((diff <= step).sum())
    c[3] = max(c[3], int(diff.max()) // step if diff.numel() else 0)


@torch.no_grad()
def agreement(model: nn.Module, net: IntegerNetwork, batch_inputs: torch.Tensor,
              counts: Dict[str, List[int]] = None, per_op: bool = False,
              fake: Dict[str, torch.Tensor] = None) -> Dict[str, List[int]]:
    """Accumulate, per quantizer name, ``[values, equal, within one step, max steps apart]`` into ``counts``.

    ``model`` is the fake-quantized detector (eval mode), ``batch_inputs`` a preprocessed batch (N, 3, H, W).
    ``per_op=False`` compares the two models run end to end (a one-step difference early on propagates);
    ``per_op=True`` feeds every integer op the fake model's values of its inputs (teacher forcing), so each
    quantizer's row measures that op's arithmetic alone. ``fake``: :func:`fake_values` of this batch, if already
    computed.
    """
    counts = counts if counts is not None else agreement_table()
    fake = fake if fake is not None else fake_values(model, net, batch_inputs)
    override = {net.probes[p]: v for p, v in fake.items()} if per_op else {}
    kept = net(batch_inputs, keep=list(net.probes.values()), override=override)['_kept']
    for probe, ref in fake.items():
        count_agreement(counts, probe, kept[net.probes[probe]], ref, value_step(model, probe))
    return counts


class _ExactWeight(nn.Module):
    """Stands in for a weight quantizer: returns the grid's exact real weight, whatever it is given."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.register_buffer('weight', weight)

    def forward(self, _: torch.Tensor) -> torch.Tensor:
        return self.weight


def exact_reference(model: nn.Module) -> nn.Module:
    """A float64 copy of the fake-quantized ``model`` whose quantized conv weights are exactly their grid values
    ``s_w (2c - q + mu)`` (the codes as trained): the real-valued quantized model with float32's rounding noise
    removed. Its activation codes are what exact arithmetic gives, which the integer model should match up to
    its fixed-point multipliers (2^-31 relative), where the float32 model also rounds its sums."""
    ref = copy.deepcopy(model).eval()
    for name, m in ref.named_modules():
        if isinstance(m, QConv2d) and m.weight_quantizer is not None and m.act_quantizer is not None:
            g = weight_grid(name, m)
            v = (2 * g.codes - g.levels).double().view(m.weight.shape)
            m.weight_quantizer = _ExactWeight(g.scale.view(-1, 1, 1, 1) * (v + g.offset.view(-1, 1, 1, 1)))
    return ref.double()


def summarize(counts: Dict[str, List[int]]) -> Tuple[List[list], bool]:
    """Rows ``[quantizer, values, % equal, % within one step, max steps]`` (worst first) and whether every
    quantizer meets TARGET_EQUAL and TARGET_WITHIN_ONE."""
    rows, ok = [], True
    for name, (n, eq, within, worst) in counts.items():
        e, w = eq / max(n, 1), within / max(n, 1)
        ok &= e >= TARGET_EQUAL and w >= TARGET_WITHIN_ONE
        rows.append([name, n, 100 * e, 100 * w, worst])
    rows.sort(key=lambda r: (r[2], r[0]))
    return rows, ok
