"""Tests of quantize_model / QuantConfig (convert.py): conversion rules, the logged table, and config errors."""
import logging
import uuid
from collections import OrderedDict

import pytest
import torch
from mmengine.logging import MMLogger
from torch import nn

from mmaqd.quantization.convert import (DEFAULT_LAYER_MAP, FoldRules, LayerRule, QuantConfig, quantization_table,
                                        quantize_model)
from mmaqd.quantization.layers import QConv2d, QLinear
from mmaqd.quantization.mode import quantization_disabled
from mmaqd.quantization.weight_reuse import reuse_quantized_weights
from uniform_q import UT, UniformTestQ, ref_q  # noqa: F401


class CustomConv(nn.Conv2d):
    """A conv subclass with its own forward (stands in for e.g. a deformable conv)."""


class Toy(nn.Module):
    """backbone (conv1 + bn + relu + a block) -> neck (1x1 + custom conv) -> head (tower, cls / reg); aux FC."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(3, 4, 3, padding=1), bn1=nn.BatchNorm2d(4), relu=nn.ReLU(),
            layer1=nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())))
        self.neck = nn.Sequential(OrderedDict(lateral=nn.Conv2d(4, 4, 1), custom=CustomConv(4, 4, 1)))
        self.bbox_head = nn.Module()
        self.bbox_head.cls_convs = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        self.bbox_head.conv_cls = nn.Conv2d(4, 2, 3, padding=1)
        self.bbox_head.conv_reg = nn.Conv2d(4, 4, 3, padding=1)
        self.aux = nn.Linear(4, 2)

    def forward(self, x):  # x: (N, 3, H, W)
        f = self.bbox_head.cls_convs(self.neck(self.backbone(x)))  # (N, 4, H, W)
        return self.bbox_head.conv_cls(f), self.bbox_head.conv_reg(f), self.aux(f.mean((2, 3)))


AQD = dict(weight_quant=dict(type=UT, bits=4), input_quant=dict(type=UT, bits=4),
           scope=['backbone', 'neck', 'bbox_head'], first_layer='backbone.conv1',
           last_layers=['bbox_head.conv_cls', 'bbox_head.conv_reg'])


def cfg(**kw):
    return {**AQD, **kw}


def bits(layer):
    return (None if layer.weight_quantizer is None else layer.weight_quantizer.bits,
            None if layer.act_quantizer is None else layer.act_quantizer.bits)


def snapshot(model):
    return [(n, id(m), type(m)) for n, m in model.named_modules()]


def test_paper_rules_first_and_last_fp():
    m = Toy()
    conv1, aux = m.backbone.conv1, m.aux
    quantize_model(m, cfg())
    assert m.backbone.conv1 is conv1 and m.aux is aux  # first layer FP; aux out of scope
    assert type(m.neck.custom) is CustomConv  # subclass not converted
    for layer in (m.backbone.layer1[0], m.neck.lateral, m.bbox_head.cls_convs[0]):
        assert isinstance(layer, QConv2d) and bits(layer) == (4, 4)
    assert type(m.bbox_head.conv_cls) is nn.Conv2d and type(m.bbox_head.conv_reg) is nn.Conv2d
    assert m.backbone.layer1[0].act_quantizer.signed is None  # act signedness left to the first batch
    out = m(torch.randn(2, 3, 8, 8))
    assert out[0].shape == (2, 2, 8, 8)


def test_f8l8_rules_and_equivalence_when_disabled():
    torch.manual_seed(0)
    m = Toy().eval()
    x = torch.randn(2, 3, 8, 8)
    ref = m(x)
    quantize_model(m, cfg(first_layer_bits=8, last_layers=['bbox_head.conv_*'], last_layer_bits=8))
    assert bits(m.backbone.conv1) == (8, 8)
    assert bits(m.bbox_head.conv_cls) == (8, 8) and bits(m.bbox_head.conv_reg) == (8, 8)
    assert bits(m.neck.lateral) == (4, 4)
    with quantization_disabled(m):
        assert all(torch.equal(a, b) for a, b in zip(m(x), ref))
    assert not torch.equal(m(x)[0], ref[0])


def test_overrides_skip_and_scope():
    m = Toy()
    lateral = m.neck.lateral
    quantize_model(m, cfg(last_layer_bits=8, skip=['neck.lateral'], overrides=[
        dict(pattern='bbox_head.*', weight_quant=dict(bits=3), input_quant=None),
        dict(pattern='backbone.layer1.*', weight_quant=None, input_quant=dict(bits=2, scale=0.5))]))
    assert m.neck.lateral is lateral
    assert bits(m.bbox_head.cls_convs[0]) == (3, None)
    assert bits(m.bbox_head.conv_cls) == (8, None)  # last-layer bits beat overrides; act stays FP
    assert bits(m.backbone.layer1[0]) == (None, 2)
    assert float(m.backbone.layer1[0].act_quantizer.scale.detach()) == 0.5

    m = Toy()
    quantize_model(m, dict(weight_quant=dict(type=UT, bits=4), scope=['neck']))
    assert isinstance(m.neck.lateral, QConv2d) and bits(m.neck.lateral) == (4, None)
    assert type(m.backbone.layer1[0]) is nn.Conv2d and type(m.bbox_head.conv_cls) is nn.Conv2d

    m = Toy()
    quantize_model(m, dict(weight_quant=dict(type=UT, bits=4, per_channel=True)))  # scope None: whole model
    assert isinstance(m.aux, QLinear) and m.aux.weight_quantizer.scale.shape == (2,)


def test_shared_module_replaced_everywhere_and_idempotent():
    m = Toy()
    m.neck.shared = m.bbox_head.conv_reg  # one conv reachable under two names
    quantize_model(m, dict(weight_quant=dict(type=UT, bits=4)))
    assert isinstance(m.neck.shared, QConv2d) and m.neck.shared is m.bbox_head.conv_reg
    before = snapshot(m)
    quantize_model(m, dict(weight_quant=dict(type=UT, bits=4)))  # already quantized layers are left alone
    assert snapshot(m) == before


def test_table_and_log():
    m = Toy()
    logger = MMLogger.get_instance(f'test_convert_{uuid.uuid4().hex}')  # becomes the current instance
    records = []
    handler = logging.Handler()
    handler.emit = lambda r: records.append(r.getMessage())
    logger.addHandler(handler)
    quantize_model(m, cfg(last_layer_bits=8))
    table = quantization_table(m)
    assert any(table in r for r in records)
    lines = {line.split()[0]: line.split() for line in table.splitlines()[2:-1]}
    assert lines['backbone.conv1'] == ['backbone.conv1', 'Conv2d', 'FP', 'FP']
    assert lines['backbone.layer1.0'] == ['backbone.layer1.0', 'QConv2d', UT, '4b', UT, '4b', 'auto']
    assert lines['bbox_head.conv_cls'][2:] == [UT, '8b', UT, '8b', 'auto']
    assert lines['neck.custom'][1:] == ['CustomConv', 'FP', 'FP']
    assert table.splitlines()[-1] == '5 of 8 conv/linear layers quantized, 3 full precision'
    assert any('not converted' in r and 'neck.custom (CustomConv)' in r for r in records)


BAD = [  # (cfg changes, exception, fragments the message must hold)
    (dict(first_layer='backbone.convv1'), ValueError, ['matches no module', "'backbone.conv1'"]),
    (dict(last_layers=['bbox_head.conv_box']), ValueError, ['matches no module', 'bbox_head.conv_cls']),
    (dict(skip=['nek.lateral']), ValueError, ['matches no module', 'neck.lateral']),
    (dict(overrides=[dict(pattern='head.*', weight_quant=None)]), ValueError, ['matches no module']),
    (dict(scope=['backbone', 'bakbone']), ValueError, ['bakbone', 'names no module', "'backbone'"]),
    (dict(first_layer='backbone.bn1'), ValueError, ['BatchNorm2d', 'cannot be quantized', "'Conv2d'", "'Linear'"]),
    (dict(skip=['backbone.relu']), ValueError, ['ReLU', 'cannot be quantized']),
    (dict(last_layers=['bbox_head']), ValueError, ['Module', "'bbox_head.*'"]),
    (dict(overrides=[dict(pattern='neck.custom', weight_quant=None)]), ValueError,
     ['CustomConv', 'cannot be quantized']),
    (dict(skip=['backbone.bn*']), ValueError, ['BatchNorm2d', 'cannot be quantized']),
    (dict(skip=['backbone.[br]*']), ValueError, ['none that can be quantized', 'BatchNorm2d', 'ReLU']),
    (dict(weight_quant=dict(type=UT, bits=9)), ValueError, ['bits=9', '2 to 8']),
    (dict(first_layer_bits=1), ValueError, ['first_layer_bits=1', '2 to 8']),
    (dict(overrides=[dict(pattern='neck.*', input_quant=dict(bits=16))]), ValueError, ['bits=16', '2 to 8']),
    (dict(input_quant=dict(type='NoSuchQ', bits=4)), KeyError, ['NoSuchQ', UT]),
    (dict(overrides=[dict(pattern='neck.*', weight_quant=dict(type='Nope'))]), KeyError, ['Nope', UT]),
    (dict(weight_quant=None, overrides=[dict(pattern='neck.*', weight_quant=dict(bits=3))]), ValueError, ["no 'type'"]),
    (dict(overrides=[dict(pattern='neck.*', bits=3)]), KeyError, ["['bits']", 'pattern']),
    (dict(weight_bits=3), KeyError, ['weight_bits', 'first_layer_bits']),
    # fails while building the very last layer: nothing may have been replaced before it
    (dict(last_layer_bits=8, overrides=[dict(pattern='bbox_head.conv_reg', input_quant=dict(bogus=1))]), TypeError,
     ["'bbox_head.conv_reg'", 'bogus']),
]


@pytest.mark.parametrize('change,exc,fragments', BAD)
def test_errors_leave_model_untouched(change, exc, fragments):
    m = Toy()
    before, state = snapshot(m), {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(exc) as info:
        quantize_model(m, cfg(**change))
    for f in fragments:
        assert f in str(info.value), (f, str(info.value))
    assert snapshot(m) == before
    assert all(torch.equal(v, state[k]) for k, v in m.state_dict().items())


def test_quant_config_from_dict():
    qc = QuantConfig.from_dict(cfg(last_layers='bbox_head.conv_cls'))
    assert qc.last_layers == ['bbox_head.conv_cls'] and QuantConfig.from_dict(qc) is qc
    with pytest.raises(ValueError, match='scope'):
        QuantConfig(scope=[])


def test_liq_conversion():
    """AQD's LIQ through the conversion: 2-bit grids in the body, and the straight-through gradients of eq. 6-7
    reaching the float weight through the weight normalization (inside the interval: the gradient of the quantized
    weight; clipped: 0)."""
    torch.manual_seed(0)
    m = Toy()
    quantize_model(m, dict(AQD, weight_quant=dict(type='LIQ', bits=2, weight_norm=True),
                           input_quant=dict(type='LIQ', bits=2), first_layer_bits=8, last_layer_bits=8))
    lateral, x = m.neck.lateral, torch.randn(2, 3, 8, 8)
    m(x)  # the first batch initialises the intervals
    wq_q, xq_q = lateral.weight_quantizer, lateral.act_quantizer
    with reuse_quantized_weights(m):
        outs = m(x)
        wq = lateral.weight_reuse[0]  # the quantized weight this forward computed with
        loss = sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outs)
        g_wq, g_w, g_alpha_w, g_alpha_x = torch.autograd.grad(loss, [wq, lateral.weight, wq_q.alpha, xq_q.alpha])
    assert torch.unique(wq.detach()).numel() <= 4  # 2^2 levels (AQD eq. 3-5)
    with torch.no_grad():
        inside = wq_q.normalize(lateral.weight).abs() < wq_q.alpha  # |v| < 1, v = normalized weight / alpha
    assert inside.any() and not inside.all()  # the 2-bit interval clips some weights
    assert torch.allclose(g_w, g_wq * inside, rtol=1e-5, atol=1e-7)  # eq. 6, straight through the normalization
    assert torch.isfinite(g_alpha_w) and g_alpha_w != 0 and torch.isfinite(g_alpha_x) and g_alpha_x != 0
    assert 'LIQ 2b' in quantization_table(m)


def test_scope_prefix_covers_its_module_not_a_sibling_sharing_the_prefix():
    """``scope=['neck']`` covers ``neck`` and ``neck.*``, not ``neck2`` (nor ``necklace``)."""
    def toy():
        m = Toy()
        m.neck2 = nn.Sequential(OrderedDict(lateral=nn.Conv2d(4, 4, 1)))
        m.necklace = nn.Conv2d(4, 4, 1)
        return m

    m = toy()
    quantize_model(m, dict(weight_quant=dict(type=UT, bits=4), scope=['neck']))
    assert isinstance(m.neck.lateral, QConv2d)
    assert type(m.neck2.lateral) is nn.Conv2d and type(m.necklace) is nn.Conv2d
    m = toy()
    quantize_model(m, dict(weight_quant=dict(type=UT, bits=4), scope=['neck2']))
    assert isinstance(m.neck2.lateral, QConv2d) and type(m.neck.lateral) is nn.Conv2d


def test_deprecated_keys_weight_and_act_still_work_with_a_warning():
    """``weight`` / ``act`` (QuantConfig fields and override keys) are read as ``weight_quant`` / ``input_quant``."""
    new = dict(AQD, overrides=[dict(pattern='neck.*', weight_quant=dict(bits=3), input_quant=None)])
    old = {('weight' if k == 'weight_quant' else 'act' if k == 'input_quant' else k): v for k, v in new.items()}
    old['overrides'] = [dict(pattern='neck.*', weight=dict(bits=3), act=None)]
    with pytest.warns(FutureWarning) as record:
        qc = QuantConfig.from_dict(old)
    messages = [str(r.message) for r in record]
    for old_key, new_key in (('weight', 'weight_quant'), ('act', 'input_quant')):
        assert any(f"'{old_key}' is deprecated, use '{new_key}'" in m for m in messages), (old_key, messages)
    assert any(m.startswith('QuantConfig.overrides[0]') for m in messages)
    assert qc == QuantConfig.from_dict(new)
    m_old, m_new = Toy(), Toy()
    with pytest.warns(FutureWarning):
        quantize_model(m_old, old)
    quantize_model(m_new, new)
    assert [(n, type(m)) for n, m in m_old.named_modules()] == [(n, type(m)) for n, m in m_new.named_modules()]
    assert bits(m_new.neck.lateral) == bits(m_old.neck.lateral) == (3, None)
    with pytest.raises(KeyError, match="both 'act' .*and 'input_quant'"):
        QuantConfig.from_dict(dict(new, act=dict(bits=2)))  # a child config still saying act= over a new base


def test_layer_map_is_a_parameter():
    """The types converted, and into what, come from ``layer_map`` (default DEFAULT_LAYER_MAP)."""
    m = Toy()
    quantize_model(m, dict(weight_quant=dict(type=UT, bits=4)), layer_map={nn.Linear: LayerRule(QLinear)})
    assert isinstance(m.aux, QLinear) and type(m.neck.lateral) is nn.Conv2d
    m = Toy()
    layer_map = {**DEFAULT_LAYER_MAP, CustomConv: LayerRule(QConv2d)}
    quantize_model(m, dict(weight_quant=dict(type=UT, bits=4), scope=['neck']), layer_map=layer_map)
    assert type(m.neck.custom) is QConv2d and type(m.neck.lateral) is QConv2d
    with pytest.raises(ValueError, match=r"CustomConv.*quantizable types: \['Linear'\]"):
        quantize_model(Toy(), dict(skip=['neck.custom']), layer_map={nn.Linear: LayerRule(QLinear)})


def test_fold_bn_true_needs_the_model_familys_rules():
    """The quantization floor knows no model family: ``fold_bn=True`` takes its rules from ``fold_rules``."""
    m = Toy()
    before = snapshot(m)
    with pytest.raises(ValueError, match=r'fold_bn=True.*fold_rules=.*MMDET_FOLD_RULES'):
        quantize_model(m, dict(fold_bn=True))
    assert snapshot(m) == before
    rules = FoldRules(rules=(dict(conv=r'backbone\.conv1', bn='backbone.bn1'),),
                      check_parent=lambda parent: 'refused' if parent is m.bbox_head else None)
    quantize_model(m, dict(fold_bn=True), fold_rules=rules)
    assert type(m.backbone.conv1).__name__ == 'QConvBN' and type(m.backbone.bn1).__name__ == 'FoldedBN'
    m = Toy()
    with pytest.raises(ValueError, match=r"'backbone\.conv1': refused"):
        quantize_model(m, dict(fold_bn=True), fold_rules=rules._replace(check_parent=lambda parent: 'refused'))
