"""Multi-level BN with SyncBN (the COCO AQD configs): each level's statistics are synchronised by that level's own
SyncBN, from that level's features only, and every rank issues the synchronisations in the same order.

torch's SyncBatchNorm has no CPU kernels, so here its collective is recorded instead of run: in training, each
``SyncBatchNorm.forward`` is exactly one all-gather of that layer's batch statistics over the ranks (its backward
one all-reduce, in the reverse order of the same graph). The recorder logs (layer, input shape) per call and
normalizes with the local batch. Two "ranks" are simulated by two training forwards on images of different
sizes; they must issue the same sequence of layers (a collective pairs the i-th calls of all ranks), and every
call of a head level norm ``...norms.<l>`` must get the level-l feature map. Not run without a GPU: the real
all-gather / all-reduce of SyncBN across processes (NCCL), i.e. the synchronised statistics and gradients.
"""
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData
from torch import nn

from conftest import ROOT, build_cpu_model
from mmaqd.models.layers import MultiLevelNorm

CONFIGS = ['configs/aqd/fcos_r18_fpn_aqd-w4a4_90k_coco.py', 'configs/aqd/retinanet_r18_fpn_aqd-w4a4_90k_coco.py']
RANK_SIZES = [(64, 64), (96, 64)]  # (H, W) of rank 0's and rank 1's batch: different feature-map sizes


def _build_sync_bn_model(config: str) -> nn.Module:
    """The config's model with its SyncBN layers kept (build_cpu_model reverts them to BN by default)."""
    return build_cpu_model(f'{ROOT}/{config}', keep_sync_bn=True).train()


def _batch(size, seed: int, num_images: int = 2):
    """A batch of ``num_images`` random images of ``size`` (H, W), one box each (2 images: BN on a 1x1 level
    needs more than one value per channel)."""
    h, w = size
    g = torch.Generator().manual_seed(seed)
    samples = []
    for _ in range(num_images):
        sample = DetDataSample()
        sample.set_metainfo(dict(img_shape=size, ori_shape=size, pad_shape=size, scale_factor=(1.0, 1.0),
                                 batch_input_shape=size))
        sample.gt_instances = InstanceData(bboxes=torch.tensor([[4., 6., w * 0.7, h * 0.8]]),
                                           labels=torch.zeros(1, dtype=torch.long))
        samples.append(sample)
    return torch.randn(num_images, 3, h, w, generator=g), samples


@contextmanager
def recorded_sync_bn(model: nn.Module):
    """Within the block, a training ``SyncBatchNorm.forward`` appends ``(layer name, input shape)`` to the yielded
    list (where it would all-gather its statistics) and normalizes with the local batch."""
    names = {m: n for n, m in model.named_modules()}
    calls, original = [], nn.SyncBatchNorm.forward

    def forward(self, x):
        if self.training:
            calls.append((names[self], tuple(x.shape)))
            self.num_batches_tracked.add_(1)
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training,
                            self.momentum, self.eps)

    nn.SyncBatchNorm.forward = forward
    try:
        yield calls
    finally:
        nn.SyncBatchNorm.forward = original


def _rank_calls(model: nn.Module, size, seed: int):
    """The SyncBN calls of one training step (forward and loss) on a batch of ``size``, and the feature-map
    sizes the head got, per level."""
    level_sizes = []
    handle = model.bbox_head.register_forward_pre_hook(
        lambda m, args: level_sizes.extend(tuple(f.shape[-2:]) for f in args[0]))
    try:
        with recorded_sync_bn(model) as calls:
            inputs, samples = _batch(size, seed)
            losses = model.loss(inputs, samples)
    finally:
        handle.remove()
    values = [t for v in losses.values() for t in (v if isinstance(v, (list, tuple)) else [v])]
    assert values and all(torch.isfinite(t).all() for t in values)
    return calls, level_sizes


@pytest.mark.parametrize('config', CONFIGS)
def test_each_level_syncs_separately_and_in_the_same_order_on_every_rank(config):
    torch.manual_seed(0)
    model = _build_sync_bn_model(config)
    head_norms = {name: m for name, m in model.named_modules()
                  if name.startswith('bbox_head') and isinstance(m, MultiLevelNorm)}
    assert head_norms and all(isinstance(n, nn.SyncBatchNorm) for m in head_norms.values() for n in m.norms)
    num_levels = next(iter(head_norms.values())).num_levels

    ranks = [_rank_calls(model, size, seed) for seed, size in enumerate(RANK_SIZES)]
    (calls0, sizes0), (calls1, sizes1) = ranks
    assert sizes0 != sizes1 and len(sizes0) == len(sizes1) == num_levels
    # the i-th collective of rank 0 pairs with the i-th of rank 1: the same layer, with as many channels
    assert [name for name, _ in calls0] == [name for name, _ in calls1]
    assert [shape[1] for _, shape in calls0] == [shape[1] for _, shape in calls1]

    for calls, sizes in ranks:
        head_calls = [(name, shape) for name, shape in calls if name.startswith('bbox_head')]
        # only the per-level norms sync in the head, each exactly once per step, with its own level's features
        assert sorted(name for name, _ in head_calls) == sorted(
            f'{prefix}.norms.{level}' for prefix in head_norms for level in range(num_levels))
        for name, shape in head_calls:
            level = int(name.rsplit('.', 1)[1])
            assert shape[-2:] == sizes[level], f'{name} synced a {shape[-2:]} map, level {level} is {sizes[level]}'
        # level-major order: every tower norm of level 0, then of level 1, ... (the head runs level by level)
        levels = [int(name.rsplit('.', 1)[1]) for name, _ in head_calls]
        per_level = len(head_norms)
        assert levels == [lvl for lvl in range(num_levels) for _ in range(per_level)]
        tower = [name.rsplit('.norms.', 1)[0] for name, _ in head_calls]
        assert all(tower[i * per_level:(i + 1) * per_level] == tower[:per_level] for i in range(num_levels))
