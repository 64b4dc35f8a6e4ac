"""DoReFa-Net quantization (Zhou et al., arXiv 1606.06160), eq. 9 (weights) and the clipped activation of
section 2.3; the maths is :mod:`mmaqd.ops.dorefa` (:func:`~mmaqd.ops.dorefa_weight`, :func:`~mmaqd.ops.dorefa_act`).

Nothing is learned or initialised from data (``initialized`` is true from construction).
"""
from typing import Optional

import torch

from ...ops.dorefa import dorefa_act, dorefa_weight, quantize_unit
from ..registry import QUANTIZERS
from .base import BaseQuantizer
from .utils import resolve_role

__all__ = ['DoReFa', 'dorefa_weight', 'dorefa_act', 'quantize_unit']


@QUANTIZERS.register_module()
class DoReFa(BaseQuantizer):
    """DoReFa quantizer.

    Args:
        bits, signed, per_channel, num_channels: see :class:`BaseQuantizer` (per channel: weights only).
        role: ``'weight'`` (tanh form, signed), ``'act'`` (clip form) or ``None`` (``'weight'`` iff
            ``per_channel``).
    """

    def __init__(self, bits: int, signed: Optional[bool] = False, per_channel: bool = False,
                 num_channels: Optional[int] = None, role: Optional[str] = None, *, mode: Optional[str] = None):
        role = resolve_role(role, per_channel, mode=mode, where=type(self).__name__)
        super().__init__(bits, signed, per_channel, num_channels, role)
        self.initialized.fill_(True)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        if self.role == 'weight':
            return dorefa_weight(x, self.bits, self.per_channel)
        return dorefa_act(x, self.bits, bool(self.signed))

    def clip_bounds(self, x: torch.Tensor):
        """[-1, 1] (signed) or [0, 1] for activations; ``None`` for weights (the tanh form never clips)."""
        if self.role == 'weight':
            return None
        one = torch.ones((), dtype=x.dtype, device=x.device)
        return (-one if self.signed else torch.zeros_like(one)), one
