"""Bit-operations (mmaqd.quantization.bops): MACs x weight bits x activation bits per conv / linear."""
import warnings

import pytest
import torch
from mmengine.analysis import FlopAnalyzer
from torch import nn

from mmaqd.quantization import count_bops, quantization_disabled, quantizers
from mmaqd.quantization.layers import QConv2d, QLinear, build_role_quantizer

LIQ = 'LIQ'


class Tiny(nn.Module):
    """QConv2d (W4/A3) -> ReLU -> FP conv (stride 2) -> grouped QConv2d (W2/A2) -> flatten -> QLinear (W8/A4)."""

    def __init__(self):
        super().__init__()
        self.qconv = QConv2d(3, 8, 3, padding=1, weight_quant=dict(type=LIQ, bits=4, weight_norm=True),
                             input_quant=dict(type=LIQ, bits=3))
        self.fpconv = nn.Conv2d(8, 4, 1, stride=2)
        self.gconv = QConv2d(4, 4, 3, padding=1, groups=2, bias=False, weight_quant=dict(type=LIQ, bits=2),
                             input_quant=dict(type=LIQ, bits=2))
        self.fc = QLinear(64, 10, weight_quant=dict(type=LIQ, bits=8), input_quant=dict(type=LIQ, bits=4))

    def forward(self, x):  # x: (N, 3, 8, 8)
        y = self.gconv(self.fpconv(torch.relu(self.qconv(x))))  # (N, 4, 4, 4)
        return self.fc(y.flatten(1))  # (N, 10)


# by hand, for a (2, 3, 8, 8) input: MACs = output values x (C_in / groups) x kernel size (conv), N x out x in (fc)
HAND = {
    'qconv': (2 * 8 * 8 * 8 * 3 * 3 * 3, 4, 3),   # 27648 MACs, W4 / A3
    'fpconv': (2 * 4 * 4 * 4 * 8, 32, 32),        # 1x1, stride 2: 1024 MACs, full precision
    'gconv': (2 * 4 * 4 * 4 * 2 * 3 * 3, 2, 2),   # 2 groups: 2 input channels per output, 2304 MACs
    'fc': (2 * 10 * 64, 8, 4),                    # 1280 MACs
}


def _run(model, x):
    with torch.no_grad():
        return count_bops(model, lambda: model(x))


def test_bops_match_a_hand_computation():
    torch.manual_seed(0)
    model, x = Tiny().eval(), torch.randn(2, 3, 8, 8)
    report = _run(model, x)
    got = {layer.name: (layer.macs, layer.weight_bits, layer.act_bits) for layer in report.layers}
    assert got == HAND
    assert report.layers[0].bops == 27648 * 4 * 3 and report.layers[1].bops == 1024 * 32 * 32
    assert report.macs == sum(m for m, _, _ in HAND.values())
    assert report.bops == sum(m * w * a for m, w, a in HAND.values())
    assert report.fp_bops == report.macs * 1024
    assert report.by_bits()[(32, 32)] == (1, 1024, 1024 * 1024)
    assert 'fpconv' in report.table() and '4/3' in report.summary()
    # the forward ran eagerly, so the data-init quantizers are initialised as by a first training batch
    assert all(bool(q.initialized) for _, q in quantizers(model))


def test_disabled_quantizers_count_32_bits_and_hooks_are_removed():
    model, x = Tiny().eval(), torch.randn(2, 3, 8, 8)
    with quantization_disabled(model):
        report = _run(model, x)
    assert {(layer.weight_bits, layer.act_bits) for layer in report.layers} == {(32, 32)}
    assert report.bops == report.fp_bops
    assert not any(m._forward_hooks for m in model.modules())


def test_shared_layer_counts_every_call_and_quantized_input_bits():
    """A conv called twice (as a head conv shared by FPN levels) sums its calls; an FP conv fed by an enabled
    activation quantizer (of the input image) multiplies that quantizer's bits, one fed through a ReLU 32 bits."""
    inq = build_role_quantizer(dict(type=LIQ, bits=8), 'act', signed=True)
    conv = nn.Conv2d(3, 2, 3)

    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.inq, self.conv = inq, conv

        def forward(self, x):
            return self.conv(self.inq(x)) + self.conv(torch.relu(x)).sum()

    model, x = Shared().eval(), torch.randn(1, 3, 5, 5)
    report = _run(model, x)
    macs = 1 * 2 * 3 * 3 * 3 * 3 * 3  # out (1, 2, 3, 3) x 3 channels x 3x3 kernel = 162
    assert [(r.name, r.weight_bits, r.act_bits, r.macs, r.calls) for r in report.layers] == [
        ('conv', 32, 8, macs, 1), ('conv', 32, 32, macs, 1)]
    with quantization_disabled(model):
        assert {r.act_bits for r in _run(model, x).layers} == {32}


def test_macs_equal_mmengine_conv_and_linear_flops():
    model, x = Tiny().eval(), torch.randn(2, 3, 8, 8)
    report = _run(model, x)
    ops = FlopAnalyzer(model, (x, )).unsupported_ops_warnings(False).by_operator()
    assert ops['conv'] + ops['linear'] == report.macs


def test_a_trace_leaves_data_init_quantizers_uninitialised():
    """mmdet's get_flops.py traces a fresh model: the trace neither crashes (aten::fill_ with a bool) nor sets the
    ranges from the traced input; it warns, and the next eager forward initialises as before."""
    model, x = Tiny().eval(), torch.randn(2, 3, 8, 8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        flops = FlopAnalyzer(model, (x, )).unsupported_ops_warnings(False).tracer_warnings('all').total()
    assert flops > 0
    assert not any(bool(q.initialized) for _, q in quantizers(model) if q.data_init)
    assert any('traced (torch.jit) before it was initialised' in str(w.message) for w in caught)
    with torch.no_grad():
        model(x)
    assert all(bool(q.initialized) for _, q in quantizers(model))


@pytest.mark.parametrize('bad', [0, 1])
def test_eager_failure_removes_hooks(bad):
    model = Tiny().eval()

    def boom():
        if bad:
            model(torch.randn(1, 5, 8, 8))  # wrong channel count: the conv raises
        raise RuntimeError('stop')

    with pytest.raises(RuntimeError):
        count_bops(model, boom)
    assert not any(m._forward_hooks for m in model.modules())
