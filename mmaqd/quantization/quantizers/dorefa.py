"""DoReFa-Net quantization (Zhou et al., 2016), eq. 9 (weights) and the clipped activation of section 2.3.

quantize_k(r) = round((2^k - 1) * r) / (2^k - 1) on r in [0, 1], straight-through gradient.

* weights: w_hat = tanh(w) / (2 * max|tanh(w)|) + 0.5, out = 2 * quantize_k(w_hat) - 1, in [-1, 1] (the max per
  output channel when ``per_channel``; the following BN absorbs the scale).
* unsigned activations: out = quantize_k(clip(x, 0, 1)).
* signed activations (not in the paper; mmaqd's extension): out = 2 * quantize_k((clip(x, -1, 1) + 1) / 2) - 1,
  the weight grid on [-1, 1], which has no zero level.

Nothing is learned or initialised from data (``initialized`` is true from construction).
"""
from typing import Optional

import torch

from ...ops import round_ste
from ..registry import QUANTIZERS
from .base import BaseQuantizer
from .utils import resolve_mode


def quantize_unit(r: torch.Tensor, bits: int) -> torch.Tensor:
    """quantize_k: r in [0, 1] to the 2^k levels i / (2^k - 1), straight-through."""
    q = 2 ** bits - 1
    return round_ste(r * q) / q  # same shape as r


def dorefa_weight(w: torch.Tensor, bits: int, per_channel: bool) -> torch.Tensor:
    """DoReFa eq. 9: tanh-normalized weight quantized to k bits on [-1, 1]."""
    t = torch.tanh(w)  # same shape as w
    if per_channel:
        m = t.abs().reshape(t.shape[0], -1).amax(dim=1).view((-1,) + (1,) * (t.dim() - 1))  # (C, 1, ..., 1)
    else:
        m = t.abs().amax()  # ()
    w_hat = t / (2 * m.clamp_min(1e-12)) + 0.5  # in [0, 1]
    return 2 * quantize_unit(w_hat, bits) - 1


@QUANTIZERS.register_module()
class DoReFa(BaseQuantizer):
    """DoReFa quantizer.

    Args:
        bits, signed, per_channel, num_channels: see :class:`BaseQuantizer` (per channel: weights only).
        mode: ``'weight'`` (tanh form, signed), ``'act'`` (clip form) or ``None`` (``'weight'`` iff
            ``per_channel``).
    """

    def __init__(self, bits: int, signed: Optional[bool] = False, per_channel: bool = False,
                 num_channels: Optional[int] = None, mode: Optional[str] = None):
        mode = resolve_mode(mode, per_channel)
        super().__init__(bits, signed, per_channel, num_channels, mode)
        self.initialized.fill_(True)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == 'weight':
            return dorefa_weight(x, self.bits, self.per_channel)
        if self.signed:
            return 2 * quantize_unit((x.clamp(-1, 1) + 1) / 2, self.bits) - 1
        return quantize_unit(x.clamp(0, 1), self.bits)

    def clip_bounds(self, x: torch.Tensor):
        """[-1, 1] (signed) or [0, 1] for activations; ``None`` for weights (the tanh form never clips)."""
        if self.mode == 'weight':
            return None
        one = torch.ones((), dtype=x.dtype, device=x.device)
        return (-one if self.signed else torch.zeros_like(one)), one
