"""Converting a float model into a fake-quantized one, layer by layer, from a small config.

Implements which layers AQD quantizes (arXiv 2007.06919v1, section 4.3: every conv of backbone, FPN and heads
except the first layer of the backbone and the last layers of the heads, which are kept full precision in the paper and
at 8 bits in the authors' code's "F8L8" configs, github.com/aim-uofa/model-quantization), plus per-layer overrides and
skips. Conversion is generic (any ``nn.Module``): exact ``nn.Conv2d`` / ``nn.Linear`` modules become :class:`QConv2d` /
:class:`QLinear` sharing the original Parameter objects. Model-specific parts (quantized residual / FPN adds) are done
elsewhere.

FQN's fully quantized graph (Li et al., CVPR 2019, section 3) adds two options: ``fold_bn`` folds each BN into the conv
before it (:class:`QConvBN`, eq. 13-14; the pairs are found by module-name rules, the torchvision / mmdet ResNet and
mmcv ``ConvModule`` naming by default) and ``output_layers`` also quantizes the outputs of the prediction convs
(:class:`QConv2dOut`, FQN section 3.4: activations up to the final predictions).
"""
import difflib
import fnmatch
import re
from dataclasses import dataclass, field, fields
from typing import Dict, List, NamedTuple, Optional, Union

from mmengine.logging import print_log
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .layers import Add, FoldedBN, QAdd, QConv2d, QConv2dOut, QConvBN, QLinear, QuantLayerMixin
from .quantizers.base import BaseQuantizer, check_bits
from .registry import QUANTIZERS, registered_quantizers

#: exact float type -> its quantized layer. Subclasses (e.g. deformable or otherwise custom-forward convs) are
#: not converted: a wildcard pattern passes over them, an exact name selecting one is an error.
#: ``Add`` (an element-wise add as a module) becomes ``QAdd`` only with ``quantize_adds=True``.
QUANTIZABLE_TYPES = {nn.Conv2d: QConv2d, nn.Linear: QLinear, Add: QAdd}
_OVERRIDE_KEYS = ('pattern', 'weight', 'act')

#: ``fold_bn=True``: which BN follows which conv, by module name. ``conv`` is ``re.fullmatch``-ed against a conv's
#: name, ``bn`` (expanded with the match's groups) names its BN. These cover torchvision / mmdet ResNets
#: (``conv1``/``bn1`` ... ``conv3``/``bn3``, stem ``conv1``/``bn1``, ``downsample.0``/``downsample.1``) and mmcv's
#: ``ConvModule`` with a BN (``conv``/``bn``). A rule whose BN does not exist (e.g. a ConvModule without norm)
#: selects nothing for that conv.
DEFAULT_FOLD_RULES = (dict(conv=r'(.*\.)?conv(\d*)', bn=r'\1bn\2'),
                      dict(conv=r'(.*\.)?downsample\.0', bn=r'\1downsample.1'))


def _allowed_types() -> List[str]:
    return [t.__name__ for t in QUANTIZABLE_TYPES]


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


def _fold_rules(value) -> List[dict]:
    """``QuantConfig.fold_bn`` as a list of rules (``[]``: no folding); checks types and regexes."""
    if isinstance(value, bool):
        return [dict(r) for r in DEFAULT_FOLD_RULES] if value else []
    if isinstance(value, dict) or not isinstance(value, (list, tuple)):
        raise TypeError(f'QuantConfig.fold_bn must be True, False or a list of dict(conv=REGEX, bn=TEMPLATE), '
                        f'got {value!r}')
    rules = []
    for i, rule in enumerate(value):
        if not isinstance(rule, dict) or set(rule) != {'conv', 'bn'} or not all(
                isinstance(v, str) for v in rule.values()):
            raise TypeError(f'QuantConfig.fold_bn[{i}] must be dict(conv=REGEX, bn=TEMPLATE) of two strings, '
                            f'got {rule!r}')
        try:
            re.compile(rule['conv'])
        except re.error as e:
            raise ValueError(f"QuantConfig.fold_bn[{i}].conv={rule['conv']!r} is not a regular expression: {e}")
        rules.append(dict(rule))
    return rules


def _str_list(value, where: str) -> List[str]:
    value = [value] if isinstance(value, str) else list(value)
    if not all(isinstance(v, str) for v in value):
        raise TypeError(f'{where} must be a list of module names / patterns (str), got {value!r}')
    return value


@dataclass
class QuantConfig:
    """What :func:`quantize_model` quantizes, and how.

    Attributes:
        weight: quantizer cfg for the weight of every converted layer, e.g. ``dict(type='LIQ', bits=4,
            weight_norm=True)``; ``None`` keeps weights full precision (FP). Weight quantizers get
            ``signed=True`` and ``num_channels`` = output channels (used when ``per_channel=True``) unless set.
        act: quantizer cfg for the input activation of every converted layer, e.g. ``dict(type='LIQ', bits=4)``;
            ``None`` keeps inputs FP. ``signed`` defaults to ``None`` (decided by the first batch).
        scope: module-path prefixes whose layers are converted, e.g. ``['backbone', 'neck', 'bbox_head']``; a
            prefix covers the module of that name and everything below it. ``None``: the whole model.
        first_layer: name (or fnmatch pattern) of the backbone's first layer, e.g. ``'backbone.conv1'``.
        first_layer_bits: bit width (2 to 8) of the first layer's weight and input; ``None`` keeps the layer FP
            (paper); 8 is the public code's "F8".
        last_layers: names / fnmatch patterns of the heads' prediction layers, e.g. ``['bbox_head.conv_cls']``.
        last_layer_bits: as ``first_layer_bits``, for ``last_layers`` ("L8" = 8).
        overrides: entries ``dict(pattern=..., weight=..., act=...)`` applied in order (later wins) to the
            layers whose name matches ``pattern``. A cfg dict merges into the cfg so far (``dict(bits=3)``
            changes only the bits; one with a different ``type`` replaces it); ``None`` keeps that side FP; an
            absent key leaves that side as it is.
        skip: names / fnmatch patterns of layers left untouched (FP).
        quantize_adds: fully quantized graph: every :class:`~mmaqd.quantization.layers.Add` module in scope
            (ResNet residual adds, FPN top-down adds of mmaqd's models) becomes a ``QAdd`` whose operands and
            sum are quantized with the ``act`` cfg (overrides apply to its ``act`` side).
        output_layers: names / fnmatch patterns of conv layers whose output is quantized too, with the layer's
            final ``act`` cfg (FQN's prediction convs, FQN section 3.4); they become :class:`QConv2dOut`.
        fold_bn: fold every BN in scope into the conv before it (FQN section 3.5, eq. 13-14): the conv becomes a
            :class:`QConvBN` whose weight quantizer sees W_fold, the BN a :class:`FoldedBN` (identity forward,
            same state_dict keys). ``True`` pairs them by :data:`DEFAULT_FOLD_RULES`; a list of
            ``dict(conv=REGEX, bn=TEMPLATE)`` gives other rules (first matching rule wins per conv). Convs in
            ``skip`` are not folded; BNs in scope left unpaired are logged.
        freeze_bn: with ``fold_bn``, whether the folded BN statistics start frozen (FQN: frozen for the whole
            fine-tune, eq. 13-14). ``False`` folds batch statistics in training and updates the EMA (eq. 11-12,
            Jacob et al.) until :class:`~mmaqd.engine.hooks.FreezeBNHook` freezes them (FQN Table 3).

    Patterns use :func:`fnmatch.fnmatchcase` on the module name (``*`` also crosses dots, so ``'bbox_head.*'``
    covers every layer below ``bbox_head``). Per layer: ``weight``/``act`` -> ``overrides`` -> first/last bits
    (set ``bits`` of the sides still quantized; ``None`` makes the layer FP) -> ``skip``. Every pattern must
    match some module; a wildcard-free name must select a quantizable module.
    """

    weight: Optional[dict] = None
    act: Optional[dict] = None
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
        _check_cfg(self.weight, 'QuantConfig.weight')
        _check_cfg(self.act, 'QuantConfig.act')
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
        self.fold_bn = _fold_rules(self.fold_bn)
        if not isinstance(self.freeze_bn, bool):
            raise TypeError(f'QuantConfig.freeze_bn must be True or False, got {self.freeze_bn!r}')
        self.overrides = list(self.overrides)
        for i, ov in enumerate(self.overrides):
            if not isinstance(ov, dict) or not isinstance(ov.get('pattern'), str):
                raise TypeError(f"QuantConfig.overrides[{i}] must be a dict with a 'pattern' str, got {ov!r}")
            bad = sorted(set(ov) - set(_OVERRIDE_KEYS))
            if bad:
                raise KeyError(f'QuantConfig.overrides[{i}]: unknown key(s) {bad}; allowed: {list(_OVERRIDE_KEYS)}')
            for side in ('weight', 'act'):
                _check_cfg(ov.get(side), f'QuantConfig.overrides[{i}].{side}', partial=True)

    @classmethod
    def from_dict(cls, cfg) -> 'QuantConfig':
        """Build from a dict / mmengine ConfigDict (a ``QuantConfig`` is returned as is)."""
        if isinstance(cfg, cls):
            return cfg
        if not isinstance(cfg, dict):
            raise TypeError(f'a quantization config must be a dict or QuantConfig, got {type(cfg).__name__}')
        allowed = [f.name for f in fields(cls)]
        bad = sorted(set(cfg) - set(allowed))
        if bad:
            raise KeyError(f'unknown QuantConfig field(s) {bad}; allowed: {allowed}')
        return cls(**cfg)


# --------------------------------------------------------------------------------------------- matching
def _candidates(pattern: str, names: List[str]) -> List[str]:
    close = difflib.get_close_matches(pattern, names, n=6, cutoff=0.4)
    return close or names[:10]


def _not_quantizable(what: str, name: str, module: nn.Module) -> ValueError:
    kind = type(module).__name__
    if isinstance(module, QuantLayerMixin):
        return ValueError(f'{what} selects {name!r}, which is already quantized ({kind})')
    msg = (f'{what} selects {name!r}, a {kind}, which cannot be quantized; quantizable types: '
           f'{_allowed_types()} (exact types)')
    if len(module._modules):
        msg += f"; to select the layers inside it use '{name}.*'"
    return ValueError(msg)


def _match(pattern: str, modules: Dict[str, nn.Module], what: str) -> set:
    """Names of the quantizable modules that ``pattern`` selects; raises when it selects none."""
    hits = [n for n in modules if n and fnmatch.fnmatchcase(n, pattern)]
    if not hits:
        raise ValueError(f'{what}={pattern!r} matches no module of the model; candidates: '
                         f'{_candidates(pattern, [n for n in modules if n])}')
    good = {n for n in hits if type(modules[n]) in QUANTIZABLE_TYPES}
    if good:
        return good
    if len(hits) == 1:
        raise _not_quantizable(f'{what}={pattern!r}', hits[0], modules[hits[0]])
    kinds = sorted({type(modules[n]).__name__ for n in hits})
    raise ValueError(f'{what}={pattern!r} matches {len(hits)} modules but none that can be quantized (types: '
                     f'{kinds}); quantizable types: {_allowed_types()} (exact types)')


def _in_scope(name: str, scope: Optional[List[str]]) -> bool:
    return scope is None or any(p == '' or name == p or name.startswith(p + '.') for p in scope)


def _merge(base: Optional[dict], update: Optional[dict], where: str) -> Optional[dict]:
    if update is None:
        return None
    if base is None or update.get('type', base['type']) != base['type']:
        if 'type' not in update:
            raise ValueError(f"{where}={update!r} has no 'type' and the cfg it would merge into is None (full "
                             f"precision); give a complete cfg, registered quantizers: {registered_quantizers()}")
        return dict(update)
    return {**base, **update}


def _with_bits(cfg: Optional[dict], bits: int) -> Optional[dict]:
    return None if cfg is None else {**cfg, 'bits': bits}


# --------------------------------------------------------------------------------------------- plan + apply
class _Entry(NamedTuple):
    """What :func:`_plan` decides for one layer: its quantizer cfgs (``None``: FP) and whether it is skipped."""
    name: str
    module: nn.Module
    weight: Optional[dict]
    act: Optional[dict]
    out: Optional[dict]
    skipped: bool


def _plan(model: nn.Module, cfg: QuantConfig) -> List[_Entry]:
    """An :class:`_Entry` for every exact Conv2d/Linear (and Add) in scope; validates patterns."""
    modules = dict(model.named_modules())  # name -> module; shared modules once, under their first name
    for p in cfg.scope or []:
        if p not in modules:
            top = [n for n in modules if n and '.' not in n]
            raise ValueError(f'QuantConfig.scope prefix {p!r} names no module of the model; candidates: '
                             f'{difflib.get_close_matches(p, list(modules), n=6, cutoff=0.4) or top[:10]}')
    first = _match(cfg.first_layer, modules, 'QuantConfig.first_layer') if cfg.first_layer else set()
    last = set().union(*[_match(p, modules, 'QuantConfig.last_layers') for p in cfg.last_layers])
    skip = set().union(*[_match(p, modules, 'QuantConfig.skip') for p in cfg.skip])
    outputs = set().union(*[_match(p, modules, 'QuantConfig.output_layers') for p in cfg.output_layers])
    ov_hits = [_match(ov['pattern'], modules, f'QuantConfig.overrides[{i}].pattern')
               for i, ov in enumerate(cfg.overrides)]

    plan = []
    for name, module in modules.items():
        if type(module) not in QUANTIZABLE_TYPES or not _in_scope(name, cfg.scope):
            continue
        is_add = type(module) is Add
        if is_add and not cfg.quantize_adds:
            continue
        w, a = cfg.weight, cfg.act
        for i, (ov, hits) in enumerate(zip(cfg.overrides, ov_hits)):
            if name in hits:
                w = _merge(w, ov['weight'], f'QuantConfig.overrides[{i}].weight') if 'weight' in ov else w
                a = _merge(a, ov['act'], f'QuantConfig.overrides[{i}].act') if 'act' in ov else a
        for hits, bits in ((first, cfg.first_layer_bits), (last, cfg.last_layer_bits)):
            if name in hits:
                w, a = (None, None) if bits is None else (_with_bits(w, bits), _with_bits(a, bits))
        if name in skip:
            w, a = None, None
        if is_add:
            w = None  # an add has no weight
        if name in outputs and type(module) is not nn.Conv2d:
            raise ValueError(f'QuantConfig.output_layers selects {name!r}, a {type(module).__name__}; output '
                             'quantization is supported for Conv2d layers only')
        plan.append(_Entry(name, module, w, a, a if name in outputs else None, name in skip))

    outside = [what for what, hits in [('first_layer', first), ('last_layers', last), ('skip', skip),
                                       ('output_layers', outputs)]
               + [(f'overrides[{i}]', h) for i, h in enumerate(ov_hits)]
               if hits and not any(_in_scope(n, cfg.scope) for n in hits)]
    if outside:
        print_log(f'quantize_model: QuantConfig {outside} select only layers outside scope={cfg.scope}; '
                  'they have no effect', logger='current', level=30)
    return plan


def _fold_pairs(model: nn.Module, cfg: QuantConfig, plan: List[_Entry]) -> Dict[str, _BatchNorm]:
    """conv name -> the BN folded into it, by ``cfg.fold_bn`` rules, for the unskipped Conv2d of ``plan``."""
    if not cfg.fold_bn:
        return {}
    modules = dict(model.named_modules())
    rules = [(re.compile(r['conv']), r['bn']) for r in cfg.fold_bn]
    pairs, owner = {}, {}  # conv name -> bn; id(bn) -> conv name
    for e in plan:
        if type(e.module) is not nn.Conv2d or e.skipped:
            continue
        for rx, template in rules:  # the first rule matching the conv's name names its BN
            match = rx.fullmatch(e.name)
            if match:
                break
        else:
            continue
        bn_name = match.expand(template)
        bn = modules.get(bn_name)
        if not isinstance(bn, _BatchNorm) or isinstance(bn, FoldedBN):
            continue
        if bn.num_features != e.module.out_channels or not bn.track_running_stats:
            raise ValueError(f'QuantConfig.fold_bn pairs {e.name!r} ({e.module.out_channels} output channels) with '
                             f'{bn_name!r} ({type(bn).__name__}, {bn.num_features} channels, track_running_stats='
                             f'{bn.track_running_stats}), which cannot be folded into it; fix the rules')
        if id(bn) in owner:
            raise ValueError(f'QuantConfig.fold_bn pairs {bn_name!r} with both {owner[id(bn)]!r} and {e.name!r}')
        if getattr(_parent(modules, e.name), 'efficient_conv_bn_eval_forward', None) is not None:
            raise ValueError(f"{e.name!r}: its parent computes conv + BN itself in eval mode (mmcv ConvModule's "
                             'efficient_conv_bn_eval), which would bypass the folded quantized conv; build the model '
                             'with efficient_conv_bn_eval=False')
        pairs[e.name], owner[id(bn)] = bn, e.name
    if not pairs:
        raise ValueError(f'QuantConfig.fold_bn rules {cfg.fold_bn} pair no conv of scope={cfg.scope} with a BN')
    left = [n for n, m in modules.items() if isinstance(m, _BatchNorm) and not isinstance(m, FoldedBN)
            and id(m) not in owner and _in_scope(n, cfg.scope)]
    if left:
        print_log(f'quantize_model: BN layers in scope not folded (no fold_bn rule pairs them with a conv): {left}',
                  logger='current', level=30)
    return pairs


def _parent(modules: Dict[str, nn.Module], name: str) -> Optional[nn.Module]:
    return modules.get(name.rpartition('.')[0])  # '' (the model itself) for a top-level name


def _build(e: _Entry, bn: Optional[_BatchNorm], freeze_bn: bool) -> nn.Module:
    """The quantized layer of plan entry ``e`` (folded with ``bn`` if given)."""
    if bn is not None:
        if e.out is not None:
            raise ValueError('output quantization of a conv with a folded BN is not supported')
        return QConvBN.from_float(e.module, bn, e.weight, e.act, frozen=freeze_bn)
    if e.out is not None:
        return QConv2dOut.from_float(e.module, e.weight, e.act, e.out)
    return QUANTIZABLE_TYPES[type(e.module)].from_float(e.module, e.weight, e.act)


def quantize_model(model: nn.Module, cfg) -> nn.Module:
    """Replace, in place, the model's Conv2d/Linear layers by quantized ones as ``cfg`` says; log a table.

    ``cfg`` is a :class:`QuantConfig` or a dict of its fields. Every pattern and quantizer cfg is checked, and
    every new layer built, before the model is changed: a bad config raises (ValueError / KeyError / TypeError
    naming the bad value and what is allowed) and leaves the model untouched. A module reachable under several
    names is converted once (by the rules for its first name) and all references to it are replaced. Returns
    the model (the new layer if ``model`` itself is a Conv2d/Linear). With ``fold_bn`` each folded BN is replaced,
    wherever it is referenced, by a :class:`FoldedBN` holding the same Parameters and buffers.
    """
    cfg = QuantConfig.from_dict(cfg)
    plan = _plan(model, cfg)
    folds = _fold_pairs(model, cfg, plan)
    new = {}  # id(float layer) -> quantized layer (id(BN) -> its FoldedBN)
    for e in plan:
        bn = folds.get(e.name)
        if e.weight is None and e.act is None and bn is None:
            continue
        try:
            layer = _build(e, bn, cfg.freeze_bn)
        except (KeyError, ValueError, TypeError) as err:
            kind = KeyError if isinstance(err, KeyError) else ValueError if isinstance(err, ValueError) else TypeError
            raise kind(f'cannot quantize {e.name!r} with weight={e.weight}, act={e.act}: '
                       f'{err.args[0] if err.args else err}') from err
        new[id(e.module)] = layer
        if bn is not None:
            new[id(bn)] = layer.bn

    refs = [(parent, key, new[id(child)]) for parent in model.modules()
            for key, child in parent._modules.items() if child is not None and id(child) in new]
    for parent, key, qlayer in refs:  # all checks passed: now change the model
        parent._modules[key] = qlayer
    model = new.get(id(model), model)

    unsupported = [f'{n} ({type(m).__name__})' for n, m in model.named_modules()
                   if isinstance(m, (nn.Conv2d, nn.Linear)) and not isinstance(m, QuantLayerMixin)
                   and type(m) not in QUANTIZABLE_TYPES and _in_scope(n, cfg.scope)]
    if unsupported:
        print_log(f'quantize_model: layers of types that are not converted (kept as they are): {unsupported}',
                  logger='current', level=30)
    n_folded = sum(isinstance(m, FoldedBN) for m in new.values())
    folded = f', {n_folded} BN folded (statistics {"frozen" if cfg.freeze_bn else "not frozen"})' if n_folded else ''
    print_log(f'quantize_model: {len(new) - n_folded} layers quantized{folded}\n{quantization_table(model)}',
              logger='current')
    return model


# --------------------------------------------------------------------------------------------- table
def _describe(q: Optional[nn.Module], act: bool) -> str:
    if q is None:
        return 'FP'
    if not isinstance(q, BaseQuantizer):
        return type(q).__name__
    names = [k for k, v in QUANTIZERS.module_dict.items() if v is type(q)]  # the name configs use
    s = f'{names[0] if names else type(q).__name__} {q.bits}b'
    if q.per_channel:
        s += ' per-ch'
    if act:
        s += ' ' + {None: 'auto', True: 'signed', False: 'unsigned'}[q.signed]
    return s + ('' if q.enabled else ' (off)')


def quantization_table(model: nn.Module) -> str:
    """A text table of every conv/linear layer (weight and input quantizers, or FP) and of every other module
    holding quantizers (e.g. QAdd: one ``role=quantizer`` entry per quantizer), with a summary line."""
    rows = [('layer', 'type', 'weight', 'act')]
    n_layers = n_q = 0
    for name, m in model.named_modules():
        name = name or '(model)'
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            wq, aq = getattr(m, 'weight_quantizer', None), getattr(m, 'act_quantizer', None)
            n_layers += 1
            n_q += wq is not None or aq is not None
            oq = getattr(m, 'out_quantizer', None)
            out = '' if oq is None else f'; out={_describe(oq, True)}'
            rows.append((name, type(m).__name__, _describe(wq, False), _describe(aq, True) + out))
        elif not isinstance(m, BaseQuantizer):
            qs = [(k, c) for k, c in m._modules.items() if isinstance(c, BaseQuantizer)]
            if qs:
                rows.append((name, type(m).__name__, '-', ', '.join(f'{k}={_describe(c, True)}' for k, c in qs)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ['  '.join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, '  '.join('-' * w for w in widths))
    lines.append(f'{n_q} of {n_layers} conv/linear layers quantized, {n_layers - n_q} full precision')
    return '\n'.join(lines)
