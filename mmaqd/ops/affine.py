"""FQN's zero-point aligned asymmetric fake quant (FQN, Li et al., CVPR 2019, sections 3.2-3.4 and 3.6, eq. 2-6
and 8) as a stateless function; the ranges (calibrated percentiles, per-channel min / max) are the quantizer's
(:class:`mmaqd.quantization.quantizers.FQNAffine`).

Range [lb, ub] (widened to contain 0), delta = (ub - lb) / (2^k - 1) (eq. 4), zero point
z = clamp(round(-lb / delta), 0, 2^k - 1); the range is nudged to [-z delta, (2^k - 1 - z) delta] so that real 0
is the level z exactly (3.6, "zero-point alignment"). out = delta * (round((clamp(x, lb, ub) - lb) / delta) - z)
(eq. 2, 5, 6). STE (eq. 8): d out / d x = 1 for lo <= x <= hi (nudged range), 0 outside; the range gets no
gradient.
"""
import torch

from .checks import check_bits

__all__ = ['nudged_range', 'affine_fake_quant']


def nudged_range(lb: torch.Tensor, ub: torch.Tensor, bits: int, dtype: torch.dtype) -> tuple:
    """(delta, z, lo, hi) of the range [lb, ub] widened to contain 0 and nudged so that 0 is the level z (3.6);
    each shaped like lb / ub, in ``dtype``."""
    q = 2 ** check_bits(bits) - 1
    lb, ub = lb.to(dtype).clamp(max=0), ub.to(dtype).clamp(min=0)  # the range must contain 0
    delta = ((ub - lb) / q).clamp_min(torch.finfo(dtype).tiny)
    z = torch.round(-lb / delta).clamp(0, q)  # integer zero point
    return delta, z, -z * delta, (q - z) * delta  # nudged range [lo, hi], 0 is exactly level z


def affine_fake_quant(x: torch.Tensor, lb: torch.Tensor, ub: torch.Tensor, bits: int) -> torch.Tensor:
    """Zero-point aligned asymmetric fake quant of x with range [lb, ub] (scalars or broadcastable)."""
    delta, z, lo, hi = nudged_range(lb, ub, bits, x.dtype)
    xd = x.detach()
    xc = torch.maximum(torch.minimum(xd, hi), lo)  # clamp(x, lo, hi), same shape as x
    out = (torch.round((xc - lo) / delta) - z) * delta  # (x_I - z) * delta, eq. 2
    inside = ((xd >= lo) & (xd <= hi)).to(x.dtype)
    return out + (x - xd) * inside  # value exactly out; STE gradient inside, eq. 8
