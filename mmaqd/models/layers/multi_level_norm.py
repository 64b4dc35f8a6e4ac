"""Multi-level normalization: one norm layer per FPN level behind a shared conv (AQD, arXiv 2007.06919v1, section 3.2,
multi-level BN).

A one-stage head runs the same conv tower on every pyramid level; AQD keeps those conv weights shared but gives
each level its own BN (own running statistics, own gamma/beta), because the batch statistics of the levels
diverge once the network is quantized (AQD section 3.2, Table 3). :class:`MultiLevelNorm` holds ``num_levels`` norm
layers built from one ``norm_cfg`` and applies the one of ``current_level``. :class:`MultiLevelNormHeadMixin`
splits a head's tower norms this way and sets the level before it runs a level's features through the tower
(used by :mod:`mmaqd.models.dense_heads`).

A full-precision BN-head checkpoint (one shared norm: ``<prefix>weight``, ``bias``, ``running_mean``, ...) loads
into every level's copy (see :meth:`MultiLevelNorm._load_from_state_dict`), so the quantized model starts from
the FP model exactly (every quantized config's ``load_from`` is the FP checkpoint of its recipe).
"""
import numbers
from contextlib import contextmanager
from typing import Iterator, List, Optional, Sequence

import torch
from mmcv.cnn import ConvModule, build_norm_layer
from mmdet.models.utils import multi_apply
from mmengine.logging import print_log
from torch import nn


class MultiLevelNorm(nn.Module):
    """``num_levels`` independent norm layers of ``num_features`` channels; ``forward`` uses ``current_level``.

    Args:
        norm_cfg: mmcv norm config, e.g. ``dict(type='SyncBN', requires_grad=True)``; each level gets its own
            layer from ``build_norm_layer(norm_cfg, num_features)``.
        num_features: channels of the normalized feature map.
        num_levels: number of pyramid levels (>= 1).

    Attributes:
        norms: ``nn.ModuleList`` of the per-level norm layers (state_dict keys ``norms.<level>.*``).
        num_levels: ``len(norms)``.
        current_level: the level ``forward`` normalizes with, ``None`` until :meth:`set_level` is called.
    """

    def __init__(self, norm_cfg: dict, num_features: int, num_levels: int):
        super().__init__()
        if not isinstance(num_levels, int) or isinstance(num_levels, bool) or num_levels < 1:
            raise ValueError(f'MultiLevelNorm: num_levels must be an int >= 1, got {num_levels!r}')
        self.norm_cfg = dict(norm_cfg)
        self.num_features = num_features
        self.num_levels = num_levels
        self.norms = nn.ModuleList(build_norm_layer(self.norm_cfg, num_features)[1] for _ in range(num_levels))
        self.current_level: Optional[int] = None
        self._logged_shared_load = False

    def _valid_range(self) -> str:
        return f'valid levels: 0..{self.num_levels - 1} (num_levels={self.num_levels})'

    def _check_level(self, level) -> None:
        if level is None:
            raise RuntimeError(f'MultiLevelNorm: no level set (current_level=None); call set_level(i) first, '
                               f'{self._valid_range()}')
        if not isinstance(level, numbers.Integral) or isinstance(level, bool):
            raise TypeError(f'MultiLevelNorm: level must be an int, got {level!r}; {self._valid_range()}')
        if not 0 <= level < self.num_levels:
            raise IndexError(f'MultiLevelNorm: level {level} is out of range; {self._valid_range()}')

    def set_level(self, level: Optional[int]) -> None:
        """Select the norm of pyramid level ``level`` (``None`` clears the selection)."""
        if level is not None:
            self._check_level(level)
            level = int(level)
        self.current_level = level

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, C, H, W)
        self._check_level(self.current_level)
        return self.norms[self.current_level](x)  # (N, C, H, W)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        """Load a shared norm's keys (``<prefix>weight`` ...) into every level when ``<prefix>norms.*`` is absent.

        The shared keys are replaced, in the loader's own copy of the state dict, by ``<prefix>norms.<i>.<name>``
        for every level i before the per-level norms load, so they are neither unexpected nor missing. When the
        state dict holds per-level keys too, nothing is mapped and stray shared keys are reported as usual.
        """
        shared = [k for k in state_dict if k.startswith(prefix) and '.' not in k[len(prefix):]]
        has_levels = any(k.startswith(prefix + 'norms.') for k in state_dict)
        if shared and not has_levels:
            for key in shared:
                value = state_dict.pop(key)
                for level in range(self.num_levels):
                    state_dict[f'{prefix}norms.{level}.{key[len(prefix):]}'] = value
            if not self._logged_shared_load:
                print_log(f'MultiLevelNorm: loading the shared norm {prefix[:-1] or "(root)"} into each of its '
                          f'{self.num_levels} levels ({", ".join(k[len(prefix):] for k in shared)})',
                          logger='current')
                self._logged_shared_load = True
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def extra_repr(self) -> str:
        return f'num_levels={self.num_levels}, current_level={self.current_level}'


def _merge_levels_on_load(state_dict, prefix, *args) -> None:
    """Load-state-dict pre-hook of a shared norm: a checkpoint of a multi-level head (``<prefix>norms.<i>.*``)
    loads into it as the mean over the levels of each tensor (the shared-BN ablation started from a multi-level
    checkpoint, AQD, arXiv 2007.06919v1, Table 3). A checkpoint with the shared keys loads as usual."""
    level_keys = [k for k in state_dict if k.startswith(prefix + 'norms.')]
    # (BatchNorm's own loader has already filled in a default num_batches_tracked: not a shared key)
    if not level_keys or any(k.startswith(prefix) and '.' not in k[len(prefix):] and
                             not k.endswith('num_batches_tracked') for k in state_dict):
        return
    names = sorted({k[len(prefix + 'norms.'):].split('.', 1)[1] for k in level_keys})
    for name in names:
        values = [state_dict.pop(k) for k in sorted(level_keys) if k.endswith('.' + name)]
        stacked = torch.stack([v.float() for v in values])
        merged = stacked.mean(0) if values[0].is_floating_point() else values[0]
        state_dict[prefix + name] = merged.to(values[0].dtype)
    print_log(f'shared norm {prefix[:-1]}: loaded the mean of {len(values)} per-level norms', logger='current')


class MultiLevelNormHeadMixin:
    """For a dense head whose ``forward`` runs ``forward_single`` once per FPN level (FCOS, RetinaNet heads).

    :meth:`_init_multi_level_norms` (called at the end of the head's ``__init__``) replaces the norm of every
    ``ConvModule`` in ``cls_convs`` / ``reg_convs`` by a :class:`MultiLevelNorm` (same ``norm_name``, so keys
    become ``cls_convs.<i>.<norm_name>.norms.<level>.*``; the conv stays shared). :meth:`_forward_levels` runs
    each level's features with that level set on every :class:`MultiLevelNorm` of the head (with none, it is
    the parent's shared-norm forward).
    """

    num_levels: int

    def _init_multi_level_norms(self, multi_level_norm: bool, num_levels: int) -> None:
        """Set ``multi_level_norm`` / ``num_levels``; with ``True`` split the norms of ``cls_convs`` and
        ``reg_convs`` into ``num_levels`` levels (each level starts as a copy of the shared norm)."""
        if not isinstance(multi_level_norm, bool):
            raise TypeError(f'{type(self).__name__}: multi_level_norm must be a bool, got {multi_level_norm!r}')
        self.multi_level_norm = multi_level_norm
        self.num_levels = num_levels
        if not multi_level_norm:
            for conv_module in list(self.cls_convs) + list(self.reg_convs):
                if isinstance(conv_module, ConvModule) and conv_module.with_norm:
                    conv_module.norm._register_load_state_dict_pre_hook(_merge_levels_on_load)
            return
        if self.norm_cfg is None and self.stacked_convs > 0:
            raise ValueError(f'{type(self).__name__}: multi_level_norm=True needs a norm_cfg (e.g. dict(type='
                             "'SyncBN', requires_grad=True)); with norm_cfg=None the head convs have no norm to "
                             'split per level. Set norm_cfg, or multi_level_norm=False.')
        for conv_module in list(self.cls_convs) + list(self.reg_convs):
            if not isinstance(conv_module, ConvModule) or not conv_module.with_norm:
                continue
            norm = conv_module.norm
            after_conv = conv_module.order.index('norm') > conv_module.order.index('conv')
            channels = conv_module.out_channels if after_conv else conv_module.in_channels
            multi = MultiLevelNorm(conv_module.norm_cfg, channels, num_levels).train(norm.training)
            for level_norm in multi.norms:
                level_norm.load_state_dict(norm.state_dict())
            conv_module.add_module(conv_module.norm_name, multi)
            conv_module.turn_on_efficient_conv_bn_eval(False)  # conv-bn folding needs a plain BN

    def multi_level_norms(self) -> List[MultiLevelNorm]:
        """Every :class:`MultiLevelNorm` of the head."""
        return [m for m in self.modules() if isinstance(m, MultiLevelNorm)]

    @contextmanager
    def norm_level(self, level: int) -> Iterator[None]:
        """Within the block every :class:`MultiLevelNorm` of the head normalizes with level ``level``."""
        norms = self.multi_level_norms()
        previous = [m.current_level for m in norms]
        try:
            for m in norms:
                m.set_level(level)
            yield
        finally:
            for m, prev in zip(norms, previous):
                m.current_level = prev

    def _forward_level(self, level: int, *args):
        with self.norm_level(level):
            return self.forward_single(*args)

    def _forward_levels(self, feats: Sequence[torch.Tensor], *per_level_args) -> tuple:
        """``multi_apply(forward_single, feats, *per_level_args)`` with level i set for ``feats[i]``."""
        feats = tuple(feats)
        if len(feats) > self.num_levels:
            raise ValueError(f'{type(self).__name__} got {len(feats)} feature maps but has {self.num_levels} '
                             f'levels (one per stride); give at most {self.num_levels}')
        return multi_apply(self._forward_level, range(len(feats)), feats, *per_level_args)
