"""BNStatsHook: per-level batch mean / variance of a norm layer's input (AQD, arXiv 2007.06919v1, Figure 1)."""
import os.path as osp
from typing import Optional
from unittest.mock import MagicMock

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmaqd.engine.hooks import BNStatsHook
from mmaqd.engine.hooks.bn_stats_hook import batch_mean_var

C, LEVELS = 3, 3
LAYER = 'bbox_head.cls_convs.0.norm'


class LevelNormStandIn(nn.Module):
    """The MultiLevelNorm interface: one BN per level, ``forward`` applies ``norms[current_level]``."""

    def __init__(self, num_features: int, num_levels: int):
        super().__init__()
        self.norms = nn.ModuleList(nn.BatchNorm2d(num_features) for _ in range(num_levels))
        self.num_levels = num_levels
        self.current_level: Optional[int] = None

    def set_level(self, i: Optional[int]) -> None:
        self.current_level = i

    def forward(self, x):
        return self.norms[self.current_level](x)


class Block(nn.Module):
    def __init__(self, norm: nn.Module):
        super().__init__()
        self.conv, self.norm = nn.Identity(), norm


class TinyDet(nn.Module):
    """A stem BN, and a head whose one norm runs on every level (in ``order``)."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.stem_bn = nn.BatchNorm2d(C)
        self.bbox_head = nn.Module()
        self.bbox_head.cls_convs = nn.ModuleList([Block(norm)])

    def forward(self, feats, order):
        self.stem_bn(feats[0])
        norm = self.bbox_head.cls_convs[0].norm
        for lvl in order:
            if hasattr(norm, 'set_level'):
                norm.set_level(lvl)
            norm(feats[lvl])


def level_input(step: int, lvl: int) -> torch.Tensor:
    """(2, C, 4, 4): channel c has mean 100 step + 10 lvl + c and (biased) variance (lvl + 1)^2."""
    sign = torch.where((torch.arange(4)[:, None] + torch.arange(4)) % 2 == 0, 1.0, -1.0)  # checkerboard
    mean = 100.0 * step + 10.0 * lvl + torch.arange(C, dtype=torch.float32)
    return mean.view(1, C, 1, 1) + (lvl + 1) * sign.expand(2, C, 4, 4)


def train(hook, model, work_dir, iters, start=0, order=range(LEVELS)):
    runner = MagicMock()
    runner.model, runner.work_dir, runner.iter = model, str(work_dir), start
    hook.before_train(runner)
    for it in range(start, iters):
        runner.iter = it
        hook.before_train_iter(runner, it)
        model([level_input(it + 1, lvl) for lvl in range(LEVELS)], list(order))
        hook.after_train_iter(runner, it)
    hook.after_train(runner)
    return torch.load(osp.join(work_dir, hook.out_file))


def check_values(records: dict, layer: str, steps: list):
    assert sorted(records[layer]) == list(range(LEVELS))
    for lvl in range(LEVELS):
        rec = records[layer][lvl]
        assert rec['iters'] == steps and rec['mean'].shape == rec['var'].shape == (len(steps), C)
        for t, step in enumerate(steps):
            assert torch.allclose(rec['mean'][t], 100.0 * step + 10.0 * lvl + torch.arange(C, dtype=torch.float32))
            assert torch.allclose(rec['var'][t], torch.full((C,), (lvl + 1.0) ** 2))


def test_batch_mean_var_is_what_bn_normalizes_with():
    x = torch.randn(4, C, 5, 6) * 3 + 1
    mean, var = batch_mean_var(x)
    expected = F.batch_norm(x, None, None, training=True, eps=1e-5)
    assert torch.allclose((x - mean.view(1, C, 1, 1)) / (var.view(1, C, 1, 1) + 1e-5).sqrt(), expected, atol=1e-5)


def test_shared_bn_levels_from_call_order(tmp_path):
    model = TinyDet(nn.BatchNorm2d(C))
    records = train(BNStatsHook([LAYER], interval=2), model, tmp_path, iters=5)
    assert set(records) == {LAYER}
    check_values(records, LAYER, steps=[2, 4])  # the call counter restarts each recorded iteration
    assert not model.bbox_head.cls_convs[0].norm._forward_pre_hooks  # removed after training


def test_multi_level_norm_levels_from_current_level(tmp_path):
    model = TinyDet(LevelNormStandIn(C, LEVELS))
    # reversed call order: the level must come from current_level, not from the call count
    records = train(BNStatsHook(['bbox_head.cls_convs.0.*'], interval=3), model, tmp_path, iters=6,
                    order=[2, 1, 0])
    assert set(records) == {LAYER}  # the per-level BNs inside the stand-in are not separate candidates
    check_values(records, LAYER, steps=[3, 6])


def test_periodic_save_and_resume(tmp_path):
    model = TinyDet(nn.BatchNorm2d(C))
    hook = BNStatsHook([LAYER], interval=1, out_file='stats.pth')
    runner = MagicMock()
    runner.model, runner.work_dir, runner.iter = model, str(tmp_path), 0
    hook.before_train(runner)
    for it in range(10):
        runner.iter = it
        hook.before_train_iter(runner, it)
        model([level_input(it + 1, lvl) for lvl in range(LEVELS)], range(LEVELS))
        hook.after_train_iter(runner, it)
        assert osp.isfile(tmp_path / 'stats.pth') == (it == 9)  # every interval * 10 iterations
    # a resumed run from iteration 6 keeps records 1..6 and continues
    records = train(BNStatsHook([LAYER], interval=1, out_file='stats.pth'), TinyDet(nn.BatchNorm2d(C)), tmp_path,
                    iters=8, start=6)
    check_values(records, LAYER, steps=[1, 2, 3, 4, 5, 6, 7, 8])


@pytest.mark.parametrize('layer', ['bbox_head.cls_convs.1.*', 'bbox_head.cls_convs.0', 'neck.bn'])
def test_unknown_layer_is_an_error_listing_candidates(tmp_path, layer):
    runner = MagicMock()
    runner.model, runner.work_dir = TinyDet(nn.BatchNorm2d(C)), str(tmp_path)
    with pytest.raises(ValueError) as err:
        BNStatsHook([LAYER, layer]).before_train(runner)
    assert repr(layer) in str(err.value) and 'stem_bn' in str(err.value) and LAYER in str(err.value)
