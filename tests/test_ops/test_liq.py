"""mmaqd.ops.liq_fake_quant against hand computations of AQD (arXiv 2007.06919v1) eq. 3-7."""
import math

import pytest
import torch

from mmaqd.ops import liq_fake_quant, round_ste


def ref_value(x: float, a: float, bits: int, signed: bool) -> float:
    """Eq. 3-5 on python floats, in the same order of operations as the op."""
    q = 2 ** bits - 1
    v = x / a
    if signed:
        w_hat = 0.5 * (max(-1.0, min(v, 1.0)) + 1)
        return a * ((2 * round(w_hat * q) - q) / q)
    return a * (round(max(0.0, min(v, 1.0)) * q) / q)


def ref_grads(x: float, a: float, bits: int, signed: bool) -> tuple:
    """(d out / d x, d out / d alpha) per eq. 6-7 with the straight-through round."""
    q = 2 ** bits - 1
    v = x / a
    if signed:
        if abs(v) < 1:
            return 1.0, (2 * round(0.5 * (v + 1) * q) - q) / q - v
        return 0.0, math.copysign(1.0, x)
    if 0 <= v < 1:
        return 1.0, round(v * q) / q - v
    return 0.0, (1.0 if v >= 1 else 0.0)


def test_two_bit_levels_by_hand():
    a = torch.tensor(1.5, dtype=torch.float64)
    x = torch.tensor([-2.0, -0.9, -0.2, 0.3, 0.8, 1.7], dtype=torch.float64)
    # v = [-1.33, -0.6, -0.133, 0.2, 0.533, 1.13] -> w_hat * 3 = [0, 0.6, 1.3, 1.8, 2.3, 3] -> [0, 1, 1, 2, 2, 3]
    assert liq_fake_quant(x, a, 2, True).tolist() == pytest.approx([-1.5, -0.5, -0.5, 0.5, 0.5, 1.5], abs=1e-15)
    xu = torch.tensor([-1.0, 0.2, 0.3, 0.8, 1.2, 1.4, 9.0], dtype=torch.float64)
    # clip(v) * 3 = [0, 0.4, 0.6, 1.6, 2.4, 2.8, 3] -> [0, 0, 1, 2, 2, 3, 3]
    assert liq_fake_quant(xu, a, 2, False).tolist() == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.0, 1.5, 1.5], abs=1e-15)


def test_two_bit_level_sets():
    a = 0.75
    x = torch.linspace(-2, 2, 401, dtype=torch.float64)
    signed = sorted(set(liq_fake_quant(x, torch.tensor(a, dtype=torch.float64), 2, True).tolist()))
    unsigned = sorted(set(liq_fake_quant(x, torch.tensor(a, dtype=torch.float64), 2, False).tolist()))
    assert signed == pytest.approx([-a, -a / 3, a / 3, a], abs=1e-15)
    assert signed[0] == -signed[3] == -a and signed[1] == -signed[2]  # exact mirror images, exact ends
    assert unsigned == pytest.approx([0.0, a / 3, 2 * a / 3, a], abs=1e-15)
    assert unsigned[0] == 0.0 and unsigned[3] == a


@pytest.mark.parametrize('bits', [2, 3, 4, 8])
@pytest.mark.parametrize('signed', [True, False])
def test_values_match_reference(bits, signed):
    g = torch.Generator().manual_seed(bits)
    x = torch.randn(300, generator=g, dtype=torch.float64) * 1.3
    a = 0.9
    out = liq_fake_quant(x, torch.tensor(a, dtype=torch.float64), bits, signed)
    assert out.tolist() == [ref_value(v, a, bits, signed) for v in x.tolist()]
    assert out.unique().numel() <= 2 ** bits
    if not signed:
        assert liq_fake_quant(torch.zeros(3), torch.tensor(a), bits, False).eq(0).all()


@pytest.mark.parametrize('bits', [2, 3, 8])
@pytest.mark.parametrize('signed', [True, False])
def test_grads_match_eq_6_7_per_channel(bits, signed):
    g = torch.Generator().manual_seed(10 + bits)
    x = (torch.randn(3, 4, 2, generator=g, dtype=torch.float64) * 1.2).requires_grad_()
    alpha = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64, requires_grad=True)
    up = torch.randn(3, 4, 2, generator=g, dtype=torch.float64)
    out = liq_fake_quant(x, alpha, bits, signed)
    (out * up).sum().backward()
    exp_x, exp_a = torch.zeros_like(x), [0.0, 0.0, 0.0]
    for idx in torch.cartesian_prod(*[torch.arange(s) for s in x.shape]).tolist():
        c = idx[0]
        gx, ga = ref_grads(x[tuple(idx)].item(), alpha[c].item(), bits, signed)
        exp_x[tuple(idx)] = gx * up[tuple(idx)]
        exp_a[c] += ga * up[tuple(idx)].item()
        assert out[tuple(idx)].item() == ref_value(x[tuple(idx)].item(), alpha[c].item(), bits, signed)
    assert torch.equal(x.grad, exp_x)
    assert torch.allclose(alpha.grad, torch.tensor(exp_a, dtype=torch.float64), rtol=0, atol=1e-12)
    # both branches of eq. 6/7 are exercised
    assert (x.grad == 0).any() and (x.grad != 0).any()


def test_scalar_alpha_grad_is_total():
    x = torch.tensor([-3.0, -0.5, 0.1, 0.7, 2.5], dtype=torch.float64, requires_grad=True)
    a = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    liq_fake_quant(x, a, 2, True).sum().backward()
    # signed, a=1, q=3: inside -0.5 -> (2*round(0.75)/3-1) + 0.5 = -1/3+0.5; 0.1 -> 1/3-0.1; 0.7 -> 1-0.7
    expected = -1.0 + (-1 / 3 + 0.5) + (1 / 3 - 0.1) + (1 - 0.7) + 1.0
    assert a.grad.item() == pytest.approx(expected, abs=1e-12)
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]
    x.grad = None
    a.grad = None
    liq_fake_quant(x, a, 2, False).sum().backward()
    # unsigned: -3, -0.5 -> 0; 0.1 -> 0-0.1; 0.7 -> 2/3-0.7; 2.5 -> 1
    assert a.grad.item() == pytest.approx(-0.1 + (2 / 3 - 0.7) + 1.0, abs=1e-12)
    assert x.grad.tolist() == [0.0, 0.0, 1.0, 1.0, 0.0]


@pytest.mark.parametrize('signed', [True, False])
def test_gradcheck_outside_interval(signed):
    # outside the interval the op is continuous (alpha * sign(x), alpha or 0), so gradcheck applies
    # every |x| > alpha (signed); every x < 0 or x > alpha (unsigned), alpha 0.6 or per-row (1.0, 0.5)
    x = torch.tensor([[1.5, -2.0, 3.0], [-0.9, 0.8, -4.0]], dtype=torch.float64, requires_grad=True)
    a_t = torch.tensor(0.6, dtype=torch.float64, requires_grad=True)
    a_c = torch.tensor([1.0, 0.5], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, a: liq_fake_quant(x, a, 3, signed), (x, a_t))
    assert torch.autograd.gradcheck(lambda x, a: liq_fake_quant(x, a, 2, signed), (x, a_c))


def test_dtype_shape_and_alpha_dtype():
    x = torch.randn(2, 3, 4).to(torch.bfloat16)
    out = liq_fake_quant(x, torch.tensor(1.0), 4, True)
    assert out.dtype == torch.bfloat16 and out.shape == x.shape
    a = torch.tensor([1.0, 2.0], requires_grad=True)
    liq_fake_quant(x.float(), a, 4, False).sum().backward()
    assert a.grad.shape == (2,) and a.grad.dtype == torch.float32


def test_round_ste():
    x = torch.tensor([-1.6, -0.4, 0.4, 1.5, 2.5, 7.49], requires_grad=True)
    y = round_ste(x)
    assert y.tolist() == torch.round(x.detach()).tolist()
    (y * torch.arange(6.0)).sum().backward()
    assert x.grad.tolist() == list(range(6))


@pytest.mark.parametrize('bits', [1, 9, 0, 3.0, True, '4'])
def test_bits_validation(bits):
    with pytest.raises(ValueError, match=r'bits=.*allowed: integers 2 to 8'):
        liq_fake_quant(torch.ones(2), torch.tensor(1.0), bits, True)


def test_alpha_shape_validation():
    with pytest.raises(ValueError, match='alpha must be a scalar or have shape'):
        liq_fake_quant(torch.ones(3, 2), torch.ones(2), 2, True)
    with pytest.raises(ValueError, match='alpha'):
        liq_fake_quant(torch.ones(3, 2), torch.ones(3, 1), 2, True)
    with pytest.raises(TypeError):
        liq_fake_quant(torch.ones(3), torch.tensor(1.0), 2, 1)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_interval_ends_take_the_branch_of_eq_6_7(dtype):
    """v = 0 is inside the unsigned interval, v = 1 outside; v = +-1 outside the signed one (exactly eq. 6-7)."""
    a = torch.tensor(0.5, dtype=dtype, requires_grad=True)
    x = torch.tensor([0.0, 0.5, -0.5, 0.25, -0.0], dtype=dtype, requires_grad=True)  # v = 0, 1, -1, 0.5, -0
    up = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=dtype)
    (liq_fake_quant(x, a, 2, False) * up).sum().backward()
    assert x.grad.tolist() == [1.0, 0.0, 0.0, 4.0, 5.0]
    # alpha: 0 - 0 (v = 0), 1 (v >= 1), 0 (below), (round(1.5) / 3 - 0.5) * 4, 0 (v = -0)
    assert a.grad.item() == pytest.approx(2.0 + (2 / 3 - 0.5) * 4.0, abs=1e-6)
    x.grad = a.grad = None
    (liq_fake_quant(x, a, 2, True) * up).sum().backward()
    assert x.grad.tolist() == [1.0, 0.0, 0.0, 4.0, 5.0]
    # signed: v = 0 -> (2 round(1.5) - 3) / 3 - 0 = 1/3; +-1 -> sign(x); v = 0.5 -> (2 round(2.25) - 3) / 3 - 0.5
    expected = 1 / 3 * 1.0 + 2.0 - 3.0 + (1 / 3 - 0.5) * 4.0 + 1 / 3 * 5.0
    assert a.grad.item() == pytest.approx(expected, abs=1e-6)


def test_zero_level_grid_by_hand():
    """zero_level: alpha * j / m, m = 2^(k-1) - 1; at 2 bits the ternary grid {-a, 0, a}."""
    a = torch.tensor(1.5, dtype=torch.float64)
    x = torch.tensor([-2.0, -0.9, -0.7, 0.2, 0.74, 0.8, 1.7], dtype=torch.float64)
    # v = x / 1.5 = [-1.33, -0.6, -0.47, 0.13, 0.49, 0.53, 1.13] -> round(clip(v)) = [-1, -1, 0, 0, 0, 1, 1]
    assert liq_fake_quant(x, a, 2, True, True).tolist() == [-1.5, -1.5, -0.0, 0.0, 0.0, 1.5, 1.5]
    levels = liq_fake_quant(torch.linspace(-2, 2, 4001, dtype=torch.float64), a, 4, True, True).unique()
    assert levels.tolist() == pytest.approx([1.5 * j / 7 for j in range(-7, 8)], abs=1e-15)  # 15 levels, 0 included
    # an unsigned grid already has its zero level: unchanged
    xu = torch.rand(50, dtype=torch.float64) * 2
    assert torch.equal(liq_fake_quant(xu, a, 3, False, True), liq_fake_quant(xu, a, 3, False))


@pytest.mark.parametrize('bits', [2, 4])
def test_zero_level_grads_follow_eq_6_7_with_its_levels(bits):
    """d out / d x = 1 inside, d out / d alpha = level - v inside and sign(x) outside, per channel."""
    m = 2 ** (bits - 1) - 1
    x = torch.randn(3, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(bits)) * 1.5
    alpha = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64, requires_grad=True)
    xr = x.clone().requires_grad_(True)
    g = torch.randn_like(x)
    liq_fake_quant(xr, alpha, bits, True, True).backward(g)
    v = x / alpha.detach()[:, None]
    inside = v.abs() < 1
    d_alpha = torch.where(inside, torch.round(v.clamp(-1, 1) * m) / m - v, torch.sign(x))
    assert torch.equal(xr.grad, g * inside)
    assert torch.allclose(alpha.grad, (g * d_alpha).sum(dim=1), rtol=1e-12, atol=1e-12)


def test_zero_level_must_be_a_bool():
    with pytest.raises(TypeError, match='zero_level'):
        liq_fake_quant(torch.zeros(3), torch.tensor(1.0), 4, True, 'yes')
