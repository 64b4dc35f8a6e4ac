"""The integer grids of trained LIQ quantizers (AQD, arXiv 2007.06919, section 3.3, eq. 3-5).

* an activation quantizer with interval alpha and q = 2^k - 1 levels has the real values ``s * v`` with
  ``s = alpha / q`` and ``v = c`` (unsigned, eq. 4) or ``v = 2c - q`` (signed, eq. 3), c in 0..q;
* a weight quantizer with weight normalization (section 4.3) quantizes ``(w - mean) / std'`` and maps back,
  so its levels are ``s_w * (v + mu)`` with ``s_w = std' * alpha / q``, ``v = 2c - q`` and the real offset
  ``mu = mean / s_w``; without it, ``mu = 0`` and ``s_w = alpha / q``;
* a zero-level signed grid (``zero_level=True``: ``alpha * j / m``, j in -m..m, m = (q - 1) / 2) has ``s = alpha / m``
  and ``v = j`` for activations. Its weights are written on the default odd grid of the same bit width at half the
  step with the exact offset -1: ``s_w j = (s_w / 2) * ((2c - q) - 1)`` with ``c = j + m + 1``, so the integer conv
  needs no second weight format.

Codes are read off the trained quantizer itself (its own forward), so they are exactly the codes the
fake-quantized model computes with. Quantizers without such a uniform grid (LQ-Net's learned levels) and every
other unsupported state are refused with an error naming the layer.
"""
from dataclasses import dataclass

import torch
from torch import nn

from ..ops import liq_fake_quant
from ..quantization.quantizers import LIQ

__all__ = ['ActGrid', 'WeightGrid', 'act_grid', 'weight_grid', 'ConversionError']


class ConversionError(ValueError):
    """A model, layer or quantizer that has no exact integer form; the message names it and says why."""


@dataclass(frozen=True)
class ActGrid:
    """An activation grid: real value ``scale * v``; ``name`` is the quantizer's module name."""

    name: str
    alpha: float
    bits: int
    signed: bool
    zero_level: bool = False

    @property
    def levels(self) -> int:
        """q = 2^k - 1."""
        return (1 << self.bits) - 1

    @property
    def odd(self) -> bool:
        """Values are the odd ``2c - q`` (LIQ's default signed grid); else ``v = c`` (possibly negative)."""
        return self.signed and not self.zero_level

    @property
    def max_abs(self) -> int:
        """The largest |v| on the grid: q, or m = (q - 1) / 2 on a zero-level signed grid."""
        return (self.levels - 1) // 2 if self.signed and self.zero_level else self.levels

    @property
    def scale(self) -> float:
        return self.alpha / self.max_abs

    def values(self, x: torch.Tensor) -> torch.Tensor:
        """Integer values of a fake-quantized tensor ``x`` (the quantizer's output) on this grid (int32)."""
        return torch.round(x.double() * self.max_abs / self.alpha).to(torch.int32)

    def describe(self) -> dict:
        d = dict(quantizer=self.name, bits=self.bits, signed=self.signed, alpha=self.alpha, scale=self.scale)
        if self.zero_level:
            d['zero_level'] = True
        return d


def _check_liq(name: str, q: nn.Module, role: str) -> LIQ:
    if type(q) is not LIQ:
        raise ConversionError(f'{name}: {type(q).__name__} has no exact integer form in mmaqd.deploy; supported: '
                              'LIQ (uniform grids)' + (' - LQNet learns non-uniform levels' if
                                                       type(q).__name__ == 'LQNet' else ''))
    if q.role != role:
        raise ConversionError(f'{name}: expected a {role} quantizer, got role={q.role!r}')
    if not q.enabled:
        raise ConversionError(f'{name}: the quantizer is disabled (enabled=False); enable it before converting')
    if not bool(q.initialized):
        raise ConversionError(f'{name}: the quantizer was never initialised (no data-driven alpha); load a trained '
                              'checkpoint or run a batch through the model before converting')
    if not torch.isfinite(q.alpha).all() or (q.alpha <= 0).any():
        raise ConversionError(f'{name}: alpha must be finite and positive, got {q.alpha.detach().flatten()[:4]}')
    return q


def act_grid(name: str, q: nn.Module) -> ActGrid:
    """The grid of the trained activation quantizer ``q`` (module name ``name``)."""
    q = _check_liq(name, q, 'act')
    if q.signed is None:
        raise ConversionError(f'{name}: signedness not decided yet (signed=None until the first batch); run a '
                              'batch through the model or load a trained checkpoint')
    if q.per_channel:
        raise ConversionError(f'{name}: per-channel activation quantizers are not supported')
    return ActGrid(name, float(q.alpha.detach().float()), int(q.bits), bool(q.signed), bool(q.zero_level))


@dataclass
class WeightGrid:
    """A conv weight on its grid: ``codes`` (C_out, K) in 0..q, real weight ``scale[o] * (2c - q + offset[o])``."""

    name: str
    bits: int
    codes: torch.Tensor   # (C_out, K) int64
    scale: torch.Tensor   # (C_out,) float64
    offset: torch.Tensor  # (C_out,) float64, mean / s_w (0 without weight normalization; -1 on a zero-level grid)
    zero_level: bool = False

    @property
    def levels(self) -> int:
        return (1 << self.bits) - 1


@torch.no_grad()
def weight_grid(name: str, conv: nn.Module) -> WeightGrid:
    """Codes, scale and offset of ``conv.weight`` under its trained weight quantizer (``name``: the conv)."""
    q = _check_liq(f'{name}.weight_quantizer', conv.weight_quantizer, 'weight')
    w = conv.weight.detach()
    c_out = w.shape[0]
    alpha = q.alpha.detach().float().reshape(-1)  # (1,) or (C_out,)
    if q.weight_norm:
        std, mean = q._stats(w)  # the quantizer's own statistics, float32 as in training
    else:
        std, mean = torch.ones(()), torch.zeros(())
    n = q.normalize(w)
    a = alpha.view(-1, 1, 1, 1) if alpha.numel() > 1 else alpha.reshape(())
    levels = (1 << q.bits) - 1
    out = liq_fake_quant(n, q.alpha.detach(), q.bits, True, q.zero_level)  # (C_out, C_in/g, kh, kw) real levels
    if q.zero_level:  # j in -m..m on the odd grid at half the step: v = 2j + 1, offset -1 (module docstring)
        m = (levels - 1) // 2
        v = 2 * torch.round(out.double() * m / a.double()) + 1
        steps = float(std) * alpha.double() / m / 2
    else:
        v = torch.round(out.double() * levels / a.double())
        steps = float(std) * alpha.double() / levels
    codes = ((v + levels) / 2).round().to(torch.int64).reshape(c_out, -1)  # (C_out, K)
    if codes.min() < 0 or codes.max() > levels or not torch.equal(codes * 2 - levels, v.to(torch.int64).reshape(
            c_out, -1)):
        raise ConversionError(f'{name}: the weight codes are not on the {q.bits}-bit grid (internal error)')
    s_w = steps.expand(c_out).clone()  # (C_out,)
    offset = torch.full_like(s_w, -1.0) if q.zero_level else float(mean) / s_w  # (C_out,)
    return WeightGrid(name, int(q.bits), codes, s_w, offset, bool(q.zero_level))
