"""PercentileCalibrationHook: FQN activation ranges = mean of per-batch percentiles (FQN, Li et al., CVPR 2019,
section 3.4.1); no recalibration."""

import pytest
import torch
from torch import nn

from mmaqd.engine.hooks import PercentileCalibrationHook, QuantizerInitHook
from mmaqd.quantization import QConv2d, quantizers
from mock_runner import CountingLoader, NoDataLoader, TwoQConvNet, make_runner

ACT = dict(type='FQNAffine', bits=4)  # percentile gamma = 0.999
WEIGHT = dict(type='FQNAffine', bits=4, per_channel=True)


class TinyFQNNet(TwoQConvNet):
    """Two FQN-quantized convs; ``unused`` is never called."""

    def __init__(self):
        super().__init__(WEIGHT, ACT)
        self.unused = QConv2d.from_float(nn.Conv2d(4, 4, 1), WEIGHT, ACT)
        self.unused.act_quantizer.enabled = False  # disabled quantizers are not calibrated


def uniform_batches(n=5):
    """Batch i: uniform on [-(i + 1), 2 (i + 1)), so every batch has different percentiles."""
    g = torch.Generator().manual_seed(0)
    return [dict(inputs=(torch.rand(2, 3, 16, 16, generator=g) * 3 - 1) * (i + 1), data_samples=None)
            for i in range(n)]


def test_ranges_are_mean_of_per_batch_percentiles():
    torch.manual_seed(0)
    model = TinyFQNNet().train()
    batches, loader = uniform_batches(), CountingLoader(uniform_batches())
    runner = make_runner(model, loader)
    PercentileCalibrationHook(num_batches=3).before_train(runner)
    assert loader.taken == 3
    qs = torch.tensor([0.001, 0.999])
    expected = torch.stack([torch.quantile(b['inputs'].flatten(), qs) for b in batches[:3]]).mean(dim=0)
    q1 = model.conv1.act_quantizer
    assert torch.allclose(torch.stack([q1.lb, q1.ub]), expected, rtol=1e-5, atol=1e-6)
    assert abs(float(q1.ub) - 2 * 2) < 0.1 and abs(float(q1.lb) + 2) < 0.1  # uniform: ~the ends of the range
    q2 = model.conv2.act_quantizer
    assert bool(q1.initialized) and bool(q2.initialized) and not q1.calibrating and not q2.calibrating
    assert float(q2.ub) > float(q2.lb)
    assert int(model.bn.num_batches_tracked) == 0 and model.training
    assert 'calibrated 2 quantizer' in str(runner.logger.info.call_args)
    # after calibration the activations are quantized with the fixed range
    x = batches[0]['inputs']
    assert not torch.equal(q1(x), x) and float(q1(x).max()) <= float(q1.ub) + 1e-6


def test_resume_does_not_recalibrate():
    calibrated = TinyFQNNet()
    PercentileCalibrationHook(num_batches=2).before_train(make_runner(calibrated, uniform_batches()))
    resumed = TinyFQNNet()
    resumed.load_state_dict(calibrated.state_dict())
    runner = make_runner(resumed, NoDataLoader())
    PercentileCalibrationHook().before_train(runner)
    for (name, a), (_, b) in zip(resumed.state_dict().items(), calibrated.state_dict().items()):
        assert torch.equal(a, b), name
    assert 'skipping' in str(runner.logger.info.call_args)


def test_runs_before_quantizer_init_hook():
    """With both hooks, calibration (priority ABOVE_NORMAL) sets the ranges, not QuantizerInitHook's one batch."""
    from mmengine.runner.priority import get_priority
    hooks = [QuantizerInitHook(), PercentileCalibrationHook(num_batches=3)]
    hooks.sort(key=lambda h: get_priority(h.priority))  # as the Runner orders them
    assert isinstance(hooks[0], PercentileCalibrationHook)
    model = TinyFQNNet()
    batches = uniform_batches()
    for hook in hooks:
        hook.before_train(make_runner(model, batches))
    qs = torch.tensor([0.001, 0.999])
    expected = torch.stack([torch.quantile(b['inputs'].flatten(), qs) for b in batches[:3]]).mean(dim=0)
    q1 = model.conv1.act_quantizer
    assert torch.allclose(torch.stack([q1.lb, q1.ub]), expected, rtol=1e-5, atol=1e-6)


def test_unreached_quantizer_is_an_error():
    model = TinyFQNNet()
    model.unused.act_quantizer.enabled = True
    with pytest.raises(RuntimeError, match='unused.act_quantizer'):
        PercentileCalibrationHook(num_batches=1).before_train(make_runner(model, uniform_batches()))
    assert not any(q.calibrating for _, q in quantizers(model) if q is not model.unused.act_quantizer)


class LossPathFQNNet(TinyFQNNet):
    """TinyFQNNet plus ``loss_conv``, a quantized conv that only the loss computation runs."""

    def __init__(self):
        super().__init__()
        self.loss_conv = QConv2d.from_float(nn.Conv2d(4, 1, 1), WEIGHT, ACT)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        feats = super().forward(inputs)
        return dict(loss=self.loss_conv(feats).mean()) if mode == 'loss' else feats


def test_forward_mode_loss_calibrates_loss_only_quantizers():
    """``forward_mode='tensor'`` never reaches the loss path: an error naming the quantizer and the fix;
    ``forward_mode='loss'`` calibrates it to the mean of the percentiles of the inputs it saw."""
    model = LossPathFQNNet()
    with pytest.raises(RuntimeError, match=r"forward_mode='tensor'.*try forward_mode='loss'.*loss_conv\.act_quantizer"):
        PercentileCalibrationHook(num_batches=2).before_train(make_runner(model, uniform_batches()))

    model = LossPathFQNNet()
    seen = []
    model.loss_conv.register_forward_hook(lambda m, args, out: seen.append(args[0].detach().clone()))
    PercentileCalibrationHook(num_batches=3, forward_mode='loss').before_train(make_runner(model, uniform_batches()))
    assert len(seen) == 3  # one loss forward per calibration batch
    q = model.loss_conv.act_quantizer
    assert bool(q.initialized) and not q.calibrating
    qs = torch.tensor([0.001, 0.999])
    expected = torch.stack([torch.quantile(x.flatten(), qs) for x in seen]).mean(dim=0)
    assert torch.allclose(torch.stack([q.lb, q.ub]), expected, rtol=1e-5, atol=1e-6)
    assert bool(model.conv1.act_quantizer.initialized) and bool(model.conv2.act_quantizer.initialized)
