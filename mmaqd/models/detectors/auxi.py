"""Auxi: quantized detectors trained with a full-precision auxiliary module (Zhuang et al., CVPR 2020,
arXiv 1903.11236; a baseline of AQD, arXiv 2007.06919v1, Table 2).

The quantized detector (``quant_cfg``, as :class:`QRetinaNet` / :class:`QFCOS`) gets, for training only, a
full-precision auxiliary stream: an adaptor (1x1 conv + BN (+ ReLU)) on each backbone stage output its neck
uses, a full-precision neck (by default a copy of the main neck's cfg) and a full-precision copy of the
detection head. Its losses, prefixed ``aux_`` and scaled by ``loss_weight``, are added to the main losses, so
the quantized backbone also receives gradients through full-precision routes. ``predict()`` / ``_forward()`` /
``extract_feat()`` never run it; it is thrown away for deployment::

    model = dict(type='AuxiRetinaNet', quant_cfg=dict(...), ...,
                 aux_cfg=dict(loss_weight=1.0,
                              adaptor=dict(norm_cfg=dict(type='BN'), act_cfg=dict(type='ReLU')),
                              neck=None,    # None: copy of the main neck cfg; a dict: merged onto that copy
                              head=None))   # None: copy of the main bbox_head cfg; a dict: merged onto it

``aux_cfg=None`` builds the plain quantized detector (the deployed model): its state-dict keys are those of
the Auxi model minus the ``aux_*`` ones: :func:`strip_auxiliary` turns an Auxi state dict into it (what
``tools/model_converters/strip_auxiliary.py`` writes).

The auxiliary modules are built after ``quant_cfg`` has converted the detector, so they stay full precision
whatever the quantization scope (the configs' scope, backbone/neck/bbox_head, does not name them either).

Initialisation: a checkpoint with no ``aux_*`` key at all (a full-precision RetinaNet / FCOS, ``load_from``)
initialises the auxiliary neck and head from its ``neck.*`` / ``bbox_head.*`` tensors (quantizer state
excluded) and leaves the adaptors at their fresh initialisation; their keys are then not reported missing and
what was copied is logged. A checkpoint with some auxiliary state (an Auxi checkpoint, resume) loads as is.
"""
import copy
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

from mmcv.cnn import ConvModule
from mmdet.registry import MODELS
from mmengine.config import ConfigDict
from mmengine.logging import print_log
from torch import Tensor, nn

from mmaqd.quantization.quantizers.base import BaseQuantizer

from .quantized import QFCOS, QRetinaNet

AUX_PREFIX = 'aux_'  # the top-level module names of the auxiliary branch start with it
_AUX_KEYS = ('loss_weight', 'adaptor', 'neck', 'head')
_MAIN_TO_AUX = (('neck', 'aux_neck'), ('bbox_head', 'aux_head'))


def is_auxiliary_key(key: str) -> bool:
    """Whether a (detector-level) state-dict key belongs to the auxiliary branch."""
    return key.split('.', 1)[0].startswith(AUX_PREFIX)


def strip_auxiliary(state_dict: Dict[str, Tensor]) -> Tuple['OrderedDict[str, Tensor]', List[str]]:
    """``(kept, removed)``: the state dict without the auxiliary branch's keys (metadata kept for the rest)."""
    kept = OrderedDict((k, v) for k, v in state_dict.items() if not is_auxiliary_key(k))
    removed = [k for k in state_dict if is_auxiliary_key(k)]
    metadata = getattr(state_dict, '_metadata', None)
    if metadata is not None:
        kept._metadata = OrderedDict((k, v) for k, v in metadata.items() if not is_auxiliary_key(k))
    return kept, removed


def _merged(base: Optional[dict], update: Optional[dict]) -> Optional[ConfigDict]:
    """A copy of ``base`` with ``update`` merged in by mmengine's config merge (nested dicts merge key by key,
    ``_delete_=True`` replaces); ``None`` when both are ``None``."""
    if base is None and update is None:
        return None
    out = ConfigDict(copy.deepcopy(base or {}))
    out.merge(update or {})
    return out


def _scale_loss(value, weight: float):
    if isinstance(value, (list, tuple)):
        return type(value)(v * weight for v in value)
    return value * weight


class AuxiliaryDetectorMixin:
    """Adds the full-precision auxiliary branch of Auxi to a single-stage detector (see the module docstring).

    Args:
        aux_cfg: ``None`` (no auxiliary branch) or a dict with keys

            * ``loss_weight`` (float, default 1.0, the public Auxi code adds the two losses unweighted): factor
              of every auxiliary ``loss*`` term;
            * ``adaptor`` (dict): ``ConvModule`` arguments of each 1x1 adaptor, default
              ``dict(norm_cfg=dict(type='BN', requires_grad=True), act_cfg=dict(type='ReLU'))``;
              ``act_cfg=None`` gives the plain 1x1 conv + BN of the classification code;
            * ``neck`` / ``head`` (dict or None): merged onto copies of the main ``neck`` / ``bbox_head``
              cfgs (the head's copy carries the detector's ``train_cfg`` / ``test_cfg``).
    """

    def __init__(self, *args, aux_cfg: Optional[dict] = None, **kwargs):
        neck_cfg = copy.deepcopy(kwargs.get('neck', args[1] if len(args) > 1 else None))
        head_cfg = copy.deepcopy(kwargs.get('bbox_head', args[2] if len(args) > 2 else None))
        super().__init__(*args, **kwargs)  # builds the detector and quantizes it (quant_cfg)
        self.aux_cfg = copy.deepcopy(aux_cfg)
        if aux_cfg is None:
            return
        bad = sorted(set(aux_cfg) - set(_AUX_KEYS))
        if bad:
            raise KeyError(f'aux_cfg: unknown key(s) {bad}; allowed: {list(_AUX_KEYS)}')
        self.aux_loss_weight = float(aux_cfg.get('loss_weight', 1.0))

        neck_cfg = _merged(neck_cfg, aux_cfg.get('neck'))
        if neck_cfg is None or 'in_channels' not in neck_cfg:
            raise ValueError('aux_cfg: the auxiliary branch needs a neck with in_channels (the main neck cfg, '
                             f'or aux_cfg.neck); got {neck_cfg!r}')
        self.aux_neck = MODELS.build(neck_cfg)

        head_cfg = _merged(head_cfg, aux_cfg.get('head'))
        head_cfg.update(train_cfg=copy.deepcopy(self.train_cfg), test_cfg=copy.deepcopy(self.test_cfg))
        self.aux_head = MODELS.build(head_cfg)

        # one adaptor per backbone stage the neck uses; Identity (no state) for the stages it ignores
        adaptor = _merged(dict(norm_cfg=dict(type='BN', requires_grad=True), act_cfg=dict(type='ReLU')),
                          aux_cfg.get('adaptor'))
        channels = list(neck_cfg['in_channels'])
        first = getattr(self.aux_neck, 'start_level', 0)
        end = getattr(self.aux_neck, 'backbone_end_level', len(channels))
        self.aux_adaptors = nn.ModuleList(
            ConvModule(c, c, 1, **adaptor) if first <= i < end else nn.Identity() for i, c in enumerate(channels))

    # ------------------------------------------------------------------------------------------------ state
    @property
    def with_aux(self) -> bool:
        return getattr(self, 'aux_cfg', None) is not None

    def aux_modules(self) -> Dict[str, nn.Module]:
        """The auxiliary branch's top-level modules by name (empty without it)."""
        return {name: m for name, m in self._modules.items() if name.startswith(AUX_PREFIX) and m is not None}

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        if self.with_aux and not any(k.startswith(prefix) and is_auxiliary_key(k[len(prefix):])
                                     for k in state_dict):
            self._init_aux_from(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def _init_aux_from(self, state_dict, prefix: str) -> None:
        """Add ``aux_neck.*`` / ``aux_head.*`` entries copied from ``neck.*`` / ``bbox_head.*`` (without their
        quantizer state) and the adaptors' own current state to ``state_dict`` (loaded right after)."""
        metadata = getattr(state_dict, '_metadata', None)
        copied = {}
        for src, dst in _MAIN_TO_AUX:
            main = getattr(self, src, None)
            if main is None:
                continue
            quant = tuple(f'{n}.' for n, m in main.named_modules() if isinstance(m, BaseQuantizer))
            src_prefix = f'{prefix}{src}.'
            n = 0
            for key in [k for k in state_dict if k.startswith(src_prefix)]:
                rest = key[len(src_prefix):]
                if quant and rest.startswith(quant):
                    continue
                state_dict[f'{prefix}{dst}.{rest}'] = state_dict[key]
                n += 1
            if metadata is not None:  # module versions, for version-dependent loading (e.g. BN)
                for key in [k for k in metadata if k == src_prefix[:-1] or k.startswith(src_prefix)]:
                    metadata.setdefault(f'{prefix}{dst}{key[len(src_prefix) - 1:]}', metadata[key])
            copied[f'{dst} <- {src}'] = n
        own = self.aux_adaptors.state_dict(prefix=f'{prefix}aux_adaptors.')
        for key, value in own.items():
            state_dict[key] = value.clone()
        summary = ', '.join(f'{k} ({n} tensors)' for k, n in copied.items())
        print_log(f'Auxi: the checkpoint has no auxiliary-branch state; initialised {summary}; aux_adaptors keep '
                  f'their fresh initialisation ({len(own)} tensors)', logger='current')

    # ------------------------------------------------------------------------------------------------ loss
    def loss(self, batch_inputs: Tensor, batch_data_samples) -> dict:
        """The main detector's losses plus, with the auxiliary branch, its ``aux_``-prefixed weighted losses."""
        if not self.with_aux:
            return super().loss(batch_inputs, batch_data_samples)
        feats = self.backbone(batch_inputs)
        x = self.neck(feats) if self.with_neck else feats
        losses = self.bbox_head.loss(x, batch_data_samples)
        losses.update(self.aux_loss(feats, batch_data_samples))
        return losses

    def aux_loss(self, feats: Tuple[Tensor], batch_data_samples) -> dict:
        """Losses of the auxiliary stream on the (quantized) backbone's stage outputs ``feats``."""
        if len(feats) != len(self.aux_adaptors):
            raise ValueError(f'the backbone gave {len(feats)} feature maps, the auxiliary branch has '
                             f'{len(self.aux_adaptors)} adaptors (one per aux neck in_channels entry)')
        aux_x = self.aux_neck(tuple(adaptor(f) for adaptor, f in zip(self.aux_adaptors, feats)))
        losses = self.aux_head.loss(aux_x, batch_data_samples)
        w = self.aux_loss_weight
        return {f'{AUX_PREFIX}{k}': _scale_loss(v, w) if 'loss' in k else v for k, v in losses.items()}


@MODELS.register_module()
class AuxiRetinaNet(AuxiliaryDetectorMixin, QRetinaNet):
    """Quantized RetinaNet (``quant_cfg``) trained with a full-precision auxiliary module (``aux_cfg``)."""


@MODELS.register_module()
class AuxiFCOS(AuxiliaryDetectorMixin, QFCOS):
    """Quantized FCOS (``quant_cfg``) trained with a full-precision auxiliary module (``aux_cfg``)."""
