"""Lint: flake8 and isort over the Python sources, with the settings of ``setup.cfg`` (120-character lines,
standard library / third party / mmaqd import blocks). Fix import order with ``isort mmaqd tools tests configs``."""
import os.path as osp
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
PATHS = ['mmaqd', 'tools', 'tests', 'configs']


def _run(tool: str, *args: str) -> subprocess.CompletedProcess:
    pytest.importorskip(tool, reason=f'{tool} is a test requirement: pip install -r requirements/tests.txt')
    return subprocess.run([sys.executable, '-m', tool, *args, *PATHS], cwd=ROOT, capture_output=True, text=True)


def test_flake8():
    res = _run('flake8')
    if res.returncode:
        pytest.fail(f'flake8 found problems:\n{res.stdout}{res.stderr}', pytrace=False)


def test_isort():
    res = _run('isort', '--check-only', '--diff')
    if res.returncode:
        pytest.fail(f'imports out of order (run `isort {" ".join(PATHS)}`):\n{res.stdout}{res.stderr}', pytrace=False)
