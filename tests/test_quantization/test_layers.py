"""Tests of the quantized layers (QConv2d, QLinear, QAdd, build_role_quantizer, the output quantizer, the deprecated
argument names) and the on/off switch (mode.py)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmaqd.quantization.layers import QAdd, QConv2d, QConvBN, QLinear, build_role_quantizer
from mmaqd.quantization.mode import quantization_disabled, quantizers, set_quantization
from uniform_q import UT, UniformTestQ, ref_q  # noqa: F401

W4 = dict(type=UT, bits=4)
A3 = dict(type=UT, bits=3, scale=0.2)


@pytest.mark.parametrize('kw', [dict(padding=1), dict(stride=2, padding=2, dilation=2, groups=2),
                                dict(padding=1, padding_mode='reflect', bias=False)])
def test_qconv_off_equals_conv_and_on_uses_quantized_weight(kw):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, **kw)
    x = torch.randn(2, 4, 7, 7)  # (N, C_in, H, W)
    q = QConv2d.from_float(conv, W4, A3)
    set_quantization(q, False)
    assert torch.equal(q(x), conv(x))
    set_quantization(q, True)
    w_ref = ref_q(conv.weight, 4, True, 0.1)  # weights default to signed
    x_ref = ref_q(x, 3, True, 0.2)  # activation signedness auto: x has negatives -> signed
    y_ref = conv._conv_forward(x_ref, w_ref, conv.bias)
    assert torch.equal(q.quantized_weight(), w_ref)
    assert torch.allclose(q(x), y_ref, atol=1e-6)
    assert q.act_quantizer.signed is True and q.weight_quantizer.signed is True


def test_qconv_per_channel_and_none_sides():
    conv = nn.Conv2d(3, 5, 1)
    q = QConv2d.from_float(conv, dict(type=UT, bits=2, per_channel=True), None)
    assert q.weight_quantizer.scale.shape == (5,) and q.act_quantizer is None
    x = torch.randn(1, 3, 4, 4)
    assert torch.allclose(q(x), F.conv2d(x, ref_q(conv.weight, 2, True, 0.1), conv.bias))
    fp = QConv2d.from_float(conv, None, None)
    assert torch.equal(fp(x), conv(x)) and list(quantizers(fp)) == []


def test_qlinear_off_equals_linear_and_on_hand_check():
    torch.manual_seed(0)
    lin = nn.Linear(5, 3)
    x = torch.relu(torch.randn(4, 5))  # (N, in); non-negative -> unsigned act grid
    q = QLinear.from_float(lin, W4, A3)
    with quantization_disabled(q):
        assert torch.equal(q(x), lin(x))
    assert torch.allclose(q(x), F.linear(ref_q(x, 3, False, 0.2), ref_q(lin.weight, 4, True, 0.1), lin.bias))
    assert q.act_quantizer.signed is False


@pytest.mark.parametrize('make,cls', [(lambda: nn.Conv2d(2, 3, 3), QConv2d), (lambda: nn.Linear(2, 3), QLinear),
                                      (lambda: nn.Linear(2, 3, bias=False), QLinear)])
def test_from_float_shares_parameters_and_keeps_keys(make, cls):
    layer = make().train(False)
    q = cls.from_float(layer, dict(type=UT, bits=4, per_channel=True), A3)
    assert q.weight is layer.weight and q.bias is layer.bias and not q.training
    keys, qkeys = set(layer.state_dict()), set(q.state_dict())
    assert keys <= qkeys
    assert all(k.startswith(('weight_quantizer.', 'act_quantizer.')) for k in qkeys - keys)
    missing, unexpected = q.load_state_dict(layer.state_dict(), strict=False)  # an FP checkpoint loads
    assert not unexpected and all(k.startswith(('weight_quantizer.', 'act_quantizer.')) for k in missing)
    opt = torch.optim.SGD(layer.parameters(), lr=1.0)  # an optimizer built on the float layer trains q
    before = layer.weight.detach().clone()
    with quantization_disabled(q):
        q(torch.randn(1, 2, 4, 4) if cls is QConv2d else torch.randn(1, 2)).sum().backward()
    opt.step()
    assert not torch.equal(layer.weight, before)


def test_from_float_rejects_wrong_types():
    with pytest.raises(TypeError, match='Linear'):
        QConv2d.from_float(nn.Linear(2, 2))
    with pytest.raises(TypeError, match='already quantized'):
        QConv2d.from_float(QConv2d(2, 2, 1))


def test_set_quantization_toggles_all_and_context_restores():
    m = nn.Sequential(QConv2d(2, 2, 1, weight_quant=W4, input_quant=A3), QLinear(2, 2, weight_quant=W4),
                      QAdd(A3, A3, A3), build_role_quantizer(A3, 'act', signed=True))
    assert len(list(quantizers(m))) == 7
    assert set_quantization(m, False) == 7 and not any(q.enabled for _, q in quantizers(m))
    assert set_quantization(m, True) == 7 and all(q.enabled for _, q in quantizers(m))
    m[0].act_quantizer.enabled = False
    with quantization_disabled(m):
        assert not any(q.enabled for _, q in quantizers(m))
    assert [q.enabled for _, q in quantizers(m)] == [True, False, True, True, True, True, True]


def test_qadd_quantizes_inputs_and_output():
    a, b = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    qa = QAdd(dict(type=UT, bits=4), dict(type=UT, bits=4, scale=0.05), dict(type=UT, bits=3, scale=0.3))
    ref = ref_q(ref_q(a, 4, True, 0.1) + ref_q(b, 4, True, 0.05), 3, True, 0.3)
    assert torch.allclose(qa(a, b), ref)
    assert qa.out_quantizer.signed is True  # auto: the sum had negatives
    assert torch.equal(QAdd()(a, b), a + b)
    only_out = QAdd(None, None, dict(type=UT, bits=8))
    assert torch.allclose(only_out(a, b), ref_q(a + b, 8, True, 0.1))


def test_input_image_quantizer_is_a_signed_act_quantizer():
    """The normalized image is zero-centred: its quantizer is an activation quantizer built signed."""
    x = torch.randn(1, 3, 4, 4)
    iq = build_role_quantizer(dict(type=UT, bits=8, scale=0.05), 'act', signed=True)
    assert iq.signed is True
    assert torch.allclose(iq(x), ref_q(x, 8, True, 0.05))
    assert build_role_quantizer(None, 'act', signed=True) is None  # no cfg: the image stays full precision


def test_liq_in_qconv():
    """AQD's LIQ in a QConv2d: the output is the conv of the quantized input and weight, and the backward pass is
    LIQ's straight-through estimator (AQD, arXiv 2007.06919v1, eq. 6-7): the weight gets the gradient of the quantized
    weight inside the interval and 0 where it is clipped, both intervals a non-zero gradient."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    q = QConv2d.from_float(conv, dict(type='LIQ', bits=2), dict(type='LIQ', bits=2))
    x = torch.relu(torch.randn(2, 3, 6, 6))
    y = q(x)  # (2, 4, 6, 6)
    assert y.shape == (2, 4, 6, 6)
    assert q.weight_quantizer.role == 'weight' and q.act_quantizer.role == 'act'  # the layer passes the role
    assert q.act_quantizer.signed is False  # auto: a ReLU output
    assert torch.unique(q.quantized_weight().detach()).numel() <= 4  # 2^2 levels (AQD, arXiv 2007.06919v1, eq. 3-5)
    assert QAdd(dict(type='LIQ', bits=4)).a_quantizer.role == 'act'

    xq, wq = q.quantized_input(x).detach(), q.quantized_weight().detach().requires_grad_(True)
    assert torch.equal(y, F.conv2d(xq, wq, conv.bias, padding=1))  # conv(Q_X(x), Q_W(w))
    g = torch.linspace(-1, 1, y.numel()).view_as(y)  # an upstream gradient that differs per output
    (y * g).sum().backward()
    g_wq, = torch.autograd.grad((F.conv2d(xq, wq, conv.bias.detach(), padding=1) * g).sum(), wq)
    inside = (conv.weight / q.weight_quantizer.alpha).abs() < 1  # eq. 6: |v| < 1
    assert inside.any() and not inside.all()  # the 2-bit interval clips some weights
    assert torch.allclose(conv.weight.grad, g_wq * inside, rtol=1e-5, atol=1e-7)
    for alpha in (q.weight_quantizer.alpha, q.act_quantizer.alpha):
        assert torch.isfinite(alpha.grad) and alpha.grad != 0
    with quantization_disabled(q):
        assert torch.equal(q(x), conv(x))


def test_output_quantizer_of_the_layer_mixin():
    """``output_quant`` quantizes a conv's result, ``Q_Y(conv(Q_X(x), Q_W(w)))`` (FQN's prediction convs); layers
    that do not support it refuse it."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 5, 5)
    q = QConv2d.from_float(conv, W4, A3, output_quant=dict(type=UT, bits=3, scale=0.5))
    plain = QConv2d.from_float(conv, W4, A3)
    assert q.out_quantizer.role == 'act' and plain.out_quantizer is None
    assert torch.allclose(q(x), ref_q(plain(x), 3, True, 0.5))
    assert 'out_quantizer.scale' in q.state_dict() and not any('out_quantizer' in k for k in plain.state_dict())
    with pytest.raises(ValueError, match='does not support output quantization'):
        QConvBN(3, 4, 1, output_quant=A3)  # its FoldedBN checks that it sees the conv's own output


def test_deprecated_weight_cfg_act_cfg_arguments():
    """``weight_cfg`` / ``act_cfg`` (``act_cfg`` is an activation layer everywhere else in OpenMMLab) still work,
    with a warning naming ``weight_quant`` / ``input_quant``; giving both names is an error."""
    conv = nn.Conv2d(2, 3, 1)
    with pytest.warns(FutureWarning) as record:
        old = QConv2d.from_float(conv, weight_cfg=W4, act_cfg=A3)
    assert [str(r.message).split(' (')[0] for r in record] == [
        "QConv2d.from_float: 'weight_cfg' is deprecated, use 'weight_quant'",
        "QConv2d.from_float: 'act_cfg' is deprecated, use 'input_quant'"]
    assert all(r.filename == __file__ for r in record)  # the warning points at the caller
    assert old.weight_quantizer.bits == 4 and old.act_quantizer.bits == 3
    with pytest.warns(FutureWarning, match="'weight_cfg' is deprecated, use 'weight_quant'"):
        assert QLinear(2, 2, weight_cfg=W4).weight_quantizer.bits == 4
    with pytest.raises(TypeError, match="both 'act_cfg'"):
        QConv2d(2, 3, 1, act_cfg=A3, input_quant=A3)
