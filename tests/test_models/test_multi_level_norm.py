"""MultiLevelNorm (AQD, arXiv 2007.06919v1, section 3.2): level selection, errors, loading a shared norm into every
level, SyncBN revert."""
import pytest
import torch
from mmengine.model import revert_sync_batchnorm
from mmengine.runner.checkpoint import load_state_dict as mmengine_load_state_dict
from torch import nn

import mmaqd.models.layers.multi_level_norm as mln_module
from mmaqd.models.layers import MultiLevelNorm

BN = dict(type='BN', requires_grad=True)
pytestmark = pytest.mark.usefixtures('one_thread')


def _randomize(norm: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in (norm.weight, norm.bias, norm.running_mean):
            t.copy_(torch.randn(t.shape, generator=g))
        norm.running_var.copy_(torch.rand(norm.running_var.shape, generator=g) + 0.5)
        norm.num_batches_tracked.fill_(7)
    return norm


def test_forward_uses_the_current_level():
    m = MultiLevelNorm(BN, 4, num_levels=3).eval()
    for i, norm in enumerate(m.norms):
        _randomize(norm, i)
    x = torch.randn(2, 4, 5, 5)
    for i in (2, 0, 1):
        m.set_level(i)
        assert m.current_level == i
        assert torch.equal(m(x), m.norms[i](x))
    assert len(m.norms) == m.num_levels == 3 and isinstance(m.norms, nn.ModuleList)


def test_level_errors_name_index_and_range():
    m = MultiLevelNorm(BN, 4, num_levels=5)
    x = torch.randn(2, 4, 3, 3)
    with pytest.raises(RuntimeError, match=r'no level set.*0\.\.4'):
        m(x)
    for bad in (5, -1):
        with pytest.raises(IndexError, match=rf'level {bad} is out of range.*0\.\.4'):
            m.set_level(bad)
    m.current_level = 9  # set behind its back: forward still checks
    with pytest.raises(IndexError, match=r'level 9 is out of range.*0\.\.4'):
        m(x)
    with pytest.raises(TypeError, match='must be an int'):
        m.set_level(1.0)
    with pytest.raises(ValueError, match='num_levels'):
        MultiLevelNorm(BN, 4, num_levels=0)
    m.set_level(None)
    assert m.current_level is None


def test_any_norm_cfg():
    m = MultiLevelNorm(dict(type='GN', num_groups=2), 4, num_levels=2)
    assert all(isinstance(n, nn.GroupNorm) for n in m.norms)
    m.set_level(1)
    assert m(torch.randn(1, 4, 3, 3)).shape == (1, 4, 3, 3)
    frozen = MultiLevelNorm(dict(type='BN', requires_grad=False), 4, num_levels=2)
    assert not any(p.requires_grad for p in frozen.parameters())


class _Holder(nn.Module):
    """``prefix.bn`` as in a ConvModule."""

    def __init__(self, bn):
        super().__init__()
        self.bn = bn


@pytest.mark.parametrize('loader', ['torch', 'mmengine'])
def test_shared_norm_loads_into_every_level(loader, monkeypatch):
    logs = []
    monkeypatch.setattr(mln_module, 'print_log', lambda msg, **kw: logs.append((msg, kw)))
    shared = _Holder(_randomize(nn.BatchNorm2d(4), 0))
    multi = _Holder(MultiLevelNorm(BN, 4, num_levels=5))
    state = shared.state_dict()
    keys_before = list(state)
    if loader == 'torch':
        result = multi.load_state_dict(state, strict=True)
        assert not result.missing_keys and not result.unexpected_keys
    else:
        mmengine_load_state_dict(multi, state, strict=True)  # raises on any missing / unexpected key
    assert list(state) == keys_before  # the caller's dict is not changed
    for norm in multi.bn.norms:
        for name, value in shared.bn.state_dict().items():
            assert torch.equal(norm.state_dict()[name], value), name
    assert len(logs) == 1 and 'bn' in logs[0][0] and '5 levels' in logs[0][0]
    assert logs[0][1] == dict(logger='current')
    multi.load_state_dict(state)  # logged once per module
    assert len(logs) == 1


def test_per_level_keys_win_and_stray_shared_keys_are_unexpected():
    src = _Holder(MultiLevelNorm(BN, 4, num_levels=2))
    _randomize(src.bn.norms[1], 3)
    dst = _Holder(MultiLevelNorm(BN, 4, num_levels=2))
    state = dict(src.state_dict(), **{'bn.weight': torch.zeros(4)})
    result = dst.load_state_dict(state, strict=False)
    assert result.unexpected_keys == ['bn.weight'] and not result.missing_keys
    assert torch.equal(dst.bn.norms[1].weight, src.bn.norms[1].weight)
    # a per-level state dict lacking a level reports that level's keys missing
    partial = {k: v for k, v in src.state_dict().items() if '.norms.1.' not in k}
    missing = dst.load_state_dict(partial, strict=False).missing_keys
    assert 'bn.norms.1.running_mean' in missing


def test_revert_sync_batchnorm_reaches_the_levels():
    m = _Holder(MultiLevelNorm(dict(type='SyncBN', requires_grad=True), 4, num_levels=3))
    assert all(isinstance(n, nn.SyncBatchNorm) for n in m.bn.norms)
    keys = list(m.state_dict())
    m = revert_sync_batchnorm(m)
    assert isinstance(m.bn, MultiLevelNorm) and len(m.bn.norms) == 3
    assert not any(isinstance(n, nn.SyncBatchNorm) for n in m.modules())
    assert all(isinstance(n, nn.modules.batchnorm._BatchNorm) for n in m.bn.norms)
    assert list(m.state_dict()) == keys
    m.train().bn.set_level(2)
    m.bn(torch.randn(2, 4, 3, 3))  # BN in train mode works on the CPU now
    assert int(m.bn.norms[2].num_batches_tracked) == 1 and int(m.bn.norms[0].num_batches_tracked) == 0
