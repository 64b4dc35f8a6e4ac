"""Quantizers, quantized layers and model conversion (torch + mmengine only; no mmdet import)."""
from .bops import BopsReport, LayerBops, count_bops  # noqa: F401
from .config import QuantConfig  # noqa: F401
from .convert import DEFAULT_LAYER_MAP, FoldRules, LayerRule, quantize_model  # noqa: F401
from .layers import (FoldedBN, QAdd, QConv2d, QConvBN, QLinear, QuantLayerMixin, build_role_quantizer,  # noqa: F401
                     folded_convs, set_bn_frozen)
from .mode import quantization_disabled, quantizers, set_quantization  # noqa: F401
from .quantizers import *  # noqa: F401,F403
from .registry import QUANTIZERS, build_quantizer, registered_quantizers  # noqa: F401
from .report import quantization_table  # noqa: F401
from .weight_reuse import reuse_quantized_weights  # noqa: F401
