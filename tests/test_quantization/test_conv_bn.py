"""QConvBN / FoldedBN and ``QuantConfig(fold_bn=...)``: FQN's BN folding (Li et al., CVPR 2019, section 3.5, eq. 11-14),
by mmdet's naming (``MMDET_FOLD_RULES``); the output quantizer of the prediction convs (``output_layers``)."""
import copy
import logging
import os
import uuid
from collections import OrderedDict

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from mmengine.logging import MMLogger
from torch import nn

from mmaqd.models.fold_rules import MMDET_FOLD_RULES
from mmaqd.quantization import FoldedBN, QConv2d, QConvBN, quantization_table, quantize_model, quantizers, set_bn_frozen
from mmaqd.quantization.layers.conv_bn import batch_moments
from mmaqd.quantization.quantizers.affine import affine_fake_quant

W4 = dict(type='FQNAffine', bits=4, per_channel=True)
A4 = dict(type='FQNAffine', bits=4)


def randomize_bn(bn: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    c = bn.num_features
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(c, generator=g))
        bn.running_var.copy_(torch.rand(c, generator=g) * 2 + 0.2)
        bn.num_batches_tracked.fill_(1000)
        if bn.affine:
            bn.weight.copy_(torch.rand(c, generator=g) + 0.5)
            bn.bias.copy_(torch.randn(c, generator=g))
    return bn


class Net(nn.Module):
    """The names of an mmdet ResNet (stem conv1/bn1, blocks convN/bnN, downsample.0/.1) and of a ConvModule."""

    def __init__(self, conv_bias: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=conv_bias)
        self.bn1 = nn.BatchNorm2d(8)
        self.layer = nn.Module()
        self.layer.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=conv_bias)
        self.layer.bn2 = nn.BatchNorm2d(8)
        self.layer.downsample = nn.Sequential(nn.Conv2d(8, 8, 1, bias=conv_bias), nn.BatchNorm2d(8))
        self.head = nn.Module()
        self.head.tower = nn.Module()  # a ConvModule: conv + bn siblings
        self.head.tower.conv = nn.Conv2d(8, 6, 3, padding=1, bias=conv_bias)
        self.head.tower.bn = nn.BatchNorm2d(6)
        self.head.conv_cls = nn.Conv2d(6, 2, 1)
        for i, m in enumerate(self.modules()):
            if isinstance(m, nn.BatchNorm2d):
                randomize_bn(m, i)

    def forward(self, x):  # x: (N, 3, H, W)
        x = torch.relu(self.bn1(self.conv1(x)))
        y = self.layer.bn2(self.layer.conv2(x)) + self.layer.downsample(x)
        y = torch.relu(self.head.tower.bn(self.head.tower.conv(torch.relu(y))))
        return self.head.conv_cls(y)  # (N, 2, H, W)


def folded(net: nn.Module, **kw) -> nn.Module:
    return quantize_model(net, dict(fold_bn=True, **kw), fold_rules=MMDET_FOLD_RULES)


@pytest.mark.parametrize('conv_bias', [False, True])
@pytest.mark.parametrize('bn_training', [False, True])
def test_frozen_fold_equals_conv_then_eval_bn(conv_bias, bn_training):
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(4, 6, 3, padding=1, stride=2, bias=conv_bias), randomize_bn(nn.BatchNorm2d(6), 1)
    ref = nn.Sequential(copy.deepcopy(conv), copy.deepcopy(bn)).eval()
    q = QConvBN.from_float(conv, bn)
    q.bn.train(bn_training)  # frozen: EMA statistics whatever BN's mode (eq. 13-14)
    x = torch.randn(2, 4, 9, 9)
    out = q.bn(q(x))
    assert torch.allclose(out, ref(x), atol=1e-5, rtol=0)
    w, b = q.folded_weight_bias(bn.running_mean, bn.running_var)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = conv.bias if conv_bias else 0
    assert torch.allclose(w, conv.weight * scale.view(-1, 1, 1, 1))  # eq. 13
    assert torch.allclose(b, scale * (bias - bn.running_mean) + bn.bias)  # eq. 14


def test_fold_without_affine():
    conv, bn = nn.Conv2d(3, 4, 1), randomize_bn(nn.BatchNorm2d(4, affine=False))
    ref = nn.Sequential(copy.deepcopy(conv), copy.deepcopy(bn)).eval()
    q = QConvBN.from_float(conv, bn)
    x = torch.randn(2, 3, 5, 5)
    assert torch.allclose(q(x), ref(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize('momentum', [0.1, None])
def test_unfrozen_fold_trains_like_conv_then_bn(momentum):
    """eq. 11-12: batch statistics, EMA updated as BN does, and the same gradients as conv -> BN."""
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=True).double()
    bn = randomize_bn(nn.BatchNorm2d(6, momentum=momentum)).double()
    ref = nn.Sequential(copy.deepcopy(conv), copy.deepcopy(bn)).train()
    q = QConvBN.from_float(conv, bn, frozen=False).train()
    q.bn.train()
    for step in range(3):
        x = torch.randn(3, 4, 7, 7, dtype=torch.float64, requires_grad=True)
        xr = x.detach().clone().requires_grad_(True)
        out, expected = q.bn(q(x)), ref(xr)
        assert torch.allclose(out, expected, atol=1e-10, rtol=0)
        (out * torch.arange(out.numel(), dtype=out.dtype).view_as(out).sin()).sum().backward()
        (expected * torch.arange(out.numel(), dtype=out.dtype).view_as(out).sin()).sum().backward()
        assert torch.allclose(x.grad, xr.grad, atol=1e-10)
    assert torch.allclose(q.weight.grad, ref[0].weight.grad, atol=1e-9)
    assert torch.allclose(q.bn.weight.grad, ref[1].weight.grad, atol=1e-9)
    assert torch.allclose(q.bn.bias.grad, ref[1].bias.grad, atol=1e-9)
    assert torch.allclose(bn.running_mean, ref[1].running_mean, atol=1e-12)  # the BN's own buffers were updated
    assert torch.allclose(bn.running_var, ref[1].running_var, atol=1e-12)
    assert int(bn.num_batches_tracked) == int(ref[1].num_batches_tracked) == 1003
    # in eval mode an unfrozen fold uses the EMA statistics, like BN
    q.bn.eval()
    ref.eval()
    x = torch.randn(2, 4, 7, 7, dtype=torch.float64)
    assert torch.allclose(q(x), ref(x), atol=1e-10, rtol=0)


def test_quantize_model_folds_resnet_and_convmodule_names_with_same_keys():
    net = Net()
    keys, params = list(net.state_dict()), dict(net.named_parameters())
    folded(net, weight_quant=W4, input_quant=A4)
    pairs = {'conv1': 'bn1', 'layer.conv2': 'layer.bn2', 'layer.downsample.0': 'layer.downsample.1',
             'head.tower.conv': 'head.tower.bn'}
    modules = dict(net.named_modules())
    for conv, bn in pairs.items():
        assert type(modules[conv]) is QConvBN and type(modules[bn]) is FoldedBN and modules[conv].bn is modules[bn]
    assert type(net.head.conv_cls).__name__ == 'QConv2d'
    # float keys unchanged (quantizer state added beside), the same Parameter objects (optimizer entries)
    assert [k for k in net.state_dict() if '_quantizer.' not in k] == keys
    assert all(p is params[n] for n, p in net.named_parameters())
    table = quantization_table(net)
    assert 'QConvBN' in table and 'FQNAffine 4b per-ch' in table


def test_float_checkpoint_loads_and_folded_net_matches_it():
    torch.manual_seed(0)
    fp = Net(conv_bias=True).eval()
    q = folded(Net(conv_bias=True)).eval()  # no quantizers: folding only
    result = q.load_state_dict(fp.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    x = torch.randn(2, 3, 12, 12)
    assert torch.allclose(q(x), fp(x), atol=1e-5, rtol=0)
    # and a quantized, folded checkpoint round-trips
    q2 = folded(Net(conv_bias=True), weight_quant=W4, input_quant=A4).eval()
    q2.load_state_dict(fp.state_dict())
    q2(x)
    q3 = folded(Net(conv_bias=True), weight_quant=W4, input_quant=A4).eval()
    q3.load_state_dict(q2.state_dict(), strict=True)
    assert torch.equal(q3(x), q2(x))


def test_frozen_statistics_unchanged_by_training_steps():
    torch.manual_seed(0)
    net = folded(Net(), weight_quant=W4, input_quant=A4).train()
    bns = {n: m for n, m in net.named_modules() if isinstance(m, FoldedBN)}
    before = {k: v.clone() for k, v in net.state_dict().items() if k.rpartition('.')[0] in bns}
    params = {k: v.detach().clone() for k, v in net.named_parameters()}
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(2, 3, 12, 12)).square().mean().backward()
        opt.step()
    after = net.state_dict()
    for k, v in before.items():
        if k.endswith(('running_mean', 'running_var', 'num_batches_tracked')):
            assert torch.equal(after[k], v), k  # frozen (FQN section 3.5.1)
    # gamma, beta and the conv weights train through W_fold / b_fold
    for k in ('bn1.weight', 'bn1.bias', 'conv1.weight', 'head.tower.bn.weight', 'layer.downsample.0.weight'):
        assert not torch.equal(params[k], dict(net.named_parameters())[k]), k


def test_set_bn_frozen_switches_statistics_updates():
    torch.manual_seed(0)
    net = folded(Net(), freeze_bn=False).train()
    assert all(not m.frozen for m in net.modules() if isinstance(m, QConvBN))
    x = torch.randn(2, 3, 12, 12)
    mean0 = net.bn1.running_mean.clone()
    net(x)
    assert not torch.equal(net.bn1.running_mean, mean0) and int(net.bn1.num_batches_tracked) == 1001
    assert set_bn_frozen(net, True) == 4
    mean1, n1 = net.bn1.running_mean.clone(), int(net.bn1.num_batches_tracked)
    out = net(x)
    assert torch.equal(net.bn1.running_mean, mean1) and int(net.bn1.num_batches_tracked) == n1
    net.eval()
    assert torch.allclose(out, net(x))  # frozen training forward = eval forward
    assert set_bn_frozen(net, False) == 4 and not net.conv1.frozen


def test_weight_quantizer_sees_folded_weight_and_zero_is_exact():
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 4, 3, padding=1, bias=False), randomize_bn(nn.BatchNorm2d(4))
    with torch.no_grad():
        conv.weight[:, 0] = 0  # zero weights stay exactly zero after folding and quantization
    q = QConvBN.from_float(conv, bn, W4, A4).eval()
    x = torch.randn(2, 3, 6, 6)
    out = q(x)
    w, b = q.folded_weight_bias(bn.running_mean, bn.running_var)
    r = w.detach().reshape(4, -1)
    wq = affine_fake_quant(w, r.amin(1).view(-1, 1, 1, 1), r.amax(1).view(-1, 1, 1, 1), 4)
    xq = q.act_quantizer(x)
    assert torch.allclose(out, nn.functional.conv2d(xq, wq, b, padding=1), atol=1e-5)
    assert torch.equal(q.weight_quantizer(w)[:, 0], torch.zeros_like(w[:, 0]))
    assert float(q.act_quantizer(torch.zeros(1))) == 0.0  # nudged zero point (FQN section 3.6)
    for c in range(4):
        assert q.weight_quantizer(w)[c].unique().numel() <= 16


def test_pairing_not_in_forward_order_raises():
    class PreNorm(nn.Module):  # a ConvModule with order=('norm', 'conv', 'act')
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)

        def forward(self, x):
            return self.conv(self.bn(x))

    net = folded(PreNorm())
    with pytest.raises(RuntimeError, match='not the output of the conv'):
        net(torch.randn(1, 4, 3, 3))


@pytest.mark.parametrize('fold_bn, exc, match', [
    ([dict(conv=r'nothing', bn=r'bn')], ValueError, 'pair no conv'),
    ([dict(conv=r'head.tower.conv', bn=r'bn1')], ValueError, '6 output channels.*8 channels'),
    ([dict(conv=r'(.*)conv(\d)', bn=r'bn1')], ValueError, 'both'),
    ([dict(conv=r'conv(', bn=r'bn')], ValueError, 'not a regular expression'),
    ([dict(conv=r'conv1')], TypeError, 'dict\\(conv=REGEX, bn=TEMPLATE\\)'),
    ('yes', TypeError, 'fold_bn must be'),
])
def test_bad_fold_rules_leave_model_untouched(fold_bn, exc, match):
    net = Net()
    before = [(n, type(m)) for n, m in net.named_modules()]
    with pytest.raises(exc, match=match):
        quantize_model(net, dict(fold_bn=fold_bn))
    assert [(n, type(m)) for n, m in net.named_modules()] == before


def test_skip_is_not_folded_and_unpaired_bn_is_logged():
    logger = MMLogger.get_instance(f'test_conv_bn_{uuid.uuid4().hex}')  # becomes the current instance
    records = []
    handler = logging.Handler()
    handler.emit = lambda r: records.append(r.getMessage())
    logger.addHandler(handler)
    net = folded(Net(), skip=['conv1'])
    assert type(net.conv1) is nn.Conv2d and type(net.bn1) is nn.BatchNorm2d
    assert type(net.layer.conv2) is QConvBN
    assert any('not folded' in r and "['bn1']" in r for r in records)
    assert any('3 BN folded (statistics frozen)' in r for r in records)


def test_deepcopy_keeps_each_conv_with_its_own_bn():
    net = folded(Net(), weight_quant=W4, input_quant=A4)
    twin = copy.deepcopy(net)
    assert twin.conv1.bn is twin.bn1 and twin.bn1 is not net.bn1
    x = torch.randn(1, 3, 8, 8)
    assert torch.equal(twin.eval()(x), net.eval()(x))


def test_syncbn_is_folded_and_runs_on_cpu():
    """A frozen fold never calls SyncBN's (GPU-only) batch statistics: the COCO configs' SyncBN heads fold."""
    conv, bn = nn.Conv2d(3, 4, 3, padding=1), randomize_bn(nn.SyncBatchNorm(4))
    parent = nn.Sequential(OrderedDict(conv=conv, bn=bn))
    folded(parent, weight_quant=W4, input_quant=A4).train()
    assert parent.bn.synced and parent.bn.source_type == 'SyncBatchNorm' and type(parent.bn) is FoldedBN
    parent(torch.randn(2, 3, 5, 5)).sum().backward()
    assert parent.bn.weight.grad is not None


def _moments_worker(rank: int, world: int, port: int, y: torch.Tensor, out: dict) -> None:
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=world)
    try:
        part = y[rank * 2:(rank + 1) * 2].clone().requires_grad_(True)  # ranks hold different halves
        mean, var, n = batch_moments(part, synced=True)
        (mean.sum() + var.sum()).backward()
        out[rank] = (mean.detach(), var.detach(), n, part.grad)
    finally:
        dist.destroy_process_group()


def test_synced_batch_moments_over_two_processes():
    y = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_moments_worker, args=(2, 29000 + os.getpid() % 1000, y, out), nprocs=2)
        out = dict(out)
    var, mean = torch.var_mean(y, dim=(0, 2, 3), correction=0)
    yy = y.clone().requires_grad_(True)
    v, m = torch.var_mean(yy, dim=(0, 2, 3), correction=0)
    (m.sum() + v.sum()).backward()
    for rank in range(2):
        m_r, v_r, n, grad = out[rank]
        assert n == 100 and torch.allclose(m_r, mean) and torch.allclose(v_r, var)
        # each rank's input gets the sum over ranks of their losses' gradients (DDP's averaging of parameter
        # gradients divides by the world size again), as in SyncBN; here every rank's loss is the same function
        assert torch.allclose(grad, 2 * yy.grad[rank * 2:(rank + 1) * 2])


def test_output_layers_quantize_prediction_outputs():
    torch.manual_seed(0)
    net = folded(Net(), weight_quant=W4, input_quant=A4, output_layers=['head.conv_cls'])
    head = net.head.conv_cls
    assert type(head) is QConv2d and head.out_quantizer.role == 'act'
    out = net.eval()(torch.randn(2, 3, 8, 8))
    assert out.unique().numel() <= 16  # one 4-bit per-tensor grid
    assert [n for n, _ in quantizers(net)].count('head.conv_cls.out_quantizer') == 1
    assert 'out=FQNAffine 4b' in quantization_table(net)
    lin = nn.Sequential(OrderedDict(fc=nn.Linear(3, 2)))
    with pytest.raises(ValueError, match='Conv2d layers only'):
        quantize_model(lin, dict(weight_quant=W4, input_quant=A4, output_layers=['fc']))


def test_parent_that_fuses_conv_bn_itself_is_refused():
    """mmcv ConvModule's efficient_conv_bn_eval computes conv + BN itself in eval mode, bypassing the folded conv."""
    parent = nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 4, 1), bn=nn.BatchNorm2d(4)))
    parent.efficient_conv_bn_eval_forward = lambda bn, conv, x: x
    with pytest.raises(ValueError, match='efficient_conv_bn_eval=False'):
        folded(parent)
    assert type(parent.conv) is nn.Conv2d
