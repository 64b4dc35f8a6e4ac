#!/usr/bin/env bash
# Creates (or completes) the repo-local virtualenv .venv/ with the full stack mmaqd needs:
# torch (kept if one is already importable, else 2.13.0), mmengine, mmcv 2.1.0 built from source
# with its ops, mmdet 3.3.0, pycocotools, the test requirements and mmaqd itself (editable).
# Idempotent: every step is skipped when what it installs is already there.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${MMAQD_VENV:-.venv}
PY=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating $VENV"
    "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
has() { "$VENV/bin/python" -c "$1" >/dev/null 2>&1; }

if ! has "import torch"; then
    echo "[setup] installing torch 2.13.0"
    $PIP install "torch==2.13.0"
fi
if ! has "import mmengine; assert mmengine.__version__ == '0.10.7'"; then
    echo "[setup] installing mmengine"
    $PIP install "mmengine==0.10.7"
fi
if ! has "import mmcv, mmcv.ops; assert mmcv.__version__ == '2.1.0'"; then
    echo "[setup] building mmcv 2.1.0 with ops from source (about 11 min on 2 cores; pip caches the wheel)"
    $PIP install -r requirements/build.txt
    MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-2} $PIP install --no-build-isolation "mmcv==2.1.0"
fi
if ! has "import mmdet; assert mmdet.__version__ == '3.3.0'"; then
    echo "[setup] installing mmdet 3.3.0"
    $PIP install "mmdet==3.3.0"
fi
# after mmcv's build: torch wants setuptools>=77.0.3 and mmengine still imports pkg_resources (gone in 81)
$PIP install -r requirements/runtime.txt -r requirements/tests.txt -r requirements/deploy.txt
if ! has "import mmaqd" || [ setup.py -nt "$VENV/.mmaqd-installed" ] || \
   [ -n "$(find mmaqd/ops/csrc -newer "$VENV/.mmaqd-installed" -type f 2>/dev/null | head -1)" ]; then
    echo "[setup] installing mmaqd (editable; builds its compiled ops unless MMAQD_WITH_OPS=0)"
    # --use-pep517 with --no-build-isolation: the extension builds against the installed torch (setuptools'
    # legacy develop path would re-run pip in an isolated environment without torch)
    $PIP install --no-build-isolation --use-pep517 --no-deps -e .
    touch "$VENV/.mmaqd-installed"
fi
echo "[setup] ready: $("$VENV/bin/python" -c 'import torch, mmcv, mmdet, mmengine; print(f"torch {torch.__version__}, mmengine {mmengine.__version__}, mmcv {mmcv.__version__}, mmdet {mmdet.__version__}")')"
