"""The schema of a quantization config: :class:`QuantConfig`, what :func:`~mmaqd.quantization.quantize_model`
quantizes and how, validated when it is built.

Implements which layers AQD quantizes (arXiv 2007.06919v1, section 4.3: every conv of backbone, FPN and heads
except the first layer of the backbone and the last layers of the heads, which are kept full precision in the paper and
at 8 bits in the authors' code's "F8L8" configs, github.com/aim-uofa/model-quantization), plus per-layer overrides and
skips, and FQN's fully quantized graph (Li et al., CVPR 2019, section 3: quantized adds, BN folding, quantized
predictions).

The quantizer configs are ``weight_quant`` and ``input_quant``; ``weight`` and ``act``, their names before, still
work in configs (in ``QuantConfig`` and in its ``overrides``) with a warning that names the new key.
"""
import re
from dataclasses import dataclass, field, fields
from typing import List, Optional, Union

from .deprecation import renamed_keys
from .quantizers.base import check_bits
from .registry import registered_quantizers

__all__ = ['QuantConfig', 'check_fold_rules']

#: deprecated QuantConfig / override keys -> their names now
RENAMED_KEYS = {'weight': 'weight_quant', 'act': 'input_quant'}
OVERRIDE_KEYS = ('pattern', 'weight_quant', 'input_quant')


def _check_cfg(cfg, where: str, partial: bool = False) -> None:
    """Validate a quantizer cfg: ``None`` or a dict with a registered ``type`` (optional if partial), bits 2-8."""
    if cfg is None:
        return
    if not isinstance(cfg, dict):
        raise TypeError(f'{where} must be a quantizer cfg dict or None, got {cfg!r}')
    if 'type' not in cfg and not partial:
        raise ValueError(f"{where}={cfg!r} has no 'type'; registered quantizers: {registered_quantizers()}")
    if 'type' in cfg and cfg['type'] not in registered_quantizers():
        raise KeyError(f"{where}: unknown quantizer {cfg['type']!r}; registered quantizers: "
                       f'{registered_quantizers()}')
    if 'bits' in cfg:
        check_bits(cfg['bits'], f'{where}.bits')


def check_fold_rules(value, where: str = 'QuantConfig.fold_bn') -> List[dict]:
    """A list of BN-folding rules ``dict(conv=REGEX, bn=TEMPLATE)``, checked (types and regexes) and copied."""
    if isinstance(value, dict) or not isinstance(value, (list, tuple)):
        raise TypeError(f'{where} must be True, False or a list of dict(conv=REGEX, bn=TEMPLATE), got {value!r}')
    rules = []
    for i, rule in enumerate(value):
        if not isinstance(rule, dict) or set(rule) != {'conv', 'bn'} or not all(
                isinstance(v, str) for v in rule.values()):
            raise TypeError(f'{where}[{i}] must be dict(conv=REGEX, bn=TEMPLATE) of two strings, got {rule!r}')
        try:
            re.compile(rule['conv'])
        except re.error as e:
            raise ValueError(f"{where}[{i}].conv={rule['conv']!r} is not a regular expression: {e}")
        rules.append(dict(rule))
    return rules


def _fold_bn(value) -> Union[bool, List[dict]]:
    """``QuantConfig.fold_bn``: ``True`` (the model family's default rules, given to ``quantize_model``), or a
    checked list of rules (``[]``: no folding)."""
    if value is True:
        return True
    if value is False:
        return []
    return check_fold_rules(value)


def _str_list(value, where: str) -> List[str]:
    value = [value] if isinstance(value, str) else list(value)
    if not all(isinstance(v, str) for v in value):
        raise TypeError(f'{where} must be a list of module names / patterns (str), got {value!r}')
    return value


@dataclass
class QuantConfig:
    """What :func:`~mmaqd.quantization.quantize_model` quantizes, and how.

    Attributes:
        weight_quant: quantizer cfg for the weight of every converted layer, e.g. ``dict(type='LIQ', bits=4,
            weight_norm=True)``; ``None`` keeps weights full precision (FP). Weight quantizers get
            ``signed=True`` and ``num_channels`` = output channels (used when ``per_channel=True``) unless set.
            (``weight``: deprecated name.)
        input_quant: quantizer cfg for the input activation of every converted layer, e.g. ``dict(type='LIQ',
            bits=4)``; ``None`` keeps inputs FP. ``signed`` defaults to ``None`` (decided by the first batch).
            (``act``: deprecated name.)
        scope: module-path prefixes whose layers are converted, e.g. ``['backbone', 'neck', 'bbox_head']``; a
            prefix covers the module of that name and everything below it (``'neck'`` covers ``neck.lateral``,
            not ``neck2``). ``None``: the whole model.
        first_layer: name (or fnmatch pattern) of the backbone's first layer, e.g. ``'backbone.conv1'``.
        first_layer_bits: bit width (2 to 8) of the first layer's weight and input; ``None`` keeps the layer FP
            (paper); 8 is the public code's "F8".
        last_layers: names / fnmatch patterns of the heads' prediction layers, e.g. ``['bbox_head.conv_cls']``.
        last_layer_bits: as ``first_layer_bits``, for ``last_layers`` ("L8" = 8).
        overrides: entries ``dict(pattern=..., weight_quant=..., input_quant=...)`` applied in order (later wins)
            to the layers whose name matches ``pattern``. A cfg dict merges into the cfg so far (``dict(bits=3)``
            changes only the bits; one with a different ``type`` replaces it); ``None`` keeps that side FP; an
            absent key leaves that side as it is.
        skip: names / fnmatch patterns of layers left untouched (FP).
        quantize_adds: fully quantized graph: every :class:`~mmaqd.quantization.layers.Add` module in scope
            (ResNet residual adds, FPN top-down adds of mmaqd's models) becomes a ``QAdd`` whose operands and
            sum are quantized with the ``input_quant`` cfg (overrides apply to its ``input_quant`` side).
        output_layers: names / fnmatch patterns of conv layers whose output is quantized too, with the layer's
            final ``input_quant`` cfg (FQN's prediction convs, FQN section 3.4): their ``out_quantizer``.
        fold_bn: fold every BN in scope into the conv before it (FQN section 3.5, eq. 13-14): the conv becomes a
            :class:`~mmaqd.quantization.layers.QConvBN` whose weight quantizer sees W_fold, the BN a
            :class:`~mmaqd.quantization.layers.FoldedBN` (identity forward, same state_dict keys). ``True`` pairs
            them by the default rules of the model family, which the caller of ``quantize_model`` passes
            (``fold_rules``; mmaqd's detectors pass :data:`mmaqd.models.MMDET_FOLD_RULES`); a list of
            ``dict(conv=REGEX, bn=TEMPLATE)`` gives the rules here (first matching rule wins per conv). Convs in
            ``skip`` are not folded; BNs in scope left unpaired are logged.
        freeze_bn: with ``fold_bn``, whether the folded BN statistics start frozen (FQN: frozen for the whole
            fine-tune, eq. 13-14). ``False`` folds batch statistics in training and updates the EMA (eq. 11-12,
            Jacob et al.) until :class:`~mmaqd.engine.hooks.FreezeBNHook` freezes them (FQN Table 3).

    Patterns use :func:`fnmatch.fnmatchcase` on the module name (``*`` also crosses dots, so ``'bbox_head.*'``
    covers every layer below ``bbox_head``). Per layer: ``weight_quant`` / ``input_quant`` -> ``overrides`` ->
    first/last bits (set ``bits`` of the sides still quantized; ``None`` makes the layer FP) -> ``skip``. Every
    pattern must match some module; a wildcard-free name must select a quantizable module.
    """

    weight_quant: Optional[dict] = None
    input_quant: Optional[dict] = None
    scope: Optional[List[str]] = None
    first_layer: Optional[str] = None
    first_layer_bits: Optional[int] = None
    last_layers: List[str] = field(default_factory=list)
    last_layer_bits: Optional[int] = None
    overrides: List[dict] = field(default_factory=list)
    skip: List[str] = field(default_factory=list)
    quantize_adds: bool = False
    output_layers: List[str] = field(default_factory=list)
    fold_bn: Union[bool, List[dict]] = False
    freeze_bn: bool = True

    def __post_init__(self):
        _check_cfg(self.weight_quant, 'QuantConfig.weight_quant')
        _check_cfg(self.input_quant, 'QuantConfig.input_quant')
        if self.scope is not None:
            self.scope = _str_list(self.scope, 'QuantConfig.scope')
            if not self.scope:
                raise ValueError('QuantConfig.scope=[] selects nothing; give module prefixes, or None for the '
                                 'whole model')
        if self.first_layer is not None and not isinstance(self.first_layer, str):
            raise TypeError(f'QuantConfig.first_layer must be a module name (str) or None, got {self.first_layer!r}')
        for key in ('first_layer_bits', 'last_layer_bits'):
            if getattr(self, key) is not None:
                check_bits(getattr(self, key), f'QuantConfig.{key}')
        self.last_layers = _str_list(self.last_layers, 'QuantConfig.last_layers')
        self.skip = _str_list(self.skip, 'QuantConfig.skip')
        self.output_layers = _str_list(self.output_layers, 'QuantConfig.output_layers')
        self.fold_bn = _fold_bn(self.fold_bn)
        if not isinstance(self.freeze_bn, bool):
            raise TypeError(f'QuantConfig.freeze_bn must be True or False, got {self.freeze_bn!r}')
        self.overrides = [renamed_keys(ov, RENAMED_KEYS, f'QuantConfig.overrides[{i}]', stacklevel=3)
                          for i, ov in enumerate(self.overrides)]
        for i, ov in enumerate(self.overrides):
            if not isinstance(ov, dict) or not isinstance(ov.get('pattern'), str):
                raise TypeError(f"QuantConfig.overrides[{i}] must be a dict with a 'pattern' str, got {ov!r}")
            bad = sorted(set(ov) - set(OVERRIDE_KEYS))
            if bad:
                raise KeyError(f'QuantConfig.overrides[{i}]: unknown key(s) {bad}; allowed: {list(OVERRIDE_KEYS)}')
            for side in ('weight_quant', 'input_quant'):
                _check_cfg(ov.get(side), f'QuantConfig.overrides[{i}].{side}', partial=True)

    @classmethod
    def from_dict(cls, cfg) -> 'QuantConfig':
        """Build from a dict / mmengine ConfigDict (a ``QuantConfig`` is returned as is); the deprecated keys
        ``weight`` / ``act`` are read as ``weight_quant`` / ``input_quant`` with a warning."""
        if isinstance(cfg, cls):
            return cfg
        if not isinstance(cfg, dict):
            raise TypeError(f'a quantization config must be a dict or QuantConfig, got {type(cfg).__name__}')
        cfg = renamed_keys(cfg, RENAMED_KEYS, 'QuantConfig')
        allowed = [f.name for f in fields(cls)]
        bad = sorted(set(cfg) - set(allowed))
        if bad:
            raise KeyError(f'unknown QuantConfig field(s) {bad}; allowed: {allowed}')
        return cls(**cfg)
