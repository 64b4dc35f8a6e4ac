"""Old registry names of renamed mmaqd models: a config naming one still builds, with a warning naming the new one."""
import warnings

from mmdet.registry import MODELS

__all__ = ['register_deprecated_name']


def register_deprecated_name(cls: type, old: str, what: str) -> type:
    """Register ``old`` in mmdet's ``MODELS`` as a subclass of ``cls`` whose construction warns (``FutureWarning``)
    that ``old`` is deprecated and names ``cls``; ``what`` says which part it is (e.g. ``'backbone'``)."""

    def __init__(self, *args, **kwargs):
        warnings.warn(f'{what} type {old!r} is deprecated, use {cls.__name__!r} (the same network)', FutureWarning,
                      stacklevel=2)
        cls.__init__(self, *args, **kwargs)

    alias = type(old, (cls,), dict(__init__=__init__, __module__=cls.__module__,
                                   __doc__=f'Deprecated name of :class:`{cls.__name__}`.'))
    MODELS.register_module(module=alias)
    return alias
