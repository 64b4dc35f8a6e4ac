"""GroupedOptimWrapperConstructor: mmengine's paramwise rules, one param group per distinct setting."""
import copy
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import DefaultOptimWrapperConstructor, build_optim_wrapper
from torch import nn

from conftest import ROOT, build_cpu_model
from mmaqd.engine import GroupedOptimWrapperConstructor, merge_param_groups
from mmaqd.quantization import QConv2d
from mmaqd.quantization.quantizers.base import BaseQuantizer

CFG = dict(optimizer=dict(type='AdamW', lr=0.01, weight_decay=0.05))
PARAMWISE = dict(custom_keys={'_quantizer': dict(lr_mult=10., decay_mult=0.)})


def _model():
    torch.manual_seed(0)
    conv = QConv2d.from_float(nn.Conv2d(3, 4, 3), dict(type='LIQ', bits=4), dict(type='LIQ', bits=4))
    return nn.Sequential(conv, nn.BatchNorm2d(4), nn.ReLU(), QConv2d.from_float(nn.Conv2d(4, 2, 1),
                                                                                dict(type='LIQ', bits=4)))


def test_groups_merged_by_options():
    model = _model()
    default = DefaultOptimWrapperConstructor(copy.deepcopy(CFG), PARAMWISE)(model).optimizer
    grouped = GroupedOptimWrapperConstructor(copy.deepcopy(CFG), PARAMWISE)(model).optimizer
    assert len(default.param_groups) == len(list(model.parameters())) == 9
    assert len(grouped.param_groups) == 2
    normal, quant = grouped.param_groups
    assert normal['lr'] == 0.01 and normal['weight_decay'] == 0.05
    assert quant['lr'] == pytest.approx(0.1) and quant['weight_decay'] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in quant['params']} == {'0.weight_quantizer.alpha', '0.act_quantizer.alpha',
                                                       '3.weight_quantizer.alpha'}
    assert len(normal['params']) == 6


def test_same_updates_as_the_default_constructor():
    x = torch.rand(2, 3, 6, 6)
    runs = []
    for constructor in (DefaultOptimWrapperConstructor, GroupedOptimWrapperConstructor):
        model = _model()
        wrapper = constructor(copy.deepcopy(CFG), PARAMWISE)(model)
        for _ in range(3):
            wrapper.update_params(model(x).square().mean())
        runs.append(model.state_dict())
    for key, value in runs[0].items():
        assert torch.allclose(value.float(), runs[1][key].float(), atol=1e-6), key


def test_merge_keeps_first_appearance_order():
    a, b, c = (nn.Parameter(torch.zeros(1)) for _ in range(3))
    merged = merge_param_groups([dict(params=[a], lr=1.0), dict(params=[b], lr=2.0), dict(params=[c], lr=1.0)])
    assert [g['lr'] for g in merged] == [1.0, 2.0] and merged[0]['params'] == [a, c]


@pytest.mark.parametrize('config', [
    'configs/aqd/fcos_r18-c32_fpn_aqd-w2a2_synth.py',  # QConv2d weight/act and QAdd a/b/out quantizers
    'configs/fqn/retinanet_r18-c32_fpn_fqn-w4a4_synth.py',  # folded BN, conv output quantizers
    'configs/auxi/retinanet_r18-c32_fpn_auxi-w4a4_synth.py',  # a full-precision auxiliary branch beside them
])
def test_the_configs_quantizer_rule_reaches_exactly_the_quantizers(config):
    """``custom_keys={'_quantizer': ...}`` matches parameter *names*: it relies on every quantizer being held in an
    attribute whose name contains ``_quantizer``. A quantizer attribute renamed otherwise would silently train its
    ranges with the weights' lr and weight decay; here the quantizers are found by type instead."""
    cfg = Config.fromfile(osp.join(ROOT, config))
    (key, rule), = cfg.optim_wrapper.paramwise_cfg.custom_keys.items()
    model = build_cpu_model(cfg, init_weights=False)
    found = {name: m for name, m in model.named_modules() if isinstance(m, BaseQuantizer)}
    assert found and not [n for n in found if key not in n.rsplit('.', 1)[-1]]
    quant = {id(p) for m in found.values() for p in m.parameters()}
    base = cfg.optim_wrapper.optimizer
    quant_options = (pytest.approx(base.lr * rule.get('lr_mult', 1.0)),
                     pytest.approx(base.weight_decay * rule.get('decay_mult', 1.0)))
    groups = build_optim_wrapper(model, cfg.optim_wrapper).optimizer.param_groups
    assert sum(len(g['params']) for g in groups) == len(list(model.parameters()))
    for group in groups:
        in_quant = {id(p) in quant for p in group['params']}
        assert len(in_quant) == 1, 'a param group mixes quantizer and other parameters'
        if in_quant.pop():
            assert (group['lr'], group['weight_decay']) == quant_options
        else:
            assert (group['lr'], group['weight_decay']) == (base.lr, base.weight_decay)
