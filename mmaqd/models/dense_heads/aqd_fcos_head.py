"""FCOS head with multi-level BN (AQD, arXiv 2007.06919v1, section 3.2; head convs conv -> BN -> ReLU as in 4.3;
ablation in 4.5).

The stacked cls/reg convs stay shared across FPN levels; each of their norms becomes a :class:`MultiLevelNorm`
with one norm per level (``len(strides)``), so state_dict keys are ``cls_convs.<i>.<norm_name>.norms.<level>.*``.
``multi_level_norm=False`` is the shared-BN variant of Table 3, i.e. mmdet's ``FCOSHead`` unchanged.

mmdet has no FCOS head with per-level norms; its ``RetinaSepBNHead`` has them for RetinaNet (convs shared across
levels by assigning one ``nn.Conv2d`` into a ``ConvModule`` per level, a separate BN per level). This head and
:class:`~mmaqd.models.dense_heads.AQDRetinaHead` instead share one mixin, :class:`MultiLevelNormHeadMixin`, which
keeps the parent head's modules and keys and swaps only the norms; why mmaqd does not build on ``RetinaSepBNHead`` is
explained in :mod:`mmaqd.models.dense_heads.aqd_retina_head`.
"""
from typing import List, Tuple

from mmdet.models.dense_heads import FCOSHead
from mmdet.registry import MODELS
from torch import Tensor

from ..layers import MultiLevelNormHeadMixin


@MODELS.register_module()
class AQDFCOSHead(MultiLevelNormHeadMixin, FCOSHead):
    """mmdet's ``FCOSHead`` (same arguments) whose stacked convs get one norm per FPN level.

    Args:
        multi_level_norm: ``True`` (AQD): a separate norm (running statistics and affine) per level behind
            shared conv weights; ``False``: one norm shared by all levels, as in ``FCOSHead``.
    """

    def __init__(self, *args, multi_level_norm: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_multi_level_norms(multi_level_norm, len(self.strides))

    def forward(self, x: Tuple[Tensor]) -> Tuple[List[Tensor], List[Tensor], List[Tensor]]:
        """As ``FCOSHead.forward``: (cls_scores, bbox_preds, centernesses), one (N, C, H_l, W_l) per level."""
        return self._forward_levels(x, self.scales, self.strides)
