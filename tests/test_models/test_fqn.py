"""The FQN RetinaNet configs (FQN, Li et al., CVPR 2019, section 3, Table 2): fully quantized, BN folded, FP checkpoint,
calibration, F/P/C."""
import glob
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from conftest import ROOT, build_cpu_model
from mmaqd.quantization import FoldedBN, QAdd, QConv2d, QConvBN, quantizers, set_quantization
from mmaqd.quantization.quantizers import FQNAffine

FP = 'configs/retinanet/retinanet_r18-c32_fpn_bn-head_synth.py'
FQN = 'configs/fqn/retinanet_r18-c32_fpn_fqn-w4a4_synth.py'
# the F / P / C switches of FQN Table 2a and 3 (the -l8 config, prediction layers at 8 bits, is tested on its own)
ABLATIONS = sorted(p for p in glob.glob(osp.join(ROOT, 'configs/fqn/ablations/*_synth.py'))
                   if re.search(r'-f(\d|last)p\dc\d_', osp.basename(p)))


def _cfg(path):
    return Config.fromfile(osp.join(ROOT, path))


@pytest.fixture(scope='module')
def fqn_model():
    return build_cpu_model(_cfg(FQN))


def test_fqn_model_is_fully_quantized_with_every_bn_folded(fqn_model):
    model = fqn_model
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert all(isinstance(m, QConv2d) for m in convs.values())
    for name, m in convs.items():  # every weight per channel, every input percentile-calibrated, all 4 bits
        wq, aq = m.weight_quantizer, m.act_quantizer
        assert isinstance(wq, FQNAffine) and wq.per_channel and wq.bits == 4, name
        assert isinstance(aq, FQNAffine) and aq.role == 'act' and aq.percentile == 0.999 and aq.bits == 4, name
    # the first layer quantizes the normalized input (FQN section 3.4: from the normalized input on)
    assert model.backbone.conv1.act_quantizer is not None
    # every BN is folded and frozen: stem, 2 x 8 block convs, 3 downsamples, 2 x 4 head convs
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert norms and all(type(m) is FoldedBN for m in norms)
    folded = [m for m in model.modules() if isinstance(m, QConvBN)]
    assert len(folded) == len(norms) == 1 + 16 + 3 + 8 and all(m.frozen for m in folded)
    assert {id(m.bn) for m in folded} == {id(m) for m in norms}
    # prediction outputs quantized; FPN convs (no norm) plain QConv2d
    for name in ('retina_cls', 'retina_reg'):
        head = getattr(model.bbox_head, name)
        assert type(head) is QConv2d and isinstance(head.out_quantizer, FQNAffine)
    assert type(model.neck.fpn_convs[0].conv) is QConv2d
    # residual and FPN adds: operands and sum quantized; nearest upsampling
    adds = [n for n, m in model.named_modules() if isinstance(m, QAdd)]
    assert len([n for n in adds if n.startswith('backbone')]) == 8 and len([n for n in adds if 'neck' in n]) == 2
    assert model.neck.upsample_cfg == dict(mode='nearest')


def test_fp_bn_head_checkpoint_initialises_fqn_model():
    torch.manual_seed(0)
    fp_cfg = _cfg(FP)
    fp_cfg.model.bbox_head.multi_level_norm = False  # the FQN baseline's shared-BN head layout
    fp = build_cpu_model(fp_cfg).eval()
    for m in fp.modules():  # trained-looking statistics, so that folding is not the identity
        if isinstance(m, _BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    q = build_cpu_model(_cfg(FQN)).eval()
    result = q.load_state_dict(fp.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert all(torch.equal(q.state_dict()[k], v) for k, v in fp.state_dict().items())
    x = torch.rand(2, 3, 128, 128)
    set_quantization(q, False)
    with torch.no_grad():  # quantizers off: the folded network computes the FP network
        for a, b in zip(fp.extract_feat(x), q.extract_feat(x)):
            assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
        for a, b in zip(fp.bbox_head(fp.extract_feat(x)), q.bbox_head(q.extract_feat(x))):
            assert all(torch.allclose(u, v, atol=1e-4, rtol=1e-4) for u, v in zip(a, b))


def test_calibration_hook_calibrates_every_activation_quantizer(tiny_coco, tmp_path, runner_cfg_builder):
    cfg = runner_cfg_builder(FQN, tiny_coco, str(tmp_path / 'fqn'), max_iters=1)
    cfg.custom_hooks = [dict(type='PercentileCalibrationHook', num_batches=2)]
    cfg.load_from = None
    runner = Runner.from_cfg(cfg)
    stats = {k: v.clone() for k, v in runner.model.state_dict().items()
             if k.endswith(('running_mean', 'running_var', 'num_batches_tracked'))}
    acts = {n: q for n, q in quantizers(runner.model) if q.role == 'act'}
    assert not any(bool(q.initialized) for q in acts.values())
    runner.train()
    # every activation quantizer (conv inputs, add operands and sums, prediction outputs) got a range
    for name, q in acts.items():
        assert bool(q.initialized) and not q.calibrating and int(q.num_calib_batches) >= 2, name  # heads: x5 levels
        assert float(q.ub) >= float(q.lb), name  # the grid itself is widened to contain 0
        assert float(q(torch.zeros(3))[0]) == 0.0, name  # zero point nudged: 0 exact (FQN section 3.6)
    assert len([n for n in acts if n.endswith('out_quantizer')]) == 2 + 10  # predictions + QAdd sums
    # frozen BN statistics: unchanged by calibration and by the training iteration
    after = runner.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in stats.items())
    # 0 is exact in every folded weight's per-channel grid
    for name, m in runner.model.named_modules():
        if isinstance(m, QConvBN):
            w, _ = m.folded_weight_bias(m.bn.running_mean, m.bn.running_var)
            w = w.detach().clone()
            w.view(w.shape[0], -1)[:, 0] = 0
            assert torch.all(m.weight_quantizer(w).view(w.shape[0], -1)[:, 0] == 0), name


def _fpc(path):
    return re.search(r'-f(\d|last)p(\d)c(\d)_', osp.basename(path)).groups()


def test_ablations_cover_table_2_and_3():
    rows = {_fpc(p) for p in ABLATIONS}
    assert {(f, p, c) for f, p, c in rows if f != 'last'} == {(str(f), str(p), str(c)) for f in (0, 1)
                                                              for p in (0, 1) for c in (0, 1)}
    assert ('last', '0', '0') in rows


@pytest.mark.parametrize('path', ABLATIONS, ids=[osp.basename(p) for p in ABLATIONS])
def test_ablation_switches_f_p_c_independently(path):
    f, p, c = _fpc(path)
    cfg = Config.fromfile(path)
    model = build_cpu_model(cfg)
    folded = [m for m in model.modules() if isinstance(m, QConvBN)]
    assert len(folded) == 28 and all(m.frozen == (f == '1') for m in folded)
    acts = [q for _, q in quantizers(model) if q.role == 'act']
    assert acts and all(q.percentile == (0.999 if p == '1' else 1.0) for q in acts)
    weights = [q for _, q in quantizers(model) if q.role == 'weight']
    assert weights and all(q.per_channel == (c == '1') for q in weights)
    hooks = {h['type']: h for h in cfg.custom_hooks}
    assert hooks['PercentileCalibrationHook']['num_batches'] == 20
    if f == 'last':  # frozen for the last quarter of the fine-tune (FQN Table 3: last 10k of 40k steps)
        assert hooks['FreezeBNHook']['start_iter'] == int(cfg.train_cfg.max_iters * 3 / 4)
    else:
        assert 'FreezeBNHook' not in hooks
    assert cfg.load_from == 'work_dirs/pipeline/fp-retinanet/final.pth'


def test_l8_ablation_puts_the_prediction_layers_and_their_outputs_at_8_bits():
    cfg = _cfg('configs/fqn/ablations/retinanet_r18-c32_fpn_fqn-w4a4-l8_synth.py')
    model = build_cpu_model(cfg)
    bits = {name: q.bits for name, q in quantizers(model)}
    for layer in ('bbox_head.retina_cls', 'bbox_head.retina_reg'):
        own = {k: b for k, b in bits.items() if k.startswith(layer + '.')}
        assert len(own) == 3 and set(own.values()) == {8}, own  # weight, input and output quantizers
    others = {b for k, b in bits.items() if not k.startswith(('bbox_head.retina_cls.', 'bbox_head.retina_reg.'))}
    assert others == {4}
