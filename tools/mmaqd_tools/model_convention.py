"""What a detector's weights assume that their state-dict keys and shapes do not show.

Two configs can build models with the same keys and shapes that compute different functions with the same weights.
A checkpoint of one then loads into the other without a word, and the detector is another network:

* ``backbone.style`` of a bottleneck ResNet (depth >= 50, ResNeXt): ``'pytorch'`` strides the 3x3 conv of a
  block, ``'caffe'`` its first 1x1 conv (mmdet's zoo FCOS R50 is caffe-style; mmaqd's R50 configs are not);
* the input normalization, ``data_preprocessor.mean`` / ``std`` / ``bgr_to_rgb`` (mmdet 2.x configs: the
  ``img_norm_cfg`` or the ``Normalize`` step of the test pipeline, whose ``to_rgb`` is ``bgr_to_rgb``);
  a caffe backbone expects BGR images minus the caffe mean, with std 1;
* for FCOS heads, ``bbox_head.norm_on_bbox`` (distances ``relu(x) * stride`` instead of ``exp(x)``) and
  ``bbox_head.centerness_on_reg`` (centerness computed from the regression tower, not the classification one).

:func:`model_convention` reads these from a config (an mmengine ``Config`` or a literal one from
:mod:`mmaqd_tools.config_text`; mmdet 3.x or 2.x layout); :func:`check_convention` refuses a difference with a
:class:`ConventionMismatchError` naming both sides. A setting that cannot be read on one side is not compared
(:func:`convention_mismatches` says which).
"""
import math
from typing import Any, Dict, List, Mapping, Optional, Tuple

#: the settings compared, in the order they are reported
KEYS = ('backbone.style', 'data_preprocessor.mean', 'data_preprocessor.std', 'data_preprocessor.bgr_to_rgb',
        'bbox_head.norm_on_bbox', 'bbox_head.centerness_on_reg')

_BASIC_BLOCK_DEPTHS = (18, 34)


class ConventionMismatchError(ValueError):
    """A checkpoint whose weights assume other settings than the config it is meant for."""


def _type(cfg: Any) -> str:
    """``'ResNet'`` of ``dict(type='mmdet.ResNet')``; ``''`` when there is no readable type."""
    t = cfg.get('type') if isinstance(cfg, Mapping) else None
    return t.rsplit('.', 1)[-1] if isinstance(t, str) else ''


def _floats(value: Any) -> Optional[Tuple[float, ...]]:
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                for v in value):
        return tuple(float(v) for v in value)
    return None


def _find_normalize(node: Any) -> Optional[Mapping]:
    """The first ``dict(type='Normalize', ...)`` in a (nested) pipeline / data config."""
    if isinstance(node, Mapping):
        if _type(node) == 'Normalize':
            return node
        children = node.values()
    elif isinstance(node, (list, tuple)):
        children = node
    else:
        return None
    for child in children:
        found = _find_normalize(child)
        if found is not None:
            return found
    return None


def _normalization(cfg: Mapping, model: Mapping) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    pre = model.get('data_preprocessor')
    if isinstance(pre, Mapping):  # mmdet 3.x; mmengine's defaults: no mean / std, bgr_to_rgb False
        mean, std, rgb = pre.get('mean'), pre.get('std'), pre.get('bgr_to_rgb', False)
    else:  # mmdet 2.x: img_norm_cfg, else the Normalize step of the test pipeline (to_rgb defaults to True)
        norm = cfg.get('img_norm_cfg')
        if not isinstance(norm, Mapping):
            data = cfg.get('data')
            norm = _find_normalize([data.get('test') if isinstance(data, Mapping) else None,
                                    cfg.get('test_pipeline')])
        if not isinstance(norm, Mapping):
            return out
        mean, std, rgb = norm.get('mean'), norm.get('std'), norm.get('to_rgb', True)
    for key, value in (('mean', mean), ('std', std)):
        if value is None or _floats(value) is not None:
            out[f'data_preprocessor.{key}'] = _floats(value) if value is not None else None
    if isinstance(rgb, bool):
        out['data_preprocessor.bgr_to_rgb'] = rgb
    return out


def model_convention(cfg: Mapping) -> Dict[str, Any]:
    """The readable :data:`KEYS` of a full config (with a ``model`` key); a setting that does not apply to the
    model (``style`` of a basic-block ResNet, the FCOS flags of another head) or cannot be read is absent."""
    model = cfg.get('model')
    if not isinstance(model, Mapping):
        return {}
    out: Dict[str, Any] = {}
    backbone = model.get('backbone')
    name = _type(backbone)
    # style moves a bottleneck's stride; basic blocks (ResNet-18/34) ignore it
    if name.startswith('ResNeXt') or ('ResNet' in name and backbone.get('depth') not in _BASIC_BLOCK_DEPTHS):
        style = backbone.get('style', 'pytorch')  # mmdet's default
        if isinstance(style, str):
            out['backbone.style'] = style
    out.update(_normalization(cfg, model))
    head = model.get('bbox_head')
    if 'FCOS' in _type(head):
        for key in ('norm_on_bbox', 'centerness_on_reg'):
            value = head.get(key, False)  # FCOSHead's defaults
            if isinstance(value, bool):
                out[f'bbox_head.{key}'] = value
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(math.isclose(x, y, rel_tol=0, abs_tol=1e-3) for x, y in zip(a, b))
    return a == b


def _show(value: Any) -> str:
    return f'[{", ".join(f"{v:g}" for v in value)}]' if isinstance(value, tuple) else repr(value)


def describe(convention: Mapping[str, Any]) -> str:
    """``backbone.style='caffe', data_preprocessor.mean=[...], ...`` in :data:`KEYS` order."""
    return ', '.join(f'{k}={_show(convention[k])}' for k in KEYS if k in convention) or 'nothing readable'


def convention_mismatches(src: Mapping[str, Any], dst: Mapping[str, Any]
                          ) -> Tuple[List[Tuple[str, Any, Any]], List[str]]:
    """``(mismatches, unchecked)``: ``(key, src value, dst value)`` of the settings that differ, and the keys
    readable on only one side."""
    mismatches = [(k, src[k], dst[k]) for k in KEYS if k in src and k in dst and not _same(src[k], dst[k])]
    unchecked = [k for k in KEYS if (k in src) != (k in dst)]
    return mismatches, unchecked


def check_convention(src: Mapping[str, Any], dst: Mapping[str, Any], src_name: str, dst_name: str,
                     hint: str = '') -> List[str]:
    """Raise :class:`ConventionMismatchError` naming every differing setting with both values; else return the
    keys that could not be compared."""
    mismatches, unchecked = convention_mismatches(src, dst)
    if mismatches:
        width = max(len(k) for k, _, _ in mismatches)
        lines = '\n'.join(f'  {k:<{width}}  {_show(a)} in {src_name}, {_show(b)} in {dst_name}'
                          for k, a, b in mismatches)
        raise ConventionMismatchError(
            f'{src_name} was trained with other settings than {dst_name} has: every key and shape would load, '
            f'and the detector would compute another function.\n{lines}\n'
            + (hint or f'Use a config with the settings of {src_name}.'))
    return unchecked
