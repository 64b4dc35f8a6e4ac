"""reestimate_bn: every BN's running statistics become the plain average of its batch statistics over the given
batches, with the quantizers fixed and every module's mode restored; no batch leaves the statistics alone."""
import pytest
import torch

from mmaqd.engine.bn_reestimation import reestimate_bn
from mock_runner import TwoQConvNet

ACT = dict(type='LIQ', bits=4, init='max')
WEIGHT = dict(type='LIQ', bits=4, weight_norm=True, init='max')


def _batches(n=3):
    g = torch.Generator().manual_seed(0)
    return [dict(inputs=torch.rand(2, 3, 8, 8, generator=g) * (i + 1), data_samples=None) for i in range(n)]


def test_running_statistics_are_the_average_of_the_batch_statistics():
    torch.manual_seed(0)
    model = TwoQConvNet(WEIGHT, ACT).eval()
    model(_batches()[0]['inputs'])  # initialises the quantizers
    alphas = {n: p.clone() for n, p in model.named_parameters() if n.endswith('alpha')}
    seen = []
    handle = model.bn.register_forward_pre_hook(lambda m, i: seen.append(i[0].detach().clone()))
    assert reestimate_bn(model, _batches(), 3) == 3
    handle.remove()
    means = torch.stack([x.mean(dim=(0, 2, 3)) for x in seen])  # (3, C)
    vars_ = torch.stack([x.transpose(0, 1).reshape(x.shape[1], -1).var(dim=1, unbiased=True) for x in seen])
    assert torch.allclose(model.bn.running_mean, means.mean(0), atol=1e-6)
    assert torch.allclose(model.bn.running_var, vars_.mean(0), atol=1e-5)
    assert not model.training and not model.bn.training and model.bn.momentum == 0.1
    assert all(torch.equal(p, alphas[n]) for n, p in model.named_parameters() if n.endswith('alpha'))


def test_no_batch_leaves_the_statistics_unchanged():
    model = TwoQConvNet(WEIGHT, ACT)
    model.bn.running_mean.fill_(0.5)
    with pytest.raises(ValueError, match='no batch'):
        reestimate_bn(model, [], 5)
    assert torch.equal(model.bn.running_mean, torch.full((4,), 0.5))
    with pytest.raises(ValueError, match='num_batches'):
        reestimate_bn(model, _batches(), 0)
