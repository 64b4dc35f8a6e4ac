"""GroupedOptimWrapperConstructor: mmengine's paramwise rules, one param group per distinct setting."""
import copy

import pytest
import torch
from mmengine.optim import DefaultOptimWrapperConstructor
from torch import nn

from mmaqd.engine import GroupedOptimWrapperConstructor, merge_param_groups
from mmaqd.quantization import QConv2d

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
