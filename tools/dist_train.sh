#!/usr/bin/env bash
# Multi-process training: bash tools/dist_train.sh CONFIG NUM_PROCESSES [args of tools/train.py]
# On GPUs (one process per GPU, NCCL) the SyncBN layers of the COCO configs synchronise statistics across them.
# Without CUDA the processes run on the CPU with gloo (mmaqd.engine.distributed); torch's SyncBN needs GPUs there,
# so train a BN config (the *_synth ones). NNODES, NODE_RANK, PORT, MASTER_ADDR and PYTHON (the interpreter,
# default: python on PATH) are read by tools/misc/dist_launch.sh.
set -euo pipefail
CONFIG=$1
NPROC=$2
shift 2
exec bash "$(dirname "$0")/misc/dist_launch.sh" "$NPROC" "$(dirname "$0")/train.py" "$CONFIG" --launcher pytorch "$@"
