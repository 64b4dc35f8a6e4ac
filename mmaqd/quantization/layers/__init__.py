"""Quantized layers: fake-quantized conv / linear, quantized add, and the input quantizer."""
from .input_quant import InputQuantizer
from .mixin import QuantLayerMixin, build_role_quantizer
from .qadd import Add, QAdd
from .qconv import QConv2d
from .qlinear import QLinear

__all__ = ['Add', 'QConv2d', 'QLinear', 'QAdd', 'InputQuantizer', 'QuantLayerMixin',
           'build_role_quantizer']
