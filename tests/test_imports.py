"""The floors of mmaqd (docs/architecture.md): ops <- quantization <- models, engine, datasets <- deploy.

Each lower floor imports in a fresh interpreter without mmdet, mmcv or cv2 and without the checkpoint patch, no
module imports a higher floor (also not inside a function), and ``import mmaqd`` still registers the plugin for
configs (``custom_imports``), whichever of mmaqd and mmdet is imported first.
"""
import ast
import glob
import json
import os.path as osp
import subprocess
import sys

import pytest

from conftest import ROOT

#: floor of each subpackage; a module may import its own subpackage and lower floors only
FLOORS = {'ops': 0, 'quantization': 1, 'models': 2, 'engine': 2, 'datasets': 2, 'deploy': 3}
#: top-level packages that only the mmdet-facing floors (and above) may load
MMDET_SIDE = {'mmdet', 'mmcv', 'cv2'}

_PROBE = '''
import json, sys
import {module}
loaded = sorted(sys.modules)
from mmengine.logging import HistoryBuffer
import torch
patched = (HistoryBuffer.__getstate__.__module__ != 'mmengine.logging.history_buffer'
           or HistoryBuffer in getattr(torch.serialization, 'get_safe_globals', list)())
print(json.dumps(dict(loaded=loaded, patched=patched)))
'''


def _fresh_import(module: str) -> dict:
    out = subprocess.run([sys.executable, '-W', 'ignore', '-c', _PROBE.format(module=module)], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize('module, third_party', [
    ('mmaqd', set()),
    ('mmaqd.ops', {'torch'}),
    ('mmaqd.quantization', {'torch', 'mmengine'}),
    ('mmaqd.deploy.network', {'torch'}),
])
def test_lower_floors_load_only_their_dependencies(module, third_party):
    result = _fresh_import(module)
    tops = {name.split('.')[0] for name in result['loaded']}
    assert not tops & (MMDET_SIDE | ({'mmengine'} - third_party)), sorted(tops & (MMDET_SIDE | {'mmengine'}))
    assert third_party <= tops
    own = {name.split('.')[1] for name in result['loaded'] if name.startswith('mmaqd.') and name.count('.') >= 1}
    floor = FLOORS.get(module.split('.')[1], -1) if module != 'mmaqd' else -1
    higher = {pkg for pkg in own if pkg in FLOORS and FLOORS[pkg] > floor and not module.startswith(f'mmaqd.{pkg}')}
    assert not higher, f'{module} loads mmaqd.{sorted(higher)}'
    assert not result['patched'], f'{module} patched mmengine checkpoint loading on import'


def _imported_modules(path: str, package: str):
    """``(line, mmaqd module)`` of every import in the file at ``path`` (module ``package``.<name>), absolute or
    relative, at any depth (imports inside functions included)."""
    tree = ast.parse(open(path, encoding='utf-8').read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith('mmaqd'):
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')[:len(package.split('.')) - node.level + 1]
                target = '.'.join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ''
            if not target.startswith('mmaqd'):
                continue
            if node.module is None or target == 'mmaqd':  # `from . import models`: the names are modules
                for alias in node.names:
                    yield node.lineno, f'{target}.{alias.name}'
            else:
                yield node.lineno, target


def test_no_module_imports_a_higher_floor():
    bad = []
    for sub, floor in FLOORS.items():
        folder = osp.join(ROOT, 'mmaqd', sub)
        for path in sorted(glob.glob(osp.join(folder, '**', '*.py'), recursive=True)):
            rel = osp.relpath(path, ROOT)[:-3].replace(osp.sep, '.')
            package = rel[:-len('.__init__')] if rel.endswith('__init__') else rel.rsplit('.', 1)[0]
            for line, target in _imported_modules(path, package):
                parts = target.split('.')
                if len(parts) < 2 or parts[1] == sub:
                    continue
                other = FLOORS.get(parts[1])
                if other is None or other >= floor:  # mmaqd.registration / plugin, a sibling or a higher floor
                    if parts[1] != 'version':
                        bad.append(f'{osp.relpath(path, ROOT)}:{line} imports {target}')
    assert not bad, '\n'.join(bad)


_CONFIG_BUILD = '''
import sys
{first}
from mmengine.config import Config
from mmengine.registry import init_default_scope
cfg = Config.fromfile('configs/auxi/retinanet_r18-c32_fpn_auxi-w4a4_synth.py')  # custom_imports: ['mmaqd']
from mmdet.registry import DATASETS, HOOKS, MODELS, OPTIM_WRAPPER_CONSTRUCTORS
init_default_scope('mmdet')
from mmengine.logging import HistoryBuffer
print(type(MODELS.build(cfg.model)).__name__, HOOKS.get('QuantizerInitHook').__name__,
      DATASETS.get('CheckedCocoDataset').__name__,
      OPTIM_WRAPPER_CONSTRUCTORS.get('GroupedOptimWrapperConstructor').__name__,
      HistoryBuffer.__getstate__.__module__)
'''


@pytest.mark.parametrize('first', [
    'import mmaqd.quantization',  # mmaqd before mmdet: registered on mmdet's first lookup
    'from mmdet.registry import MODELS\n'  # mmdet looked up in before mmaqd: registered on import
    'from mmengine.registry import init_default_scope\n'
    "init_default_scope('mmdet')\n"
    "MODELS.build(dict(type='FPN', in_channels=[8, 16], out_channels=8, num_outs=2))\n"
    'import mmaqd',
], ids=['mmaqd-first', 'mmdet-first'])
def test_custom_imports_register_the_plugin(first):
    out = subprocess.run([sys.executable, '-W', 'ignore', '-c', _CONFIG_BUILD.format(first=first)], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1].split() == [
        'AuxiRetinaNet', 'QuantizerInitHook', 'CheckedCocoDataset', 'GroupedOptimWrapperConstructor',
        'mmaqd.engine.checkpoint_compat']
