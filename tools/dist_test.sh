#!/usr/bin/env bash
# Multi-process testing: bash tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCESSES [args of tools/test.py]
# One process per GPU (NCCL), or CPU processes (gloo) without CUDA (mmaqd.engine.distributed).
# NNODES, NODE_RANK, PORT, MASTER_ADDR and PYTHON (the interpreter, default: python on PATH) are read by
# tools/misc/dist_launch.sh.
set -euo pipefail
CONFIG=$1
CHECKPOINT=$2
NPROC=$3
shift 3
exec bash "$(dirname "$0")/misc/dist_launch.sh" "$NPROC" "$(dirname "$0")/test.py" "$CONFIG" "$CHECKPOINT" \
    --launcher pytorch "$@"
