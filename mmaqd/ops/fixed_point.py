"""Fixed-point requantization, exact in integers (torch only).

The integer-only inference scheme of Jacob et al., "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference" (CVPR 2018, arXiv 1712.05877), section 2.2, eq. 5-6, as gemmlowp and TFLite
implement it: a real multiplier M > 0 (or < 0) is stored as ``M = M0 * 2^shift`` with an int32 ``M0``,
``2^30 <= |M0| < 2^31``, and an int32 value ``t`` is scaled by

    SaturatingRoundingDoublingHighMul(t * 2^max(shift, 0), M0)   (the high 32 bits of 2 * t * M0, rounded)
    RoundingDivideByPOT(., max(-shift, 0))                        (an arithmetic right shift, rounded)

Both round to nearest as gemmlowp's ``fixedpoint.h`` does: the shift breaks ties away from zero, the high
multiply breaks the ties of a positive product upward and of a negative product toward zero. Every function here
computes in int64 on int tensors, so the results are exact and identical on every device; they are the reference
that compiled kernels are tested against.

``requantize`` is the whole output stage of a quantized layer: accumulator + bias -> scale -> + zero point ->
clamp to the output codes.
"""
import math
from typing import Tuple

import torch

__all__ = ['check_int32', 'quantize_multiplier', 'rounding_doubling_high_mul', 'rounding_divide_by_pot',
           'multiply_by_quantized_multiplier', 'requantize', 'MAX_RIGHT_SHIFT']

_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1
#: right shifts beyond 31 are allowed (tiny multipliers); the reference computes them in int64
MAX_RIGHT_SHIFT = 62


def check_int32(t: torch.Tensor, what: str) -> None:
    """Raise OverflowError when an int64 tensor holds a value outside int32 (a fixed-point kernel would wrap)."""
    if t.numel() and (int(t.max()) > _INT32_MAX or int(t.min()) < _INT32_MIN):
        raise OverflowError(f'{what} leaves int32: [{int(t.min())}, {int(t.max())}]')


def quantize_multiplier(real: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(M0, shift)``, int32 tensors of ``real``'s shape, with ``real ~= M0 * 2^(shift - 31)``.

    ``M0`` holds the sign and ``2^30 <= |M0| < 2^31`` (0 for a zero multiplier); ``shift`` is the power of two,
    positive for a left shift. The relative error of the multiplier is at most 2^-31.

    Raises:
        ValueError: a non-finite multiplier, or one outside [2^-(MAX_RIGHT_SHIFT), 2^31) in magnitude.
    """
    real = real.detach().to(torch.float64).cpu()
    if not torch.isfinite(real).all():
        raise ValueError(f'quantize_multiplier: non-finite multiplier(s): {real[~torch.isfinite(real)][:4].tolist()}')
    m0 = torch.zeros(real.shape, dtype=torch.int64)
    shift = torch.zeros(real.shape, dtype=torch.int64)
    flat_r, flat_m, flat_s = real.reshape(-1), m0.view(-1), shift.view(-1)
    for i, r in enumerate(flat_r.tolist()):
        if r == 0.0:
            continue
        mant, exp = math.frexp(abs(r))  # |r| = mant * 2^exp, mant in [0.5, 1)
        q = round(mant * (1 << 31))
        if q == 1 << 31:
            q, exp = 1 << 30, exp + 1
        if not -MAX_RIGHT_SHIFT <= exp <= 31:
            raise ValueError(f'quantize_multiplier: multiplier {r!r} is out of the supported range '
                             f'[2^-{MAX_RIGHT_SHIFT}, 2^31) in magnitude')
        flat_m[i] = q if r > 0 else -q
        flat_s[i] = exp
    return m0.to(torch.int32), shift.to(torch.int32)


def rounding_doubling_high_mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """gemmlowp ``SaturatingRoundingDoublingHighMul`` on int32-range int64 tensors (broadcast), in int64."""
    a, b = a.to(torch.int64), b.to(torch.int64)
    ab = a * b  # |ab| < 2^62
    nudge = torch.where(ab >= 0, torch.full_like(ab, 1 << 30), torch.full_like(ab, 1 - (1 << 30)))
    out = torch.div(ab + nudge, 1 << 31, rounding_mode='trunc')  # C++ integer division truncates toward zero
    overflow = (a == _INT32_MIN) & (b == _INT32_MIN)
    return torch.where(overflow, torch.full_like(out, _INT32_MAX), out)


def rounding_divide_by_pot(x: torch.Tensor, exponent: torch.Tensor) -> torch.Tensor:
    """gemmlowp ``RoundingDivideByPOT``: x / 2^exponent rounded to nearest, ties away from zero (int64)."""
    x = x.to(torch.int64)
    exponent = exponent.to(torch.int64)
    mask = (torch.ones_like(exponent) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0).to(torch.int64)
    return (x >> exponent) + (remainder > threshold).to(torch.int64)


def multiply_by_quantized_multiplier(x: torch.Tensor, m0: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """TFLite ``MultiplyByQuantizedMultiplier``: ``round(x * M0 * 2^(shift - 31))`` in gemmlowp's two roundings.

    ``x`` (any int dtype, values in int32 range after the left shift), ``m0`` / ``shift`` broadcast against it.
    Returns int64.
    """
    shift = shift.to(torch.int64)
    left = shift.clamp(min=0)
    right = (-shift).clamp(min=0)
    return rounding_divide_by_pot(rounding_doubling_high_mul(x.to(torch.int64) << left, m0), right)


def requantize(acc: torch.Tensor, m0: torch.Tensor, shift: torch.Tensor, bias=None, zero_point: int = 0,
               qmin: int = 0, qmax: int = 255, channel_dim: int = 1) -> torch.Tensor:
    """Output codes ``clamp(MultiplyByQuantizedMultiplier(acc + bias, M0, shift) + zero_point, qmin, qmax)``.

    Args:
        acc: int32/int64 accumulators, e.g. (N, C, H, W).
        m0, shift: int32, one per channel along ``channel_dim`` ((C,)) or a scalar.
        bias: int32 (C,) in accumulator units, or ``None``.
        zero_point, qmin, qmax: ints; the clamp is a fused ReLU when ``qmin`` is the code of 0.
        channel_dim: the dim of ``acc`` that ``m0``, ``shift`` and ``bias`` run along.

    Returns:
        int32 codes, same shape as ``acc``.
    """
    view = [1] * acc.dim()
    if acc.dim():
        view[channel_dim] = -1

    def per_channel(t):
        t = torch.as_tensor(t, device=acc.device)
        return t.reshape(view) if t.dim() == 1 else t

    t = acc.to(torch.int64)
    if bias is not None:
        t = t + per_channel(bias).to(torch.int64)
    check_int32(t, 'requantize: accumulator + bias')
    out = multiply_by_quantized_multiplier(t, per_channel(m0), per_channel(shift)) + int(zero_point)
    return out.clamp_(int(qmin), int(qmax)).to(torch.int32)
