"""PACT (Choi et al., arXiv 1805.06085), eq. 1-3, as a stateless function of the input and the learned clipping
level alpha (:class:`mmaqd.quantization.quantizers.PACT` owns alpha).

* unsigned: y = clip(x, 0, alpha), out = round(y * q / alpha) * alpha / q with q = 2^k - 1.
* signed (mmaqd's extension): y = clip(x, -alpha, alpha), out = round(y * n / alpha) * alpha / n with
  n = 2^(k-1) - 1, a symmetric grid with an exact zero (2^k - 1 levels).

Gradients as PACT eq. 3: the quantization step is straight-through, so d out / d x = 1 inside the clip range
and 0 outside, and d out / d alpha = 1 where x >= alpha (and -1 where x <= -alpha, signed), 0 inside.
"""
import torch

from .checks import check_bits
from .ste import ste

__all__ = ['pact_fake_quant']


def pact_fake_quant(x: torch.Tensor, alpha: torch.Tensor, bits: int, signed: bool) -> torch.Tensor:
    """PACT's clipped and quantized ``x`` (same shape and dtype); ``alpha`` is a scalar tensor > 0."""
    check_bits(bits)
    a = alpha.to(x.dtype)  # ()
    if signed:
        n = 2 ** (bits - 1) - 1
        y = torch.where(x >= a, a, torch.where(x <= -a, -a, x))  # clip(x, -a, a), same shape as x
    else:
        n = 2 ** bits - 1
        y = torch.where(x >= a, a, x.clamp(min=0))  # clip(x, 0, a), same shape as x
    return ste(torch.round(y * n / a) * a / n, y)  # value exactly the level; gradient of y (straight-through)
