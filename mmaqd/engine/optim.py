"""An optimizer-wrapper constructor that keeps one param group per distinct setting.

mmengine's ``DefaultOptimWrapperConstructor`` turns a ``paramwise_cfg`` into one param group per parameter. The
quantized configs need a ``paramwise_cfg`` (quantizer ranges such as LIQ's alpha, AQD, arXiv 2007.06919v1, eq. 3-7,
train at their own lr multiple and without weight decay), and a quantized detector has a few hundred more parameters
than its float twin, so the optimizer would step through several hundred one-tensor groups (no multi-tensor kernels on
the GPU, per-group overhead everywhere). This constructor applies exactly the same rules, then merges the groups
whose options are equal (first-appearance order kept), e.g. two groups for ``custom_keys={'_quantizer': ...}``.

    optim_wrapper = dict(constructor='GroupedOptimWrapperConstructor', optimizer=dict(type='AdamW', lr=2e-4),
                         paramwise_cfg=dict(custom_keys={'_quantizer': dict(lr_mult=10., decay_mult=0.)}))

Optimizer checkpoints store their groups, so resuming needs the constructor the run started with.
"""
from typing import Dict, List, Optional, Union

from mmdet.registry import OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.optim import DefaultOptimWrapperConstructor
from torch import nn


def merge_param_groups(groups: List[dict]) -> List[dict]:
    """Param groups with equal options (every key but ``params``) merged into one, in first-appearance order."""
    merged: Dict[tuple, dict] = {}
    for group in groups:
        options = {k: v for k, v in group.items() if k != 'params'}
        key = tuple(sorted((k, repr(v)) for k, v in options.items()))
        if key not in merged:
            merged[key] = dict(options, params=[])
        merged[key]['params'].extend(group['params'])
    return list(merged.values())


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class GroupedOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """``DefaultOptimWrapperConstructor`` with its per-parameter groups merged by equal options."""

    def add_params(self, params: List[dict], module: nn.Module, prefix: str = '',
                   is_dcn_module: Optional[Union[int, float]] = None) -> None:
        if prefix:  # a recursive call of the default implementation: collect per parameter
            return super().add_params(params, module, prefix, is_dcn_module)
        groups: List[dict] = []
        super().add_params(groups, module, prefix, is_dcn_module)
        params.extend(merge_param_groups(groups))
