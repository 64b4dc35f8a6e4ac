"""FreezeBNHook: folded BN statistics follow batch statistics before ``start_iter``, frozen from it on
(FQN, Li et al., CVPR 2019, Table 3)."""
from collections import OrderedDict
from unittest.mock import MagicMock

import pytest
import torch
from torch import nn

from mmaqd.engine.hooks import FreezeBNHook
from mmaqd.models.fold_rules import MMDET_FOLD_RULES
from mmaqd.quantization import QConvBN, quantize_model


def folded_net():
    net = nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 4, 3, padding=1), bn=nn.BatchNorm2d(4), relu=nn.ReLU()))
    return quantize_model(net, dict(fold_bn=True, freeze_bn=False), fold_rules=MMDET_FOLD_RULES).train()


def make_runner(model, it=0):
    runner = MagicMock()
    runner.model, runner.iter = model, it
    return runner


def test_statistics_update_until_start_iter_then_freeze():
    torch.manual_seed(0)
    net = folded_net()
    runner = make_runner(net)
    hook = FreezeBNHook(start_iter=2)
    hook.before_train(runner)
    history = []
    for it in range(4):
        runner.iter = it
        hook.before_train_iter(runner, it)
        net(torch.randn(2, 3, 6, 6))
        history.append((net.conv.frozen, net.bn.running_mean.clone(), int(net.bn.num_batches_tracked)))
    assert [h[0] for h in history] == [False, False, True, True]
    assert [h[2] for h in history] == [1, 2, 2, 2]
    assert not torch.equal(history[0][1], history[1][1]) and torch.equal(history[1][1], history[3][1])
    logs = [str(c) for c in runner.logger.info.call_args_list]
    assert len(logs) == 2 and 'until iteration 2' in logs[0] and 'iteration 2' in logs[1] and 'frozen' in logs[1]


def test_resumed_run_after_start_iter_is_frozen_from_the_start():
    net = folded_net()
    FreezeBNHook(start_iter=5).before_train(make_runner(net, it=7))
    assert all(m.frozen for m in net.modules() if isinstance(m, QConvBN))


def test_model_without_folded_bn_is_an_error():
    with pytest.raises(RuntimeError, match='fold_bn=True'):
        FreezeBNHook(start_iter=0).before_train(make_runner(nn.Sequential(nn.Conv2d(3, 3, 1))))


@pytest.mark.parametrize('bad', [-1, 1.5, True, None])
def test_bad_start_iter(bad):
    with pytest.raises(ValueError, match='start_iter'):
        FreezeBNHook(start_iter=bad)
