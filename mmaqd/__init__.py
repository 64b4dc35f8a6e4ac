"""mmaqd: accurate quantized one-stage detectors (AQD) for MMDetection 3.x.

``import mmaqd`` (or ``custom_imports = dict(imports=['mmaqd'])`` in a config) registers the plugin's models,
hooks and datasets into mmdet's registries. The lower layers, :mod:`mmaqd.ops` and :mod:`mmaqd.quantization`,
need torch and mmengine only, so they import on a machine without mmdet (e.g. a bare GPU box).
"""
import importlib.util

from .version import __version__

if importlib.util.find_spec('mmdet') is not None:
    from . import datasets, engine, models  # noqa: F401  (registers into mmdet's registries)
    from .deploy import detectors  # noqa: F401  (the integer artefact's models)

__all__ = ['__version__']
