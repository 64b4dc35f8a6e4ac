"""PACT (Choi et al., arXiv 1805.06085), eq. 1-3: a learned clipping level alpha for activations.

The clip, the grid and PACT's straight-through gradients (eq. 3) are :func:`mmaqd.ops.pact_fake_quant`; this module
owns alpha, which starts at ``init_value`` (10 in the paper); nothing is initialised from data.

PACT does not quantize weights; with ``role='weight'`` this quantizer falls back to DoReFa's weight form
(:func:`dorefa_weight`, symmetric on [-1, 1], optionally per channel) and has no parameter.
"""
from typing import Optional

import torch
from torch import nn

from ...ops.dorefa import dorefa_weight
from ...ops.pact import pact_fake_quant
from ..registry import QUANTIZERS
from .base import BaseQuantizer
from .utils import resolve_role


@QUANTIZERS.register_module()
class PACT(BaseQuantizer):
    """Parameterized clipping activation.

    Args:
        bits, signed, per_channel, num_channels: see :class:`BaseQuantizer` (per channel: weights only).
        role: ``'act'`` (learned alpha), ``'weight'`` (DoReFa fallback) or ``None`` (``'weight'`` iff
            ``per_channel``).
        init_value: initial alpha.
    """

    range_names = positive_names = ('alpha',)  # None (skipped) for weights

    def __init__(self, bits: int, signed: Optional[bool] = False, per_channel: bool = False,
                 num_channels: Optional[int] = None, role: Optional[str] = None, init_value: float = 10.0,
                 *, mode: Optional[str] = None):
        role = resolve_role(role, per_channel, mode=mode, where=type(self).__name__)
        if init_value <= 0:
            raise ValueError(f'init_value must be > 0, got {init_value}')
        super().__init__(bits, signed, per_channel, num_channels, role)
        self.alpha = nn.Parameter(torch.tensor(float(init_value))) if role == 'act' else None  # ()
        self.initialized.fill_(True)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        if self.role == 'weight':
            return dorefa_weight(x, self.bits, self.per_channel)
        return pact_fake_quant(x, self.alpha, self.bits, bool(self.signed))

    def clip_bounds(self, x: torch.Tensor):
        """[-alpha, alpha] (signed) or [0, alpha]; ``None`` for weights (DoReFa's tanh form never clips)."""
        if self.role == 'weight':
            return None
        a = self.alpha.detach()  # ()
        return (-a if self.signed else torch.zeros_like(a)), a
