"""Low-level differentiable quantization ops (torch only): the LIQ fake-quant (aqd.md eq. 3-7) and a
straight-through round."""
from .liq import liq_fake_quant, round_ste

__all__ = ['liq_fake_quant', 'round_ste']
