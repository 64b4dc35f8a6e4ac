"""The default BN-folding rules for mmdet models (``QuantConfig.fold_bn=True``; FQN, Li et al., CVPR 2019,
section 3.5): which BN follows which conv, by module name, in mmdet's ResNet and mmcv's ``ConvModule``.

The quantization floor knows no model family; :class:`~mmaqd.models.detectors.QuantizedDetectorMixin` passes these
rules to :func:`mmaqd.quantization.quantize_model` (``fold_rules=MMDET_FOLD_RULES``).

* mmdet / torchvision ResNet: ``conv1``/``bn1`` ... ``conv3``/``bn3`` (and the stem's ``conv1``/``bn1``),
  ``downsample.0``/``downsample.1``;
* mmcv ``ConvModule`` with a BN: ``conv``/``bn``. A rule whose BN does not exist (a ConvModule without norm, or
  with a :class:`~mmaqd.models.layers.MultiLevelNorm`) selects nothing for that conv.

A ``ConvModule`` built with ``efficient_conv_bn_eval`` computes conv + BN itself in eval mode, which would bypass
the folded quantized conv: its conv is refused (:func:`refuse_efficient_conv_bn_eval`).
"""
from typing import Optional

from torch import nn

from mmaqd.quantization import FoldRules

__all__ = ['MMDET_FOLD_RULES', 'refuse_efficient_conv_bn_eval']


def refuse_efficient_conv_bn_eval(parent: Optional[nn.Module]) -> Optional[str]:
    """Why a conv whose parent is ``parent`` cannot be folded (mmcv ConvModule's efficient_conv_bn_eval), or None."""
    if getattr(parent, 'efficient_conv_bn_eval_forward', None) is not None:
        return ("its parent computes conv + BN itself in eval mode (mmcv ConvModule's efficient_conv_bn_eval), "
                'which would bypass the folded quantized conv; build the model with efficient_conv_bn_eval=False')
    return None


#: ``fold_rules`` of mmdet models: ResNet and ConvModule naming, refusing efficient_conv_bn_eval parents
MMDET_FOLD_RULES = FoldRules(rules=(dict(conv=r'(.*\.)?conv(\d*)', bn=r'\1bn\2'),
                                    dict(conv=r'(.*\.)?downsample\.0', bn=r'\1downsample.1')),
                             check_parent=refuse_efficient_conv_bn_eval)
