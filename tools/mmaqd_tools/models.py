"""A config's model built on the CPU, without downloads: what the tools and the tests build their models with."""
from typing import Union

from mmengine.config import Config
from torch import nn


def build_cpu_model(cfg: Union[str, Config], init_weights: bool = True, keep_sync_bn: bool = False,
                    **model_options) -> nn.Module:
    """The model of ``cfg`` (a config file or a loaded ``Config``) on the CPU.

    mmaqd is registered (:func:`mmaqd.register_all_modules`) and mmengine's default scope set to the config's; the
    model is built from a copy of ``cfg.model`` with ``model_options`` set on it (e.g. ``aux_cfg=None``) and
    without the backbone's pretrained ``init_cfg`` (no download); SyncBN layers are reverted to BN (no process
    group on the CPU) unless ``keep_sync_bn``. The model is in train mode, as built.

    Args:
        init_weights: run ``model.init_weights()`` (the config's initialisation); a caller that loads a checkpoint
            next may skip it.
        keep_sync_bn: keep the config's SyncBN layers (for a test that starts its own process group).
    """
    from mmdet.registry import MODELS
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope

    from mmaqd.registration import register_all_modules
    register_all_modules()
    cfg = Config.fromfile(cfg) if isinstance(cfg, str) else cfg
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model_cfg = cfg.model.copy()
    model_cfg.update(model_options)
    if model_cfg.get('backbone', {}).get('init_cfg') is not None:
        model_cfg.backbone.init_cfg = None
    model = MODELS.build(model_cfg)
    if not keep_sync_bn:
        model = revert_sync_batchnorm(model)
    if init_weights:
        model.init_weights()
    return model
