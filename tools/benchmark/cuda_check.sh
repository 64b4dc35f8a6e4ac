#!/usr/bin/env bash
# The GPU run of mmaqd's CUDA kernels in one command: build the extension with its CUDA kernels, run the op tests
# (CPU and CUDA cases, the simulator), check the tensor-core instructions in the binary, run the benchmark, and
# keep every log. Needs torch with CUDA and a visible GPU, nvcc, pytest and numpy; not mmcv or mmdet (the
# end-to-end CUDA test uses MMAQD_TEST_ARTEFACT, an integer artefact made on a CPU machine, or skips).
#
#   bash tools/benchmark/cuda_check.sh [LOG_DIR]          (default: logs/cuda_check_<date>)
#
# Env: PYTHON (default .venv/bin/python, else python3); MMAQD_CUDA_ARCHS (default "80;90": setup.py's -gencode list);
# MMAQD_TEST_ARTEFACT; BENCH_ARGS (extra arguments of quant_conv.py, e.g. "--batch 8 --bits 4"); SKIP_BUILD=1
# (reuse an mmaqd/_ext*.so built here before). Exits 2 at once, with a message, without a GPU, CUDA torch or nvcc;
# otherwise non-zero when a step failed. LOG_DIR/summary.txt lists the steps and their exit codes.
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
LOG=${1:-logs/cuda_check_$(date +%Y%m%d_%H%M%S)}

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.version.cuda and torch.cuda.is_available() else 1)" \
    2>/dev/null; then
  found=$("$PY" -c "import torch; print('torch', torch.__version__, '(CUDA', torch.version.cuda, ') GPU visible:',
      torch.cuda.is_available())" 2>/dev/null || echo "no importable torch")
  printf '%s\n' "cuda_check: no GPU to run on ($found, python: $PY)." \
    "This script builds and runs mmaqd's CUDA kernels and needs a CUDA build of torch with a visible GPU." \
    "On a CPU machine: bash tools/misc/cuda_compile_check.sh (nvcc compile check) and" \
    "pytest tests/test_ops/test_cuda_sim.py (the kernels in the host simulator)." >&2
  exit 2
fi
NVCC=$(command -v nvcc || echo "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc")
if [ ! -x "$NVCC" ]; then
  echo "cuda_check: a GPU but no nvcc (put it on PATH or set CUDA_HOME): the CUDA kernels cannot be built" >&2
  exit 2
fi
export PATH="$(dirname "$NVCC"):$PATH"
mkdir -p "$LOG"

: > "$LOG/summary.txt"
failed=0
step() {  # step NAME LOGFILE COMMAND...: run, log, record the exit code
  local name=$1 out=$2; shift 2
  local start=$(date +%s)
  echo "== $name: $*" | tee -a "$LOG/summary.txt"
  "$@" > "$LOG/$out" 2>&1
  local rc=$?
  echo "   exit $rc, $(( $(date +%s) - start )) s, log $LOG/$out" | tee -a "$LOG/summary.txt"
  [ $rc -eq 0 ] || failed=1
  return $rc
}

{
  nvidia-smi || true
  "$NVCC" --version
  "$PY" -c "import torch, platform; print(platform.platform()); print('torch', torch.__version__, 'CUDA',
    torch.version.cuda, 'cuDNN', torch.backends.cudnn.version()); print(torch.cuda.get_device_properties(0))"
  git rev-parse HEAD 2>/dev/null && git status --short 2>/dev/null | head -20
} > "$LOG/environment.txt" 2>&1

if [ "${SKIP_BUILD:-0}" != "1" ]; then
  # in place, with no pip and no network: mmaqd/_ext*.so next to the sources, imported from the repository root
  step build build.log env FORCE_CUDA=1 MAX_JOBS="$(nproc)" "$PY" setup.py build_ext --inplace || {
    echo "build failed: see $LOG/build.log" >&2; exit 1; }
fi
step loaded ops.log "$PY" -c "
from mmaqd.ops import active_path, cuda_ops_available
print(active_path())
assert cuda_ops_available(), 'the CUDA kernels are not loaded: ' + active_path()" || {
  echo "the extension does not run CUDA tensors: see $LOG/ops.log" >&2; exit 1; }

# the int8 tensor-core MMA in the machine code (IMMA), where a disassembler is at hand
if command -v cuobjdump > /dev/null; then
  so=$(ls mmaqd/_ext*.so | head -1)
  step sass sass.log bash -c "cuobjdump --dump-sass '$so' | grep -E 'Function|IMMA|LDSM|LDGSTS' | sort | uniq -c \
    | sort -rn | head -40; cuobjdump --dump-sass '$so' | grep -q IMMA"
fi

step tests tests.log "$PY" -m pytest tests/test_ops/test_quant_conv_ext.py tests/test_ops/test_integer_ops.py \
  tests/test_ops/test_cuda_sim.py -q -p no:cacheprovider -rs
# the CUDA cases must have run, not skipped
if grep -E "SKIPPED.*(no GPU visible|FORCE_CUDA)" "$LOG/tests.log" > /dev/null; then
  echo "   CUDA tests were skipped: see $LOG/tests.log" | tee -a "$LOG/summary.txt"
  failed=1
fi

# shellcheck disable=SC2086
step benchmark bench_quant_conv.log "$PY" tools/benchmark/quant_conv.py --device cuda ${BENCH_ARGS:-}

# the end-to-end figure, when deploy_speed.py has its CUDA mode (an artefact made on the CPU side: --artefact)
if "$PY" tools/benchmark/deploy_speed.py --help 2>/dev/null | grep -q -- '--device'; then
  if [ -n "${MMAQD_TEST_ARTEFACT:-}" ]; then
    step deploy_speed bench_deploy_speed.log "$PY" tools/benchmark/deploy_speed.py --device cuda \
      --artefact "$MMAQD_TEST_ARTEFACT"
  else
    echo "== deploy_speed: skipped (set MMAQD_TEST_ARTEFACT to an integer artefact)" | tee -a "$LOG/summary.txt"
  fi
else
  echo "== deploy_speed: skipped (tools/benchmark/deploy_speed.py has no --device yet)" | tee -a "$LOG/summary.txt"
fi

tail -n 12 "$LOG/bench_quant_conv.log" 2>/dev/null
echo "logs: $LOG (summary.txt)"
exit $failed
