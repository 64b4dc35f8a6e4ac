"""Quantizers, quantized layers and model conversion (torch + mmengine only; no mmdet import)."""
from .convert import QuantConfig, quantization_table, quantize_model  # noqa: F401
from .layers import InputQuantizer, QAdd, QConv2d, QLinear, QuantLayerMixin, build_role_quantizer  # noqa: F401
from .mode import quantization_disabled, quantizers, set_quantization  # noqa: F401
from .quantizers import *  # noqa: F401,F403
from .registry import QUANTIZERS, build_quantizer, registered_quantizers  # noqa: F401
