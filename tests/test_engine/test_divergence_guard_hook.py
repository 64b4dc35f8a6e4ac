"""DivergenceGuardHook: the first non-finite loss, gradient, parameter or quantizer range stops the run, named, and
no checkpoint of that iteration is written."""
import os.path as osp
import re
from unittest.mock import MagicMock

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.optim import OptimWrapper
from mmengine.runner import Runner
from torch import nn

from mmaqd.engine.hooks import DivergenceError, DivergenceGuardHook
from mmaqd.engine.hooks.divergence_guard_hook import norms_finite, values_finite
from mmaqd.quantization import QConv2d

ACT = dict(type='LIQ', bits=4, init='const', init_value=2.0)
WEIGHT = dict(type='LIQ', bits=4, weight_norm=True, init='const')
NAN = float('nan')


class TinyQDet(BaseModel):
    """A quantized conv -> BN whose ``mode='loss'`` forward returns a detector-style loss dict."""

    def __init__(self):
        super().__init__(data_preprocessor=dict(type='BaseDataPreprocessor'))
        self.conv = QConv2d.from_float(nn.Conv2d(3, 4, 3, padding=1), WEIGHT, ACT)
        self.bn = nn.BatchNorm2d(4)
        self.loss_factor = 1.0  # NaN: a non-finite loss from finite weights

    def forward(self, inputs, data_samples=None, mode='tensor'):
        x = self.bn(self.conv(inputs))  # (N, 4, H, W)
        if mode != 'loss':
            return x
        return {'loss_a': x.pow(2).mean() * self.loss_factor, 'loss_b': [x.abs().mean()], 'acc': torch.tensor(NAN)}


def make_runner(model):
    runner = MagicMock()
    runner.model, runner.iter = model, 0
    runner.optim_wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    return runner


def guarded(model=None):
    """``(model, runner, hook)``: ``model`` (default: a TinyQDet built after ``torch.manual_seed(0)``), its mock
    runner and a DivergenceGuardHook whose ``before_train`` has run."""
    if model is None:
        torch.manual_seed(0)
        model = TinyQDet()
    runner = make_runner(model)
    hook = DivergenceGuardHook()
    hook.before_train(runner)
    return model, runner, hook


def poison_at(at, change):
    """A ``poison`` for :func:`train`: calls ``change()`` under ``torch.no_grad()`` before iteration ``at``."""

    def poison(it):
        if it == at:
            with torch.no_grad():
                change()

    return poison


BATCH = dict(inputs=torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)), data_samples=None)


def train(hook, runner, iters, poison=None):
    """The IterBasedTrainLoop's calls: before_train_iter, train_step (optimizer step), after_train_iter."""
    for it in range(iters):
        runner.iter = it
        if poison is not None:
            poison(it)
        hook.before_train_iter(runner, it)
        runner.model.train_step(BATCH, runner.optim_wrapper)
        hook.after_train_iter(runner, it)


def test_healthy_run_passes_and_removes_its_hooks():
    model, runner, hook = guarded()
    train(hook, runner, 3)  # the non-loss 'acc' entry may be NaN
    hook.after_train(runner)
    assert not model._forward_hooks and not runner.optim_wrapper.optimizer._optimizer_step_pre_hooks


def test_non_finite_loss_stops_before_the_step():
    model, runner, hook = guarded()
    saved = {}

    def poison(it):
        if it == 1:
            model.loss_factor = NAN
            saved.update({k: v.clone() for k, v in model.state_dict().items()})

    with pytest.raises(DivergenceError) as err:
        train(hook, runner, 3, poison)
    msg = str(err.value)
    assert "at iteration 2, before the optimizer step" in msg and "'loss_a' = nan" in msg
    assert "'loss_b'" not in msg and 'acc' not in msg
    assert "non-finite gradient" in msg and "module 'conv', tensor 'weight'" in msg
    assert 'non-finite parameter' not in msg  # the weights were fine: the loss went first
    # the poisoned step was not applied
    assert torch.equal(model.conv.weight, saved['conv.weight'])
    assert torch.equal(model.conv.act_quantizer.alpha, saved['conv.act_quantizer.alpha'])


def test_nan_parameter_is_named():
    model, runner, hook = guarded()
    with pytest.raises(DivergenceError,
                       match=r"iteration 3.*module 'conv', tensor 'weight' \(1 NaN, 0 inf of 108 values\)"):
        train(hook, runner, 4, poison_at(2, lambda: model.conv.weight[0, 0, 0, 0].fill_(NAN)))


def test_quantizer_range_not_positive_is_named_after_the_step():
    """A negative alpha keeps the outputs finite (an all-zero activation), so only the range check sees it."""
    model, runner, hook = guarded()
    with pytest.raises(DivergenceError) as err:
        train(hook, runner, 3, poison_at(1, lambda: model.conv.act_quantizer.alpha.fill_(-1.0)))
    msg = str(err.value)
    assert 'at iteration 2, after the optimizer step' in msg
    assert "quantizer 'conv.act_quantizer', tensor 'alpha' = -1" in msg and 'must be finite and > 0' in msg


def test_bad_starting_weights_stop_before_training():
    model = TinyQDet()
    model.bn.running_var[2] = float('inf')
    with pytest.raises(DivergenceError, match=r"weights the run starts from.*module 'bn', tensor 'running_var' "
                                              r"\(0 NaN, 1 inf of 4 values\)"):
        DivergenceGuardHook().before_train(make_runner(model))


def test_huge_finite_values_are_no_divergence():
    """The fused 2-norm overflows for values near the float32 maximum; the exact check then clears them."""
    big = [torch.full((4,), 3e38)]
    assert not bool(norms_finite(big)) and bool(values_finite(big))
    model = TinyQDet()
    model.register_buffer('big', torch.full((3,), 3e38))
    _, runner, hook = guarded(model)
    train(hook, runner, 1)


class PoisonHook(Hook):
    """Before iteration ``at`` (1-based) sets a NaN into a weight or a negative quantizer interval."""

    def __init__(self, at, kind):
        self.at, self.kind = at, kind

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter + 1 != self.at:
            return
        with torch.no_grad():
            if self.kind == 'nan_weight':
                runner.model.bbox_head.conv_reg.weight[0, 0, 0, 0] = NAN
            else:
                runner.model.backbone.layer1[0].conv1.act_quantizer.alpha.fill_(-0.5)


@pytest.mark.parametrize('kind, named', [
    ('nan_weight', r"before the optimizer step; the run stops here, so no checkpoint of this iteration is written\. "
                   r"non-finite loss \(1\): 'loss_bbox' = nan\. non-finite parameter / buffer \(1\): "
                   r"module 'bbox_head\.conv_reg', tensor 'weight' \(1 NaN"),
    ('negative_alpha', r"after the optimizer step; the run stops here, before any checkpoint of this iteration is "
                       r"written\. quantizer range not > 0 \(1\): "
                       r"quantizer 'backbone\.layer1\.0\.conv1\.act_quantizer', "
                       r"tensor 'alpha' = -0\.[45]\d* \(must be finite and > 0\)"),  # -0.5, moved a little by the step
])
def test_runner_stops_without_writing_the_poisoned_checkpoint(kind, named, tiny_coco, tmp_path, runner_cfg_builder):
    """The AQD benchmark config has the guard (a default hook); a checkpoint every iteration; poisoned at 2: the
    NaN weight is caught before the step, the negative alpha (finite outputs) after it, before CheckpointHook."""
    work_dir = str(tmp_path / 'work')
    cfg = runner_cfg_builder('configs/aqd/fcos_r18-c32_fpn_aqd-w2a2_synth.py', tiny_coco, work_dir, max_iters=3)
    cfg.load_from = None
    cfg.default_hooks.checkpoint.update(interval=1)
    runner = Runner.from_cfg(cfg)
    runner.register_hook(PoisonHook(at=2, kind=kind))
    with pytest.raises(DivergenceError) as err:
        runner.train()
    assert 'at iteration 2' in str(err.value) and re.search(named, str(err.value)), str(err.value)
    assert osp.isfile(osp.join(work_dir, 'iter_1.pth'))
    assert not osp.exists(osp.join(work_dir, 'iter_2.pth')) and not osp.exists(osp.join(work_dir, 'iter_3.pth'))
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        assert f.read().strip().endswith('iter_1.pth')
