"""AQD heads with multi-level BN (AQD, arXiv 2007.06919v1, sections 3.2, 4.3, Table 3): per-level norms, losses, FP
checkpoint loading, SyncBN revert, quantized detectors, the added-parameter ratio, and the stock-mmdet checkpoint
converter."""
import copy
import os.path as osp

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData
from torch import nn

import mmaqd  # noqa: F401  (registers the plugin)
from conftest import ROOT, build_cpu_model, load_tool
from mmaqd.models.layers import MultiLevelNorm
from mmaqd.quantization import QConv2d

STRIDES = [8, 16, 32, 64, 128]
SIZE = 128  # input side: feature maps 16, 8, 4, 2, 1
BN = dict(type='BN', requires_grad=True)
FCOS_SYNTH = 'configs/fcos/fcos_r18-c32_fpn_bn-head_synth.py'
RETINA_SYNTH = 'configs/retinanet/retinanet_r18-c32_fpn_bn-head_synth.py'
init_default_scope('mmdet')
pytestmark = pytest.mark.usefixtures('one_thread')


def _head(kind: str, aqd: bool = True, norm_cfg=BN, **kwargs) -> nn.Module:
    """A tiny head (8 channels, 2 stacked convs, 3 classes, 5 levels); ``aqd=False``: mmdet's parent head."""
    common = dict(num_classes=3, in_channels=8, feat_channels=8, stacked_convs=2, norm_cfg=norm_cfg)
    if kind == 'fcos':
        cfg = dict(type='AQDFCOSHead' if aqd else 'FCOSHead', strides=STRIDES, norm_on_bbox=True,
                   centerness_on_reg=True, center_sampling=True, loss_bbox=dict(type='GIoULoss', loss_weight=1.0))
    else:
        cfg = dict(type='AQDRetinaHead' if aqd else 'RetinaHead',
                   anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4, scales_per_octave=3,
                                         ratios=[0.5, 1.0, 2.0], strides=STRIDES),
                   train_cfg=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4,
                                                min_pos_iou=0, ignore_iof_thr=-1),
                                  sampler=dict(type='PseudoSampler'), allowed_border=-1, pos_weight=-1))
    return MODELS.build(dict(cfg, **common, **kwargs))


def _feats(batch: int = 2, channels: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, channels, SIZE // s, SIZE // s, generator=g) for s in STRIDES]


def _samples(num_boxes: int, num_images: int = 2, size: int = SIZE):
    boxes = torch.tensor([[10., 12., 70., 90.]])[:num_boxes] * size / 128
    samples = []
    for _ in range(num_images):
        s = DetDataSample()
        s.set_metainfo(dict(img_shape=(size, size), ori_shape=(size, size), pad_shape=(size, size),
                            scale_factor=(1.0, 1.0), batch_input_shape=(size, size)))
        s.gt_instances = InstanceData(bboxes=boxes.clone(), labels=torch.zeros(num_boxes, dtype=torch.long))
        samples.append(s)
    return samples


def _randomize_bns(module: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                for t in (m.weight, m.bias, m.running_mean):
                    t.copy_(torch.randn(t.shape, generator=g))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


# --------------------------------------------------------------------------------------------- structure
@pytest.mark.parametrize('kind', ['fcos', 'retina'])
def test_per_level_norms_and_outputs(kind):
    head = _head(kind)
    norms = head.multi_level_norms()
    assert head.num_levels == 5 and len(norms) == 4  # 2 stacked convs x (cls, reg)
    conv_module = head.cls_convs[0]
    assert isinstance(getattr(conv_module, conv_module.norm_name), MultiLevelNorm)
    assert conv_module.norm_name == 'bn' and len(conv_module.norm.norms) == 5
    keys = head.state_dict()
    assert 'cls_convs.0.bn.norms.4.running_mean' in keys and 'cls_convs.0.bn.weight' not in keys
    assert 'cls_convs.0.conv.weight' in keys and 'cls_convs.0.conv.1.weight' not in keys  # conv shared

    seen = {id(m): [] for m in norms}  # which level each MultiLevelNorm ran with
    for m in norms:
        m.register_forward_hook(lambda mod, i, o: seen[id(mod)].append(mod.current_level))
    head.eval()
    with torch.no_grad():
        outs = head(_feats())
    assert all(levels == [0, 1, 2, 3, 4] for levels in seen.values())
    assert all(m.current_level is None for m in norms)  # restored after the forward

    parent = _head(kind, aqd=False).eval()
    with torch.no_grad():
        ref = parent(_feats())
    assert len(outs) == len(ref) == (3 if kind == 'fcos' else 2)
    for got, want in zip(outs, ref):
        assert [t.shape for t in got] == [t.shape for t in want]
    assert outs[0][0].shape == (2, 3 * (1 if kind == 'fcos' else 9), 16, 16) and outs[0][4].shape[-1] == 1


@pytest.mark.parametrize('kind', ['fcos', 'retina'])
def test_level_errors(kind):
    head = _head(kind)
    with pytest.raises(ValueError, match='got 6 feature maps but has 5 levels'):
        head(_feats() + [torch.randn(2, 8, 1, 1)])
    with pytest.raises(IndexError, match=r'level 5 is out of range.*0\.\.4'):
        with head.norm_level(5):
            pass
    with pytest.raises(RuntimeError, match='no level set'):
        head.forward_single(*([_feats()[0]] + ([head.scales[0], 8] if kind == 'fcos' else [])))
    with pytest.raises(TypeError, match='multi_level_norm must be a bool'):
        _head(kind, multi_level_norm='yes')
    with pytest.raises(ValueError, match='needs a norm_cfg'):
        _head(kind, norm_cfg=None)
    assert head(_feats()[:3])[0][2].shape[-1] == 4  # fewer maps than levels: levels 0..2


def _level_state(head: nn.Module, level: int) -> dict:
    """``head``'s state dict with each MultiLevelNorm replaced by its level ``level``: a shared-norm parent head's."""
    state = {}
    for key, value in head.state_dict().items():
        if '.norms.' in key:
            prefix, rest = key.split('.norms.', 1)
            key_level, name = rest.split('.', 1)
            if int(key_level) == level:
                state[f'{prefix}.{name}'] = value
        else:
            state[key] = value
    return state


@pytest.mark.parametrize('kind', ['fcos', 'retina'])
def test_each_level_applies_its_own_norm(kind):
    """Level i's outputs are exactly those of mmdet's parent head holding level i's norm parameters and statistics,
    and not those of any other level's."""
    torch.manual_seed(0)
    head = _head(kind).eval()
    _randomize_bns(head)  # every level of every norm its own gamma, beta, mean and variance
    feats = _feats()
    with torch.no_grad():
        outs = head(feats)
    parent = _head(kind, aqd=False).eval()
    for level in range(5):
        parent.load_state_dict(_level_state(head, level), strict=True)
        with torch.no_grad():
            ref = parent(feats)
        for got, want in zip(outs, ref):  # cls_scores, bbox_preds (, centernesses): one tensor per level
            assert torch.allclose(got[level], want[level], rtol=0, atol=1e-6), (kind, level)
        others = [j for j in range(5) if j != level]
        assert not any(torch.allclose(outs[0][j], ref[0][j], rtol=0, atol=1e-3) for j in others), (kind, level)


@pytest.mark.parametrize('kind', ['fcos', 'retina'])
def test_shared_variant_is_the_parent_head(kind):
    shared, parent = _head(kind, multi_level_norm=False), _head(kind, aqd=False)
    assert not shared.multi_level_norms()
    assert {k: v.shape for k, v in shared.state_dict().items()} == \
           {k: v.shape for k, v in parent.state_dict().items()}
    shared.load_state_dict(parent.state_dict(), strict=True)
    shared.eval(), parent.eval()
    with torch.no_grad():
        for got, want in zip(shared(_feats()), parent(_feats())):
            assert all(torch.equal(a, b) for a, b in zip(got, want))


# --------------------------------------------------------------------------------------------- BN statistics
@pytest.mark.parametrize('kind', ['fcos', 'retina'])
def test_levels_keep_their_own_batch_statistics(kind):
    torch.manual_seed(0)
    multi, shared = _head(kind).train(), _head(kind, multi_level_norm=False).train()
    shared.load_state_dict({k: v for k, v in multi.state_dict().items() if '.norms.' not in k}, strict=False)
    conv = multi.cls_convs[0].conv  # the first tower conv sees the level's features themselves
    expected = copy.deepcopy(multi.cls_convs[0].norm.norms)  # each level's own BN, fed its own level only
    for step in range(3):  # levels get inputs of very different statistics
        feats = [f * (1 + 3 * i) + 2 * i for i, f in enumerate(_feats(seed=step))]
        with torch.no_grad():
            multi(feats), shared(feats)
            for i, f in enumerate(feats):
                expected[i](conv(f))
    levels = multi.cls_convs[0].norm.norms
    for i in range(5):  # which level's statistics each BN holds
        assert torch.allclose(levels[i].running_mean, expected[i].running_mean, rtol=1e-5, atol=1e-6), i
        assert torch.allclose(levels[i].running_var, expected[i].running_var, rtol=1e-5, atol=1e-6), i
    means = torch.stack([n.running_mean for n in levels])  # (5, C)
    varis = torch.stack([n.running_var for n in levels])  # (5, C)
    for i in range(5):
        assert int(levels[i].num_batches_tracked) == 3
        for j in range(i):
            assert not torch.allclose(means[i], means[j], atol=1e-3) and not torch.allclose(varis[i], varis[j])
    # shared BN: one set of statistics that every level updated (5 levels x 3 steps)
    bn = shared.cls_convs[0].norm
    assert isinstance(bn, nn.BatchNorm2d) and int(bn.num_batches_tracked) == 15


@pytest.mark.parametrize('kind', ['fcos', 'retina'])
@pytest.mark.parametrize('num_boxes', [0, 1])
def test_losses(kind, num_boxes):
    torch.manual_seed(0)
    head = _head(kind).train()
    feats = [f.requires_grad_() for f in _feats()]
    losses = head.loss(feats, _samples(num_boxes))
    total = sum(v.sum() if isinstance(v, torch.Tensor) else sum(v) for v in losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert head.cls_convs[0].conv.weight.grad.abs().sum() > 0
    for level_norm in head.cls_convs[0].norm.norms:  # every level's own gamma gets a gradient
        assert level_norm.weight.grad is not None and level_norm.weight.grad.abs().sum() > 0
    bbox = [v for k, v in losses.items() if 'bbox' in k]
    if num_boxes == 0:
        assert all(float(v.sum() if isinstance(v, torch.Tensor) else sum(v)) == 0 for v in bbox)
    else:
        assert any(float(v.sum() if isinstance(v, torch.Tensor) else sum(v)) > 0 for v in bbox)


# --------------------------------------------------------------------------------------------- loading
@pytest.mark.parametrize('kind', ['fcos', 'retina'])
def test_fp_bn_head_checkpoint_maps_into_every_level(kind):
    torch.manual_seed(0)
    fp = _head(kind, aqd=False)
    _randomize_bns(fp)
    aqd = _head(kind)
    result = aqd.load_state_dict(fp.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for tower in ('cls_convs', 'reg_convs'):
        for fp_module, aqd_module in zip(getattr(fp, tower), getattr(aqd, tower)):
            for level_norm in aqd_module.norm.norms:
                for name, value in fp_module.norm.state_dict().items():
                    assert torch.equal(level_norm.state_dict()[name], value), (tower, name)
    fp.eval(), aqd.eval()
    with torch.no_grad():
        for got, want in zip(aqd(_feats()), fp(_feats())):
            assert all(torch.equal(a, b) for a, b in zip(got, want))


def _swap_head(path: str, **model):
    cfg = Config.fromfile(osp.join(ROOT, path))
    types = {'FCOSHead': 'AQDFCOSHead', 'RetinaHead': 'AQDRetinaHead'}
    cfg.model.bbox_head.type = types.get(cfg.model.bbox_head.type, cfg.model.bbox_head.type)
    cfg.model.update(model)
    return cfg


def test_revert_sync_batchnorm_in_the_head():
    head = revert_sync_batchnorm(_head('fcos', norm_cfg=dict(type='SyncBN', requires_grad=True)))
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in head.modules())
    assert len(head.multi_level_norms()) == 4
    assert all(isinstance(n, nn.modules.batchnorm._BatchNorm) for m in head.multi_level_norms() for n in m.norms)
    head.train()(_feats())  # train-mode BN on the CPU works
    assert int(head.cls_convs[0].norm.norms[4].num_batches_tracked) == 1


QUANT = dict(weight_quant=dict(type='LIQ', bits=4, weight_norm=True), input_quant=dict(type='LIQ', bits=4),
             scope=['backbone', 'neck', 'bbox_head'], first_layer='backbone.conv1', first_layer_bits=8)


@pytest.mark.parametrize('path,detector,last', [
    (FCOS_SYNTH, 'QFCOS', ['bbox_head.conv_cls', 'bbox_head.conv_reg', 'bbox_head.conv_centerness']),
    (RETINA_SYNTH, 'QRetinaNet', ['bbox_head.retina_cls', 'bbox_head.retina_reg'])])
def test_quantized_detector_with_aqd_head(path, detector, last):
    """FP BN-head detector checkpoint -> quantized AQD detector: loads strictly, trains, predicts."""
    torch.manual_seed(0)
    fp_cfg = Config.fromfile(osp.join(ROOT, path))
    fp_cfg.model.bbox_head.multi_level_norm = False  # a shared-BN head checkpoint
    fp = build_cpu_model(fp_cfg)
    q = build_cpu_model(_swap_head(path, type=detector,
                                   quant_cfg=dict(QUANT, last_layers=last, last_layer_bits=8)))
    assert isinstance(q.bbox_head.cls_convs[0].conv, QConv2d)
    assert isinstance(q.bbox_head.cls_convs[0].norm, MultiLevelNorm)
    result = q.load_state_dict(fp.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    q.train()
    inputs = torch.rand(2, 3, 64, 64)  # feature maps 8, 4, 2, 1, 1
    losses = q.loss(inputs, _samples(1, size=64))
    total, _ = q.parse_losses(losses)
    total.backward()
    assert torch.isfinite(total) and q.bbox_head.cls_convs[0].conv.weight.grad.abs().sum() > 0
    q.eval()
    with torch.no_grad():
        pred = q.predict(inputs[:1], _samples(0, 1, size=64))[0].pred_instances
    assert pred.bboxes.shape[1] == 4


def _num(tensors) -> int:
    return sum(t.numel() for t in tensors)


def test_multi_level_bn_parameter_ratio_r18_fcos():
    """AQD section 3.2: multi-level BN adds < 1.1% of the model size (R18 FCOS, 256-ch head, 4 convs, 5 levels)."""
    path = 'configs/fcos/fcos_r18_fpn_bn-head_90k_coco.py'
    fp = build_cpu_model(Config.fromfile(osp.join(ROOT, path)))
    aqd = build_cpu_model(_swap_head(path))
    head = aqd.bbox_head
    assert head.feat_channels == 256 and head.stacked_convs == 4 and head.num_levels == 5
    added_params = _num(aqd.parameters()) - _num(fp.parameters())
    assert added_params == 2 * 4 * (5 - 1) * 2 * 256  # (cls, reg) x 4 convs x 4 extra levels x (gamma, beta)
    added_state = _num(aqd.state_dict().values()) - _num(fp.state_dict().values())  # + running stats
    ratio_params = added_params / _num(fp.parameters())
    ratio_state = added_state / _num(fp.state_dict().values())
    print(f'\nR18 FCOS: {_num(fp.parameters())} params; multi-level BN adds {added_params} parameters '
          f'({100 * ratio_params:.3f}%), {added_state} state entries with running stats ({100 * ratio_state:.3f}%)')
    assert ratio_params < 0.011 and ratio_state < 0.011


# --------------------------------------------------------------------------------------------- converter
def _converter():
    return load_tool('model_converters/mmdet_to_aqd.py')


def _stock(path: str, head: str, norm_cfg):
    cfg = Config.fromfile(osp.join(ROOT, path))
    cfg.model.bbox_head.update(type=head, norm_cfg=norm_cfg)
    cfg.model.bbox_head.pop('multi_level_norm', None)  # a stock mmdet head
    return build_cpu_model(cfg).state_dict()


def test_converter_on_stock_gn_fcos(tmp_path, capsys):
    conv = _converter()
    stock = _stock(FCOS_SYNTH, 'FCOSHead', dict(type='GN', num_groups=32, requires_grad=True))
    assert 'bbox_head.cls_convs.0.gn.weight' in stock
    new, dropped = conv.convert_state_dict(stock)
    assert sorted(dropped) == sorted(k for k in stock if '.gn.' in k) and len(dropped) == 2 * 4 * 2
    aqd = build_cpu_model(_swap_head(FCOS_SYNTH))
    result = aqd.load_state_dict(new, strict=False)
    assert not result.unexpected_keys
    assert result.missing_keys and all('.norms.' in k for k in result.missing_keys)  # only the fresh head BNs
    for key in ('backbone.conv1.weight', 'neck.fpn_convs.0.conv.weight', 'bbox_head.cls_convs.3.conv.weight',
                'bbox_head.conv_centerness.bias', 'bbox_head.scales.4.scale'):
        assert torch.equal(aqd.state_dict()[key], stock[key])

    src, dst = tmp_path / 'stock.pth', tmp_path / 'aqd.pth'
    torch.save(dict(state_dict=stock, meta=dict(mmdet_version='3.3.0')), src)
    assert conv.main([str(src), str(dst)]) == 0
    out = capsys.readouterr().out
    assert 'bbox_head.cls_convs.0.gn.weight' in out and 'bbox_head.reg_convs.3.gn.bias' in out
    saved = torch.load(dst, weights_only=True)
    assert set(saved['state_dict']) == set(new)
    with pytest.raises(SystemExit):  # existing output without --force
        conv.main([str(src), str(dst)])
    assert 'exists' in capsys.readouterr().err
    with pytest.raises(SystemExit):  # never the input, even with --force
        conv.main([str(src), str(src), '--force'])
    assert 'is the input checkpoint' in capsys.readouterr().err
    assert conv.main([str(src), str(dst), '--force']) == 0


def test_converter_on_stock_retinanet_checks_the_model(tmp_path, capsys):
    conv = _converter()
    stock = _stock(RETINA_SYNTH, 'RetinaHead', None)
    assert 'bbox_head.cls_convs.0.conv.bias' in stock
    stock['bbox_head.extra_thing.weight'] = torch.zeros(1)  # something no AQD model has
    src, dst = tmp_path / 'stock.pth', tmp_path / 'aqd.pth'
    torch.save(dict(state_dict=stock), src)
    cfg = tmp_path / 'aqd_retina.py'
    cfg.write_text(f"_base_ = '{osp.join(ROOT, RETINA_SYNTH)}'\nmodel = dict(bbox_head=dict(type='AQDRetinaHead'))\n")
    assert conv.main([str(src), str(dst), '--config', str(cfg)]) == 0
    out = capsys.readouterr().out
    assert 'bbox_head.cls_convs.0.conv.bias' in out and 'bbox_head.extra_thing.weight: not a key' in out
    assert 'bbox_head.cls_convs.0.bn.norms.*.running_mean' in out  # left at initialisation
    new = torch.load(dst, weights_only=True)['state_dict']
    aqd = build_cpu_model(Config.fromfile(str(cfg)))
    result = aqd.load_state_dict(new, strict=False)
    assert not result.unexpected_keys and all('.norms.' in k for k in result.missing_keys)


def test_shared_bn_head_loads_the_mean_of_a_multi_level_checkpoint():
    """The Table 3 shared-BN ablation starts from a multi-level checkpoint: each BN tensor is the level mean."""
    torch.manual_seed(0)
    multi = build_cpu_model(Config.fromfile(osp.join(ROOT, FCOS_SYNTH)))
    for norm in multi.bbox_head.multi_level_norms():
        for level, bn in enumerate(norm.norms):
            bn.running_mean.fill_(float(level))
            bn.weight.data.fill_(2.0 * level)
    shared_cfg = Config.fromfile(osp.join(ROOT, FCOS_SYNTH))
    shared_cfg.model.bbox_head.multi_level_norm = False
    shared = build_cpu_model(shared_cfg)
    result = shared.load_state_dict(multi.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    bn = shared.bbox_head.cls_convs[0].norm
    assert torch.allclose(bn.running_mean, torch.full_like(bn.running_mean, 2.0))  # mean of levels 0..4
    assert torch.allclose(bn.weight, torch.full_like(bn.weight, 4.0))
