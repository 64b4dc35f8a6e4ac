"""Quantized detectors built from plugin configs: conversion, FP checkpoint loading, train/eval/resume."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from conftest import ROOT, build_cpu_model
from mmaqd.quantization import QAdd, QConv2d, quantizers, set_quantization
from resume_check import ResumeProbe, assert_resumed_from

FP = 'configs/fcos/fcos_r18-c32_fpn_bn-head_synth.py'
LIQ4 = 'configs/liq/fcos_r18-c32_fpn_bn-head_liq-w4a4_synth.py'


def _cfg(path):
    return Config.fromfile(osp.join(ROOT, path))


def test_liq_config_quantizes_the_whole_detector():
    model = build_cpu_model(_cfg(LIQ4))
    convs = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert all(isinstance(m, QConv2d) for m in convs.values()), [n for n, m in convs.items()
                                                                 if not isinstance(m, QConv2d)]
    # first and last layers at 8 bits (F8L8), the rest at 4 bits with weight normalization
    assert model.backbone.conv1.weight_quantizer.bits == 8 and model.backbone.conv1.act_quantizer.bits == 8
    for name in ('conv_cls', 'conv_reg', 'conv_centerness'):
        assert getattr(model.bbox_head, name).weight_quantizer.bits == 8
    inner = model.bbox_head.cls_convs[0].conv
    assert inner.weight_quantizer.bits == 4 and inner.weight_quantizer.weight_norm
    assert inner.act_quantizer.bits == 4 and inner.act_quantizer.role == 'act'
    # fully quantized graph: every residual add (8 blocks of R18) and every FPN top-down add (C3-C5: 2)
    adds = [n for n, m in model.named_modules() if isinstance(m, QAdd)]
    assert len([n for n in adds if n.startswith('backbone')]) == 8
    assert len([n for n in adds if n.startswith('neck')]) == 2


def test_fp_checkpoint_initialises_quantized_model():
    torch.manual_seed(0)
    fp = build_cpu_model(_cfg(FP)).eval()
    q = build_cpu_model(_cfg(LIQ4)).eval()
    # quantizer state absent from the FP checkpoint is not a mismatch; every float key maps one to one
    result = q.load_state_dict(fp.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert not any(bool(qz.initialized) for _, qz in quantizers(q) if qz.data_init)
    x = torch.rand(2, 3, 128, 128)
    set_quantization(q, False)
    with torch.no_grad():
        for a, b in zip(fp.extract_feat(x), q.extract_feat(x)):
            assert torch.equal(a, b)  # quantizers off: exactly the FP network
    set_quantization(q, True)
    with torch.no_grad():
        outs = q.extract_feat(x)
    # ranges of the layers that ran (backbone and neck) were initialised from this first batch
    ran = [qz for name, qz in quantizers(q) if not name.startswith('bbox_head')]
    assert ran and all(bool(qz.initialized) for qz in ran)
    assert any(not torch.allclose(a, b) for a, b in zip(fp.extract_feat(x), outs))


def test_mismatched_keys_are_reported_by_name():
    q = build_cpu_model(_cfg(LIQ4))
    state = build_cpu_model(_cfg(FP)).state_dict()
    state['neck.bogus.weight'] = torch.zeros(1)
    del state['bbox_head.conv_cls.weight']
    result = q.load_state_dict(state, strict=False)
    assert result.missing_keys == ['bbox_head.conv_cls.weight']
    assert result.unexpected_keys == ['neck.bogus.weight']
    # a checkpoint holding only part of a quantizer's state is a real mismatch
    qstate = q.state_dict()
    del qstate['backbone.conv1.weight_quantizer.alpha']
    result = build_cpu_model(_cfg(LIQ4)).load_state_dict(qstate, strict=False)
    assert result.missing_keys == ['backbone.conv1.weight_quantizer.alpha']


@pytest.mark.parametrize('quant_cfg, error, match', [
    (dict(weight_quant=dict(type='NoSuchQ', bits=4)), KeyError, "NoSuchQ.*registered quantizers.*LIQ"),
    (dict(weight_quant=dict(type='LIQ', bits=9)), ValueError, 'bits=9.*2 to 8'),
    (dict(weight_quant=dict(type='LIQ', bits=4), first_layer='backbone.conv9'), ValueError, 'backbone.conv9'),
    (dict(weight_quant=dict(type='LIQ', bits=4), overrides=[dict(pattern='backbone.bn1', weight_quant=dict(bits=3))]),
     ValueError, 'backbone.bn1.*cannot be quantized'),
])
def test_bad_quant_cfg_in_model_config(quant_cfg, error, match):
    cfg = _cfg(LIQ4)
    cfg.model.quant_cfg = quant_cfg
    with pytest.raises(error, match=match):
        build_cpu_model(cfg)


def test_config_with_the_old_names_builds_the_same_model():
    """A config written before the renames (``QResNet`` / ``QFPN``, ``quant_cfg`` keys ``weight`` / ``act``) builds
    the same model, with a warning naming each new name."""
    old = _cfg(LIQ4)
    old.model.backbone.type, old.model.neck.type = 'QResNet', 'QFPN'
    quant = dict(old.model.quant_cfg)
    quant['weight'], quant['act'] = quant.pop('weight_quant'), quant.pop('input_quant')
    old.model.quant_cfg = quant
    with pytest.warns(FutureWarning) as record:
        model = build_cpu_model(old)
    messages = ' | '.join(str(r.message) for r in record)
    for new in ("'AddModuleResNet'", "'AddModuleFPN'", "'weight_quant'", "'input_quant'"):
        assert new in messages, (new, messages)
    new_model = build_cpu_model(_cfg(LIQ4))
    assert type(new_model.backbone).__name__ == 'AddModuleResNet' and type(new_model.neck).__name__ == 'AddModuleFPN'
    shapes = [{k: v.shape for k, v in m.state_dict().items()} for m in (model, new_model)]
    assert shapes[0] == shapes[1]
    assert [(n, type(m)) for n, m in model.named_modules() if isinstance(m, (QConv2d, QAdd))] == \
           [(n, type(m)) for n, m in new_model.named_modules() if isinstance(m, (QConv2d, QAdd))]


def _q_cfg(runner_cfg_builder, data_root, work_dir, max_iters):
    """The LIQ config on the tiny split, seeded, at a tenth of the fine-tuning lr.

    Started from a 1-iteration FP checkpoint, the residual-branch operands of the adds (``*.add.a_quantizer``) are
    tiny: mmdet's ResNet zero-initialises the last BN gamma of every block, and one AdamW step (lr 2e-3) moves it
    to only +-2e-3, so their alphas initialise at 2e-3 to 5e-3. The fine-tuning lr (2e-4, quantizer ranges x10:
    2e-3 per AdamW step, whatever the gradient's size) then drives such an alpha below 0 within two steps
    (observed: ``backbone.layer2.0.add.a_quantizer.alpha = -0.00019`` after iteration 2), which the
    DivergenceGuardHook rightly stops. At lr 2e-5 three steps move an alpha by at most 6e-4.
    """
    cfg = runner_cfg_builder(LIQ4, data_root, work_dir, max_iters=max_iters)
    cfg.optim_wrapper.optimizer.lr = 2e-5
    cfg.randomness = dict(seed=0)
    return cfg


def test_quantized_train_eval_resume(tiny_coco, tmp_path, runner_cfg_builder):
    fp_dir, q_dir = str(tmp_path / 'fp'), str(tmp_path / 'q')
    fp_cfg = runner_cfg_builder(FP, tiny_coco, fp_dir, max_iters=1)
    fp_cfg.randomness = dict(seed=0)
    fp_runner = Runner.from_cfg(fp_cfg)
    fp_runner.train()
    cfg = _q_cfg(runner_cfg_builder, tiny_coco, q_dir, max_iters=2)
    cfg.load_from = osp.join(fp_dir, 'iter_1.pth')
    runner = Runner.from_cfg(cfg)
    runner.train()
    metrics = runner.test()
    assert 'coco/bbox_mAP' in metrics
    ckpt = torch.load(osp.join(q_dir, 'iter_2.pth'), weights_only=True)
    assert bool(ckpt['state_dict']['bbox_head.cls_convs.0.conv.act_quantizer.initialized'])

    cfg = _q_cfg(runner_cfg_builder, tiny_coco, q_dir, max_iters=3)
    cfg.resume, cfg.load_from = True, None  # resume from the latest checkpoint of q_dir
    resumed = Runner.from_cfg(cfg)
    probe = ResumeProbe()
    resumed.register_hook(probe)
    resumed.train()
    # started from iter_2.pth: iteration, weights, optimizer, lr schedule and quantizer state (alphas, flags)
    assert_resumed_from(probe, osp.join(q_dir, 'iter_2.pth'), quantized=True)
    assert resumed.iter == 3
    assert bool(resumed.model.backbone.layer1[0].conv1.weight_quantizer.initialized)
    before, after = ckpt['state_dict'], torch.load(osp.join(q_dir, 'iter_3.pth'), weights_only=True)['state_dict']
    alphas = [k for k in before if k.endswith('_quantizer.alpha')]
    assert any(not torch.equal(before[k], after[k]) for k in alphas)  # quantizer ranges keep training


def test_shared_head_convs_quantize_their_weights_once_per_forward():
    model = build_cpu_model(_cfg(LIQ4)).eval()
    conv = model.bbox_head.cls_convs[0].conv
    calls = []
    conv.weight_quantizer.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64), mode='tensor')
    assert len(calls) == 1  # five FPN levels, one weight quantization
    assert conv.weight_reuse is None  # nothing kept after the pass
