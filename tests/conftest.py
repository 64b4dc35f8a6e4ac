"""Shared fixtures: the tiny generated dataset and helpers to build configs for CPU tests."""
import importlib.util
import os.path as osp
import sys

import pytest
import torch

# Tiny tensors gain nothing from threads, and two threads on a busy 2-core machine make them ~100x slower.
torch.set_num_threads(1)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.append(osp.join(ROOT, 'tools'))  # mmaqd_tools, the tools' own helpers (tested in tests/test_tools)
from mmaqd_tools.models import build_cpu_model  # noqa: E402,F401  (tests import it from here)


@pytest.fixture
def one_thread():
    """One intra-op thread during the test, the previous count restored after it: tiny tensors are faster on one,
    and far faster on a busy 2-core machine. A module opts in with
    ``pytestmark = pytest.mark.usefixtures('one_thread')``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='session')
def tiny_coco(tmp_path_factory) -> str:
    """The tiny preset of the generated dataset, written once per test session; returns its root folder."""
    from mmaqd.datasets.synthetic_coco import PRESETS, generate_synthetic_coco
    root = str(tmp_path_factory.mktemp('synthetic_coco_tiny'))
    generate_synthetic_coco(root, PRESETS['tiny'])
    return root


def load_tool(path: str):
    """The script ``tools/<path>`` (e.g. ``'analysis/get_flops.py'``) loaded as a module, to test its functions."""
    name = osp.splitext(osp.basename(path))[0]
    spec = importlib.util.spec_from_file_location(f'tool_{name}', osp.join(ROOT, 'tools', path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def cpu_model_builder():
    return build_cpu_model


def tiny_runner_cfg(config: str, data_root: str, work_dir: str, max_iters: int = 2):
    """A config of ``config`` trimmed to ``max_iters`` iterations on the tiny dataset, for the Runner."""
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(ROOT, config))
    root = data_root.rstrip('/') + '/'
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].update(batch_size=2, num_workers=0, persistent_workers=False)
        cfg[loader].dataset.data_root = root
    cfg.val_evaluator.ann_file = root + 'annotations/instances_val.json'
    cfg.test_evaluator = cfg.val_evaluator
    cfg.train_cfg.update(max_iters=max_iters, val_interval=max_iters)
    cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end=max_iters)]
    cfg.default_hooks.checkpoint.update(interval=max_iters)
    cfg.default_hooks.logger.update(interval=1)
    cfg.work_dir = work_dir
    cfg.model.test_cfg.score_thr = 0.0  # an untrained model scores below mmdet's 0.05: keep its boxes
    if cfg.model.get('backbone', {}).get('init_cfg') is not None:
        cfg.model.backbone.init_cfg = None
    return cfg


@pytest.fixture
def runner_cfg_builder():
    return tiny_runner_cfg
