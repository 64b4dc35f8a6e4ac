"""Every config under configs/ builds its model on the CPU, with no data and no pretrained weights."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from conftest import ROOT

CONFIGS = sorted(p for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
                 if '_base_' not in p)


def test_configs_found():
    assert len(CONFIGS) >= 8


@pytest.mark.parametrize('path', CONFIGS, ids=[osp.relpath(p, osp.join(ROOT, 'configs')) for p in CONFIGS])
def test_config_builds(path, cpu_model_builder):
    cfg = Config.fromfile(path)
    assert cfg.custom_imports == dict(imports=['mmaqd'], allow_failed_imports=False)
    # the first non-finite loss / gradient / weight / quantizer range stops the run (DivergenceGuardHook); a default
    # hook, so that a config that sets its own custom_hooks keeps it
    assert cfg.default_hooks.divergence_guard == dict(type='DivergenceGuardHook')
    model = cpu_model_builder(cfg)
    assert sum(p.numel() for p in model.parameters()) > 0
    # the AQD head design: every stacked head conv is followed by a BN, never GroupNorm
    norms = [m for name, m in model.named_modules() if name.startswith('bbox_head') and
             isinstance(m, (torch.nn.GroupNorm, torch.nn.modules.batchnorm._BatchNorm))]
    assert norms and not any(isinstance(m, torch.nn.GroupNorm) for m in norms)
