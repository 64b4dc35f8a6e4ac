"""The stateless quantize functions of mmaqd.ops (affine, DoReFa, PACT, LIQ, the straight-through helpers): one
bit-width check and one per-channel broadcast for all, and the quantizers computing exactly with them."""
import pytest
import torch

from mmaqd import ops
from mmaqd.quantization import PACT, DoReFa, FQNAffine
from mmaqd.quantization.quantizers import base

X = torch.linspace(-2, 2, 24).reshape(2, 3, 2, 2)  # (N, C, H, W)
ONE = torch.tensor(1.0)
OPS = {
    'liq_fake_quant': lambda bits: ops.liq_fake_quant(X, ONE, bits, True),
    'affine_fake_quant': lambda bits: ops.affine_fake_quant(X, -ONE, ONE, bits),
    'nudged_range': lambda bits: ops.nudged_range(-ONE, ONE, bits, torch.float32),
    'quantize_unit': lambda bits: ops.quantize_unit(X.clamp(0, 1), bits),
    'dorefa_weight': lambda bits: ops.dorefa_weight(X, bits, True),
    'dorefa_act': lambda bits: ops.dorefa_act(X, bits, False),
    'pact_fake_quant': lambda bits: ops.pact_fake_quant(X, ONE, bits, False),
}


@pytest.mark.parametrize('name', sorted(OPS))
@pytest.mark.parametrize('bits', [1, 9, 2.0, True])
def test_one_bit_width_check_for_every_op(name, bits):
    with pytest.raises(ValueError, match=rf'bits={bits!r} is not supported; allowed: integers 2 to 8'):
        OPS[name](bits)
    OPS[name](2)
    assert base.check_bits is ops.check_bits
    assert (base.MIN_BITS, base.MAX_BITS) == (ops.MIN_BITS, ops.MAX_BITS) == (2, 8)


@pytest.mark.parametrize('shape, x_shape, out', [
    ((), (2, 3, 4, 4), ()), ((1,), (2, 3, 4, 4), ()), ((2,), (2, 3, 4, 4), (2, 1, 1, 1)),
    ((1,), (1, 3, 4, 4), (1, 1, 1, 1)), ((5,), (5, 7), (5, 1)), ((1,), (), ())])
def test_broadcast_dim0(shape, x_shape, out):
    p, x = torch.arange(1.0, 1.0 + torch.Size(shape).numel()).reshape(shape), torch.zeros(x_shape)
    assert ops.broadcast_dim0(p, x).shape == out
    assert (ops.broadcast_dim0(p, x) + x).shape == x.shape


def test_ste_helpers():
    x = torch.tensor([0.4, 1.6, -2.5], requires_grad=True)
    y = ops.round_ste(x)
    assert y.tolist() == [0.0, 2.0, -2.0]
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0]
    p = torch.tensor(3.0, requires_grad=True)
    s = ops.scale_grad(p, 0.25)
    assert s.item() == 3.0
    (2 * s).backward()
    assert p.grad.item() == 0.5


def test_pact_gradients_eq3():
    x = torch.tensor([-0.5, 0.2, 0.7, 1.5, 2.0], requires_grad=True)
    alpha = torch.tensor(1.0, requires_grad=True)
    y = ops.pact_fake_quant(x, alpha, 2, False)  # levels 0, 1/3, 2/3, 1
    assert y.tolist() == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0, 1.0])
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 0.0, 0.0]  # straight through inside [0, alpha)
    assert alpha.grad.item() == 2.0  # 1 for each x >= alpha


@pytest.mark.parametrize('signed', [False, True])
def test_quantizers_compute_with_the_ops(signed):
    torch.manual_seed(0)
    w, a = torch.randn(4, 3, 3, 3), torch.randn(2, 3, 5, 5) * 1.5
    a = a if signed else a.relu()
    assert torch.equal(DoReFa(3, role='weight', per_channel=True, num_channels=4)(w), ops.dorefa_weight(w, 3, True))
    assert torch.equal(DoReFa(3, role='act', signed=signed)(a), ops.dorefa_act(a, 3, signed))
    pact = PACT(3, role='act', signed=signed, init_value=1.2)
    assert torch.equal(pact(a), ops.pact_fake_quant(a, pact.alpha, 3, signed))
    fqn = FQNAffine(4, role='weight', per_channel=True, num_channels=4)
    r = w.reshape(4, -1)
    lb, ub = ops.broadcast_dim0(r.amin(1), w), ops.broadcast_dim0(r.amax(1), w)
    assert torch.equal(fqn(w), ops.affine_fake_quant(w, lb, ub, 4))
