"""tools/analysis/quantizer_stats.py: clipped share, levels used and range per quantizer, BN drift, the per-part
summary, and one end-to-end run on a tiny 2-bit checkpoint."""
import json
import math
import os.path as osp

import pytest
import torch
from torch import nn

from conftest import ROOT, load_tool
from mmaqd.models.layers.multi_level_norm import MultiLevelNorm
from mmaqd.quantization.layers import QAdd, QConv2d, QConvBN
from mmaqd.quantization.quantizers.liq import LIQ

pytestmark = pytest.mark.usefixtures('one_thread')
W2A2 = osp.join(ROOT, 'configs/aqd/fcos_r18-c32_fpn_aqd-w2a2_synth.py')


@pytest.fixture(scope='module')
def tool():
    return load_tool('analysis/quantizer_stats.py')


def _call(model, batch):
    model(batch)


class QuantToy(nn.Module):
    """backbone.conv: a 2-bit QConv2d (per-channel weight alpha (1, 2), input alpha 1); neck.add: a 2-bit QAdd."""

    def __init__(self):
        super().__init__()
        liq = dict(type='LIQ', bits=2, init='const')
        self.backbone = nn.Module()
        self.backbone.conv = QConv2d(1, 2, 2, bias=False, weight_quant=dict(liq, per_channel=True),
                                     input_quant=dict(liq, signed=False))
        self.backbone.conv.weight_quantizer.alpha.data = torch.tensor([1.0, 2.0])
        # per output channel 4 values; channel 0 (alpha 1): -2 and 3 clipped, levels -1, 1/3, 1 (3 of 4);
        # channel 1 (alpha 2): nothing clipped (-2 is the end), levels -1, -1/3, 1/3, 1 (of alpha; 4 of 4)
        self.backbone.conv.weight.data = torch.tensor([[-2.0, 0.1, 0.5, 3.0], [-2.0, -0.5, 0.2, 1.5]]).view(2, 1, 2, 2)
        self.neck = nn.Module()
        self.neck.add = QAdd(liq, liq, liq)

    def forward(self, x):
        y = self.backbone.conv(x)
        return self.neck.add(y, y)


def _act_batch(values):
    return torch.tensor(values).view(1, 1, 4, -1)


def test_clip_levels_and_range_of_known_liq_quantizers(tool):
    model = QuantToy().train()
    # input alpha 1, unsigned 2-bit grid 0, 1/3, 2/3, 1. Batch 1: 10 of 20 below 0 (clipped), levels 0, 1/3;
    # batch 2: 5 of 20 above 1 (clipped), all at level 1. Clipped 15 / 40; levels 0, 1/3, 1 over both: 3 of 4
    # (each batch alone hits only 2)
    batches = [_act_batch([-0.5] * 10 + [0.3] * 10), _act_batch([2.0] * 5 + [0.9] * 15)]
    stats = tool.collect(model, batches, num_batches=5, forward=_call)
    assert stats['num_batches'] == 2 and model.training  # the loader ran out; train mode restored
    rows = {r['name']: r for r in stats['quantizers']}
    act, weight = rows['backbone.conv.act'], rows['backbone.conv.weight']
    assert (act['kind'], act['bits'], act['signed'], act['part'], act['calls']) == ('input', 2, False, 'backbone', 2)
    assert act['clip'] == pytest.approx(15 / 40) and act['levels_used'] == pytest.approx(3 / 4)
    assert act['range'] == {'alpha': 1.0}
    assert (weight['kind'], weight['signed'], weight['per_channel']) == ('weight', True, True)
    assert weight['clip'] == pytest.approx(2 / 8)  # per-channel bounds: channel 1's -2 is not clipped
    assert weight['levels_used'] == pytest.approx((3 / 4 + 4 / 4) / 2)  # counted per channel
    assert weight['range'] == {'alpha': pytest.approx(1.5)}  # mean over channels
    assert {rows[f'neck.add.{n}']['kind'] for n in 'ab'} == {'add operand'}
    assert rows['neck.add.out']['kind'] == 'output' and rows['neck.add.out']['part'] == 'neck'


def test_disabled_quantizer_and_grid_sizes(tool):
    model = QuantToy()
    model.backbone.conv.act_quantizer.enabled = False
    stats = tool.collect(model, [_act_batch([2.0] * 20)], 1, forward=_call)
    act = {r['name']: r for r in stats['quantizers']}['backbone.conv.act']
    assert (act['clip'], act['levels_used'], act['calls']) == (None, None, 0)  # passed its input through
    assert tool.num_levels(LIQ(2, signed=True, zero_level=True, role='weight')) == 3  # -a, 0, a
    assert tool.num_levels(LIQ(3, signed=False)) == 8


def _standardized(shape, seed=0):
    """Per channel (dim 1) mean exactly 0 and unbiased variance 1 over (N, H, W)."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    dims = (0, 2, 3)
    return ((x - x.mean(dims, keepdim=True)) / x.std(dims, keepdim=True)).float()


class BNToy(nn.Module):
    def __init__(self, c=3):
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.same, self.backbone.off = nn.BatchNorm2d(c), nn.BatchNorm2d(c)
        self.neck = nn.Module()
        self.neck.shared = nn.BatchNorm2d(c)  # called twice per batch, as a head BN shared by two levels
        self.bbox_head = nn.Module()
        self.bbox_head.norm = MultiLevelNorm(dict(type='BN'), c, 2)

    def forward(self, x):
        self.backbone.same(x), self.backbone.off(x)
        self.neck.shared(x + 1), self.neck.shared(x - 1)
        for level in range(2):
            self.bbox_head.norm.set_level(level)
            self.bbox_head.norm(x * (level + 1))


def test_bn_drift_against_known_offsets(tool):
    x = 2.0 + 3.0 * _standardized((4, 3, 5, 5))  # mean 2, unbiased variance 9 per channel
    model = BNToy().train()
    eps = model.backbone.off.eps
    model.backbone.same.running_mean.fill_(2.0), model.backbone.same.running_var.fill_(9.0)
    var_run = (9.0 + eps) / 4 - eps  # batch variance (+ eps) 4x the running one: var drift log 4
    model.backbone.off.running_var.fill_(var_run)
    model.backbone.off.running_mean.fill_(2.0 - 0.5 * math.sqrt(var_run + eps))  # half a running std: 0.5
    model.neck.shared.running_mean.fill_(2.0), model.neck.shared.running_var.fill_(9.0)  # the pool of both calls
    for i, bn in enumerate(model.bbox_head.norm.norms):  # level 1 sees 2x: mean 4, variance 36
        bn.running_mean.fill_(2.0 * (i + 1)), bn.running_var.fill_(9.0 * (i + 1) ** 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stats = tool.collect(model, [x, x], 2, forward=_call)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # eval: no running stat update
    rows = {r['name']: r for r in stats['bns']}
    assert rows['backbone.same']['mean_drift'] < 1e-6 and rows['backbone.same']['var_drift'] < 1e-6
    assert rows['backbone.off']['mean_drift'] == pytest.approx(0.5, rel=1e-5)
    assert rows['backbone.off']['var_drift'] == pytest.approx(math.log(4), rel=1e-5)
    # the shared BN: per call slot (level) each mean is 1 off the pooled running mean (1/3 of its std), although
    # the average over the slots matches it
    shared = rows['neck.shared']
    assert shared['calls_per_batch'] == 2 and shared['kind'] == 'bn'
    assert shared['mean_drift'] == pytest.approx(1 / math.sqrt(9 + eps), rel=1e-5)
    assert [c['mean_drift'] for c in shared['per_call']] == pytest.approx([1 / 3, 1 / 3], rel=1e-4)
    for level in range(2):
        row = rows[f'bbox_head.norm.norms.{level}']
        assert (row['kind'], row['level'], row['calls_per_batch']) == ('level bn', level, 1)
        assert row['mean_drift'] < 1e-6 and row['var_drift'] < 1e-5


def test_folded_bn_drift_is_the_drift_of_the_unfolded_conv_output(tool):
    g = torch.Generator().manual_seed(1)
    conv = nn.Conv2d(2, 4, 3, bias=False)
    conv.weight.data = torch.randn(conv.weight.shape, generator=g)
    bn = nn.BatchNorm2d(4)
    bn.weight.data, bn.bias.data = torch.rand(4, generator=g) + 0.5, torch.randn(4, generator=g)
    bn.weight.data[1] *= -1  # a negative gamma
    bn.running_mean.copy_(torch.randn(4, generator=g)), bn.running_var.copy_(torch.rand(4, generator=g) * 20 + 1)
    x = torch.randn(3, 2, 6, 6, generator=g)
    z = conv(x).detach().double()
    var_z, mean_z = torch.var_mean(z, dim=(0, 2, 3), correction=1)
    expected = tool.drift(mean_z, var_z, bn.running_mean, bn.running_var, bn.eps)
    assert expected[0] > 0.1 and expected[1] > 0.1

    model = nn.Module()
    model.conv = QConvBN.from_float(conv, bn)
    model.bn = model.conv.bn
    stats = tool.collect(model, [x], 1, forward=lambda m, b: m.bn(m.conv(b)))
    (row,) = stats['bns']
    assert row['kind'] == 'folded bn' and row['name'] == 'bn'
    assert (row['mean_drift'], row['var_drift']) == pytest.approx(expected, rel=1e-4)


def test_part_summary(tool):
    q = [dict(part='backbone', clip=0.1, levels_used=1.0), dict(part='backbone', clip=0.5, levels_used=0.5),
         dict(part='backbone', clip=None, levels_used=None), dict(part='neck', clip=0.2, levels_used=0.75)]
    b = [dict(part='backbone', mean_drift=0.1, var_drift=0.3), dict(part='bbox_head', mean_drift=0.3, var_drift=0.1),
         dict(part='bbox_head', mean_drift=0.5, var_drift=0.2)]
    parts = {r['part']: r for r in tool.part_summary(q, b)}
    assert list(parts) == ['backbone', 'neck', 'bbox_head', 'all']
    bb, head, al = parts['backbone'], parts['bbox_head'], parts['all']
    assert (bb['quantizers'], bb['clip_max'], bb['levels_used_mean']) == (3, 0.5, 0.75)
    assert bb['clip_mean'] == pytest.approx(0.3)  # the quantizer that never clips is left out
    assert (bb['bns'], bb['mean_drift'], bb['var_drift']) == (1, 0.1, 0.3)
    assert (head['quantizers'], head['clip_mean'], head['clip_max']) == (0, None, None)
    assert (head['mean_drift'], head['var_drift']) == (pytest.approx(0.4), pytest.approx(0.15))
    assert (al['quantizers'], al['clip_max'], al['bns']) == (4, 0.5, 3)
    assert al['clip_mean'] == pytest.approx(0.8 / 3) and al['mean_drift'] == pytest.approx(0.3)


def test_main_on_a_tiny_2bit_checkpoint(tool, tiny_coco, tmp_path, cpu_model_builder, capsys):
    model = cpu_model_builder(W2A2).eval()
    with torch.no_grad():  # initialise the data-init quantizers as the first batch of a fine-tune would
        model(torch.randn(1, 3, 64, 64), mode='tensor')
    state = model.state_dict()
    state['backbone.layer1.0.conv1.act_quantizer.alpha'].fill_(0.123)
    state['backbone.layer1.0.bn1.running_mean'] += 100.0  # far from every batch: the largest drift
    ckpt, out = str(tmp_path / 'w2a2.pth'), str(tmp_path / 'stats.json')
    torch.save({'state_dict': state}, ckpt)
    argv = [W2A2, ckpt, '--num-batches', '2', '--out-json', out, '--cfg-options',
            f'train_dataloader.dataset.data_root={tiny_coco}/', 'train_dataloader.batch_size=2']
    stats = tool.main(argv)
    printed = capsys.readouterr().out
    assert 'not initialised' not in printed
    assert '## Top 15 most clipped quantizers (2 batches)' in printed and '## Per part' in printed
    q_rows = {r['name']: r for r in stats['quantizers']}
    assert len(q_rows) == 100 and all(r['bits'] == 2 and r['calls'] >= 2 for r in q_rows.values())
    assert q_rows['backbone.layer1.0.conv1.act']['range']['alpha'] == pytest.approx(0.123)  # the checkpoint's
    assert q_rows['bbox_head.cls_convs.0.conv.act']['calls'] == 2 * 5  # once per FPN level
    assert all(0 <= r['clip'] <= 1 and 0 < r['levels_used'] <= 1 for r in q_rows.values() if r['clip'] is not None)
    bn_rows = stats['bns']
    assert sum(r['kind'] == 'level bn' for r in bn_rows) == 8 * 5 and len(bn_rows) == 20 + 40
    top_bn = printed.split('## Top 15 BNs by drift')[1].split('\n')[4]
    assert top_bn.startswith('| backbone.layer1.0.bn1 |')
    assert [r['part'] for r in stats['parts']] == ['backbone', 'neck', 'bbox_head', 'all']
    with open(out) as f:
        saved = json.load(f)
    assert saved['quantizers'] == json.loads(json.dumps(stats['quantizers']))
    assert saved['split'] == 'train' and saved['num_batches'] == 2 and len(saved['bns']) == 60
    with pytest.raises(SystemExit):  # never over an existing file without --force
        tool.main(argv)
    assert 'exists; pass --force' in capsys.readouterr().err
    tool.main(argv[:2] + ['--num-batches', '1', '--force'] + argv[4:])
    with open(out) as f:
        assert json.load(f)['num_batches'] == 1
