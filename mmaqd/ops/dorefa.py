"""DoReFa-Net quantization (Zhou et al., arXiv 1606.06160), eq. 9 (weights) and the clipped activation of
section 2.3, as stateless functions (:class:`mmaqd.quantization.quantizers.DoReFa` holds no state either).

quantize_k(r) = round((2^k - 1) * r) / (2^k - 1) on r in [0, 1], straight-through gradient.

* weights: w_hat = tanh(w) / (2 * max|tanh(w)|) + 0.5, out = 2 * quantize_k(w_hat) - 1, in [-1, 1] (the max per
  output channel when ``per_channel``; the following BN absorbs the scale).
* unsigned activations: out = quantize_k(clip(x, 0, 1)).
* signed activations (not in the paper; mmaqd's extension): out = 2 * quantize_k((clip(x, -1, 1) + 1) / 2) - 1,
  the weight grid on [-1, 1], which has no zero level.
"""
import torch

from .checks import broadcast_dim0, check_bits
from .ste import round_ste

__all__ = ['quantize_unit', 'dorefa_weight', 'dorefa_act']


def quantize_unit(r: torch.Tensor, bits: int) -> torch.Tensor:
    """quantize_k: r in [0, 1] to the 2^k levels i / (2^k - 1), straight-through."""
    q = 2 ** check_bits(bits) - 1
    return round_ste(r * q) / q  # same shape as r


def dorefa_weight(w: torch.Tensor, bits: int, per_channel: bool) -> torch.Tensor:
    """DoReFa eq. 9: tanh-normalized weight quantized to k bits on [-1, 1]."""
    t = torch.tanh(w)  # same shape as w
    if per_channel:
        m = broadcast_dim0(t.abs().reshape(t.shape[0], -1).amax(dim=1), t)  # (C, 1, ..., 1)
    else:
        m = t.abs().amax()  # ()
    w_hat = t / (2 * m.clamp_min(1e-12)) + 0.5  # in [0, 1]
    return 2 * quantize_unit(w_hat, bits) - 1


def dorefa_act(x: torch.Tensor, bits: int, signed: bool) -> torch.Tensor:
    """The clipped activation: quantize_k(clip(x, 0, 1)), or the weight grid on [-1, 1] when ``signed``."""
    if signed:
        return 2 * quantize_unit((x.clamp(-1, 1) + 1) / 2, bits) - 1
    return quantize_unit(x.clamp(0, 1), bits)
