"""FQN's asymmetric uniform quantizer (FQN, Li et al., CVPR 2019, sections 3.2-3.4 and 3.6,
eq. 2-6 and 8-10).

The value and gradient maths, zero-point aligned and nudged so that real 0 is a level, is
:func:`mmaqd.ops.affine_fake_quant` (eq. 2, 4-6, 8); this module owns the ranges:

* weights (``role='weight'``): lb/ub are the min/max of the current weight, per output channel (eq. 9-10) or per
  tensor, every forward; no state.
* activations (``role='act'``, per tensor): lb/ub are persistent buffers. Between :meth:`start_calibration` and
  :meth:`finish_calibration` each forward passes x through unquantized and records its (1 - gamma) and gamma
  percentiles (``percentile`` = gamma = 0.999: the 0.1% and 99.9% points; 3.4.1), from at most 2^20 elements
  (a strided sample); finishing sets lb/ub to their means over the calibration batches (and ranks) and marks
  the quantizer initialised. Used without calibration, the first batch's percentiles initialise it.
"""
from typing import Optional

import torch

from ...ops.affine import affine_fake_quant, nudged_range
from ..registry import QUANTIZERS
from .base import BaseQuantizer
from .utils import resolve_role, subsample, sync_mean_

__all__ = ['FQNAffine', 'affine_fake_quant', 'nudged_range']


@QUANTIZERS.register_module()
class FQNAffine(BaseQuantizer):
    """FQN asymmetric quantizer with percentile calibration for activations.

    Args:
        bits, signed, per_channel, num_channels: see :class:`BaseQuantizer` (per channel: weights only; the
            signedness does not change the asymmetric range).
        role: ``'weight'``, ``'act'`` or ``None`` (``'weight'`` iff ``per_channel``).
        percentile: gamma; activations use the (1 - gamma) and gamma percentiles.
    """

    MAX_SAMPLES = 1 << 20
    range_names = ('lb', 'ub')  # activations only (weights take the min / max of each forward)

    def __init__(self, bits: int, signed: Optional[bool] = False, per_channel: bool = False,
                 num_channels: Optional[int] = None, role: Optional[str] = None, percentile: float = 0.999,
                 *, mode: Optional[str] = None):
        role = resolve_role(role, per_channel, mode=mode, where=type(self).__name__)
        if not 0.5 < percentile <= 1:
            raise ValueError(f'percentile={percentile} must be in (0.5, 1]')
        super().__init__(bits, signed, per_channel, num_channels, role)
        self.percentile, self.calibrating = float(percentile), False
        if role == 'weight':
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
        if self.role == 'weight':
            return
        self.calibrating = True
        self.initialized.fill_(False)
        self.num_calib_batches.zero_()
        self.lb.zero_()
        self.ub.zero_()

    def finish_calibration(self) -> None:
        """Fix lb/ub to the mean recorded percentiles (averaged over ranks) and mark the quantizer initialised."""
        if self.role == 'weight':
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
        if self.role == 'act':
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
        if self.role == 'weight':
            return None
        return nudged_range(self.lb, self.ub, self.bits, x.dtype)[2:]

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, percentile={self.percentile}'
