#!/usr/bin/env bash
# What tools/dist_train.sh and tools/dist_test.sh share: NUM_PROCESSES copies of a script started by
# torch.distributed.run, which sets RANK / LOCAL_RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT for each.
#   bash tools/misc/dist_launch.sh NUM_PROCESSES SCRIPT [args of SCRIPT]
# NNODES, NODE_RANK, PORT and MASTER_ADDR as in mmdet's scripts; PYTHON picks the interpreter (default: python).
set -euo pipefail
NPROC=$1
SCRIPT=$2
shift 2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
PYTHON=${PYTHON:-python}

"$PYTHON" -m torch.distributed.run --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$NPROC" --master_port="$PORT" "$SCRIPT" "$@"
