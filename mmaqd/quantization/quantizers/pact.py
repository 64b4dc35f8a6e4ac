"""PACT (Choi et al., 2018), eq. 1-3: a learned clipping level alpha for activations.

* unsigned: y = clip(x, 0, alpha), out = round(y * q / alpha) * alpha / q with q = 2^k - 1.
* signed (mmaqd's extension): y = clip(x, -alpha, alpha), out = round(y * n / alpha) * alpha / n with
  n = 2^(k-1) - 1, a symmetric grid with an exact zero (2^k - 1 levels).

Gradients as PACT eq. 3: the quantization step is straight-through, so d out / d x = 1 inside the clip range
and 0 outside, and d out / d alpha = 1 where x >= alpha (and -1 where x <= -alpha, signed), 0 inside.
alpha starts at ``init_value`` (10 in the paper); nothing is initialised from data.

PACT does not quantize weights; with ``mode='weight'`` this quantizer falls back to DoReFa's weight form
(:func:`dorefa_weight`, symmetric on [-1, 1], optionally per channel) and has no parameter.
"""
from typing import Optional

import torch
from torch import nn

from ..registry import QUANTIZERS
from .base import BaseQuantizer
from .dorefa import dorefa_weight
from .utils import resolve_mode


@QUANTIZERS.register_module()
class PACT(BaseQuantizer):
    """Parameterized clipping activation.

    Args:
        bits, signed, per_channel, num_channels: see :class:`BaseQuantizer` (per channel: weights only).
        mode: ``'act'`` (learned alpha), ``'weight'`` (DoReFa fallback) or ``None`` (``'weight'`` iff
            ``per_channel``).
        init_value: initial alpha.
    """

    range_names = positive_names = ('alpha',)  # None (skipped) for weights

    def __init__(self, bits: int, signed: Optional[bool] = False, per_channel: bool = False,
                 num_channels: Optional[int] = None, mode: Optional[str] = None, init_value: float = 10.0):
        mode = resolve_mode(mode, per_channel)
        if init_value <= 0:
            raise ValueError(f'init_value must be > 0, got {init_value}')
        super().__init__(bits, signed, per_channel, num_channels, mode)
        self.alpha = nn.Parameter(torch.tensor(float(init_value))) if mode == 'act' else None  # ()
        self.initialized.fill_(True)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == 'weight':
            return dorefa_weight(x, self.bits, self.per_channel)
        a = self.alpha.to(x.dtype)  # ()
        if self.signed:
            n = 2 ** (self.bits - 1) - 1
            y = torch.where(x >= a, a, torch.where(x <= -a, -a, x))  # clip(x, -a, a), same shape as x
        else:
            n = 2 ** self.bits - 1
            y = torch.where(x >= a, a, x.clamp(min=0))  # clip(x, 0, a), same shape as x
        y_q = torch.round(y * n / a) * a / n
        return y_q.detach() + (y - y.detach())  # value exactly y_q; gradient of y (straight-through)

    def clip_bounds(self, x: torch.Tensor):
        """[-alpha, alpha] (signed) or [0, alpha]; ``None`` for weights (DoReFa's tanh form never clips)."""
        if self.mode == 'weight':
            return None
        a = self.alpha.detach()  # ()
        return (-a if self.signed else torch.zeros_like(a)), a
