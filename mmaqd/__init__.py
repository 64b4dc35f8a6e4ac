"""mmaqd: accurate quantized one-stage detectors (AQD) for MMDetection 3.x.

Floors, each importing only the ones below it (docs/architecture.md): :mod:`mmaqd.ops` (torch only) <-
:mod:`mmaqd.quantization` (torch + mmengine) <- :mod:`mmaqd.models`, :mod:`mmaqd.engine`, :mod:`mmaqd.datasets`
(mmdet) <- :mod:`mmaqd.deploy`. ``import mmaqd`` loads none of them, so ``import mmaqd.ops`` needs torch only.

Registration into mmdet's registries: ``custom_imports = dict(imports=['mmaqd'])`` in a config (as every mmaqd
config has) registers the plugin lazily, on mmdet's first registry lookup; :func:`register_all_modules` does it
at once (:mod:`mmaqd.registration`).
"""
from .registration import register_all_modules, register_lazily
from .version import __version__

register_lazily()

__all__ = ['__version__', 'register_all_modules']
