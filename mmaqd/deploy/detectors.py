"""mmdet models that run an integer artefact, so that mmdet's ``tools/test.py`` evaluates it like any detector.

``IntegerFCOS`` / ``IntegerRetinaNet`` hold the :class:`~mmaqd.deploy.network.IntegerNetwork` (``net``) and a head
without layers (``IntegerFCOSHead`` / ``IntegerRetinaHead``) that only post-processes: the network maps the
normalized image to the prediction convs' outputs in integers (AQD, arXiv 2007.06919: the whole detector in
fixed point), they are dequantized, and box decoding and NMS stay mmdet's own (``predict_by_feat``), as for a
float model. ``OnnxFCOS`` / ``OnnxRetinaNet`` do the same with the exported ONNX model run by ONNX Runtime.
Inference only: ``loss`` raises.
"""
import os.path as osp
from abc import abstractmethod
from typing import List, Tuple

from mmdet.models.dense_heads import FCOSHead, RetinaHead
from mmdet.models.detectors.base import BaseDetector
from mmdet.registry import MODELS
from torch import Tensor

from .artefact import read_graph
from .network import IntegerNetwork

__all__ = ['IntegerFCOS', 'IntegerRetinaNet', 'OnnxFCOS', 'OnnxRetinaNet', 'IntegerFCOSHead', 'IntegerRetinaHead']


class _DeployedDetector(BaseDetector):
    """A detector whose features and head convs run elsewhere (``raw_outputs``); mmdet's head post-processes.

    Args:
        bbox_head: the integer head config (the trained head's arguments, type ``Integer*Head``).
    """

    def __init__(self, bbox_head: dict, data_preprocessor=None, train_cfg=None, test_cfg=None, init_cfg=None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        bbox_head = dict(bbox_head)
        bbox_head.update(train_cfg=train_cfg, test_cfg=test_cfg)
        self.bbox_head = MODELS.build(bbox_head)
        self.test_cfg = test_cfg

    @abstractmethod
    def raw_outputs(self, batch_inputs: Tensor) -> Tuple[List[Tensor], ...]:
        """The prediction convs' real outputs per head output and level."""

    def _forward(self, batch_inputs: Tensor, batch_data_samples=None):
        return self.bbox_head(self.raw_outputs(batch_inputs))

    def predict(self, batch_inputs: Tensor, batch_data_samples, rescale: bool = True):
        outs = self._forward(batch_inputs)
        metas = [s.metainfo for s in batch_data_samples]
        results = self.bbox_head.predict_by_feat(*outs, batch_img_metas=metas, rescale=rescale)
        return self.add_pred_to_datasample(batch_data_samples, results)

    def loss(self, batch_inputs, batch_data_samples):
        raise RuntimeError(f'{type(self).__name__} is an integer inference model and cannot be trained; train the '
                           'quantized config (QFCOS / QRetinaNet) and convert it with tools/deploy.py')

    def extract_feat(self, batch_inputs):
        raise RuntimeError(f'{type(self).__name__} computes features and head convs in one network; use '
                           'raw_outputs()')


class _IntegerDetector(_DeployedDetector):
    """A detector whose features and head convs are an :class:`IntegerNetwork`.

    Args:
        net: the network spec (``IntegerNetwork``'s arguments), or ``dict(graph=PATH)`` naming an artefact's
            ``graph.json`` that holds it.
        bbox_head: the integer head config (the trained head's arguments, type ``Integer*Head``).
    """

    def __init__(self, net: dict, bbox_head: dict, **kwargs):
        super().__init__(bbox_head, **kwargs)
        if set(net) == {'graph'}:  # dict(graph=DIR/graph.json): the spec lives in the artefact's graph file
            net = read_graph(osp.dirname(net['graph']) or '.')['spec']
        self.net = IntegerNetwork(**net)

    def raw_outputs(self, batch_inputs: Tensor) -> Tuple[List[Tensor], ...]:
        """The prediction convs' real outputs per head output and level, computed by the integer network."""
        real = self.net.dequantize(self.net(batch_inputs))
        return tuple(real[name] for name in self.net.output_names)


class _OnnxDetector(_DeployedDetector):
    """A detector whose features and head convs are an exported ONNX model run by ONNX Runtime (CPU).

    Args:
        onnx: the path of ``model.onnx`` (:func:`mmaqd.deploy.onnx_export.export_onnx`).
        threads: ONNX Runtime's intra-op threads (None: its default).
        bbox_head: the integer head config (the trained head's arguments, type ``Integer*Head``).
    """

    def __init__(self, onnx: str, bbox_head: dict, threads: int = None, **kwargs):
        super().__init__(bbox_head, **kwargs)
        from .onnx_runtime import ort_session, output_layout
        if not osp.isfile(onnx):
            raise FileNotFoundError(f'ONNX model {onnx} does not exist; export it with tools/deploy.py --format onnx')
        self.onnx_path = onnx
        self.session = ort_session(onnx, threads)
        self.layout = output_layout(self.session)

    def raw_outputs(self, batch_inputs: Tensor) -> Tuple[List[Tensor], ...]:
        from .onnx_runtime import grouped_outputs, head_outputs
        grouped = grouped_outputs(head_outputs(self.session, batch_inputs), self.layout)
        return tuple(grouped.values())


@MODELS.register_module()
class IntegerFCOS(_IntegerDetector):
    """An FCOS integer artefact (see the module docstring)."""


@MODELS.register_module()
class IntegerRetinaNet(_IntegerDetector):
    """A RetinaNet integer artefact (see the module docstring)."""


@MODELS.register_module()
class OnnxFCOS(_OnnxDetector):
    """An FCOS exported to ONNX, run by ONNX Runtime (see :class:`_OnnxDetector`)."""


@MODELS.register_module()
class OnnxRetinaNet(_OnnxDetector):
    """A RetinaNet exported to ONNX, run by ONNX Runtime (see :class:`_OnnxDetector`)."""


@MODELS.register_module()
class IntegerFCOSHead(FCOSHead):
    """mmdet's FCOSHead (same arguments) without layers: ``forward`` takes the prediction convs' outputs.

    The per-level ``Scale`` of bbox_pred is folded into the integer network's dequantization, so ``forward``
    applies what remains of ``FCOSHead.forward_single``: ReLU and the stride (``norm_on_bbox``) or ``exp``.
    """

    def _init_layers(self) -> None:
        pass  # the integer network holds every conv

    def forward(self, raw: Tuple[List[Tensor], ...]) -> Tuple[List[Tensor], List[Tensor], List[Tensor]]:
        cls_scores, bbox_preds, centernesses = raw
        out = []
        for bbox, stride in zip(bbox_preds, self.strides):
            bbox = bbox.float()
            if self.norm_on_bbox:
                bbox = bbox.clamp(min=0)
                if not self.training:
                    bbox = bbox * stride
            else:
                bbox = bbox.exp()
            out.append(bbox)
        return list(cls_scores), out, list(centernesses)


@MODELS.register_module()
class IntegerRetinaHead(RetinaHead):
    """mmdet's RetinaHead (same arguments) without layers: ``forward`` passes the prediction convs' outputs."""

    def _init_layers(self) -> None:
        pass  # the integer network holds every conv

    def forward(self, raw: Tuple[List[Tensor], ...]) -> Tuple[List[Tensor], List[Tensor]]:
        cls_scores, bbox_preds = raw
        return list(cls_scores), list(bbox_preds)


def head_config(bbox_head: dict, kind: str) -> dict:
    """The integer head config of a trained head config (``kind``: 'fcos' or 'retinanet')."""
    cfg = dict(bbox_head)
    cfg['type'] = {'fcos': 'IntegerFCOSHead', 'retinanet': 'IntegerRetinaHead'}[kind]
    cfg.pop('multi_level_norm', None)
    cfg['init_cfg'] = None
    return cfg


def detector_type(kind: str, backend: str = 'integer') -> str:
    """The registered detector type of an artefact: ``kind`` 'fcos' / 'retinanet', ``backend`` 'integer' / 'onnx'."""
    return {'integer': {'fcos': 'IntegerFCOS', 'retinanet': 'IntegerRetinaNet'},
            'onnx': {'fcos': 'OnnxFCOS', 'retinanet': 'OnnxRetinaNet'}}[backend][kind]
