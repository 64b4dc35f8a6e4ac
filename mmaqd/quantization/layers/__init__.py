"""Quantized layers: fake-quantized conv / linear (with an optional output quantizer), conv with a folded BN,
quantized add."""
from .conv_bn import FoldedBN, QConvBN, folded_convs, set_bn_frozen
from .mixin import QuantLayerMixin, build_role_quantizer
from .qadd import Add, QAdd
from .qconv import QConv2d
from .qlinear import QLinear

__all__ = ['Add', 'QConv2d', 'QLinear', 'QAdd', 'QuantLayerMixin', 'build_role_quantizer', 'FoldedBN', 'QConvBN',
           'folded_convs', 'set_bn_frozen']
