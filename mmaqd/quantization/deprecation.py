"""Renamed arguments and config keys: the old name keeps working for a while, with a warning that names the new one.

A ``FutureWarning`` (shown by default, unlike a ``DeprecationWarning``): the old names are in users' configs.
``stacklevel`` is counted as by :func:`warnings.warn` called in the function that calls these helpers (2: its
caller).
"""
import warnings
from typing import Any, Optional

__all__ = ['deprecated_arg', 'renamed_keys']


def _warn(old: str, new: str, where: str, stacklevel: int) -> None:
    warnings.warn(f'{where}: {old!r} is deprecated, use {new!r} (same meaning); the old name will be removed',
                  FutureWarning, stacklevel=stacklevel + 2)  # + this function and the helper calling it


def deprecated_arg(old: str, old_value: Any, new: str, new_value: Any, where: str, stacklevel: int = 2) -> Any:
    """The value of keyword argument ``new``, or of its deprecated name ``old`` (``None``: not given) with a warning.

    Giving both is a TypeError naming them.
    """
    if old_value is None:
        return new_value
    if new_value is not None:
        raise TypeError(f'{where}: got both {old!r} (deprecated) and {new!r}; give {new!r} only')
    _warn(old, new, where, stacklevel)
    return old_value


def renamed_keys(cfg: dict, renames: dict, where: str, stacklevel: int = 2) -> Optional[dict]:
    """A copy of the dict ``cfg`` with each deprecated key ``old`` of ``renames`` ({old: new}) renamed to ``new``,
    warning once per old key; a dict holding both names of one key is a KeyError naming them."""
    if not isinstance(cfg, dict) or not any(old in cfg for old in renames):
        return cfg
    out = dict(cfg)
    for old, new in renames.items():
        if old not in out:
            continue
        if new in out:
            raise KeyError(f'{where}: got both {old!r} (deprecated) and {new!r}; give {new!r} only (a config that '
                           f'changes {old!r} of a base config that now says {new!r} must say {new!r} too)')
        _warn(old, new, where, stacklevel)
        out = {(new if k == old else k): v for k, v in out.items()}  # same position in the dict
    return out
