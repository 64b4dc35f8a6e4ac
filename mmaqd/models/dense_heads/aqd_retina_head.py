"""RetinaNet head with multi-level BN (AQD, arXiv 2007.06919v1, section 3.2; head convs conv -> BN -> ReLU as in 4.3).

The stacked cls/reg convs stay shared across FPN levels; each of their norms becomes a :class:`MultiLevelNorm`
with one norm per anchor-generator level, so state_dict keys are ``cls_convs.<i>.<norm_name>.norms.<level>.*``.
``multi_level_norm=False`` is the shared-BN variant (AQD Table 3), i.e. mmdet's ``RetinaHead`` unchanged.
"""
from typing import List, Tuple

from mmdet.models.dense_heads import RetinaHead
from mmdet.registry import MODELS
from torch import Tensor

from ..layers import MultiLevelNormHeadMixin


@MODELS.register_module()
class AQDRetinaHead(MultiLevelNormHeadMixin, RetinaHead):
    """mmdet's ``RetinaHead`` (same arguments) whose stacked convs get one norm per FPN level.

    Args:
        multi_level_norm: ``True`` (AQD): a separate norm (running statistics and affine) per level behind
            shared conv weights; ``False``: one norm shared by all levels, as in ``RetinaHead``. Needs a
            ``norm_cfg`` (mmdet's stock RetinaHead has none).
    """

    def __init__(self, *args, multi_level_norm: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_multi_level_norms(multi_level_norm, self.prior_generator.num_levels)

    def forward(self, x: Tuple[Tensor]) -> Tuple[List[Tensor], List[Tensor]]:
        """As ``RetinaHead.forward``: (cls_scores, bbox_preds), one (N, C, H_l, W_l) per level."""
        return self._forward_levels(x)
