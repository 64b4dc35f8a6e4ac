"""The integer-inference ops of mmaqd.ops (fixed_point, packing, quant_conv) against independent references:
exact rational arithmetic (fractions.Fraction) for quantize_multiplier and the requantization, a pure-Python
integer transcription of gemmlowp's SaturatingRoundingDoublingHighMul and RoundingDivideByPOT (with hand-computed
literals), byte-level expectations for the weight packing, float64 ``torch.nn.functional.conv2d`` references for
quant_conv2d (integer accumulator, offset term, requantized output, and end to end against a real-valued conv of
the dequantized weights and inputs), and exact real-valued rescaling for quant_add. All inputs are small, seeded
and on the CPU."""
import itertools
import math
import re
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F

from mmaqd.ops import (codes_to_values, field_bits, multiply_by_quantized_multiplier, pack_codes, quant_add,
                       quant_conv2d, quant_conv2d as _quant_conv2d, quantize_multiplier, requantize,
                       rounding_divide_by_pot, rounding_doubling_high_mul, unpack_codes, values_to_codes)

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
DEVICES = ['cpu', pytest.param('cuda', marks=pytest.mark.skipif(not torch.cuda.is_available(), reason='no GPU'))]


# ----------------------------------------------------------------------------------------------------------------
# pure-Python references
# ----------------------------------------------------------------------------------------------------------------

def _trunc_div(n: int, d: int) -> int:
    """n / d truncated toward zero (C++ integer division), d > 0."""
    q = abs(n) // d
    return q if n >= 0 else -q


def ref_srdhm(a: int, b: int) -> int:
    """gemmlowp SaturatingRoundingDoublingHighMul on Python ints."""
    if a == INT32_MIN and b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    return _trunc_div(ab + nudge, 1 << 31)


def ref_rdbpot(x: int, e: int) -> int:
    """gemmlowp RoundingDivideByPOT on Python ints (& and >> act on two's complement, as in C++)."""
    mask = (1 << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if remainder > threshold else 0)


def ref_mbqm(x: int, m0: int, shift: int) -> int:
    """TFLite MultiplyByQuantizedMultiplier composed from the two references above."""
    return ref_rdbpot(ref_srdhm(x * (1 << max(shift, 0)), m0), max(-shift, 0))


def round_half_away(r: Fraction) -> int:
    """Exact round to nearest, ties away from zero."""
    f = math.floor(abs(r) + Fraction(1, 2))
    return f if r >= 0 else -f


def tie_distance(r: Fraction) -> Fraction:
    """Distance of r from the nearest half-integer (k + 1/2): 0 at a rounding tie."""
    return abs(r - math.floor(r) - Fraction(1, 2))


def exact_multiplier(m0: int, shift: int) -> Fraction:
    return Fraction(m0) * Fraction(2) ** (shift - 31)


def qm(real) -> tuple:
    """quantize_multiplier of python float(s) -> (m0, shift) int32 tensors."""
    return quantize_multiplier(torch.tensor(real, dtype=torch.float64))


# ----------------------------------------------------------------------------------------------------------------
# 1. quantize_multiplier
# ----------------------------------------------------------------------------------------------------------------

REALS = [1e-6, 0.3, 0.5, 0.75, 1.0, 1.5, 1000.0, 2.0 ** -40, 123456.789, 2.0 ** 31 * 0.75, 1.0 / 3,
         -1e-6, -0.3, -0.5, -1.0, -1.5, -1000.0, 0.0]


def test_quantize_multiplier_represents_real_within_2_pow_minus_31():
    m0, shift = qm(REALS)
    assert m0.dtype == torch.int32 and shift.dtype == torch.int32 and m0.shape == (len(REALS),)
    for r, m, s in zip(REALS, m0.tolist(), shift.tolist()):
        if r == 0.0:
            assert m == 0, 'a zero multiplier gives M0 = 0'
            continue
        assert (1 << 30) <= abs(m) < (1 << 31), (r, m)
        assert (m > 0) == (r > 0), 'the sign is carried by M0'
        approx = exact_multiplier(m, s)
        assert abs(approx - Fraction(r)) <= abs(Fraction(r)) * Fraction(1, 1 << 31), (r, m, s)


def test_quantize_multiplier_known_values_and_shape():
    m0, shift = qm([[0.5, 0.75], [1.0, -1.5]])
    assert m0.shape == (2, 2) and shift.shape == (2, 2)
    # 0.5 = 2^30 * 2^(0 - 31); 0.75 = 3 * 2^29 * 2^-31; 1.0 = 2^30 * 2^(1 - 31); -1.5 = -3 * 2^29 * 2^(1 - 31)
    assert m0.tolist() == [[1 << 30, 3 << 29], [1 << 30, -(3 << 29)]]
    assert shift.tolist() == [[0, 0], [1, 1]]
    m0, shift = qm(1e-6)  # a 0-dim input gives 0-dim outputs
    assert m0.dim() == 0 and shift.dim() == 0
    # 1e-6 = 0.524288 * 2^-19: shift -19
    assert int(shift) == -19


def test_quantize_multiplier_mantissa_rounding_up_to_2_pow_31():
    r = 1.0 - 2.0 ** -40  # frexp: mantissa 1 - 2^-40, exp 0; mantissa * 2^31 rounds to 2^31
    m0, shift = qm([r, -r])
    assert m0.tolist() == [1 << 30, -(1 << 30)]
    assert shift.tolist() == [1, 1]  # one more than frexp's exponent 0
    assert abs(exact_multiplier(1 << 30, 1) - Fraction(r)) <= Fraction(r) * Fraction(1, 1 << 31)


@pytest.mark.parametrize('bad', [float('inf'), float('-inf'), float('nan')])
def test_quantize_multiplier_non_finite_raises(bad):
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        qm([0.5, bad])


@pytest.mark.parametrize('bad', [2.0 ** 40, -(2.0 ** 40), 2.0 ** 31, 2.0 ** -70, -(2.0 ** -70)])
def test_quantize_multiplier_out_of_range_raises(bad):
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        qm([0.5, bad])


def test_quantize_multiplier_range_limits_accepted():
    big = 2.0 ** 31 * (1 - 2.0 ** -30)  # just below 2^31, mantissa does not round up
    m0, shift = qm([big, 2.0 ** -62])
    assert shift.tolist() == [31, -61]
    assert exact_multiplier(int(m0[0]), 31) == Fraction(big)
    assert exact_multiplier(int(m0[1]), -61) == Fraction(2) ** -62


# ----------------------------------------------------------------------------------------------------------------
# 2. rounding_doubling_high_mul and rounding_divide_by_pot
# ----------------------------------------------------------------------------------------------------------------

def _srdhm(a: int, b: int) -> int:
    return int(rounding_doubling_high_mul(torch.tensor(a), torch.tensor(b)))


def _rdbpot(x: int, e: int) -> int:
    return int(rounding_divide_by_pot(torch.tensor(x), torch.tensor(e)))


def test_rounding_doubling_high_mul_literals():
    # (2^30 * 2^30 + 2^30) / 2^31 = 2^29 + 1/2 -> truncated: 2^29
    assert _srdhm(1 << 30, 1 << 30) == 1 << 29
    # 3 * 2^30 = 1.5 * 2^31; (3 * 2^30 + 2^30) / 2^31 = 2 exactly: 1.5 -> 2 (positive tie away from zero)
    assert _srdhm(3, 1 << 30) == 2
    # ab = -3 * 2^30, nudge = 1 - 2^30: (-4 * 2^30 + 1) / 2^31 = -2 + 2^-31 -> truncated toward zero: -1.
    # The exact value -1.5 goes to -1: gemmlowp rounds a negative tie toward zero (i.e. toward +inf).
    assert _srdhm(-3, 1 << 30) == -1
    # (-2^30 + 1 - 2^30) / 2^31 = -1 + 2^-31 -> 0 (exact value -0.5)
    assert _srdhm(-1, 1 << 30) == 0
    assert _srdhm(1, 1 << 30) == 1  # exact 0.5: (2^30 + 2^30) / 2^31 = 1
    # exact -2.5: (-5 * 2^30 + 1 - 2^30) / 2^31 = -3 + 2^-31 -> -2
    assert _srdhm(-5, 1 << 30) == -2
    # exact -2.75 = -11 * 2^29 / 2^31: (-11 * 2^29 + 1 - 2^30) / 2^31 = -3.25 + 2^-31 -> -3
    assert _srdhm(-11, 1 << 29) == -3
    assert _srdhm(INT32_MIN, INT32_MIN) == INT32_MAX  # the one saturating case
    # (2^31 - 1)^2 = 2^62 - 2^32 + 1; + 2^30, / 2^31 = 2^31 - 2 + (2^30 + 1) / 2^31 -> 2^31 - 2
    assert _srdhm(INT32_MAX, INT32_MAX) == INT32_MAX - 1
    # -2^31 (2^31 - 1) = -2^62 + 2^31; + 1 - 2^30, / 2^31 = -2^31 + 1/2 + 2^-31 -> -2^31 + 1
    assert _srdhm(INT32_MIN, INT32_MAX) == INT32_MIN + 1
    assert _srdhm(INT32_MAX, INT32_MIN) == INT32_MIN + 1
    assert _srdhm(0, INT32_MIN) == 0


def test_rounding_doubling_high_mul_matches_gemmlowp_reference():
    g = torch.Generator().manual_seed(0)
    edges = [0, 1, -1, 2, -2, 3, -3, 5, -5, 1 << 30, -(1 << 30), (1 << 30) + 1, INT32_MIN, INT32_MIN + 1,
             INT32_MAX, INT32_MAX - 1, 12345, -12345]
    pairs = list(itertools.product(edges, edges))
    big = torch.randint(INT32_MIN, INT32_MAX + 1, (2, 3000), generator=g, dtype=torch.int64)
    small = torch.randint(-(1 << 16), 1 << 16, (1, 1000), generator=g, dtype=torch.int64)
    mult = torch.randint(1 << 30, 1 << 31, (1, 1000), generator=g, dtype=torch.int64)
    pairs += list(zip(*big.tolist())) + list(zip(small[0].tolist(), mult[0].tolist()))
    pairs += [(b, a) for a, b in pairs[-1000:]]
    a = torch.tensor([p[0] for p in pairs], dtype=torch.int64)
    b = torch.tensor([p[1] for p in pairs], dtype=torch.int64)
    got = rounding_doubling_high_mul(a, b)
    assert got.dtype == torch.int64
    expected = [ref_srdhm(x, y) for x, y in pairs]
    assert got.tolist() == expected
    # int32 operands give the same result as int64 ones
    assert rounding_doubling_high_mul(a.to(torch.int32), b.to(torch.int32)).tolist() == expected


def test_rounding_doubling_high_mul_broadcasts():
    a = torch.tensor([[3], [-3], [7]])
    b = torch.tensor([1 << 30, 1 << 29])
    got = rounding_doubling_high_mul(a, b)
    assert got.shape == (3, 2)
    assert got.tolist() == [[ref_srdhm(x, y) for y in (1 << 30, 1 << 29)] for x in (3, -3, 7)]


def test_rounding_divide_by_pot_literals():
    assert _rdbpot(5, 1) == 3  # 2.5 -> 3
    assert _rdbpot(-5, 1) == -3  # -2.5 -> -3
    assert _rdbpot(6, 2) == 2  # 1.5 -> 2
    assert _rdbpot(-6, 2) == -2  # -1.5 -> -2
    assert _rdbpot(7, 2) == 2  # 1.75
    assert _rdbpot(-7, 2) == -2
    assert _rdbpot(5, 2) == 1  # 1.25
    assert _rdbpot(-5, 2) == -1
    assert _rdbpot(1, 1) == 1 and _rdbpot(-1, 1) == -1  # +-0.5 away from zero
    assert _rdbpot(-1, 2) == 0  # -0.25
    for x in (0, 1, -1, 17, -17, INT32_MIN, INT32_MAX):
        assert _rdbpot(x, 0) == x  # shift 0 is the identity
    assert _rdbpot(INT32_MAX, 31) == 1  # 0.99999...
    assert _rdbpot(INT32_MIN, 31) == -1
    assert _rdbpot(1 << 30, 31) == 1  # 0.5
    assert _rdbpot(-(1 << 30), 31) == -1  # -0.5
    assert _rdbpot((1 << 30) - 1, 31) == 0
    assert _rdbpot(-(1 << 30) + 1, 31) == 0


def test_rounding_divide_by_pot_matches_gemmlowp_reference():
    g = torch.Generator().manual_seed(1)
    edges_x = [0, 1, -1, 2, -2, 3, -3, 5, -5, 6, -6, 7, -7, 1 << 30, -(1 << 30), INT32_MIN, INT32_MAX]
    cases = [(x, e) for x in edges_x for e in (0, 1, 2, 3, 30, 31)]
    x = torch.randint(INT32_MIN, INT32_MAX + 1, (3000,), generator=g, dtype=torch.int64)
    e = torch.randint(0, 32, (3000,), generator=g, dtype=torch.int64)
    cases += list(zip(x.tolist(), e.tolist()))
    # exact ties k * 2^e + 2^(e-1), both signs
    k = torch.randint(-1000, 1000, (500,), generator=g, dtype=torch.int64).tolist()
    et = torch.randint(1, 20, (500,), generator=g, dtype=torch.int64).tolist()
    cases += [(kk * (1 << ee) + (1 << (ee - 1)), ee) for kk, ee in zip(k, et)]
    # int64 values with right shifts beyond 31 (tiny multipliers)
    cases += [(v, s) for v in (INT32_MAX << 20, INT32_MIN << 20, 3 << 40, -(3 << 40)) for s in (40, 41, 52, 62)]
    xs = torch.tensor([c[0] for c in cases], dtype=torch.int64)
    es = torch.tensor([c[1] for c in cases], dtype=torch.int64)
    got = rounding_divide_by_pot(xs, es)
    assert got.dtype == torch.int64
    assert got.tolist() == [ref_rdbpot(a, b) for a, b in cases]
    # and it is round-half-away-from-zero of the exact quotient
    assert got.tolist() == [round_half_away(Fraction(a, 1 << b)) for a, b in cases]


def test_rounding_divide_by_pot_broadcasts_exponent():
    x = torch.tensor([[-6], [6], [11]])
    e = torch.tensor([0, 1, 2], dtype=torch.int32)
    assert rounding_divide_by_pot(x, e).tolist() == [[-6, -3, -2], [6, 3, 2], [11, 6, 3]]


# ----------------------------------------------------------------------------------------------------------------
# 3. multiply_by_quantized_multiplier and requantize
# ----------------------------------------------------------------------------------------------------------------

def _check_mbqm(xs, m0s, shifts, got):
    """got == two-step gemmlowp reference; within 1 of the exact rounding; equal to it away from ties."""
    n_far = 0
    for x, m, s, y in zip(xs, m0s, shifts, got):
        assert y == ref_mbqm(x, m, s), (x, m, s)
        exact = Fraction(x) * exact_multiplier(m, s)
        r = round_half_away(exact)
        assert abs(y - r) <= 1, (x, m, s, y, exact)
        right = max(-s, 0)
        far = tie_distance(exact) > 0 if right == 0 else tie_distance(exact) > Fraction(1, 1 << (right + 1))
        if far:
            n_far += 1
            assert y == r, (x, m, s, y, exact)
    return n_far


def test_multiply_by_quantized_multiplier_against_exact_rounding():
    g = torch.Generator().manual_seed(2)
    n = 2000
    log2 = torch.rand(n, generator=g, dtype=torch.float64) * 44 - 40  # multipliers 2^-40 .. 2^4
    sign = torch.where(torch.rand(n, generator=g) < 0.3, -1.0, 1.0).to(torch.float64)
    m0, shift = quantize_multiplier(sign * torch.pow(2.0, log2))
    left = shift.clamp(min=0).to(torch.int64)
    lim = (INT32_MAX >> left)  # keep x << left in int32 range
    x = (torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1) * lim.to(torch.float64)
    x = x.round().to(torch.int64)
    x[:50] = torch.randint(-20, 20, (50,), generator=g)
    got = multiply_by_quantized_multiplier(x, m0, shift)
    assert got.dtype == torch.int64
    n_far = _check_mbqm(x.tolist(), m0.tolist(), shift.tolist(), got.tolist())
    assert n_far > 0.9 * n  # the equality check above was exercised


def test_multiply_by_quantized_multiplier_ties():
    # exact ties with a pure right shift: M0 = 2^30 (0.5), shift -2 -> multiplier 1/8; x = 8k + 4 -> k + 1/2
    xs = [4, -4, 12, -12, 20, -20]
    got = multiply_by_quantized_multiplier(torch.tensor(xs), torch.tensor(1 << 30), torch.tensor(-2))
    assert got.tolist() == [1, -1, 2, -2, 3, -3]  # ties away from zero, as RoundingDivideByPOT
    # with no right shift the only rounding is the high mul's: a negative tie goes toward zero
    got = multiply_by_quantized_multiplier(torch.tensor([3, -3, 5, -5]), torch.tensor(1 << 30), torch.tensor(0))
    assert got.tolist() == [2, -1, 3, -2]  # exact 1.5, -1.5, 2.5, -2.5
    _check_mbqm([3, -3, 5, -5], [1 << 30] * 4, [0] * 4, got.tolist())


def test_multiply_by_quantized_multiplier_left_shift_and_negative_multiplier():
    m0, shift = qm([3.7, -3.7, 1000.0])
    assert shift.tolist() == [2, 2, 10]
    x = torch.tensor([[1, -1, 100, -100, 12345, -54321]]).T
    got = multiply_by_quantized_multiplier(x, m0, shift)  # (6, 3) by broadcasting
    for i, xi in enumerate(x[:, 0].tolist()):
        for j, (r, m, s) in enumerate(zip([3.7, -3.7, 1000.0], m0.tolist(), shift.tolist())):
            exact = Fraction(xi) * exact_multiplier(m, s)
            assert int(got[i, j]) == round_half_away(exact)
            assert abs(int(got[i, j]) - xi * r) <= 0.5 + 1e-6 * abs(xi * r)
    assert int(multiply_by_quantized_multiplier(torch.tensor(100), m0[0], shift[0])) == 370


def _ref_requantize(acc, m0, shift, bias, zp, qmin, qmax):
    """(N, C, H, W) python reference, per channel along dim 1."""
    n, c, h, w = acc.shape
    out = torch.empty(acc.shape, dtype=torch.int64)
    for idx in itertools.product(range(n), range(c), range(h), range(w)):
        ch = idx[1]
        t = int(acc[idx]) + (int(bias[ch]) if bias is not None else 0)
        y = ref_mbqm(t, int(m0[ch]), int(shift[ch])) + zp
        out[idx] = min(max(y, qmin), qmax)
    return out


def test_requantize_per_channel_bias_zero_point_clamp():
    g = torch.Generator().manual_seed(3)
    acc = torch.randint(-50000, 50000, (2, 3, 3, 4), generator=g, dtype=torch.int32)
    bias = torch.tensor([1000, -20000, 0], dtype=torch.int32)
    m0, shift = qm([1.0 / 200, 1.0 / 3000, 2.0 / 5000])
    out = requantize(acc, m0, shift, bias, zero_point=100, qmin=0, qmax=255)
    assert out.dtype == torch.int32 and out.shape == acc.shape
    assert out.tolist() == _ref_requantize(acc, m0, shift, bias, 100, 0, 255).tolist()
    assert out.min() == 0 and out.max() == 255  # both clamps active
    # against exact rational arithmetic with the real multipliers
    reals = [Fraction(1, 200), Fraction(1, 3000), Fraction(2, 5000)]
    for idx in itertools.product(range(2), range(3), range(3), range(4)):
        ch = idx[1]
        exact = (int(acc[idx]) + int(bias[ch])) * exact_multiplier(int(m0[ch]), int(shift[ch]))
        y = min(max(round_half_away(exact) + 100, 0), 255)
        assert abs(int(out[idx]) - y) <= 1
        if tie_distance(exact) > Fraction(1, 1000):
            assert int(out[idx]) == y
            # the multiplier's relative error 2^-31 cannot move a value this far from a tie
            assert y == min(max(round_half_away((int(acc[idx]) + int(bias[ch])) * reals[ch]) + 100, 0), 255)
    # bias is really per channel along dim 1: shifting channel 1's bias moves only channel 1
    bias2 = bias.clone()
    bias2[1] += 3000 * 7  # + 7 output units exactly (multiplier ~ 1/3000)
    out2 = requantize(acc, m0, shift, bias2, zero_point=100, qmin=-10 ** 6, qmax=10 ** 6)
    out1 = requantize(acc, m0, shift, bias, zero_point=100, qmin=-10 ** 6, qmax=10 ** 6)
    assert torch.equal(out2[:, [0, 2]], out1[:, [0, 2]])
    assert ((out2[:, 1] - out1[:, 1]) == 7).all()


def test_requantize_no_bias_and_fused_relu():
    g = torch.Generator().manual_seed(4)
    acc = torch.randint(-3000, 3000, (1, 2, 5, 5), generator=g, dtype=torch.int64)
    m0, shift = qm([0.01, 0.02])
    zp = 10
    out = requantize(acc, m0, shift, None, zero_point=zp, qmin=zp, qmax=40)  # ReLU: qmin is the code of 0
    assert out.dtype == torch.int32
    assert out.tolist() == _ref_requantize(acc, m0, shift, None, zp, zp, 40).tolist()
    assert (out[acc < 0] == zp).all()
    assert (out >= zp).all() and (out > zp).any() and (out == 40).any()


def test_requantize_scalar_multiplier_and_left_shift():
    acc = torch.tensor([[[[-7, -3, 0, 2, 5, 100]]]], dtype=torch.int32)
    m0, shift = qm(2.5)
    assert m0.dim() == 0 and int(shift) == 2  # 2.5 = 0.625 * 2^2: a left shift
    out = requantize(acc, m0, shift, None, zero_point=3, qmin=-1000, qmax=1000)
    # 2.5 * x exactly: -17.5, -7.5, 0, 5, 12.5, 250; + 3 after rounding
    # -17.5 -> high mul of -7 << 2 = -28 by 0.625: -17.5, a negative tie of the high mul -> -17
    assert out.tolist() == [[[[-17 + 3, -7 + 3, 3, 8, 13 + 3, 253]]]]
    assert out.tolist() == [[[[ref_mbqm(v, int(m0), 2) + 3 for v in (-7, -3, 0, 2, 5, 100)]]]]
    # scalar bias tensor and channel_dim=0 with (C,) multipliers
    acc0 = torch.tensor([[10, 20], [10, 20]])
    m0c, shc = qm([0.5, 3.0])
    out0 = requantize(acc0, m0c, shc, torch.tensor([2, -4]), zero_point=0, qmin=-100, qmax=100, channel_dim=0)
    assert out0.tolist() == [[6, 11], [18, 48]]  # (10+2)*0.5, (20+2)*0.5; (10-4)*3, (20-4)*3


# ----------------------------------------------------------------------------------------------------------------
# 4. packing
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('bits', [1, 2, 3, 4, 5, 8])
@pytest.mark.parametrize('k', [1, 7, 8, 9])
def test_pack_unpack_round_trip_and_sizes(bits, k):
    g = torch.Generator().manual_seed(bits * 100 + k)
    q = (1 << bits) - 1
    codes = torch.randint(0, q + 1, (3, k), generator=g, dtype=torch.int64)
    codes[0, 0], codes[-1, -1] = 0, q
    packed = pack_codes(codes, bits)
    per_byte = {1: 4, 2: 4, 3: 2, 4: 2, 5: 1, 8: 1}[bits]
    assert packed.dtype == torch.uint8
    assert packed.shape == (3, math.ceil(k / per_byte))
    unpacked = unpack_codes(packed, bits, k)
    assert unpacked.dtype == torch.int32 and unpacked.shape == (3, k)
    assert torch.equal(unpacked, codes.to(torch.int32))
    # byte layout: code j of a row in field j % per_byte of byte j // per_byte, first code in the low bits
    fb = 8 // per_byte
    expected = [[sum(row[i] << (fb * (i - b * per_byte)) for i in range(b * per_byte, min(k, (b + 1) * per_byte)))
                 for b in range(packed.shape[1])] for row in codes.tolist()]
    assert packed.tolist() == expected


def test_pack_codes_literal_bytes():
    assert pack_codes(torch.tensor([[1, 2, 3, 0]]), 2).tolist() == [[1 | 2 << 2 | 3 << 4 | 0 << 6]]
    assert pack_codes(torch.tensor([[1, 2, 3, 0]]), 2).tolist() == [[57]]
    assert pack_codes(torch.tensor([[3, 3, 3, 3, 2]]), 2).tolist() == [[255, 2]]
    assert pack_codes(torch.tensor([[3, 10, 15]]), 4).tolist() == [[3 | 10 << 4, 15]]
    assert pack_codes(torch.tensor([[5, 7, 1]]), 3).tolist() == [[5 | 7 << 4, 1]]  # 3-bit codes in 4-bit fields
    assert pack_codes(torch.tensor([[0, 200, 255]]), 8).tolist() == [[0, 200, 255]]
    # rows start on a byte boundary
    assert pack_codes(torch.tensor([[1, 1, 1], [2, 2, 2]]), 4).tolist() == [[17, 1], [34, 2]]
    assert unpack_codes(torch.tensor([[57, 2]], dtype=torch.uint8), 2, 5).tolist() == [[1, 2, 3, 0, 2]]


@pytest.mark.parametrize('bits,bad', [(2, 4), (2, -1), (3, 8), (4, 16), (8, 256), (8, -1)])
def test_pack_codes_out_of_range_raises(bits, bad):
    codes = torch.tensor([[0, 1, bad]])
    with pytest.raises(ValueError):
        pack_codes(codes, bits)


def test_pack_codes_needs_2d():
    with pytest.raises(ValueError):
        pack_codes(torch.tensor([0, 1]), 2)


def test_field_bits():
    assert [field_bits(b) for b in range(1, 9)] == [2, 2, 4, 4, 8, 8, 8, 8]
    for bad in (0, 9, -1, True, False, 2.0, '4'):
        with pytest.raises(ValueError):
            field_bits(bad)


@pytest.mark.parametrize('bits', [1, 2, 3, 4, 8])
def test_codes_values_inverse(bits):
    q = (1 << bits) - 1
    codes = torch.arange(q + 1)
    v = codes_to_values(codes, q, True)
    assert v.dtype == torch.int32
    assert v.tolist() == [2 * c - q for c in range(q + 1)]
    assert all(x % 2 == 1 for x in v.tolist())  # odd values in [-q, q]
    assert values_to_codes(v, q, True).tolist() == codes.tolist()
    assert values_to_codes(v, q, True).dtype == torch.int32
    u = codes_to_values(codes, q, False)
    assert u.dtype == torch.int32 and u.tolist() == codes.tolist()
    assert values_to_codes(u, q, False).tolist() == codes.tolist()


def test_codes_to_values_q15_literals():
    assert codes_to_values(torch.tensor([0, 7, 8, 15]), 15, True).tolist() == [-15, -1, 1, 15]
    assert values_to_codes(torch.tensor([-15, -1, 1, 15]), 15, True).tolist() == [0, 7, 8, 15]


# ----------------------------------------------------------------------------------------------------------------
# 5. quant_conv2d
# ----------------------------------------------------------------------------------------------------------------

def _conv_case(seed, w_bits, groups, x_signed, c_in=4, c_out=4, ks=(3, 2), hw=(7, 6), q_x=15):
    """Random packed weight codes and integer inputs; returns (x, codes, packed, w_values float64, w_shape)."""
    g = torch.Generator().manual_seed(seed)
    q = (1 << w_bits) - 1
    w_shape = (c_out, c_in // groups) + tuple(ks)
    k = w_shape[1] * ks[0] * ks[1]
    codes = torch.randint(0, q + 1, (c_out, k), generator=g, dtype=torch.int64)
    packed = pack_codes(codes, w_bits)
    w_values = (2 * codes - q).to(torch.float64).view(w_shape)
    if x_signed:
        x = (2 * torch.randint(0, q_x + 1, (2, c_in) + hw, generator=g) - q_x).to(torch.int32)
    else:
        x = torch.randint(0, q_x + 1, (2, c_in) + hw, generator=g).to(torch.uint8)
    return g, x, packed, w_values, w_shape


@pytest.mark.parametrize('x_signed', [False, True])
@pytest.mark.parametrize('dilation', [1, 2])
@pytest.mark.parametrize('groups', [1, 2])
@pytest.mark.parametrize('padding', [0, 1])
@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('w_bits', [2, 3, 4, 8])
@pytest.mark.parametrize('device', DEVICES)
def test_quant_conv2d_against_float64_conv(w_bits, stride, padding, groups, dilation, x_signed, device):
    seed = ((((w_bits * 3 + stride) * 2 + padding) * 3 + groups) * 3 + dilation) * 2 + int(x_signed)
    g, x, packed, w_values, w_shape = _conv_case(seed, w_bits, groups, x_signed)
    conv = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)

    def quant_conv2d(x, packed, w_bits, w_shape, **kw):  # the op on `device`, its result back on the CPU
        kw = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
        return _quant_conv2d(x.to(device), packed.to(device), w_bits, w_shape, **kw).cpu()

    xf = x.to(torch.float64)
    a_ref = F.conv2d(xf, w_values, **conv)  # A = conv(x, 2c - q)
    s_ref = F.conv2d(xf, torch.ones_like(w_values), **conv)  # S per output channel (its group's inputs)
    a_ref, s_ref = a_ref.to(torch.int64), s_ref.to(torch.int64)
    c_out = w_shape[0]
    frac = 5
    w_offset = torch.randint(-64, 65, (c_out,), generator=g, dtype=torch.int64).to(torch.int32)
    bias = torch.randint(-2000, 2000, (c_out,), generator=g, dtype=torch.int64).to(torch.int32)

    # no offset, no requantization: the plain integer conv
    acc0 = quant_conv2d(x, packed, w_bits, w_shape, **conv)
    assert acc0.dtype == torch.int32 and acc0.shape == a_ref.shape
    assert torch.equal(acc0.to(torch.int64), a_ref)
    acc0f = quant_conv2d(x, packed, w_bits, w_shape, frac_bits=frac, **conv)
    assert torch.equal(acc0f.to(torch.int64), a_ref * 2 ** frac)

    # offset term and bias: acc = A * 2^F + mu~ * S (+ bias)
    acc_ref = a_ref * 2 ** frac + w_offset.to(torch.int64).view(1, -1, 1, 1) * s_ref
    acc = quant_conv2d(x, packed, w_bits, w_shape, w_offset=w_offset, frac_bits=frac, **conv)
    assert acc.dtype == torch.int32 and torch.equal(acc.to(torch.int64), acc_ref)
    accb = quant_conv2d(x, packed, w_bits, w_shape, w_offset=w_offset, frac_bits=frac, bias=bias, **conv)
    assert torch.equal(accb.to(torch.int64), acc_ref + bias.to(torch.int64).view(1, -1, 1, 1))

    # requantized output: per-channel multipliers mapping the accumulator range to about +-8 output units
    span = (acc_ref + bias.to(torch.int64).view(1, -1, 1, 1)).abs().amax(dim=(0, 2, 3)).clamp(min=1)
    real = 8.0 / span.to(torch.float64) * (0.8 + 0.4 * torch.rand(c_out, generator=g, dtype=torch.float64))
    m0, shift = quantize_multiplier(real)
    stage = dict(zero_point=8, qmin=0, qmax=15)
    codes_ref = requantize(acc_ref, m0, shift, bias, **stage)
    assert len(codes_ref.unique()) > 3
    out_u = quant_conv2d(x, packed, w_bits, w_shape, w_offset=w_offset, frac_bits=frac, bias=bias, multiplier=m0,
                         shift=shift, out_levels=15, out_signed=False, **stage, **conv)
    assert out_u.dtype == torch.int32 and torch.equal(out_u, codes_ref)
    out_s = quant_conv2d(x, packed, w_bits, w_shape, w_offset=w_offset, frac_bits=frac, bias=bias, multiplier=m0,
                         shift=shift, out_levels=15, out_signed=True, **stage, **conv)
    assert out_s.dtype == torch.int32 and torch.equal(out_s, 2 * codes_ref - 15)
    assert (out_s % 2 == 1).all() and out_s.min() >= -15 and out_s.max() <= 15
    # without offset the requantized output uses the plain accumulator
    out_n = quant_conv2d(x, packed, w_bits, w_shape, multiplier=m0, shift=shift, **stage, **conv)
    assert torch.equal(out_n, requantize(a_ref, m0, shift, None, **stage))


@pytest.mark.parametrize('groups', [1, 2])
def test_quant_conv2d_dequantizes_to_real_conv(groups):
    """acc / 2^F * s_w * s_x reproduces the float conv of the real weights s_w (v_w + mu) and inputs s_x v_x."""
    w_bits, frac = 4, 12
    g, x, packed, w_values, w_shape = _conv_case(77 + groups, w_bits, groups, True, q_x=7)
    conv = dict(stride=2, padding=1, dilation=1, groups=groups)
    c_out = w_shape[0]
    s_w = 0.01 + 0.05 * torch.rand(c_out, generator=g, dtype=torch.float64)
    s_x = 0.037
    # mu exactly on the 2^-F grid: the accumulator is exact
    mu_grid = torch.randint(-3 << frac, 3 << frac, (c_out,), generator=g, dtype=torch.int64)
    # and a general real mu, rounded to the grid
    mu_real = (torch.rand(c_out, generator=g, dtype=torch.float64) - 0.5) * 4
    for mu, exact in ((mu_grid.to(torch.float64) / 2 ** frac, True), (mu_real, False)):
        mu_t = torch.round(mu * 2 ** frac).to(torch.int32)
        acc = quant_conv2d(x, packed, w_bits, w_shape, w_offset=mu_t, frac_bits=frac, **conv)
        unit = (s_w * s_x).view(1, -1, 1, 1)
        deq = acc.to(torch.float64) / 2 ** frac * unit
        w_real = s_w.view(-1, 1, 1, 1) * (w_values + mu.view(-1, 1, 1, 1))
        x_real = s_x * x.to(torch.float64)
        ref = F.conv2d(x_real, w_real, **conv)
        tol = 1e-9 * ref.abs().max()
        if exact:
            assert torch.allclose(deq, ref, rtol=1e-9, atol=float(tol))
        else:
            s = F.conv2d(x.to(torch.float64), torch.ones_like(w_values), **conv)
            bound = s.abs() * 2.0 ** -(frac + 1) * unit
            assert ((deq - ref).abs() <= bound + tol).all()
            assert (deq - ref).abs().max() > 0  # mu was not on the grid: the bound is what is tested
            # and without the offset term the error would be far larger
            acc0 = quant_conv2d(x, packed, w_bits, w_shape, frac_bits=frac, **conv)
            assert ((acc0.to(torch.float64) / 2 ** frac * unit - ref).abs().max()) > 100 * bound.max()


def test_quant_conv2d_rejects_float_input():
    packed = pack_codes(torch.zeros(2, 4, dtype=torch.int64), 2)
    with pytest.raises(TypeError):
        quant_conv2d(torch.zeros(1, 1, 3, 3), packed, 2, (2, 1, 2, 2))
    with pytest.raises(TypeError):
        quant_conv2d(torch.zeros(1, 1, 3, 3, dtype=torch.float64), packed, 2, (2, 1, 2, 2))


@pytest.mark.parametrize('device', DEVICES)
def test_quant_conv2d_rejects_sums_inexact_in_float64(device):
    packed = pack_codes(torch.full((1, 64), 255, dtype=torch.int64), 8).to(device)
    x = torch.full((1, 64, 1, 1), 1 << 40, dtype=torch.int64, device=device)  # 64 * 2^40 * 255 > 2^53
    with pytest.raises(OverflowError):
        quant_conv2d(x, packed, 8, (1, 64, 1, 1))


@pytest.mark.parametrize('device', DEVICES)
def test_quant_conv2d_small_by_hand(device):
    # 1x1 conv, 2-bit weights: codes [0, 3] -> values [-3, 3]; x = [2, 5] -> A = -6 + 15 = 9, S = 7
    packed = pack_codes(torch.tensor([[0, 3]]), 2).to(device)
    x = torch.tensor([2, 5], dtype=torch.int32, device=device).view(1, 2, 1, 1)
    assert quant_conv2d(x, packed, 2, (1, 2, 1, 1)).item() == 9
    # F = 2, mu~ = -3 (mu = -0.75): 9 * 4 - 3 * 7 = 15; + bias 5 = 20
    off = torch.tensor([-3], dtype=torch.int32, device=device)
    bias = torch.tensor([5], device=device)
    assert quant_conv2d(x, packed, 2, (1, 2, 1, 1), w_offset=off, frac_bits=2, bias=bias).item() == 20
    # requantize by 0.25 (M0 = 2^30, shift -1): 20 / 4 = 5, + zp 1 = 6 -> signed q = 15 value 2 * 6 - 15 = -3
    out = quant_conv2d(x, packed, 2, (1, 2, 1, 1), w_offset=off, frac_bits=2, bias=bias,
                       multiplier=torch.tensor([1 << 30], device=device), shift=torch.tensor([-1], device=device),
                       zero_point=1, qmin=0, qmax=15, out_levels=15, out_signed=True)
    assert out.item() == -3


# ----------------------------------------------------------------------------------------------------------------
# 6. quant_add
# ----------------------------------------------------------------------------------------------------------------

def _add_params(s_a, s_b, s_out, left_shift=20):
    mx = max(s_a, s_b)
    ma, sa = qm(s_a / (2 * mx))
    mb, sb = qm(s_b / (2 * mx))
    mo, so = qm(2 * mx / ((1 << left_shift) * s_out))
    return ma, sa, mb, sb, mo, so


def _check_add(got, a, b, s_a, s_b, s_out, zp, qmin, qmax):
    n_far = 0
    bl = b.tolist() if b is not None else [0] * a.numel()
    for y, ai, bi in zip(got.tolist(), a.tolist(), bl):
        exact = (Fraction(s_a) * ai + Fraction(s_b) * bi) / Fraction(s_out)
        ref = min(max(round_half_away(exact) + zp, qmin), qmax)
        assert abs(y - ref) <= 1, (ai, bi, y, exact)
        if tie_distance(exact) > Fraction(1, 10000):
            n_far += 1
            assert y == ref, (ai, bi, y, exact)
    return n_far


def test_quant_add_against_real_rescaling():
    g = torch.Generator().manual_seed(6)
    s_a, s_b, s_out = 0.037, 0.011, 0.05
    a = torch.randint(-127, 128, (500,), generator=g, dtype=torch.int32)
    b = torch.randint(-255, 256, (500,), generator=g, dtype=torch.int32)
    ma, sa, mb, sb, mo, so = _add_params(s_a, s_b, s_out)
    zp, qmin, qmax = 40, 0, 100
    got = quant_add(a, ma, sa, b, mb, sb, 20, 0, mo, so, zp, qmin, qmax, 255, False)
    assert got.dtype == torch.int32 and got.shape == a.shape
    assert _check_add(got, a, b, s_a, s_b, s_out, zp, qmin, qmax) > 450
    assert got.min() == qmin and got.max() == qmax  # both clamps were hit
    # the operands are not interchangeable: swapping them changes the result
    swapped = quant_add(b, ma, sa, a, mb, sb, 20, 0, mo, so, zp, qmin, qmax, 255, False)
    assert not torch.equal(swapped, got)


def test_quant_add_broadcast_and_b_larger_scale():
    g = torch.Generator().manual_seed(7)
    s_a, s_b, s_out = 0.02, 0.09, 0.1
    a = torch.randint(-100, 101, (2, 3, 4, 5), generator=g, dtype=torch.int32)
    b = torch.randint(-15, 16, (1, 3, 1, 5), generator=g, dtype=torch.int32)
    ma, sa, mb, sb, mo, so = _add_params(s_a, s_b, s_out)
    got = quant_add(a, ma, sa, b, mb, sb, 20, 0, mo, so, 0, -128, 127, 255, False)
    assert got.shape == (2, 3, 4, 5)
    bb = b.expand_as(a)
    assert _check_add(got.reshape(-1), a.reshape(-1), bb.reshape(-1), s_a, s_b, s_out, 0, -128, 127) > 100


def test_quant_add_single_operand_and_signed_output():
    s_a, s_out = 0.013, 0.04
    a = torch.arange(-255, 256, dtype=torch.int64)  # every 8-bit signed value
    ma, sa, _, _, mo, so = _add_params(s_a, s_a, s_out)
    # b=None: a alone rescaled to the output grid, here an unsigned 4-bit grid with zero point 7
    got = quant_add(a, ma, sa, None, None, None, 20, 0, mo, so, 7, 0, 15, 15, False)
    assert _check_add(got, a, None, s_a, 0.0, s_out, 7, 0, 15) > 450
    assert set(got.tolist()) == set(range(16))
    # out_signed: the same codes returned as odd values 2c - q
    got_s = quant_add(a, ma, sa, None, None, None, 20, 0, mo, so, 7, 0, 15, 15, True)
    assert torch.equal(got_s, 2 * got - 15)
    assert (got_s % 2 == 1).all()


@pytest.mark.parametrize('device', DEVICES)
def test_quant_add_bias_and_rejects_float(device):
    a = torch.tensor([0, 10, -10], device=device)
    ma, sa, _, _, mo, so = _add_params(0.5, 0.5, 0.5, left_shift=4)
    # a' = (a << 4) * 1/2 = 8a; output multiplier 2 * 0.5 / (16 * 0.5) = 1/8; bias 16 -> +2 output units
    assert quant_add(a, ma, sa, None, None, None, 4, 16, mo, so, 0, -100, 100, 255, False).tolist() == [2, 12, -8]
    with pytest.raises(TypeError):
        quant_add(a.float(), ma, sa, None, None, None, 4, 0, mo, so, 0, -100, 100, 255, False)
    with pytest.raises(TypeError):
        quant_add(a, ma, sa, a.double(), ma, sa, 4, 0, mo, so, 0, -100, 100, 255, False)


@pytest.mark.parametrize('device', DEVICES)
def test_accumulators_that_leave_int32_raise_instead_of_wrapping(device):
    # acc = 4 * 255 * 255 * 2^16 ~ 1.7e10: a fixed-point kernel would wrap; the reference refuses
    w = pack_codes(torch.full((1, 4), 255), 8).to(device)
    x = torch.full((1, 4, 1, 1), 255, device=device)
    with pytest.raises(OverflowError, match='leaves int32'):
        quant_conv2d(x, w, 8, (1, 4, 1, 1), frac_bits=16)
    m0, sh = (t.to(device) for t in quantize_multiplier(torch.tensor([2.0 ** -30])))
    with pytest.raises(OverflowError, match='leaves int32'):
        quant_conv2d(x, w, 8, (1, 4, 1, 1), frac_bits=16, multiplier=m0, shift=sh, qmin=-10 ** 6, qmax=10 ** 6)
    # one bit fewer fits
    assert int(quant_conv2d(x, w, 8, (1, 4, 1, 1), frac_bits=4).max()) == 4 * 255 * 255 * 16


def test_float_codes_are_refused_by_pack_codes():
    with pytest.raises(TypeError, match='integer codes'):
        pack_codes(torch.tensor([[1.7, 2.2]]), 2)
