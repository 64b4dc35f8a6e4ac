"""The quantizer registry and its builder.

Quantizers live in their own mmengine registry (this layer may not import mmdet).  Configs name them by
``type``; :func:`build_quantizer` turns an unknown name into an error that lists the registered ones.
"""
from typing import Optional

from mmengine.registry import Registry

from .deprecation import renamed_keys

QUANTIZERS = Registry('quantizer')


def registered_quantizers() -> list:
    """Names of every registered quantizer, sorted."""
    return sorted(QUANTIZERS.module_dict)


def build_quantizer(cfg: Optional[dict], **default_args):
    """Build a quantizer from ``cfg`` (``dict(type=NAME, bits=K, ...)``); ``None`` gives ``None``.

    ``default_args`` fill keys that ``cfg`` does not set (e.g. ``num_channels`` from the layer). A cfg key ``mode``
    is the deprecated name of ``role`` (a warning names the new key).
    """
    if cfg is None:
        return None
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise TypeError(f'a quantizer config must be a dict with a "type" key, got {cfg!r}')
    cfg = renamed_keys(cfg, {'mode': 'role'}, f"quantizer cfg {cfg['type']!r}")
    name = cfg['type']
    if name not in QUANTIZERS.module_dict:
        raise KeyError(f'unknown quantizer {name!r}; registered quantizers: {registered_quantizers()}')
    args = dict(default_args)
    args.update({k: v for k, v in cfg.items() if k != 'type'})
    return QUANTIZERS.module_dict[name](**args)
