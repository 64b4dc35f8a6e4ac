"""A fixed-grid test quantizer, registered as ``UniformTestQ``, so layer and conversion tests do not depend
on any real quantizer's initialisation."""
import torch
from torch import nn

from mmaqd.quantization.quantizers.base import BaseQuantizer
from mmaqd.quantization.registry import QUANTIZERS

UT = 'UniformTestQ'


def ref_q(x, bits, signed, s):
    """Round to the grid of step ``s``: signed levels -2^(k-1)..2^(k-1)-1, unsigned 0..2^k-1."""
    lo, hi = (-2 ** (bits - 1), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
    return torch.clamp(torch.round(x / s), lo, hi) * s


@QUANTIZERS.register_module(name=UT, force=True)
class UniformTestQ(BaseQuantizer):
    """Fixed grid with step ``scale`` (see :func:`ref_q`)."""

    def __init__(self, bits, signed=False, per_channel=False, num_channels=None, role=None, scale=0.1):
        super().__init__(bits, signed, per_channel, num_channels, role)
        self.scale = nn.Parameter(torch.full(self.param_shape, float(scale)))  # () or (C,)

    def quantize(self, x):
        return ref_q(x, self.bits, self.signed, self.broadcast(self.scale, x))
