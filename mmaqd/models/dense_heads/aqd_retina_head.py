"""RetinaNet head with multi-level BN (AQD, arXiv 2007.06919v1, section 3.2; head convs conv -> BN -> ReLU as in 4.3).

The stacked cls/reg convs stay shared across FPN levels; each of their norms becomes a :class:`MultiLevelNorm`
with one norm per anchor-generator level, so state_dict keys are ``cls_convs.<i>.<norm_name>.norms.<level>.*``.
``multi_level_norm=False`` is the shared-BN variant (AQD Table 3), i.e. mmdet's ``RetinaHead`` unchanged.

How it relates to mmdet's ``RetinaSepBNHead``: that head computes the same function, the structure AQD calls
multi-level BN. It builds one tower of ``ConvModule`` s per level (``cls_convs[level][i]``, ``num_ins`` levels) and
then makes the towers share their convs by assigning level 0's ``nn.Conv2d`` into every other level's ConvModule, so
each level has its own BN behind shared conv weights, and ``retina_cls`` / ``retina_reg`` are shared too. mmaqd does
not reuse it, for four reasons:

* checkpoints: its keys are ``cls_convs.<level>.<i>.conv.weight`` for every level (the shared conv is saved once per
  level) and ``cls_convs.<level>.<i>.bn.*``, a layout no ``RetinaHead`` checkpoint has. ``AQDRetinaHead`` keeps
  ``RetinaHead``'s keys for everything but the norms, and a shared-BN ``RetinaHead`` checkpoint (the full-precision
  model every quantized config starts from) loads into every level (:meth:`MultiLevelNorm._load_from_state_dict`);
  the shared-BN ablation (``multi_level_norm=False``) *is* ``RetinaHead``, and loads a multi-level checkpoint as
  the mean of its levels;
* one mechanism for both detectors: mmdet has no FCOS counterpart, and :class:`MultiLevelNormHeadMixin` splits the
  norms of ``FCOSHead`` and ``RetinaHead`` alike and runs the parents' own ``forward_single`` per level (mmdet's
  ``RetinaSepBNHead.forward`` is a separate loop that would need its own quantization and integer-export code);
* quantization: a conv module reachable under five names is converted once under the first, which works, but each
  level's ``ConvModule`` then pairs that one conv with a different BN, which BN folding and the integer export's
  conv -> BN -> ReLU stages cannot express; here a tower conv has one place, ``cls_convs.<i>.conv``, and its level's
  BN is ``norm.norms[level]``;
* arguments: ``RetinaSepBNHead`` needs ``num_ins`` and refuses an ``init_cfg``; ``AQDRetinaHead`` takes
  ``RetinaHead``'s arguments unchanged and reads the number of levels from the anchor generator.
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
