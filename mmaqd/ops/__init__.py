"""Low-level ops (torch only). For training, the stateless quantize functions with their gradients: LIQ with its
eq. 6-7 gradients (AQD, arXiv 2007.06919), FQN's affine fake quant, DoReFa, PACT, and the straight-through round and
gradient scaling they are built from, all sharing one bit-width check and one per-channel broadcast
(``checks.py``). For integer-only inference, fixed-point requantization, weight packing and
the integer conv and add, each an exact PyTorch reference, run by the compiled kernels of ``mmaqd/ops/csrc`` when
the extension is built (:func:`active_path` says which)."""
from .affine import affine_fake_quant, nudged_range
from .checks import MAX_BITS, MIN_BITS, broadcast_dim0, check_bits
from .dorefa import dorefa_act, dorefa_weight, quantize_unit
from .extension import active_path, cuda_ops_available, extension_available  # noqa: F401
from .fixed_point import (multiply_by_quantized_multiplier, quantize_multiplier, requantize,  # noqa: F401
                          rounding_divide_by_pot, rounding_doubling_high_mul)
from .liq import liq_fake_quant
from .packing import codes_to_values, field_bits, pack_codes, unpack_codes, values_to_codes  # noqa: F401
from .pact import pact_fake_quant
from .quant_conv import (prepack_conv_weight, quant_add, quant_add_reference, quant_conv2d,  # noqa: F401
                         quant_conv2d_reference, requantize_values)
from .ste import round_ste, scale_grad, ste

__all__ = [
    # quantize functions for training (fake quant) and their shared checks
    'liq_fake_quant', 'affine_fake_quant', 'nudged_range', 'dorefa_weight', 'dorefa_act', 'quantize_unit',
    'pact_fake_quant', 'round_ste', 'scale_grad', 'ste', 'MIN_BITS', 'MAX_BITS', 'check_bits', 'broadcast_dim0',
    # integer-only inference
    'quantize_multiplier', 'requantize', 'multiply_by_quantized_multiplier', 'rounding_doubling_high_mul',
    'rounding_divide_by_pot', 'pack_codes', 'unpack_codes', 'field_bits', 'codes_to_values', 'values_to_codes',
    'quant_conv2d', 'quant_conv2d_reference', 'quant_add', 'prepack_conv_weight', 'quant_add_reference',
    'requantize_values', 'extension_available', 'cuda_ops_available', 'active_path']
