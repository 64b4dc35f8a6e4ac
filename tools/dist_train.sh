#!/usr/bin/env bash
# Multi-process training: bash tools/dist_train.sh CONFIG NUM_PROCESSES [args of tools/train.py]
# On GPUs (one process per GPU, NCCL) the SyncBN layers of the COCO configs synchronise statistics across them.
# Without CUDA the processes run on the CPU with gloo (mmaqd.engine.distributed); torch's SyncBN needs GPUs there,
# so train a BN config (the *_synth ones). PYTHON picks the interpreter (default: python on PATH).
set -euo pipefail
CONFIG=$1
NPROC=$2
shift 2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
PYTHON=${PYTHON:-python}

"$PYTHON" -m torch.distributed.run --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$NPROC" --master_port="$PORT" \
    "$(dirname "$0")/train.py" "$CONFIG" --launcher pytorch "$@"
