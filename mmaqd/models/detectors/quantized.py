"""Detectors that are quantized when they are built: ``MODELS.build`` of a plugin config gives a model that is
already fake-quantized, so mmdet's own ``tools/train.py`` / ``tools/test.py`` train, resume and evaluate it.

The model config carries the settings of :class:`mmaqd.quantization.QuantConfig` as ``quant_cfg``::

    model = dict(type='QFCOS', quant_cfg=dict(weight_quant=dict(type='LIQ', bits=4, weight_norm=True),
                                              input_quant=dict(type='LIQ', bits=4), ...), ...)

``fold_bn=True`` folds by the naming of mmdet's models (:data:`mmaqd.models.MMDET_FOLD_RULES`).

State-dict keys of the float layers are unchanged; quantizer state is added beside them (``<layer>.
weight_quantizer.alpha`` ...). ``load_from`` a full-precision checkpoint therefore initialises the quantized
model: quantizer state the checkpoint lacks stays fresh and is initialised from data (not reported missing),
every other missing or unexpected key is reported by name by mmengine.

Every forward (``loss``, ``predict``, ``tensor`` modes) runs inside
:func:`mmaqd.quantization.reuse_quantized_weights`: the head convs shared by the FPN levels quantize their
weights once per pass instead of once per level.

``distill_cfg`` (beyond the AQD paper) adds distillation losses from the frozen full-precision detector to
``loss()``: :mod:`mmaqd.models.detectors.distill`. Without it ``loss()`` is mmdet's.
"""
from typing import Optional

from mmdet.models.detectors import FCOS, RetinaNet
from mmdet.models.utils import unpack_gt_instances
from mmdet.registry import MODELS
from torch import Tensor

from mmaqd.quantization import quantize_model, reuse_quantized_weights

from ..fold_rules import MMDET_FOLD_RULES
from .distill import DISTILL_LOSS_KEYS, FPDistiller


class QuantizedDetectorMixin:
    """Builds the float detector, then converts it in place with ``quant_cfg`` (``None``: stays float).

    ``distill_cfg`` (``None``: no distillation): the keys of :class:`~mmaqd.models.detectors.distill.FPDistiller`
    (``teacher_config``, ``teacher_checkpoint``, ``feature_weight``, ``head_weight``, ``temperature``), checked
    here; the teacher is built at the first ``loss()`` and held by ``self.distiller``, a plain attribute, so it is
    no submodule.
    """

    def __init__(self, *args, quant_cfg: Optional[dict] = None, distill_cfg: Optional[dict] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.quant_cfg = quant_cfg
        if quant_cfg is not None:
            quantize_model(self, dict(quant_cfg), fold_rules=MMDET_FOLD_RULES)
        self.distill_cfg = distill_cfg
        self.distiller = None if distill_cfg is None else FPDistiller.from_cfg(dict(distill_cfg))

    def forward(self, *args, **kwargs):
        with reuse_quantized_weights(self):
            out = super().forward(*args, **kwargs)
        if self.distiller is not None and isinstance(out, dict) and DISTILL_LOSS_KEYS[0] not in out:
            raise RuntimeError(f'{type(self).__name__}: distill_cfg is set but loss() returned no distillation '
                               'losses: a subclass loss() (e.g. Auxi with aux_cfg) bypassed it; drop one of the two')
        return out

    def loss(self, batch_inputs: Tensor, batch_data_samples) -> dict:
        """mmdet's losses; with ``distill_cfg`` also ``loss_distill_feat`` / ``_cls`` / ``_reg``."""
        if self.distiller is None:
            return super().loss(batch_inputs, batch_data_samples)
        x = self.extract_feat(batch_inputs)  # tuple of L (N, C, H_l, W_l)
        outs = self.bbox_head(x)  # FCOS: (cls, bbox, centerness), RetinaNet: (cls, bbox); lists of L tensors
        gt_instances, gt_instances_ignore, img_metas = unpack_gt_instances(batch_data_samples)
        losses = self.bbox_head.loss_by_feat(*outs, gt_instances, img_metas, gt_instances_ignore)
        losses.update(self.distiller.loss(self, batch_inputs, x, outs))
        return losses


@MODELS.register_module()
class QFCOS(QuantizedDetectorMixin, FCOS):
    """mmdet's FCOS, quantized at build time by ``quant_cfg``."""


@MODELS.register_module()
class QRetinaNet(QuantizedDetectorMixin, RetinaNet):
    """mmdet's RetinaNet, quantized at build time by ``quant_cfg``."""
