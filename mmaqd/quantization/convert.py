"""Converting a float model into a fake-quantized one, layer by layer, as a :class:`QuantConfig` says: matching the
config's names and patterns to modules, planning every layer, then replacing them all at once.

Conversion is generic (any ``nn.Module``) and driven by two parameters with defaults, as brevitas's
``compute_layer_map`` drives its graph quantization:

* the *layer map* (:data:`DEFAULT_LAYER_MAP`): which exact float types are converted, and into what
  (:class:`LayerRule`). By default ``nn.Conv2d`` / ``nn.Linear`` become :class:`QConv2d` / :class:`QLinear` sharing
  the original Parameter objects, and an :class:`Add` module a :class:`QAdd` when ``quantize_adds`` is set.
  Subclasses (deformable or otherwise custom-forward convs) are not converted: a wildcard pattern passes over them,
  an exact name selecting one is an error.
* the *fold rules* (:class:`FoldRules`): which BN follows which conv, by module name, in the model family at hand
  (``QuantConfig.fold_bn=True``). The quantization floor knows no model family: mmaqd's detectors pass the rules of
  mmdet's models (:data:`mmaqd.models.MMDET_FOLD_RULES`).

The config schema is :mod:`.config`; the table logged after a conversion is :mod:`.report`.
"""
import difflib
import fnmatch
import re
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from mmengine.logging import print_log
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .config import QuantConfig, check_fold_rules
from .layers import Add, FoldedBN, QAdd, QConv2d, QConvBN, QLinear, QuantLayerMixin
from .registry import registered_quantizers
from .report import quantization_table

__all__ = ['LayerRule', 'DEFAULT_LAYER_MAP', 'FoldRules', 'QuantConfig', 'quantization_table', 'quantize_model']


class LayerRule(NamedTuple):
    """How one exact float type is quantized: a value of a layer map (``{float type: LayerRule}``).

    Attributes:
        quantized: the quantized class; ``quantized.from_float(module, weight_quant, input_quant)`` builds it
            (plus ``output_quant=`` for ``QuantConfig.output_layers``, where its ``supports_output_quant`` is set).
        folded: the class of a layer with the BN after it folded in (``QuantConfig.fold_bn``);
            ``folded.from_float(module, bn, weight_quant, input_quant, frozen=...)``. ``None``: never folded.
        has_weight: ``False`` for a layer without a weight (an add): its weight cfg is dropped.
        enabled_by: the name of a ``QuantConfig`` flag that must be true for this type to be converted at all
            (``'quantize_adds'`` for adds); ``None``: always converted.
    """

    quantized: type
    folded: Optional[type] = None
    has_weight: bool = True
    enabled_by: Optional[str] = None


#: exact float type -> how it is quantized
DEFAULT_LAYER_MAP: Dict[type, LayerRule] = {
    nn.Conv2d: LayerRule(QConv2d, folded=QConvBN),
    nn.Linear: LayerRule(QLinear),
    Add: LayerRule(QAdd, has_weight=False, enabled_by='quantize_adds'),
}


class FoldRules(NamedTuple):
    """The BN-folding conventions of a model family, for ``quantize_model(..., fold_rules=...)``.

    Attributes:
        rules: ``dict(conv=REGEX, bn=TEMPLATE)`` entries: ``conv`` is ``re.fullmatch``-ed against a conv's name,
            ``bn`` (expanded with the match's groups) names its BN; the first rule matching a conv wins. Used when
            ``QuantConfig.fold_bn`` is ``True``.
        check_parent: called with the parent module of every conv about to be folded (also with rules given in
            the config); returns why that conv cannot be folded there (a string, raised as a ValueError naming the
            conv) or ``None``.
    """

    rules: Tuple[dict, ...]
    check_parent: Optional[Callable[[nn.Module], Optional[str]]] = None


# --------------------------------------------------------------------------------------------- matching
def _type_names(layer_map: Dict[type, LayerRule]) -> List[str]:
    return [t.__name__ for t in layer_map]


def _candidates(pattern: str, names: List[str]) -> List[str]:
    close = difflib.get_close_matches(pattern, names, n=6, cutoff=0.4)
    return close or names[:10]


def _not_quantizable(what: str, name: str, module: nn.Module, layer_map: Dict[type, LayerRule]) -> ValueError:
    kind = type(module).__name__
    if isinstance(module, QuantLayerMixin):
        return ValueError(f'{what} selects {name!r}, which is already quantized ({kind})')
    msg = (f'{what} selects {name!r}, a {kind}, which cannot be quantized; quantizable types: '
           f'{_type_names(layer_map)} (exact types)')
    if len(module._modules):
        msg += f"; to select the layers inside it use '{name}.*'"
    return ValueError(msg)


def _match(pattern: str, modules: Dict[str, nn.Module], what: str, layer_map: Dict[type, LayerRule]) -> set:
    """Names of the quantizable modules that ``pattern`` selects; raises when it selects none."""
    hits = [n for n in modules if n and fnmatch.fnmatchcase(n, pattern)]
    if not hits:
        raise ValueError(f'{what}={pattern!r} matches no module of the model; candidates: '
                         f'{_candidates(pattern, [n for n in modules if n])}')
    good = {n for n in hits if type(modules[n]) in layer_map}
    if good:
        return good
    if len(hits) == 1:
        raise _not_quantizable(f'{what}={pattern!r}', hits[0], modules[hits[0]], layer_map)
    kinds = sorted({type(modules[n]).__name__ for n in hits})
    raise ValueError(f'{what}={pattern!r} matches {len(hits)} modules but none that can be quantized (types: '
                     f'{kinds}); quantizable types: {_type_names(layer_map)} (exact types)')


def _in_scope(name: str, scope: Optional[List[str]]) -> bool:
    """Whether module ``name`` is one of the ``scope`` prefixes or below one (``neck`` covers ``neck.x``, not
    ``neck2``)."""
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
    rule: LayerRule
    weight: Optional[dict]
    input: Optional[dict]
    out: Optional[dict]
    skipped: bool


def _plan(model: nn.Module, cfg: QuantConfig, layer_map: Dict[type, LayerRule]) -> List[_Entry]:
    """An :class:`_Entry` for every module of a type of ``layer_map`` in scope; validates patterns."""
    modules = dict(model.named_modules())  # name -> module; shared modules once, under their first name
    for p in cfg.scope or []:
        if p not in modules:
            top = [n for n in modules if n and '.' not in n]
            raise ValueError(f'QuantConfig.scope prefix {p!r} names no module of the model; candidates: '
                             f'{difflib.get_close_matches(p, list(modules), n=6, cutoff=0.4) or top[:10]}')

    def match(patterns: Sequence[str], what: str) -> set:
        return set().union(*[_match(p, modules, what, layer_map) for p in patterns])

    first = match([cfg.first_layer] if cfg.first_layer else [], 'QuantConfig.first_layer')
    last = match(cfg.last_layers, 'QuantConfig.last_layers')
    skip = match(cfg.skip, 'QuantConfig.skip')
    outputs = match(cfg.output_layers, 'QuantConfig.output_layers')
    ov_hits = [match([ov['pattern']], f'QuantConfig.overrides[{i}].pattern') for i, ov in enumerate(cfg.overrides)]

    plan = []
    for name, module in modules.items():
        rule = layer_map.get(type(module))
        if rule is None or not _in_scope(name, cfg.scope):
            continue
        if rule.enabled_by is not None and not getattr(cfg, rule.enabled_by):
            continue
        w, a = cfg.weight_quant, cfg.input_quant
        for i, (ov, hits) in enumerate(zip(cfg.overrides, ov_hits)):
            if name in hits:
                where = f'QuantConfig.overrides[{i}]'
                w = _merge(w, ov['weight_quant'], f'{where}.weight_quant') if 'weight_quant' in ov else w
                a = _merge(a, ov['input_quant'], f'{where}.input_quant') if 'input_quant' in ov else a
        for hits, bits in ((first, cfg.first_layer_bits), (last, cfg.last_layer_bits)):
            if name in hits:
                w, a = (None, None) if bits is None else (_with_bits(w, bits), _with_bits(a, bits))
        if name in skip:
            w, a = None, None
        if not rule.has_weight:
            w = None  # e.g. an add
        if name in outputs and not getattr(rule.quantized, 'supports_output_quant', False):
            supported = [t.__name__ for t, r in layer_map.items()
                         if getattr(r.quantized, 'supports_output_quant', False)]
            raise ValueError(f'QuantConfig.output_layers selects {name!r}, a {type(module).__name__}; output '
                             f'quantization is supported for {" / ".join(supported)} layers only')
        plan.append(_Entry(name, module, rule, w, a, a if name in outputs else None, name in skip))

    outside = [what for what, hits in [('first_layer', first), ('last_layers', last), ('skip', skip),
                                       ('output_layers', outputs)]
               + [(f'overrides[{i}]', h) for i, h in enumerate(ov_hits)]
               if hits and not any(_in_scope(n, cfg.scope) for n in hits)]
    if outside:
        print_log(f'quantize_model: QuantConfig {outside} select only layers outside scope={cfg.scope}; '
                  'they have no effect', logger='current', level=30)
    return plan


def _fold_rule_list(cfg: QuantConfig, fold_rules: Optional[FoldRules]) -> List[dict]:
    """The rules ``cfg.fold_bn`` asks for: its own list, or with ``True`` those of ``fold_rules``."""
    if cfg.fold_bn is not True:
        return cfg.fold_bn
    if fold_rules is None:
        raise ValueError('QuantConfig.fold_bn=True folds by the default rules of the model family, and none were '
                         'given: pass quantize_model(..., fold_rules=...) (mmaqd.models.MMDET_FOLD_RULES for mmdet '
                         'models) or list the rules, fold_bn=[dict(conv=REGEX, bn=TEMPLATE), ...]')
    return check_fold_rules(list(fold_rules.rules), 'fold_rules.rules')


def _fold_pairs(model: nn.Module, cfg: QuantConfig, plan: List[_Entry],
                fold_rules: Optional[FoldRules]) -> Dict[str, _BatchNorm]:
    """conv name -> the BN folded into it, by the fold rules, for the unskipped foldable layers of ``plan``."""
    if not cfg.fold_bn:
        return {}
    rule_list = _fold_rule_list(cfg, fold_rules)
    check_parent = fold_rules.check_parent if fold_rules is not None else None
    modules = dict(model.named_modules())
    rules = [(re.compile(r['conv']), r['bn']) for r in rule_list]
    pairs, owner = {}, {}  # conv name -> bn; id(bn) -> conv name
    for e in plan:
        if e.rule.folded is None or e.skipped:
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
        reason = check_parent(_parent(modules, e.name)) if check_parent is not None else None
        if reason:
            raise ValueError(f'{e.name!r}: {reason}')
        pairs[e.name], owner[id(bn)] = bn, e.name
    if not pairs:
        raise ValueError(f'QuantConfig.fold_bn rules {rule_list} pair no conv of scope={cfg.scope} with a BN')
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
        return e.rule.folded.from_float(e.module, bn, e.weight, e.input, frozen=freeze_bn)
    if e.out is not None:
        return e.rule.quantized.from_float(e.module, e.weight, e.input, output_quant=e.out)
    return e.rule.quantized.from_float(e.module, e.weight, e.input)


def quantize_model(model: nn.Module, cfg, *, layer_map: Optional[Dict[type, LayerRule]] = None,
                   fold_rules: Optional[FoldRules] = None) -> nn.Module:
    """Replace, in place, the model's layers by quantized ones as ``cfg`` says; log a table.

    ``cfg`` is a :class:`QuantConfig` or a dict of its fields. ``layer_map`` says which exact types are converted
    into what (default :data:`DEFAULT_LAYER_MAP`); ``fold_rules`` are the model family's BN-folding conventions,
    used by ``QuantConfig.fold_bn=True`` (see :class:`FoldRules`). Every pattern and quantizer cfg is checked, and
    every new layer built, before the model is changed: a bad config raises (ValueError / KeyError / TypeError
    naming the bad value and what is allowed) and leaves the model untouched. A module reachable under several
    names is converted once (by the rules for its first name) and all references to it are replaced. Returns
    the model (the new layer if ``model`` itself is converted). With ``fold_bn`` each folded BN is replaced,
    wherever it is referenced, by a :class:`FoldedBN` holding the same Parameters and buffers.
    """
    cfg = QuantConfig.from_dict(cfg)
    layer_map = DEFAULT_LAYER_MAP if layer_map is None else dict(layer_map)
    plan = _plan(model, cfg, layer_map)
    folds = _fold_pairs(model, cfg, plan, fold_rules)
    new = {}  # id(float layer) -> quantized layer (id(BN) -> its FoldedBN)
    for e in plan:
        bn = folds.get(e.name)
        if e.weight is None and e.input is None and bn is None:
            continue
        try:
            layer = _build(e, bn, cfg.freeze_bn)
        except (KeyError, ValueError, TypeError) as err:
            kind = KeyError if isinstance(err, KeyError) else ValueError if isinstance(err, ValueError) else TypeError
            raise kind(f'cannot quantize {e.name!r} with weight_quant={e.weight}, input_quant={e.input}: '
                       f'{err.args[0] if err.args else err}') from err
        new[id(e.module)] = layer
        if bn is not None:
            new[id(bn)] = layer.bn

    refs = [(parent, key, new[id(child)]) for parent in model.modules()
            for key, child in parent._modules.items() if child is not None and id(child) in new]
    for parent, key, qlayer in refs:  # all checks passed: now change the model
        parent._modules[key] = qlayer
    model = new.get(id(model), model)

    types = tuple(layer_map)
    unsupported = [f'{n} ({type(m).__name__})' for n, m in model.named_modules()
                   if isinstance(m, types) and not isinstance(m, QuantLayerMixin)
                   and type(m) not in layer_map and _in_scope(n, cfg.scope)]
    if unsupported:
        print_log(f'quantize_model: layers of types that are not converted (kept as they are): {unsupported}',
                  logger='current', level=30)
    n_folded = sum(isinstance(m, FoldedBN) for m in new.values())
    folded = f', {n_folded} BN folded (statistics {"frozen" if cfg.freeze_bn else "not frozen"})' if n_folded else ''
    print_log(f'quantize_model: {len(new) - n_folded} layers quantized{folded}\n{quantization_table(model)}',
              logger='current')
    return model
