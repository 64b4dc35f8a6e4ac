#!/usr/bin/env bash
# Compile check of mmaqd's CUDA sources on a machine with nvcc but no GPU (a CPU build of torch is enough): nvcc
# compiles each mmaqd/ops/csrc/cuda/*.cu against torch's headers for sm_80 and sm_90, as setup.py's CUDAExtension
# would (-c only: a CPU torch has no CUDA libraries to link), and ptxas reports each kernel's registers, shared
# memory and spills (kept in the log). The kernels' logic is checked separately, on the CPU, by the simulator
# (tests/test_ops/test_cuda_sim.py); what needs a GPU is tools/benchmark/cuda_check.sh.
#
#   bash tools/misc/cuda_compile_check.sh [OUT_DIR]     (objects and nvcc.log; default: a temporary directory)
#
# Env: NVCC (default nvcc, else $CUDA_HOME/bin/nvcc), PYTHON (default .venv/bin/python, else python3),
# MMAQD_CUDA_ARCHS (default "80;90").
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
NVCC=${NVCC:-$(command -v nvcc || echo "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc")}
OUT=${1:-$(mktemp -d)}
mkdir -p "$OUT"
[ -x "$NVCC" ] || { echo "cuda_compile_check: no nvcc (set NVCC or CUDA_HOME)" >&2; exit 2; }
TORCH_INC=$("$PY" -c "import torch.utils.cpp_extension as c; print(' '.join(c.include_paths()))")
INC=()
for d in $TORCH_INC; do INC+=(-isystem "$d"); done
GENCODE=()
IFS=';' read -ra ARCHS <<< "${MMAQD_CUDA_ARCHS:-80;90}"
for a in "${ARCHS[@]}"; do GENCODE+=("-gencode=arch=compute_${a},code=sm_${a}"); done
# C10_CUDA_NO_CMAKE_CONFIGURE_FILE: a CPU wheel of torch lacks the generated c10/cuda/impl/cuda_cmake_macros.h
FLAGS=(-std=c++20 -O3 --expt-relaxed-constexpr -lineinfo -Xcompiler -fPIC -Xptxas -v -DMMAQD_WITH_CUDA
       -DC10_CUDA_NO_CMAKE_CONFIGURE_FILE -DTORCH_EXTENSION_NAME=_ext -DTORCH_API_INCLUDE_EXTENSION_H
       -D_GLIBCXX_USE_CXX11_ABI=1 -I mmaqd/ops/csrc/common -I mmaqd/ops/csrc/cuda)
LOG="$OUT/nvcc.log"
: > "$LOG"
"$NVCC" --version | tail -2 | tee -a "$LOG"
status=0
for src in mmaqd/ops/csrc/cuda/*.cu; do
  obj="$OUT/$(basename "${src%.cu}").o"
  cmd=("$NVCC" "${FLAGS[@]}" "${INC[@]}" "${GENCODE[@]}" -c "$src" -o "$obj")
  echo "+ ${cmd[*]}" | tee -a "$LOG"
  start=$(date +%s)
  if "${cmd[@]}" >> "$LOG" 2>&1; then
    echo "ok: $src -> $obj ($(( $(date +%s) - start )) s)" | tee -a "$LOG"
  else
    echo "FAILED: $src (see $LOG)" | tee -a "$LOG"
    status=1
  fi
done
echo "per kernel (ptxas):" | tee -a "$LOG"
grep -E "Compiling entry function|registers|spill" "$LOG" | sed -E 's/ptxas info +: //' | paste - - - \
  | sed -E "s/Compiling entry function '([^']+)' for '([^']+)'/\2 \1/" | tee "$OUT/kernels.txt" || true
if grep -qE "[1-9][0-9]* bytes spill" "$LOG"; then echo "warning: register spills (see $LOG)"; fi
exit $status
