"""QuantizerHealthHook: every logging interval, each quantizer's range and clipped share go to the message hub and
the visualizer; nothing is attached on the other iterations. Each quantizer's ``clip_bounds`` against hand counts."""
import glob
import json
import os.path as osp
from unittest.mock import MagicMock

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import LoggerHook
from mmengine.logging import MessageHub
from mmengine.runner import Runner
from torch import nn

from conftest import ROOT
from mmaqd.engine.hooks import QuantizerHealthHook
from mmaqd.engine.hooks.quantizer_health_hook import clipped_count, summary
from mmaqd.quantization import QConv2d, quantizers
from mmaqd.quantization.quantizers import LIQ, LSQ, PACT, DoReFa, FQNAffine, LQNet, LSQPlus

ACT = dict(type='LIQ', bits=4, signed=False, init='const', init_value=0.5)  # clipped below 0 and above 0.5
WEIGHT = dict(type='LIQ', bits=4, weight_norm=True, init='const', init_value=1.0)  # clipped where |w - m| > s


def tiny_qconv():
    conv = QConv2d.from_float(nn.Conv2d(3, 2, 1, bias=False), WEIGHT, ACT)
    with torch.no_grad():  # mean 0, std 2: normalized -1.5, -0.5, 0, 0, 0.5, 1.5; two beyond alpha = 1
        conv.weight.copy_(torch.tensor([-3., -1., 0., 0., 1., 3.]).view(2, 3, 1, 1))
    return nn.Sequential(conv)


def make_runner(model, log_interval=2):
    runner = MagicMock()
    runner.model, runner.iter = model, 0
    runner.hooks = [LoggerHook(interval=log_interval)]
    runner.message_hub = MessageHub.get_instance('test_quantizer_health_hook')
    return runner


def attached(model):
    return sum(len(q._forward_hooks) for _, q in quantizers(model))


def test_logs_alpha_and_clipped_share_on_logging_iterations_only():
    model = tiny_qconv()
    runner = make_runner(model)
    hook = QuantizerHealthHook()
    hook.before_train(runner)
    assert hook.interval == 2  # the LoggerHook's
    x1 = torch.tensor([-0.2, 0.0, 0.1, 0.5, 0.6, 0.9] * 2).view(1, 3, 2, 2)  # 6 of 12 clipped (0.5 is a level)
    x2 = torch.full((1, 3, 2, 2), 0.25)  # none clipped

    runner.iter = 0  # iteration 1: not a logging iteration, nothing attached, nothing logged
    hook.before_train_iter(runner, 0)
    assert attached(model) == 0
    model(x1)
    hook.after_train_iter(runner, 0)
    runner.visualizer.add_scalars.assert_not_called()

    runner.iter = 1  # iteration 2: logged; the act quantizer runs twice (as a head conv per FPN level)
    hook.before_train_iter(runner, 1)
    assert attached(model) == 2
    model(x1)
    model(x2)
    with torch.no_grad():
        model[0].act_quantizer.alpha.fill_(0.55)  # as the optimizer step would: the logged alpha is the new one
    hook.after_train_iter(runner, 1)
    assert attached(model) == 0

    q = model[0].act_quantizer
    hub = runner.message_hub
    assert hub.get_scalar('quant/0.act.alpha').current() == pytest.approx(q.alpha.item()) == pytest.approx(0.55)
    assert hub.get_scalar('quant/0.act.clip').current() == pytest.approx(6 / 24)
    assert hub.get_scalar('quant/0.weight.alpha').current() == pytest.approx(1.0)
    assert hub.get_scalar('quant/0.weight.clip').current() == pytest.approx(2 / 6)
    assert not any(k.startswith('quant/') for k in hub.state_dict()['log_scalars'])  # not saved in checkpoints
    (scalars,), kwargs = runner.visualizer.add_scalars.call_args
    assert kwargs == dict(step=2) and scalars == {
        'quant/0.act.alpha': pytest.approx(0.55), 'quant/0.act.clip': 0.25,
        'quant/0.weight.alpha': 1.0, 'quant/0.weight.clip': pytest.approx(1 / 3)}
    assert 'most clipped 0.weight.clip = 33.33%' in str(runner.logger.info.call_args)


def test_per_channel_alpha_logs_its_mean_and_summary():
    model = nn.Sequential(QConv2d.from_float(nn.Conv2d(3, 2, 1), dict(type='LSQ', bits=4, per_channel=True), None))
    with torch.no_grad():
        model[0].weight_quantizer.step_size.copy_(torch.tensor([0.1, 0.3]))
    model[0].weight_quantizer.initialized.fill_(True)  # no data init over it
    runner = make_runner(model, log_interval=1)
    hook = QuantizerHealthHook(interval=1)
    hook.before_train(runner)
    hook.before_train_iter(runner, 0)
    model(torch.rand(1, 3, 4, 4))
    hook.after_train_iter(runner, 0)
    (scalars,), _ = runner.visualizer.add_scalars.call_args
    assert scalars['quant/0.weight.step_size'] == pytest.approx(0.2)
    assert summary(scalars).endswith('smallest range 0.weight.step_size = 0.2')


def test_model_without_quantizers_and_bad_interval():
    runner = make_runner(nn.Conv2d(3, 3, 1))
    hook = QuantizerHealthHook()
    hook.before_train(runner)
    hook.before_train_iter(runner, 1)
    hook.after_train_iter(runner, 1)
    runner.visualizer.add_scalars.assert_not_called()
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match='interval'):
            QuantizerHealthHook(interval=bad)


def initialised(q, **values):
    with torch.no_grad():
        for name, v in values.items():
            getattr(q, name).fill_(v)
    q.initialized.fill_(True)
    return q


@pytest.mark.parametrize('make, x, n', [
    (lambda: LIQ(4, signed=True, init='const', init_value=0.5), [-0.7, -0.5, 0., 0.5, 0.6], 2),
    (lambda: initialised(LSQ(2, signed=False), step_size=0.1), [-0.1, 0., 0.3, 0.31], 2),  # [0, 3 s]
    (lambda: initialised(LSQPlus(2, signed=False), step_size=0.1, offset=-0.1), [-0.2, -0.1, 0.2, 0.25], 2),
    (lambda: PACT(4, init_value=1.0), [-0.1, 0.5, 1.0, 1.5], 2),
    (lambda: DoReFa(4, signed=True), [-1.5, -1., 0., 1., 1.01], 2),
    # 8 bits on [-0.5, 1]: delta 1.5/255, zero point 85, so 0 is a level and the range stays [-0.5, 1]
    (lambda: initialised(FQNAffine(8), lb=-0.5, ub=1.0), [-0.6, -0.49, 0.99, 1.01, 2.0], 3),
    (lambda: initialised(LQNet(2, signed=False), basis=0.1), [-0.05, 0., 0.2, 0.35], 2),  # levels 0 to 0.2
])
def test_clip_bounds_hand_counts(make, x, n):
    q = make()
    x = torch.tensor(x)
    q(x)  # the forward sets what the bounds need (signedness)
    assert int(clipped_count(q, x)) == n


@pytest.mark.parametrize('q', [DoReFa(4, role='weight'), PACT(4, role='weight'), FQNAffine(4, role='weight')])
def test_weight_ranges_from_the_weight_never_clip(q):
    assert clipped_count(q, torch.randn(4, 3)) is None


def test_calibrating_quantizer_is_not_counted():
    model = nn.Sequential(QConv2d.from_float(nn.Conv2d(3, 2, 1), None, dict(type='FQNAffine', bits=4)))
    model[0].act_quantizer.start_calibration()
    runner = make_runner(model, log_interval=1)
    hook = QuantizerHealthHook()
    hook.before_train(runner)
    hook.before_train_iter(runner, 0)
    model(torch.rand(1, 3, 4, 4))
    hook.after_train_iter(runner, 0)
    (scalars,), _ = runner.visualizer.add_scalars.call_args
    assert set(scalars) == {'quant/0.act.lb', 'quant/0.act.ub'}


def test_runner_writes_the_values_to_the_visualizer(tiny_coco, tmp_path, runner_cfg_builder):
    """A real run: LocalVisBackend's scalars.json holds every quantizer's alpha and clipped share."""
    work_dir = str(tmp_path / 'work')
    cfg = runner_cfg_builder('configs/aqd/fcos_r18-c32_fpn_aqd-w4a4_synth.py', tiny_coco, work_dir, max_iters=2)
    cfg.load_from = None
    cfg.default_hooks.quantizer_health = dict(type='QuantizerHealthHook')  # logger interval 1
    cfg.visualizer.name = f'visualizer_{tmp_path.name}'  # not the instance of an earlier runner in this process
    runner = Runner.from_cfg(cfg)
    runner.train()
    names = [n[:-len('_quantizer')] for n, _ in quantizers(runner.model)]
    (path,) = glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    with open(path) as f:  # the LoggerHook's lines (losses, val metrics) are there too
        lines = [r for r in map(json.loads, f) if any(k.startswith('quant/') for k in r)]
    assert [r['step'] for r in lines] == [1, 2]
    for name in names:
        assert 0 <= lines[-1][f'quant/{name}.clip'] <= 1
    alpha = runner.model.backbone.layer1[0].conv1.act_quantizer.alpha.item()
    assert lines[-1]['quant/backbone.layer1.0.conv1.act.alpha'] == pytest.approx(alpha)


def test_tensorboard_fragment_composes_with_a_quantized_config(tmp_path):
    path = tmp_path / 'tb.py'
    path.write_text(f"_base_ = ['{ROOT}/configs/aqd/fcos_r18-c32_fpn_aqd-w4a4_synth.py', "
                    f"'{ROOT}/configs/_base_/tensorboard.py']\n"
                    'visualizer = _base_.tensorboard.visualizer\n'
                    'default_hooks = _base_.tensorboard.default_hooks\n')
    cfg = Config.fromfile(str(path))
    assert [b['type'] for b in cfg.visualizer.vis_backends] == ['LocalVisBackend', 'TensorboardVisBackend']
    assert cfg.visualizer.type == 'DetLocalVisualizer'
    assert cfg.default_hooks.quantizer_health.type == 'QuantizerHealthHook'
    assert cfg.default_hooks.divergence_guard.type == 'DivergenceGuardHook'
    assert cfg.custom_hooks == [dict(type='QuantizerInitHook')]
