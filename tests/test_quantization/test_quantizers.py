"""The quantizers of mmaqd.quantization: values by hand, level counts, gradients, init, state and registry."""
import math

import pytest
import torch

from mmaqd.ops import liq_fake_quant
from mmaqd.quantization import (LIQ, LSQ, PACT, QUANTIZERS, BaseQuantizer, DoReFa, FQNAffine, LQNet, LSQPlus,
                                build_quantizer, registered_quantizers)

NAMES = ['DoReFa', 'FQNAffine', 'LIQ', 'LQNet', 'LSQ', 'LSQPlus', 'PACT']
C = 4


def randn(*shape, seed=0, scale=1.0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype) * scale


# configurations: (name, kwargs) for a weight and an activation use of every quantizer
CONFIGS = [(n, dict(role='weight')) for n in NAMES] + [(n, dict(role='act')) for n in NAMES] + \
    [(n, dict(per_channel=True, num_channels=C)) for n in NAMES] + \
    [('LIQ', dict(role='weight', weight_norm=True)), ('LIQ', dict(role='act', init='max')),
     ('LSQ', dict(role='act', signed=True)), ('LSQPlus', dict(role='act', signed=True)),
     ('PACT', dict(role='act', signed=True, init_value=1.5)), ('DoReFa', dict(role='act', signed=True)),
     ('LQNet', dict(role='act', signed=None))]


def ids(cfg):
    return cfg[0] + '-' + '-'.join(f'{k}={v}' for k, v in cfg[1].items())


# ------------------------------------------------------------------------------------------ registry, errors
def test_registry_and_build():
    assert set(NAMES) <= set(registered_quantizers())
    q = build_quantizer(dict(type='LIQ', bits=3, init='const'), num_channels=C, per_channel=True)
    assert isinstance(q, LIQ) and isinstance(q, BaseQuantizer) and q.bits == 3 and q.alpha.shape == (C,)
    assert isinstance(build_quantizer(dict(type='FQNAffine', bits=4, role='act')), FQNAffine)
    with pytest.raises(KeyError, match=r"unknown quantizer 'Nope'.*DoReFa.*FQNAffine.*LIQ.*LQNet.*LSQ.*PACT"):
        build_quantizer(dict(type='Nope', bits=2))


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('bits', [1, 9, 2.0])
def test_bits_out_of_range(name, bits):
    with pytest.raises(ValueError, match=r'bits=.*allowed: integers 2 to 8'):
        build_quantizer(dict(type=name, bits=bits))


@pytest.mark.parametrize('name', NAMES)
def test_role_and_per_channel_errors(name):
    with pytest.raises(ValueError, match='role='):
        build_quantizer(dict(type=name, bits=2, role='bias'))
    with pytest.raises(ValueError, match='batch dim'):
        build_quantizer(dict(type=name, bits=2, role='act', per_channel=True, num_channels=C))
    with pytest.raises(ValueError, match='num_channels'):
        build_quantizer(dict(type=name, bits=2, per_channel=True))
    assert build_quantizer(dict(type=name, bits=2, role='weight', signed=False)).signed is True


@pytest.mark.parametrize('name', NAMES)
def test_mode_is_the_deprecated_name_of_role(name):
    """``mode`` (config key, keyword argument, attribute) still works, with a warning naming ``role``."""
    with pytest.warns(FutureWarning, match="'mode' is deprecated, use 'role'"):
        q = build_quantizer(dict(type=name, bits=2, mode='act'))
    assert q.role == 'act'
    with pytest.warns(FutureWarning, match="'mode' is deprecated, use 'role'"):
        assert QUANTIZERS.get(name)(2, mode='weight').role == 'weight'
    with pytest.warns(FutureWarning, match=r'\.mode is deprecated'):
        assert q.mode == 'act'
    with pytest.raises(TypeError, match="both 'mode'"):
        QUANTIZERS.get(name)(2, role='act', mode='act')


# ------------------------------------------------------------------------------------------ level counts
@pytest.mark.parametrize('cfg', CONFIGS, ids=ids)
@pytest.mark.parametrize('bits', [2, 3, 4, 8])
def test_at_most_2k_levels(cfg, bits):
    name, kw = cfg
    q = build_quantizer(dict(type=name, bits=bits, **kw))
    x = randn(C, 600, seed=bits, scale=2.0) + 0.3
    y = q(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    per_row = y if q.per_channel else y.reshape(1, -1)
    for r in per_row:
        assert 1 < r.unique().numel() <= 2 ** bits
    if bits == 8 and name in ('LIQ', 'LQNet', 'FQNAffine', 'LSQPlus'):  # ranges fitted to the data
        assert per_row[0].unique().numel() > 2 ** 6


@pytest.mark.parametrize('cfg', [('FQNAffine', dict(role='weight')), ('FQNAffine', dict(role='act')),
                                 ('FQNAffine', dict(per_channel=True, num_channels=C)),
                                 ('LIQ', dict(role='act')), ('LSQ', dict(role='act')),
                                 ('DoReFa', dict(role='act')), ('PACT', dict(role='act')),
                                 ('PACT', dict(role='act', signed=True)), ('LQNet', dict(role='act')),
                                 ('LSQ', dict(role='act', signed=True))], ids=ids)
@pytest.mark.parametrize('bits', [2, 3, 4, 8])
@pytest.mark.parametrize('offset', [0.7, -3.0])
def test_zero_is_exact(cfg, bits, offset):
    name, kw = cfg
    q = build_quantizer(dict(type=name, bits=bits, **kw))
    x = randn(C, 50, seed=bits) * 0.9 + offset  # all-positive (or all-negative) data: the range must hold 0
    x[:, 0] = 0.0
    y = q(x)
    assert (y[:, 0] == 0).all()


# ------------------------------------------------------------------------------------------ LIQ
def test_liq_forward_is_the_op_on_normalized_weight_mapped_back():
    w = randn(C, 3, 3, 3, seed=1, scale=0.05) + 0.01
    q = LIQ(2, role='weight', weight_norm=True, init='const', init_value=1.3)
    assert bool(q.initialized) and q.signed is True
    std, mean = w.std(), w.mean()
    wn = (w - mean) / (std + 1e-5)
    # quantized on the normalized scale, then back to the weight's scale and centre: 4 levels, mean +- 1.3 std
    # and mean +- 1.3/3 std
    assert torch.allclose(q(w), liq_fake_quant(wn, torch.tensor(1.3), 2, True) * (std + 1e-5) + mean, atol=1e-7)
    assert len(torch.unique(q(w))) == 4
    assert torch.allclose(q.normalize(w).std(), torch.tensor(1.0), atol=1e-3)
    # the statistics are detached: d out / d w = 1 inside the interval, 0 outside
    w.requires_grad_()
    q(w).sum().backward()
    inside = (wn.abs() < 1.3).float()
    assert torch.allclose(w.grad, inside, atol=1e-6)
    assert q.alpha.grad is not None


def test_liq_zero_level_weight_grid_contains_zero_and_is_not_centred_on_the_mean():
    w = randn(C, 3, 3, 3, seed=1, scale=0.05) + 0.01
    q = LIQ(2, role='weight', weight_norm=True, init='const', init_value=1.3, zero_level=True)
    std = w.std() + 1e-5
    # ternary grid 0, +-1.3 std around zero (a grid around the mean 0.01 would not hold 0)
    assert torch.allclose(q(w), liq_fake_quant(w / std, torch.tensor(1.3), 2, True, True) * std, atol=1e-7)
    assert sorted(torch.unique(q(w) / (1.3 * std)).round().tolist()) == [-1.0, 0.0, 1.0]
    assert 'zero_level=True' in repr(q)
    # an activation quantizer: signed data gets the zero-level grid, unsigned data the usual one
    qa = LIQ(3, role='act', signed=None, init='const', init_value=1.0, zero_level=True)
    x = torch.linspace(-1, 1, 101)
    assert torch.equal(qa(x), liq_fake_quant(x, torch.tensor(1.0), 3, True, True))
    with pytest.raises(TypeError, match='zero_level'):
        LIQ(4, role='weight', zero_level=1)


def test_liq_inits():
    x = randn(2, 8, 5, 5, seed=2).relu()
    q = LIQ(3, role='act', init='max', init_scale=0.8)
    assert not bool(q.initialized)
    q(x)
    assert bool(q.initialized) and q.alpha.item() == pytest.approx(0.8 * x.max().item())
    # 'mse' picks the best alpha on its grid: no worse than the max or the authors' 0.8 max
    q = LIQ(2, role='act')
    q(x)

    def err(a):
        return (liq_fake_quant(x, torch.tensor(a), 2, False) - x).pow(2).sum().item()
    m = x.max().item()
    assert 0.05 * m < q.alpha.item() < m
    assert err(q.alpha.item()) <= min(err(m), err(0.8 * m), err(0.5 * m)) * (1 + 1e-6)
    # per channel: one alpha per output channel
    w = randn(C, 3, 2, 2, seed=3) * torch.tensor([0.1, 1.0, 5.0, 20.0]).view(C, 1, 1, 1)
    q = LIQ(4, per_channel=True, num_channels=C, init='max', init_scale=1.0)
    q(w)
    assert q.alpha.shape == (C,) and torch.equal(q.alpha.data, w.abs().amax(dim=(1, 2, 3)))
    q = LIQ(4, per_channel=True, num_channels=C)
    q(w)
    ratio = q.alpha.data / w.abs().amax(dim=(1, 2, 3))
    assert ((ratio > 0.2) & (ratio <= 1.0)).all()


def test_liq_per_channel_grad_shape():
    w = randn(C, 2, 3, seed=4).requires_grad_()
    q = LIQ(2, per_channel=True, num_channels=C, init='const', init_value=0.5)
    q(w).sum().backward()
    assert q.alpha.grad.shape == (C,) and w.grad.shape == w.shape


# ------------------------------------------------------------------------------------------ LSQ / LSQ+
def test_lsq_values_grad_scale_by_hand():
    x = torch.tensor([-5.0, -1.3, -0.2, 0.26, 0.9, 1.7, 3.0], requires_grad=True)
    q = LSQ(3, signed=True)  # Q_N = 4, Q_P = 3
    q.initialized.fill_(True)
    q.step_size.data.fill_(0.5)
    y = q(x)
    # x / s = [-10, -2.6, -0.4, 0.52, 1.8, 3.4, 6] -> clip to [-4, 3] -> round -> * 0.5
    assert y.tolist() == [-2.0, -1.5, 0.0, 0.5, 1.0, 1.5, 1.5]
    y.sum().backward()
    v = [-10, -2.6, -0.4, 0.52, 1.8, 3.4, 6]
    per_el = [-4, round(-2.6) + 2.6, 0.4, 1 - 0.52, 2 - 1.8, 3, 3]
    g = 1 / math.sqrt(7 * 3)
    assert q.step_size.grad.item() == pytest.approx(g * sum(per_el), rel=1e-6)
    assert x.grad.tolist() == [0.0 if not -4 <= vi <= 3 else 1.0 for vi in v]


def test_lsq_per_channel_grad_scale_and_init():
    x = randn(C, 5, seed=5)
    q = LSQ(2, per_channel=True, num_channels=C)  # signed: Q_N = 2, Q_P = 1
    q(x)
    assert bool(q.initialized)
    assert torch.allclose(q.step_size.data, 2 * x.abs().mean(dim=1) / math.sqrt(1))
    q.step_size.grad = None
    q(x).sum().backward()
    v = x / q.step_size.data[:, None]
    per_el = torch.where(v < -2, -2.0, torch.where(v > 1, 1.0, torch.round(v) - v))
    g = 1 / math.sqrt(5 * 1)
    assert torch.allclose(q.step_size.grad, g * per_el.sum(dim=1), atol=1e-6)
    q2 = LSQ(2, role='act', grad_scale=False)
    q2(x.relu())
    assert q2.step_size.item() == pytest.approx(2 * x.relu().abs().mean().item() / math.sqrt(3))


def test_lsq_gradcheck_outside_range():
    q = LSQ(2, signed=True, grad_scale=False).double()
    q.initialized.fill_(True)
    # every x outside [-2 s, s]: out = -2 s or s, continuous in x and s (grad_scale off: g would break it)
    x = torch.tensor([-9.0, 7.0, 4.0], dtype=torch.float64, requires_grad=True)
    s = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, s: torch.func.functional_call(q, {'step_size': s}, (x,)), (x, s))


def test_lsqplus_act_init_values_and_grads():
    x = torch.tensor([-0.5, 0.1, 0.7, 1.9, 3.5])
    q = LSQPlus(2, role='act')  # unsigned: Q_N = 0, Q_P = 3
    y = q(x)
    assert q.step_size.item() == pytest.approx(4.0 / 3) and q.offset.item() == pytest.approx(-0.5)
    # (x - beta) / s = [0, 0.45, 0.9, 1.8, 3] -> [0, 0, 1, 2, 3]
    assert y.tolist() == pytest.approx([-0.5, -0.5, -0.5 + 4 / 3, -0.5 + 8 / 3, 3.5], abs=1e-6)
    qs = LSQPlus(3, role='act', signed=True)  # Q_N = 4, Q_P = 3
    qs(x)
    assert qs.step_size.item() == pytest.approx(4.0 / 7) and qs.offset.item() == pytest.approx(-0.5 + 4 * 4 / 7)
    # offset gradient: 0 inside, 1 outside (times g); step gradient as LSQ
    q.zero_grad()
    x2 = torch.tensor([-2.0, 0.3, 10.0])
    q(x2).sum().backward()
    g = 1 / math.sqrt(3 * 3)
    assert q.offset.grad.item() == pytest.approx(2 * g)
    s, b = q.step_size.item(), q.offset.item()
    v = [(xi - b) / s for xi in x2.tolist()]
    assert q.step_size.grad.item() == pytest.approx(g * (0 + (round(v[1]) - v[1]) + 3), rel=1e-5)


def test_lsqplus_weight_init():
    w = randn(C, 6, seed=6) + torch.tensor([0.0, 1.0, -2.0, 0.5])[:, None]
    q = LSQPlus(3, per_channel=True, num_channels=C)
    q(w)
    assert q.offset is None and 'offset' not in q.state_dict()
    std, mean = torch.std_mean(w, dim=1, correction=0)
    exp = torch.maximum((mean - 3 * std).abs(), (mean + 3 * std).abs()) / 4
    assert torch.allclose(q.step_size.data, exp)


# ------------------------------------------------------------------------------------------ DoReFa, PACT
def test_dorefa_by_hand():
    w = torch.tensor([-2.0, -0.1, 0.3, 1.0])
    t = torch.tanh(w)
    w_hat = t / (2 * t.abs().max()) + 0.5
    exp = 2 * (torch.round(w_hat * 3) / 3) - 1
    assert torch.equal(DoReFa(2, role='weight')(w), exp)
    assert exp.tolist() == pytest.approx([-1.0, -1 / 3, 1 / 3, 1.0])
    a = torch.tensor([-1.0, 0.1, 0.2, 0.55, 0.9, 4.0])
    assert DoReFa(2, role='act')(a).tolist() == pytest.approx([0, 0, 1 / 3, 2 / 3, 1, 1])
    wc = torch.stack([w, 5 * w])
    qc = DoReFa(2, per_channel=True, num_channels=2)
    assert torch.equal(qc(wc)[0], exp)


def test_pact_values_and_grads():
    q = PACT(2, role='act', init_value=3.0)
    x = torch.tensor([-1.0, 0.4, 0.6, 2.0, 3.0, 5.0], requires_grad=True)
    y = q(x)
    assert y.tolist() == pytest.approx([0.0, 0.0, 1.0, 2.0, 3.0, 3.0])
    y.sum().backward()
    assert q.alpha.grad.item() == 2.0  # x >= alpha: 3.0 and 5.0
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    qs = PACT(3, role='act', signed=True, init_value=1.5)  # n = 3, levels k * 0.5
    x = torch.tensor([-4.0, -0.6, 0.2, 1.0], requires_grad=True)
    y = qs(x)
    assert y.tolist() == pytest.approx([-1.5, -0.5, 0.0, 1.0])
    y.sum().backward()
    assert qs.alpha.grad.item() == -1.0  # d out / d alpha = -1 where x <= -alpha
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0]
    assert PACT(2, role='weight').alpha is None


def test_pact_gradcheck_clipped():
    q = PACT(3, role='act').double()
    x = torch.tensor([-2.0, 12.0, 15.0], dtype=torch.float64, requires_grad=True)  # out = 0, alpha, alpha
    a = torch.tensor(10.0, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, a: torch.func.functional_call(q, {'alpha': a}, (x,)), (x, a))


# ------------------------------------------------------------------------------------------ LQNet
def test_lqnet_levels_and_nearest():
    q = LQNet(2, role='weight')
    q.initialized.fill_(True)
    q.basis.copy_(torch.tensor([0.5, 1.0]))
    assert sorted(q.levels().flatten().tolist()) == [-1.5, -0.5, 0.5, 1.5]
    q.eval()
    x = torch.tensor([-3.0, -0.9, -0.1, 0.2, 0.99, 1.2], requires_grad=True)
    y = q(x)
    assert y.tolist() == [-1.5, -0.5, -0.5, 0.5, 0.5, 1.5]
    (y * torch.arange(6.0)).sum().backward()
    assert x.grad.tolist() == list(range(6))  # straight-through
    qu = LQNet(2, role='act').eval()
    qu.initialized.fill_(True)
    qu.basis.copy_(torch.tensor([0.5, 1.0]))
    assert sorted(qu.levels().flatten().tolist()) == [0.0, 0.5, 1.0, 1.5]
    assert qu(torch.tensor([-1.0, 0.2, 0.3, 0.8, 2.0])).tolist() == [0.0, 0.0, 0.5, 1.0, 1.5]


def test_lqnet_training_update_is_least_squares_moving_average():
    x = randn(200, seed=7)
    q = LQNet(2, role='weight', ridge=0.0)
    q.initialized.fill_(True)
    old = torch.tensor([0.4, 0.8])
    q.basis.copy_(old)
    q.train()
    y = q(x)
    codes = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]])
    lv = codes @ old
    b = codes[(x[:, None] - lv[None]).abs().argmin(dim=1)]  # (N, 2) nearest codes
    assert torch.equal(y, b @ old)  # forward used the old basis
    v_star = torch.linalg.lstsq(b.double(), x.double()[:, None]).solution.squeeze(1).float()
    assert torch.allclose(q.basis, 0.9 * old + 0.1 * v_star, atol=1e-6)
    q.eval()
    before = q.basis.clone()
    q(x)
    assert torch.equal(q.basis, before)  # no update in eval


def test_lqnet_init_and_per_channel():
    w = randn(C, 50, seed=8) * torch.tensor([0.1, 1.0, 3.0, 10.0])[:, None]
    q = LQNet(3, per_channel=True, num_channels=C)
    y = q.eval()(w)
    assert q.basis.shape == (C, 3) and bool(q.initialized)
    # the fitted basis beats the uniform max-range grid it starts from, channel by channel
    m = w.abs().amax(dim=1, keepdim=True)
    uni = torch.round((w / m + 1) / 2 * 7) / 7 * 2 * m - m
    assert ((y - w).pow(2).sum(1) <= (uni - w).pow(2).sum(1) + 1e-6).all()
    assert (q.basis[:, -1] / q.basis[:, -1].max()).argsort().tolist() == [0, 1, 2, 3]


# ------------------------------------------------------------------------------------------ FQNAffine
def test_fqn_weight_per_channel_by_hand():
    w = torch.tensor([[-1.0, 0.4, 2.0, 0.9], [0.3, 0.5, 1.2, 0.15]], requires_grad=True)
    q = FQNAffine(2, per_channel=True, num_channels=2)
    y = q(w)
    # row 0: [-1, 2], delta 1, z 1 -> levels -1, 0, 1, 2; row 1: [0, 1.2] delta 0.4, z 0 -> 0, .4, .8, 1.2
    assert y[0].tolist() == pytest.approx([-1.0, 0.0, 2.0, 1.0])
    assert y[1].tolist() == pytest.approx([0.4, 0.4, 1.2, 0.0])
    # nudging: [-0.5, 1.0] at 2 bits: delta 0.5, z = round(1) = 1 -> levels -0.5, 0, 0.5, 1
    q2 = FQNAffine(2, role='weight')
    assert q2(torch.tensor([-0.5, -0.2, 0.3, 1.0])).tolist() == pytest.approx([-0.5, 0.0, 0.5, 1.0])
    # [-0.3, 1.0]: delta 1.3/3, z = round(0.69) = 1 -> range nudged to [-1.3/3, 2.6/3]
    d = 1.3 / 3
    assert q2(torch.tensor([-0.3, 0.0, 1.0])).tolist() == pytest.approx([-d, 0.0, 2 * d])
    y.sum().backward()
    assert w.grad.tolist() == [[1.0] * 4, [1.0] * 4]


def test_fqn_act_calibration():
    q = FQNAffine(4, role='act')
    batches = [randn(2, 3, 20, seed=s, scale=s) for s in (1, 2, 3)]
    q.start_calibration()
    for b in batches:
        assert torch.equal(q(b), b)  # passes through unquantized
    assert not bool(q.initialized) and int(q.num_calib_batches) == 3
    q.finish_calibration()
    qs = torch.tensor([0.001, 0.999])
    lo = torch.stack([torch.quantile(b.flatten(), qs) for b in batches]).mean(dim=0)
    assert bool(q.initialized) and torch.allclose(torch.stack([q.lb, q.ub]), lo)
    x = torch.tensor([-100.0, 0.0, 100.0], requires_grad=True)
    y = q(x)
    delta = (q.ub - q.lb) / 15
    assert y[1] == 0 and (y[0] - q.lb).abs() <= delta / 2 + 1e-6 and (y[2] - q.ub).abs() <= delta / 2 + 1e-6
    assert torch.allclose(y[2] - y[0], 15 * delta)
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 0.0]
    with pytest.raises(RuntimeError):
        FQNAffine(4, role='act').finish_calibration()


def test_fqn_act_first_batch_init():
    x = randn(1000, seed=9)
    q = FQNAffine(3, role='act', percentile=0.99)
    q.train()(x)
    lo, hi = torch.quantile(x, torch.tensor([0.01, 0.99]))
    assert bool(q.initialized) and q.lb.item() == pytest.approx(lo.item()) and q.ub.item() == pytest.approx(hi.item())
    q(randn(1000, seed=10, scale=10.0))
    assert q.ub.item() == pytest.approx(hi.item())  # not re-initialised


# ------------------------------------------------------------------------------------------ state
@pytest.mark.parametrize('cfg', CONFIGS, ids=ids)
def test_state_dict_round_trip(cfg):
    name, kw = cfg
    x1, x2 = randn(C, 3, 4, seed=11, scale=2.0) + 0.2, randn(C, 3, 4, seed=12, scale=0.3)
    q1 = build_quantizer(dict(type=name, bits=3, **kw)).eval()
    fresh = build_quantizer(dict(type=name, bits=3, **kw)).eval()
    fresh.load_state_dict(q1.state_dict())  # uninitialised state loads into an uninitialised one
    assert bool(fresh.initialized) == bool(q1.initialized)
    q1(x1)
    assert bool(q1.initialized)
    q2 = build_quantizer(dict(type=name, bits=3, **kw)).eval()
    q2.load_state_dict(q1.state_dict())
    assert bool(q2.initialized) and q2.signed == q1.signed
    y2 = q2(x2)  # would re-initialise from x2 if the state had not carried over
    assert torch.equal(y2, q1(x2))
    for (k, a), (_, b) in zip(q1.state_dict().items(), q2.state_dict().items()):
        assert torch.equal(a, b), k


def test_state_dict_round_trip_calibrated_fqn():
    q1 = FQNAffine(4, role='act')
    q1.start_calibration()
    q1(randn(100, seed=13))
    q1.finish_calibration()
    q2 = FQNAffine(4, role='act')
    q2.load_state_dict(q1.state_dict())
    x = randn(100, seed=14, scale=5.0)
    assert torch.equal(q2(x), q1(x)) and int(q2.num_calib_batches) == 1


def test_disabled_is_identity_and_signed_auto():
    q = LSQ(2, signed=None)
    q.enabled = False
    x = randn(10, seed=15)
    assert q(x) is x and q.signed is None
    q.enabled = True
    q(x.abs())
    assert q.signed is False and q.qn_qp == (0, 3)
