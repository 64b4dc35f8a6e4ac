"""Quantizers, quantized layers and model conversion (torch + mmengine only; no mmdet import)."""
from .bops import BopsReport, LayerBops, count_bops  # noqa: F401
from .convert import QuantConfig, quantization_table, quantize_model  # noqa: F401
from .layers import (FoldedBN, QAdd, QConv2d, QConv2dOut, QConvBN, QLinear, QuantLayerMixin,  # noqa: F401
                     build_role_quantizer, folded_convs, set_bn_frozen)
from .mode import quantization_disabled, quantizers, set_quantization  # noqa: F401
from .quantizers import *  # noqa: F401,F403
from .registry import QUANTIZERS, build_quantizer, registered_quantizers  # noqa: F401
from .weight_reuse import reuse_quantized_weights  # noqa: F401
