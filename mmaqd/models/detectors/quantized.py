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
"""
from typing import Optional

from mmdet.models.detectors import FCOS, RetinaNet
from mmdet.registry import MODELS

from mmaqd.quantization import quantize_model, reuse_quantized_weights

from ..fold_rules import MMDET_FOLD_RULES


class QuantizedDetectorMixin:
    """Builds the float detector, then converts it in place with ``quant_cfg`` (``None``: stays float)."""

    def __init__(self, *args, quant_cfg: Optional[dict] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.quant_cfg = quant_cfg
        if quant_cfg is not None:
            quantize_model(self, dict(quant_cfg), fold_rules=MMDET_FOLD_RULES)

    def forward(self, *args, **kwargs):
        with reuse_quantized_weights(self):
            return super().forward(*args, **kwargs)


@MODELS.register_module()
class QFCOS(QuantizedDetectorMixin, FCOS):
    """mmdet's FCOS, quantized at build time by ``quant_cfg``."""


@MODELS.register_module()
class QRetinaNet(QuantizedDetectorMixin, RetinaNet):
    """mmdet's RetinaNet, quantized at build time by ``quant_cfg``."""
