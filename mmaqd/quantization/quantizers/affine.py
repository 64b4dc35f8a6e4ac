"""FQN's asymmetric uniform quantizer (FQN, Li et al., CVPR 2019, sections 3.2-3.4 and 3.6,
eq. 2-6 and 8-10).

Range [lb, ub] (widened to contain 0), delta = (ub - lb) / (2^k - 1) (eq. 4), zero point
z = clamp(round(-lb / delta), 0, 2^k - 1); the range is nudged to [-z delta, (2^k - 1 - z) delta] so that real 0
is the level z exactly (3.6, "zero-point alignment"). out = delta * (round((clamp(x, lb, ub) - lb) / delta) - z)
(eq. 2, 5, 6). STE (eq. 8): d out / d x = 1 for lb <= x <= ub (nudged range), 0 outside; the range gets no
gradient.

* weights (``mode='weight'``): lb/ub are the min/max of the current weight, per output channel (eq. 9-10) or per
  tensor, every forward; no state.
* activations (``mode='act'``, per tensor): lb/ub are persistent buffers. Between :meth:`start_calibration` and
  :meth:`finish_calibration` each forward passes x through unquantized and records its (1 - gamma) and gamma
  percentiles (``percentile`` = gamma = 0.999: the 0.1% and 99.9% points; 3.4.1), from at most 2^20 elements
  (a strided sample); finishing sets lb/ub to their means over the calibration batches (and ranks) and marks
  the quantizer initialised. Used without calibration, the first batch's percentiles initialise it.
"""
from typing import Optional

import torch

from ..registry import QUANTIZERS
from .base import BaseQuantizer
from .utils import resolve_mode, subsample, sync_mean_


def nudged_range(lb: torch.Tensor, ub: torch.Tensor, bits: int, dtype: torch.dtype) -> tuple:
    """(delta, z, lo, hi) of the range [lb, ub] widened to contain 0 and nudged so that 0 is the level z (3.6);
    each shaped like lb / ub, in ``dtype``."""
    q = 2 ** bits - 1
    lb, ub = lb.to(dtype).clamp(max=0), ub.to(dtype).clamp(min=0)  # the range must contain 0
    delta = ((ub - lb) / q).clamp_min(torch.finfo(dtype).tiny)
    z = torch.round(-lb / delta).clamp(0, q)  # integer zero point
    return delta, z, -z * delta, (q - z) * delta  # nudged range [lo, hi], 0 is exactly level z


def affine_fake_quant(x: torch.Tensor, lb: torch.Tensor, ub: torch.Tensor, bits: int) -> torch.Tensor:
    """Zero-point aligned asymmetric fake quant of x with range [lb, ub] (scalars or broadcastable)."""
    delta, z, lo, hi = nudged_range(lb, ub, bits, x.dtype)
    xd = x.detach()
    xc = torch.maximum(torch.minimum(xd, hi), lo)  # clamp(x, lo, hi), same shape as x
    out = (torch.round((xc - lo) / delta) - z) * delta  # (x_I - z) * delta, eq. 2
    inside = ((xd >= lo) & (xd <= hi)).to(x.dtype)
    return out + (x - xd) * inside  # value exactly out; STE gradient inside, eq. 8


@QUANTIZERS.register_module()
class FQNAffine(BaseQuantizer):
    """FQN asymmetric quantizer with percentile calibration for activations.

    Args:
        bits, signed, per_channel, num_channels: see :class:`BaseQuantizer` (per channel: weights only; the
            signedness does not change the asymmetric range).
        mode: ``'weight'``, ``'act'`` or ``None`` (``'weight'`` iff ``per_channel``).
        percentile: gamma; activations use the (1 - gamma) and gamma percentiles.
    """

    MAX_SAMPLES = 1 << 20
    range_names = ('lb', 'ub')  # activations only (weights take the min / max of each forward)

    def __init__(self, bits: int, signed: Optional[bool] = False, per_channel: bool = False,
                 num_channels: Optional[int] = None, mode: Optional[str] = None, percentile: float = 0.999):
        mode = resolve_mode(mode, per_channel)
        if not 0.5 < percentile <= 1:
            raise ValueError(f'percentile={percentile} must be in (0.5, 1]')
        super().__init__(bits, signed, per_channel, num_channels, mode)
        self.percentile, self.calibrating = float(percentile), False
        if mode == 'weight':
            self.data_init = False
            self.initialized.fill_(True)
        else:
            self.data_init = True
            self.register_buffer('lb', torch.tensor(0.0))  # ()
            self.register_buffer('ub', torch.tensor(0.0))  # ()
            self.register_buffer('num_calib_batches', torch.tensor(0, dtype=torch.long))

    # ------------------------------------------------------------------------------------ calibration
    def start_calibration(self) -> None:
        """Forget the range and record percentiles from the following forwards (a no-op for weights)."""
        if self.mode == 'weight':
            return
        self.calibrating = True
        self.initialized.fill_(False)
        self.num_calib_batches.zero_()
        self.lb.zero_()
        self.ub.zero_()

    def finish_calibration(self) -> None:
        """Fix lb/ub to the mean recorded percentiles (averaged over ranks) and mark the quantizer initialised."""
        if self.mode == 'weight':
            return
        if not self.calibrating or int(self.num_calib_batches) == 0:
            raise RuntimeError('finish_calibration() needs start_calibration() and at least one forward')
        sync_mean_(self.lb)
        sync_mean_(self.ub)
        self.calibrating = False
        self.initialized.fill_(True)

    def percentiles(self, x: torch.Tensor) -> tuple:
        """The (1 - gamma) and gamma percentiles of x (linear interpolation; strided sample if large)."""
        s = subsample(x.detach().float(), self.MAX_SAMPLES)  # (<= 2^20,)
        qs = torch.tensor([1 - self.percentile, self.percentile], device=s.device)
        lo, hi = torch.quantile(s, qs)
        return lo, hi

    def _record(self, x: torch.Tensor) -> None:
        lo, hi = self.percentiles(x)
        self.num_calib_batches += 1
        n = self.num_calib_batches.to(self.lb.dtype)
        self.lb += (lo - self.lb) / n  # running mean over calibration batches
        self.ub += (hi - self.ub) / n

    # ------------------------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.enabled and self.calibrating:
            with torch.no_grad():
                self._record(x)
            return x
        return super().forward(x)

    def init_from(self, x: torch.Tensor) -> None:
        self.num_calib_batches.zero_()
        self._record(x)
        sync_mean_(self.lb)
        sync_mean_(self.ub)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == 'act':
            return affine_fake_quant(x, self.lb, self.ub, self.bits)
        w = x.detach()
        if self.per_channel:
            r = w.reshape(w.shape[0], -1)  # (C, M)
            lb, ub = self.broadcast(r.amin(dim=1), w), self.broadcast(r.amax(dim=1), w)  # (C, 1, ..., 1)
        else:
            lb, ub = w.amin(), w.amax()  # (), ()
        return affine_fake_quant(x, lb, ub, self.bits)

    def clip_bounds(self, x: torch.Tensor):
        """The nudged calibrated range for activations; ``None`` for weights (their own min / max: no clipping)."""
        if self.mode == 'weight':
            return None
        return nudged_range(self.lb, self.ub, self.bits, x.dtype)[2:]

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, percentile={self.percentile}'
