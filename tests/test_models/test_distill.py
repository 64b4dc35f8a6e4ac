"""Distillation from the full-precision detector (``distill_cfg`` of QFCOS / QRetinaNet,
mmaqd.models.detectors.distill): the added losses, the hidden lazily built teacher, gradients, errors, and predict
without the teacher's files.

Tiny detectors: the benchmark configs at a quarter of their width (ResNet-18 with 8 base channels, 16-channel FPN and
head, 2 stacked head convs, 3 classes) on 64x64 inputs."""
import os.path as osp

import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.structures import InstanceData

from conftest import ROOT, build_cpu_model
from mmaqd.models.detectors.distill import DISTILL_LOSS_KEYS

pytestmark = pytest.mark.usefixtures('one_thread')

KINDS = {  # kind: (FP teacher config, quantized student config, float student type, the detector's own losses)
    'fcos': ('configs/fcos/fcos_r18-c32_fpn_bn-head_synth.py', 'configs/aqd/fcos_r18-c32_fpn_aqd-w2a2_synth.py',
             'QFCOS', {'loss_cls', 'loss_bbox', 'loss_centerness'}),
    'retina': ('configs/retinanet/retinanet_r18-c32_fpn_bn-head_synth.py',
               'configs/aqd/retinanet_r18-c32_fpn_aqd-w2a2_synth.py', 'QRetinaNet', {'loss_cls', 'loss_bbox'}),
}
TINY = dict(backbone=dict(base_channels=8), neck=dict(in_channels=[8, 16, 32, 64], out_channels=16),
            bbox_head=dict(in_channels=16, feat_channels=16, stacked_convs=2, num_classes=3))
SIZE = 64


def _randomize_bn(model: torch.nn.Module, seed: int) -> None:
    """Random running statistics and affine parameters for every BN (the teacher's are then not the defaults)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                for t in (m.weight, m.bias, m.running_mean):
                    t.copy_(torch.rand(t.shape, generator=g) * 0.4 - 0.2 + (t is m.weight))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def _samples(num_images: int = 2):
    samples = []
    for _ in range(num_images):
        s = DetDataSample()
        s.set_metainfo(dict(img_shape=(SIZE, SIZE), ori_shape=(SIZE, SIZE), pad_shape=(SIZE, SIZE),
                            scale_factor=(1.0, 1.0), batch_input_shape=(SIZE, SIZE)))
        s.gt_instances = InstanceData(bboxes=torch.tensor([[6., 8., 40., 50.], [30., 20., 60., 44.]]),
                                      labels=torch.tensor([0, 2]))
        samples.append(s)
    return samples


def _batch(seed: int = 0):
    return torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed)), _samples()


@pytest.fixture
def teacher_files(tmp_path):
    """``files(kind) -> (config path, checkpoint path, teacher)``: a tiny FP teacher with random BN, written out."""
    def files(kind: str):
        path = tmp_path / f'{kind}_teacher.py'
        path.write_text(f'_base_ = {osp.join(ROOT, KINDS[kind][0])!r}\nmodel = {TINY!r}\n')
        torch.manual_seed(1)
        teacher = build_cpu_model(str(path), init_weights=False).eval()
        _randomize_bn(teacher, seed=1)
        ckpt = tmp_path / f'{kind}_teacher.pth'
        torch.save(dict(state_dict=teacher.state_dict(), meta=dict()), ckpt)
        return str(path), str(ckpt), teacher
    return files


def _student(kind: str, distill_cfg=None, quantized: bool = True, teacher_config: str = None, seed: int = 0):
    """The tiny quantized student (2 bits), or with ``quantized=False`` a float ``QFCOS`` / ``QRetinaNet`` of the
    teacher's config (``teacher_config``)."""
    if quantized:
        cfg = Config.fromfile(osp.join(ROOT, KINDS[kind][1]))
        cfg.merge_from_dict(dict(model=TINY))
    else:
        cfg = Config.fromfile(teacher_config)
        cfg.model.update(type=KINDS[kind][2], quant_cfg=None)
    cfg.model.distill_cfg = distill_cfg
    torch.manual_seed(seed)
    return build_cpu_model(cfg, init_weights=False)


def _distill(config: str, ckpt: str, **kwargs):
    return dict(teacher_config=config, teacher_checkpoint=ckpt, **kwargs)


# ------------------------------------------------------------------------------------------------ the losses
@pytest.mark.parametrize('kind', list(KINDS))
def test_distill_losses_added_and_detector_losses_unchanged(kind, teacher_files):
    config, ckpt, _ = teacher_files(kind)
    student = _student(kind, _distill(config, ckpt)).train()
    plain = _student(kind).train()
    plain.load_state_dict(student.state_dict())
    x, samples = _batch()
    losses = student(x, samples, mode='loss')
    reference = plain(x, samples, mode='loss')
    own = KINDS[kind][3]
    assert set(reference) == own and set(losses) == own | set(DISTILL_LOSS_KEYS)
    for key in own:
        torch.testing.assert_close(losses[key], reference[key])  # the same numbers as mmdet's loss path
    assert all(float(losses[key]) > 0 for key in DISTILL_LOSS_KEYS)


def _kl(student_logits, teacher_logits, t):
    """Bernoulli KL(sigmoid(teacher / t) || sigmoid(student / t)), mean over the elements, written out."""
    p, q = torch.sigmoid(teacher_logits / t), torch.sigmoid(student_logits / t)
    return (p * torch.log(p / q) + (1 - p) * torch.log((1 - p) / (1 - q))).mean()


@pytest.mark.parametrize('kind', list(KINDS))
def test_zero_for_a_float_copy_of_the_teacher_and_the_formulas_after_a_perturbation(kind, teacher_files):
    config, ckpt, teacher = teacher_files(kind)
    cfg = _distill(config, ckpt, feature_weight=0.5, head_weight=2.0, temperature=2.0)
    student = _student(kind, cfg, quantized=False, teacher_config=config)
    student.load_state_dict(teacher.state_dict())
    # the detector and its head in train mode (FCOS then gives stride-normalised distances, the teacher's head
    # must too), its BNs in eval mode (running statistics, as the teacher's)
    student.train()
    for m in student.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
    x, samples = _batch()
    losses = student(x, samples, mode='loss')
    for key in DISTILL_LOSS_KEYS:
        assert abs(float(losses[key])) < 1e-6, (key, float(losses[key]))

    with torch.no_grad():
        student.neck.fpn_convs[0].conv.weight.add_(0.3 * torch.randn_like(student.neck.fpn_convs[0].conv.weight))
    student.eval()  # deterministic: both use running statistics and the test-time head outputs
    losses = student.loss(x, samples)
    assert all(float(losses[key]) > 1e-4 for key in DISTILL_LOSS_KEYS), {k: float(losses[k]) for k in losses}
    with torch.no_grad():
        s_feats, t_feats = student.extract_feat(x), teacher.extract_feat(x)
        s_outs, t_outs = student.bbox_head(s_feats), teacher.bbox_head(t_feats)
    levels = len(s_feats)
    feat = sum(torch.mean((s - t) ** 2) for s, t in zip(s_feats, t_feats)) / levels
    soft = sum(_kl(s, t, 2.0) for s, t in zip(s_outs[0], t_outs[0])) / levels
    if kind == 'fcos':  # centerness: a soft-target term too
        soft = soft + sum(_kl(s, t, 2.0) for s, t in zip(s_outs[2], t_outs[2])) / levels
    reg = sum(torch.mean((s - t) ** 2) for s, t in zip(s_outs[1], t_outs[1])) / levels
    torch.testing.assert_close(losses['loss_distill_feat'], 0.5 * feat)
    torch.testing.assert_close(losses['loss_distill_cls'], 2.0 * 2.0 ** 2 * soft, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(losses['loss_distill_reg'], 2.0 * reg)


# ------------------------------------------------------------------------------------------------ the teacher
@pytest.mark.parametrize('kind', list(KINDS))
def test_teacher_is_hidden_frozen_and_stays_in_eval_mode(kind, teacher_files):
    config, ckpt, reference = teacher_files(kind)
    student = _student(kind, _distill(config, ckpt))
    plain = _student(kind)
    assert student.distiller.teacher is None  # not built before the first loss
    student.train()(*_batch(), mode='loss')
    teacher = student.distiller.teacher
    assert teacher is not None and not teacher.training
    for key, value in reference.state_dict().items():  # loaded from the checkpoint
        assert torch.equal(teacher.state_dict()[key], value), key
    # not in the student's state dict, parameters or modules: checkpoints, the optimizer and the converter never
    # see it
    assert list(student.state_dict()) == list(plain.state_dict())
    assert len(list(student.parameters())) == len(list(plain.parameters()))
    teacher_ids = {id(p) for p in teacher.parameters()} | {id(m) for m in teacher.modules()}
    assert not teacher_ids & {id(p) for p in student.parameters()}
    assert not teacher_ids & {id(m) for _, m in student.named_modules()}
    assert [n for n, _ in student.named_modules()] == [n for n, _ in plain.named_modules()]
    # train() / eval() of the student leave it frozen in eval mode
    student.eval()
    student.train()
    assert not any(m.training for m in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())


@pytest.mark.parametrize('kind', list(KINDS))
def test_gradients_reach_the_student_and_the_teacher_stays_unchanged(kind, teacher_files):
    config, ckpt, _ = teacher_files(kind)
    student = _student(kind, _distill(config, ckpt)).train()
    x, samples = _batch()
    losses = student(x, samples, mode='loss')
    head = student.bbox_head
    cls_convs = [head.conv_cls, head.conv_centerness] if kind == 'fcos' else [head.retina_cls]
    reg_conv = head.conv_reg if kind == 'fcos' else head.retina_reg
    targets = {'loss_distill_feat': [student.backbone.layer1[0].conv1.weight, student.neck.fpn_convs[0].conv.weight],
               'loss_distill_cls': [m.weight for m in cls_convs] + [head.cls_convs[0].conv.weight],
               'loss_distill_reg': [reg_conv.weight, head.reg_convs[0].conv.weight]}
    for key, params in targets.items():
        grads = torch.autograd.grad(losses[key], params, retain_graph=True)
        assert all(g is not None and float(g.abs().sum()) > 0 for g in grads), key

    teacher = student.distiller.teacher
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    weight = student.neck.fpn_convs[0].conv.weight.detach().clone()
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    optimizer.zero_grad()
    sum(losses[key] for key in DISTILL_LOSS_KEYS).backward()
    optimizer.step()
    assert not torch.equal(student.neck.fpn_convs[0].conv.weight, weight)
    assert all(p.grad is None for p in teacher.parameters())
    student(x, samples, mode='loss')  # a second pass: no running statistics of the teacher move either
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, before[key]), key


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize('update, match', [
    (dict(temprature=2.0), r"unknown key\(s\) \['temprature'\].*allowed: \['teacher_config'"),
    (dict(feature_weight=-1.0), r'feature_weight=-1.0 is invalid; allowed: a finite number >= 0'),
    (dict(head_weight='high'), r"head_weight='high' is invalid"),
    (dict(temperature=0), r'temperature=0 is invalid; allowed: a finite number > 0'),
    (dict(teacher_checkpoint=None), r'teacher_checkpoint must be a file path \(str\), got None'),
])
def test_bad_distill_cfg_is_named_at_build(update, match):
    cfg = dict(_distill('teacher.py', 'teacher.pth'), **update)
    with pytest.raises(ValueError, match=match):
        _student('fcos', cfg)


def test_missing_teacher_files_are_named_at_the_first_loss(teacher_files, tmp_path):
    config, ckpt, _ = teacher_files('fcos')
    for cfg, missing in ((_distill(config, str(tmp_path / 'none.pth')), 'teacher_checkpoint'),
                         (_distill(str(tmp_path / 'none.py'), ckpt), 'teacher_config')):
        student = _student('fcos', cfg).train()  # builds: the files are only needed by loss()
        with pytest.raises(FileNotFoundError, match=f'distill_cfg.{missing} = .*none.*: no such file'):
            student(*_batch(), mode='loss')


def test_checkpoint_of_other_keys_is_named(teacher_files, tmp_path):
    config, _, teacher = teacher_files('fcos')
    state = teacher.state_dict()
    del state['bbox_head.conv_cls.weight']
    state['neck.bogus.weight'] = torch.zeros(1)
    ckpt = str(tmp_path / 'other.pth')
    torch.save(dict(state_dict=state), ckpt)
    with pytest.raises(RuntimeError, match=r"other.pth does not match.*missing keys \['bbox_head.conv_cls.weight'\], "
                                           r"unexpected keys \['neck.bogus.weight'\]"):
        _student('fcos', _distill(config, ckpt)).train()(*_batch(), mode='loss')


def test_teacher_with_other_input_normalisation_is_refused(teacher_files, tmp_path):
    _, ckpt, _ = teacher_files('fcos')
    config = tmp_path / 'other_mean.py'
    config.write_text(f"_base_ = {str(tmp_path / 'fcos_teacher.py')!r}\n"
                      "model = dict(data_preprocessor=dict(mean=[0.0, 0.0, 0.0]))\n")
    with pytest.raises(ValueError, match='normalises its inputs differently'):
        _student('fcos', _distill(str(config), ckpt)).train()(*_batch(), mode='loss')


def test_a_subclass_loss_that_bypasses_distillation_is_refused(teacher_files):
    """Auxi's loss (with aux_cfg) does not call the quantized detector's: the distillation would be lost silently."""
    config, ckpt, _ = teacher_files('fcos')
    cfg = Config.fromfile(config)
    cfg.model.update(type='AuxiFCOS', quant_cfg=None, aux_cfg=dict(), distill_cfg=_distill(config, ckpt))
    model = build_cpu_model(cfg, init_weights=False).train()
    with pytest.raises(RuntimeError, match='AuxiFCOS: distill_cfg is set but loss.. returned no distillation'):
        model(*_batch(), mode='loss')


# ------------------------------------------------------------------------------------------------ inference
@pytest.mark.parametrize('kind', list(KINDS))
def test_predict_needs_no_teacher_files(kind, tmp_path):
    student = _student(kind, _distill(str(tmp_path / 'no.py'), str(tmp_path / 'no.pth'))).eval()
    plain = _student(kind).eval()
    plain.load_state_dict(student.state_dict())
    x, samples = _batch()
    with torch.no_grad():
        results = student(x, samples, mode='predict')
        expected = plain(x, _samples(), mode='predict')
        outs = student(x, mode='tensor')
    assert len(results) == 2 and all('pred_instances' in r for r in results)
    for r, e in zip(results, expected):
        torch.testing.assert_close(r.pred_instances.scores, e.pred_instances.scores)
    assert len(outs) == len(KINDS[kind][3]) and student.distiller.teacher is None
