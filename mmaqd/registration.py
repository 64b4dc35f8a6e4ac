"""Registering mmaqd into mmdet's registries: explicitly, or lazily on mmdet's first registry lookup.

mmaqd's mmdet-facing floor registers its classes when its modules are imported, as mmdet's own do:
``mmaqd.models`` (detectors, heads, necks, backbones) and ``mmaqd.deploy.detectors`` (the integer / ONNX Runtime
detectors) into ``MODELS``, ``mmaqd.engine`` into ``HOOKS`` and ``OPTIM_WRAPPER_CONSTRUCTORS``, ``mmaqd.datasets``
into ``DATASETS``.

* :func:`register_all_modules` imports all of them and makes mmengine's resume checkpoints loadable
  (:func:`mmaqd.engine.checkpoint_compat.allow_mmengine_checkpoints`). Scripts that build models from configs
  call it (``tools/``, ``tests/conftest.py``); it is cheap to call again.
* ``import mmaqd`` (what a config's ``custom_imports = dict(imports=['mmaqd'])`` does) calls
  :func:`register_lazily`, which imports neither mmdet nor mmcv, so that ``import mmaqd.ops`` stays torch-only.
  mmdet's registries import their own modules on their first lookup, from a list of locations
  (``Registry('model', ..., locations=['mmdet.models'])``); :func:`register_lazily` adds :data:`PLUGIN_MODULE`,
  whose import calls :func:`register_all_modules`, to the lists of the registries mmaqd fills. The first
  ``MODELS.build`` / Runner of the process then registers mmaqd, whichever of mmaqd and mmdet was imported first.
  If mmdet's registries were already looked up in (their locations imported), mmaqd registers at once.
"""
import importlib.abc
import sys

#: the module that mmdet's registries import lazily: importing it calls :func:`register_all_modules`
PLUGIN_MODULE = 'mmaqd.plugin'
#: the registries of ``mmdet.registry`` that mmaqd registers into
REGISTRIES = ('MODELS', 'HOOKS', 'OPTIM_WRAPPER_CONSTRUCTORS', 'DATASETS')
_MMDET_REGISTRY = 'mmdet.registry'


def register_all_modules(init_default_scope: bool = False) -> None:
    """Register mmaqd's models, hooks, optimizer-wrapper constructor and datasets into mmdet's registries, and
    make mmengine's resume checkpoints loadable under torch >= 2.6 (``allow_mmengine_checkpoints``).

    Args:
        init_default_scope: also set mmengine's default scope to ``'mmdet'`` (as mmdet's own
            ``register_all_modules`` does), for building configs without a Runner.
    """
    from . import datasets, engine, models  # noqa: F401  (each registers its classes on import)
    from .deploy import detectors  # noqa: F401  (the integer artefact's detectors)
    from .engine.checkpoint_compat import allow_mmengine_checkpoints
    allow_mmengine_checkpoints()
    if init_default_scope:
        from mmengine.registry import init_default_scope as _init_scope
        _init_scope('mmdet')


def _add_locations() -> None:
    """Add :data:`PLUGIN_MODULE` to the locations of mmdet's registries; register at once where a registry has
    imported its locations already (a later lookup would not read the list again)."""
    registry = sys.modules[_MMDET_REGISTRY]
    already_imported = False
    for name in REGISTRIES:
        reg = getattr(registry, name)
        if PLUGIN_MODULE not in reg._locations:
            reg._locations.append(PLUGIN_MODULE)
        already_imported |= reg._imported
    if already_imported:
        register_all_modules()


class _AfterMmdetRegistry(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """A one-shot import hook: loads ``mmdet.registry`` with its own loader, then calls :func:`_add_locations`."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _MMDET_REGISTRY:
            return None
        sys.meta_path.remove(self)
        spec = None
        for finder in sys.meta_path:  # the finders after this one: the spec mmdet.registry would have had
            spec = finder.find_spec(fullname, path, target) if hasattr(finder, 'find_spec') else None
            if spec is not None:
                break
        if spec is None or spec.loader is None:
            return spec
        self._loader = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        module.__loader__ = module.__spec__.loader = self._loader  # the module as its own loader leaves it
        _add_locations()


def register_lazily() -> None:
    """Have mmdet's registries register mmaqd on their first lookup (see the module docstring); imports nothing."""
    if _MMDET_REGISTRY in sys.modules:
        _add_locations()
    elif not any(isinstance(finder, _AfterMmdetRegistry) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterMmdetRegistry())
