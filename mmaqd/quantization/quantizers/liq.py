"""LIQ, the learned interval quantizer of AQD (arXiv 2007.06919v1, section 3.3, eq. 3-7), with an optional
weight normalization (AQD section 4.3, following APOT, arXiv 1909.13144) and a data-driven initialisation of the
interval alpha.

The value and gradient maths is :func:`mmaqd.ops.liq_fake_quant`; this module owns alpha and its init:

* ``init='mse'`` (default): alpha = argmin over t * m, t in {0.01, 0.02, ..., 1}, of the squared LIQ error on
  the first batch, m = max|x| (signed) or max(x, 0) (unsigned), per channel when ``per_channel``. It fits the
  bit width: at 2 bits it clips far below the max, at 8 bits it stays near it.
* ``init='max'``: alpha = ``init_scale`` * m (the authors' activation init is 0.8 * max|x|).
* ``init='const'``: alpha = ``init_value`` with no data (the authors' weight init, 1.0 after normalization).

With ``weight_norm=True`` the input is first mapped to (w - mean(w)) / std(w) over the whole tensor with the
statistics detached and quantized there (alpha lives on that normalized scale); the quantized value is then
mapped back, ``* std + mean`` (detached), so the levels are ``mean + std * alpha * (2i - q) / q``: still a uniform
grid. The authors' code returns the normalized weight and lets the following BN absorb scale and shift; convs
without a BN after them (the FPN's, the prediction convs at 8 bits) would then compute a different function than
the FP weights they are initialised from (measured: an 8-bit ``conv_reg`` without the mean gave a GIoU loss of
0.96 instead of 0.28), so mmaqd normalizes for the quantizer only.

``zero_level=True`` quantizes signed tensors onto the symmetric grid with an exact zero level (``alpha * j / m``,
m = 2^(k-1) - 1; :func:`mmaqd.ops.liq_fake_quant`), the grid standard int8 runtimes represent exactly (ONNX
QuantizeLinear with zero point 0). A weight normalization then only scales (``w / std``, no centring: a grid
centred on the mean would not contain zero). One level fewer than the default grid: its accuracy cost is measured
in ``configs/aqd/README.md``.
"""
from typing import Optional

import torch
from torch import nn

from ...ops import liq_fake_quant
from ..registry import QUANTIZERS
from .base import BaseQuantizer
from .utils import per_row, resolve_role, rows, subsample, sync_mean_

_GRID = 100  # candidates of the 'mse' init


@QUANTIZERS.register_module()
class LIQ(BaseQuantizer):
    """Learned interval quantizer.

    Args:
        bits, signed, per_channel, num_channels: see :class:`BaseQuantizer`.
        role: ``'weight'`` (always signed), ``'act'`` or ``None`` (``'weight'`` if ``per_channel`` or
            ``weight_norm``, else ``'act'``).
        weight_norm: standardize the weight (detached per-tensor mean/std) before quantizing; weights only.
        init: ``'mse'``, ``'max'`` or ``'const'`` (see the module docstring).
        init_value: alpha for ``init='const'`` (also the value before a data init).
        init_scale: the multiple of the max for ``init='max'``.
        eps: added to std in the weight normalization.
        zero_level: signed grids with an exact zero level (see the module docstring); unsigned grids are unchanged.
    """

    data_init = True
    INITS = ('mse', 'max', 'const')
    range_names = positive_names = ('alpha',)

    def __init__(self, bits: int, signed: Optional[bool] = False, per_channel: bool = False,
                 num_channels: Optional[int] = None, role: Optional[str] = None, weight_norm: bool = False,
                 init: str = 'mse', init_value: float = 1.0, init_scale: float = 0.8, eps: float = 1e-5,
                 zero_level: bool = False, *, mode: Optional[str] = None):
        role = resolve_role(role, per_channel, weight_hint=weight_norm, mode=mode, where=type(self).__name__)
        if weight_norm and role != 'weight':
            raise ValueError("weight_norm=True standardizes a weight; it needs role='weight'")
        if init not in self.INITS:
            raise ValueError(f'init={init!r} is not supported; allowed: {self.INITS}')
        if init_value <= 0 or init_scale <= 0:
            raise ValueError(f'init_value and init_scale must be > 0, got {init_value}, {init_scale}')
        if not isinstance(zero_level, bool):
            raise TypeError(f'zero_level must be a bool, got {zero_level!r}')
        super().__init__(bits, signed, per_channel, num_channels, role)
        self.weight_norm, self.init, self.zero_level = weight_norm, init, zero_level
        self.init_scale, self.eps = float(init_scale), float(eps)
        self.alpha = nn.Parameter(torch.full(self.param_shape, float(init_value)))  # () or (C,)
        if init == 'const':
            self.data_init = False
            self.initialized.fill_(True)

    def _stats(self, w: torch.Tensor):
        """(std + eps, mean) of ``w``, detached: the weight normalization's scale and centre (0 on a zero-level
        grid, which must contain 0)."""
        std, mean = torch.std_mean(w.detach())  # (), ()
        return std + self.eps, (torch.zeros_like(mean) if self.zero_level else mean)

    def normalize(self, w: torch.Tensor) -> torch.Tensor:
        """(w - mean) / (std + eps) with detached statistics when ``weight_norm``, else ``w`` itself."""
        if not self.weight_norm:
            return w
        scale, mean = self._stats(w)
        return (w - mean) / scale  # same shape as w

    def _fake_quant(self, x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        return liq_fake_quant(x, alpha, self.bits, self.signed, self.zero_level and bool(self.signed))

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        if not self.weight_norm:
            return self._fake_quant(x, self.alpha)
        scale, mean = self._stats(x)
        out = self._fake_quant((x - mean) / scale, self.alpha)
        return out * scale + mean  # back to the weight's scale and centre (detached): the grid stays uniform

    def init_from(self, x: torch.Tensor) -> None:
        x = self.normalize(x).float()
        r = rows(x, True) if self.per_channel else subsample(x).reshape(1, -1)  # (C, M) or (1, N)
        m = (r.abs() if self.signed else r.clamp(min=0)).amax(dim=1)  # (C,) or (1,)
        m = torch.where(m > 0, m, torch.ones_like(m))
        if self.init == 'max':
            alpha = self.init_scale * m
        else:
            alpha = self._mse_search(r, m)
        self.alpha.copy_(sync_mean_(per_row(alpha, self.per_channel)))

    def _mse_search(self, r: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """Per row of r (R, M), the alpha in m * {1, ..., G} / G with the least squared LIQ error; (R,)."""
        fracs = torch.arange(1, _GRID + 1, device=r.device, dtype=r.dtype) / _GRID  # (G,)
        errs = []
        chunk = max(1, (1 << 22) // r.numel())  # candidates evaluated together, bounded memory
        for f in fracs.split(chunk):
            cand = (f[:, None] * m[None, :]).reshape(-1)  # (g * R,)
            xs = r.expand(f.numel(), -1, -1).reshape(-1, r.shape[1])  # (g * R, M)
            out = self._fake_quant(xs, cand)  # (g * R, M)
            errs.append((out - xs).pow(2).sum(dim=1).view(f.numel(), -1))  # (g, R)
        best = torch.cat(errs).argmin(dim=0)  # (R,), the first minimum
        return fracs[best] * m

    def clip_bounds(self, x: torch.Tensor) -> tuple:
        """[-alpha, alpha] (signed) or [0, alpha], mapped back through the weight normalization when it is on."""
        a = self.broadcast(self.alpha.detach(), x)  # () or (C, 1, ..., 1)
        lo = -a if self.signed else torch.zeros_like(a)
        if not self.weight_norm:
            return lo, a
        scale, mean = self._stats(x)  # (), ()
        return lo * scale + mean, a * scale + mean

    def extra_repr(self) -> str:
        return (f'{super().extra_repr()}, weight_norm={self.weight_norm}, init={self.init}'
                + (', zero_level=True' if self.zero_level else ''))
