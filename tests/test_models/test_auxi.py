"""Auxi (mmaqd.models.detectors.auxi): the full-precision auxiliary branch trains with the quantized detector,
never runs at inference, initialises from an FP checkpoint and is stripped for deployment."""
import os.path as osp

import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.structures import InstanceData

from conftest import ROOT, build_cpu_model, load_tool
from mmaqd.models.detectors.auxi import strip_auxiliary
from mmaqd.quantization import QConv2d, QuantLayerMixin
from mmaqd.quantization.quantizers.base import BaseQuantizer

AUXI = 'configs/auxi/retinanet_r18-c32_fpn_auxi-w4a4_synth.py'
FP = 'configs/retinanet/retinanet_r18-c32_fpn_bn-head_synth.py'


def _cfg(path=AUXI, **model):
    cfg = Config.fromfile(osp.join(ROOT, path))
    cfg.model.update(model)
    cfg.model.test_cfg.score_thr = 0.0  # an untrained model scores below mmdet's 0.05: keep its boxes
    return cfg


def _batch(size=96, num_images=2):
    boxes = torch.tensor([[8., 10., 60., 70.], [50., 20., 80., 44.]])
    inputs, samples = [], []
    for _ in range(num_images):
        sample = DetDataSample()
        sample.set_metainfo(dict(img_shape=(size, size), ori_shape=(size, size), pad_shape=(size, size),
                                 scale_factor=(1.0, 1.0), batch_input_shape=(size, size)))
        sample.gt_instances = InstanceData(bboxes=boxes.clone(), labels=torch.tensor([0, 3]))
        samples.append(sample)
        inputs.append(torch.rand(3, size, size) * 255)
    return dict(inputs=inputs, data_samples=samples)


def _trained_step(model, data):
    """One loss forward in train mode (initialises the data-driven quantizer ranges); returns the losses."""
    model.train()
    return model(**model.data_preprocessor(data, training=True), mode='loss')


def _predict(model, data):
    model.eval()
    with torch.no_grad():
        out = model(**model.data_preprocessor(data, training=False), mode='predict')
    return [(r.pred_instances.bboxes, r.pred_instances.scores, r.pred_instances.labels) for r in out]


@pytest.fixture(scope='module')
def data():
    torch.manual_seed(0)
    return _batch()


def test_aux_losses_and_gradients(data):
    torch.manual_seed(0)
    model = build_cpu_model(_cfg())
    losses = _trained_step(model, data)
    assert {'loss_cls', 'loss_bbox', 'aux_loss_cls', 'aux_loss_bbox'} <= set(losses)
    total, log_vars = model.parse_losses(losses)
    assert torch.isfinite(total) and 'aux_loss_cls' in log_vars
    aux_total = sum(sum(v) for k, v in losses.items() if k.startswith('aux_'))
    main_total = sum(sum(v) for k, v in losses.items() if not k.startswith('aux_'))
    assert torch.allclose(total, aux_total + main_total)

    # the auxiliary loss alone reaches the quantized backbone (through the adaptors), not the main neck / head
    body = model.backbone.layer2[0].conv1
    assert isinstance(body, QConv2d)
    params = [body.weight, model.aux_head.cls_convs[0].conv.weight, model.aux_adaptors[1].conv.weight,
              model.aux_neck.lateral_convs[0].conv.weight, model.bbox_head.cls_convs[0].conv.weight]
    grads = torch.autograd.grad(aux_total, params, allow_unused=True, retain_graph=True)
    assert all(g is not None and g.abs().sum() > 0 for g in grads[:4])
    assert grads[4] is None
    total.backward()
    assert body.weight.grad.abs().sum() > 0 and model.bbox_head.retina_cls.weight.grad.abs().sum() > 0


def test_loss_weight_scales_aux_losses(data):
    torch.manual_seed(0)
    model = build_cpu_model(_cfg())
    _trained_step(model, data)  # initialise the quantizers: later forwards are deterministic
    model.aux_loss_weight = 1.0
    full = _trained_step(model, data)
    model.aux_loss_weight = 0.25
    scaled = _trained_step(model, data)
    for key in ('aux_loss_cls', 'aux_loss_bbox'):
        assert torch.allclose(sum(scaled[key]), 0.25 * sum(full[key]), rtol=1e-4, atol=1e-6)
    assert torch.allclose(sum(scaled['loss_cls']), sum(full['loss_cls']))


def test_predict_never_runs_the_aux_branch(data):
    torch.manual_seed(0)
    model = build_cpu_model(_cfg())
    hooked = dict(aux_neck=model.aux_neck, aux_head=model.aux_head,
                  **{f'aux_adaptors.{i}': a for i, a in enumerate(model.aux_adaptors) if hasattr(a, 'conv')})
    calls = []
    for name, module in hooked.items():
        module.register_forward_hook(lambda m, i, o, name=name: calls.append(name))
    _trained_step(model, data)
    assert set(calls) == set(hooked)  # the hooks work: training runs every part of the branch
    calls.clear()
    _predict(model, data)
    with torch.no_grad():
        inputs = model.data_preprocessor(data, training=False)
        model(**inputs, mode='tensor')
        model.extract_feat(inputs['inputs'])
    assert calls == []


def test_stripped_state_dict_loads_strictly_and_predicts_the_same(data, tmp_path):
    torch.manual_seed(0)
    model = build_cpu_model(_cfg())
    _trained_step(model, data)
    deploy, removed = strip_auxiliary(model.state_dict())
    assert removed and all(k.startswith('aux_') for k in removed)
    assert deploy and not any(k.startswith('aux_') for k in deploy)
    assert set(deploy) == {k for k in model.state_dict() if not k.startswith('aux_')}

    plain = build_cpu_model(_cfg(aux_cfg=None))
    assert not plain.aux_modules() and not plain.with_aux
    result = plain.load_state_dict(deploy, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for a, b in zip(_predict(model, data), _predict(plain, data)):
        assert len(a[0]) > 0 and all(torch.equal(x, y) for x, y in zip(a, b))

    # the full state dict into the plain model: the aux keys are reported as unexpected, by name
    result = build_cpu_model(_cfg(aux_cfg=None)).load_state_dict(model.state_dict(), strict=False)
    assert not result.missing_keys
    assert result.unexpected_keys and all(k.startswith('aux_') for k in result.unexpected_keys)

    # tools/model_converters/strip_auxiliary.py writes the same state dict
    tool = load_tool('model_converters/strip_auxiliary.py')
    src, dst = str(tmp_path / 'auxi.pth'), str(tmp_path / 'deploy.pth')
    torch.save(dict(state_dict=model.state_dict(), meta=dict(iter=3), optimizer=dict(state={})), src)
    assert tool.main([src, dst, '--config', osp.join(ROOT, AUXI)]) == 0
    out = torch.load(dst, map_location='cpu', weights_only=True)
    assert set(out) == {'state_dict', 'meta'} and out['meta']['iter'] == 3
    assert out['meta']['stripped_modules'] == ['aux_adaptors', 'aux_head', 'aux_neck']
    assert list(out['state_dict']) == list(deploy)
    assert all(torch.equal(out['state_dict'][k], v) for k, v in deploy.items())
    with pytest.raises(SystemExit):
        tool.main([src, dst])  # an existing output is refused


def test_fp_checkpoint_initialises_main_and_aux(monkeypatch):
    from mmaqd.models.detectors import auxi
    logs = []
    monkeypatch.setattr(auxi, 'print_log', lambda msg, **kw: logs.append(msg))
    torch.manual_seed(0)
    fp_cfg = _cfg(FP)
    fp_cfg.model.bbox_head.multi_level_norm = False  # the same head layout as the Auxi baseline's
    fp = build_cpu_model(fp_cfg)
    for p in fp.parameters():  # a "trained" FP model, different from any fresh initialisation
        p.data.add_(torch.randn_like(p) * 0.01)
    torch.manual_seed(1)
    model = build_cpu_model(_cfg())
    adaptors = {k: v.clone() for k, v in model.aux_adaptors.state_dict().items()}

    result = model.load_state_dict(fp.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for src, dst in (('neck', 'aux_neck'), ('bbox_head', 'aux_head')):
        fp_state, aux_state = getattr(fp, src).state_dict(), getattr(model, dst).state_dict()
        assert set(fp_state) == set(aux_state)
        assert all(torch.equal(fp_state[k], aux_state[k]) for k in fp_state)
    main = {k: v for k, v in model.state_dict().items() if '_quantizer' not in k and not k.startswith('aux_')}
    assert set(main) == set(fp.state_dict())
    assert all(torch.equal(v, fp.state_dict()[k]) for k, v in main.items())
    assert all(torch.equal(v, adaptors[k]) for k, v in model.aux_adaptors.state_dict().items())
    assert len(logs) == 1 and 'aux_neck <- neck' in logs[0] and 'aux_head <- bbox_head' in logs[0]

    # a checkpoint with auxiliary state (an Auxi checkpoint, resume) loads as is: nothing is copied
    logs.clear()
    with torch.no_grad():
        model.aux_head.retina_cls.weight.mul_(2.0)
    other = build_cpu_model(_cfg())
    other.load_state_dict(model.state_dict(), strict=True)
    assert torch.equal(other.aux_head.retina_cls.weight, model.aux_head.retina_cls.weight)
    assert not torch.equal(other.aux_head.retina_cls.weight, other.bbox_head.retina_cls.weight)
    assert logs == []

    # a checkpoint with only part of the auxiliary state is a real mismatch
    partial = {k: v for k, v in model.state_dict().items() if not k.startswith('aux_adaptors')}
    result = build_cpu_model(_cfg()).load_state_dict(partial, strict=False)
    assert result.missing_keys and all(k.startswith('aux_adaptors') for k in result.missing_keys)


@pytest.mark.parametrize('quant_scope', [['backbone', 'neck', 'bbox_head'], None])
def test_aux_branch_is_full_precision(quant_scope):
    cfg = _cfg()
    cfg.model.quant_cfg.scope = quant_scope
    model = build_cpu_model(cfg)
    assert any(isinstance(m, QuantLayerMixin) for m in model.backbone.modules())
    assert any(isinstance(m, QuantLayerMixin) for m in model.bbox_head.modules())
    for name, module in model.aux_modules().items():
        bad = [n for n, m in module.named_modules() if isinstance(m, (QuantLayerMixin, BaseQuantizer))]
        assert not bad, (name, bad)
        assert any(isinstance(m, torch.nn.Conv2d) for m in module.modules())
    # adaptors on the stages the FPN uses (C3-C5 of RetinaNet, start_level=1), of their channel widths
    assert isinstance(model.aux_adaptors[0], torch.nn.Identity)
    assert [a.conv.in_channels for a in model.aux_adaptors[1:]] == [64, 128, 256]


def test_aux_cfg_overrides_and_errors():
    model = build_cpu_model(_cfg(aux_cfg=dict(loss_weight=0.5, adaptor=dict(act_cfg=None),
                                              neck=dict(type='FPN'), head=dict(stacked_convs=2))))
    assert model.aux_loss_weight == 0.5 and type(model.aux_neck).__name__ == 'FPN'
    assert model.aux_neck.out_channels == model.neck.out_channels
    assert len(model.aux_head.cls_convs) == 2 and len(model.bbox_head.cls_convs) == 4
    assert not model.aux_adaptors[1].with_activation and model.aux_adaptors[1].with_norm
    with pytest.raises(KeyError, match='unknown key.*bogus'):
        build_cpu_model(_cfg(aux_cfg=dict(bogus=1)))


def test_auxi_fcos_trains(data):
    """Auxi on FCOS, trained with the config's own optimizer (GroupedOptimWrapperConstructor, quantizer ranges at
    their own lr): the auxiliary losses reach the quantized backbone, every step moves the auxiliary branch, the
    backbone and the quantizer intervals, and the losses on the batch go down."""
    cfg = _cfg('configs/liq/fcos_r18-c32_fpn_bn-head_liq-w4a4_synth.py', type='AuxiFCOS', aux_cfg=dict())
    torch.manual_seed(0)
    model = build_cpu_model(cfg)
    losses = _trained_step(model, data)  # initialises the quantizer intervals
    assert {'aux_loss_cls', 'aux_loss_bbox', 'aux_loss_centerness'} <= set(losses)
    total, _ = model.parse_losses(losses)
    assert torch.isfinite(total)
    assert not any(isinstance(m, QuantLayerMixin) for m in model.aux_head.modules())

    body = model.backbone.layer2[0].conv1
    assert isinstance(body, QConv2d)
    aux_total = sum(sum(v) if isinstance(v, list) else v for k, v in losses.items() if k.startswith('aux_loss'))
    grad, = torch.autograd.grad(aux_total, body.weight, retain_graph=True, allow_unused=True)
    assert grad is not None and grad.abs().sum() > 0  # through the adaptors: the aux losses train the backbone

    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    watched = dict(aux_head=model.aux_head.conv_cls.weight, aux_neck=model.aux_neck.lateral_convs[0].conv.weight,
                   aux_adaptor=model.aux_adaptors[1].conv.weight, backbone=body.weight,
                   weight_alpha=body.weight_quantizer.alpha, input_alpha=body.act_quantizer.alpha,
                   head=model.bbox_head.conv_reg.weight)
    before = {k: v.detach().clone() for k, v in watched.items()}
    history = []
    for step in range(3):
        losses = _trained_step(model, data)
        total, _ = model.parse_losses(losses)
        assert torch.isfinite(total), step
        history.append({k: float(sum(v) if isinstance(v, list) else v) for k, v in losses.items() if 'loss' in k})
        optim_wrapper.update_params(total)
        moved = [k for k, v in watched.items() if not torch.equal(v.detach(), before[k])]
        assert moved == list(watched), (step, sorted(set(watched) - set(moved)))
        before = {k: v.detach().clone() for k, v in watched.items()}
    assert all(torch.isfinite(p).all() for p in model.parameters())
    aux = [sum(v for k, v in h.items() if k.startswith('aux_')) for h in history]
    main = [sum(v for k, v in h.items() if not k.startswith('aux_')) for h in history]
    assert aux[-1] < aux[0] and main[-1] < main[0], (aux, main)
