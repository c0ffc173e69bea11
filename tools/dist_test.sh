#!/usr/bin/env bash
# Distributed testing with torchrun (mirrors mmseg's tools/dist_train.sh).
#   bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args...]
# Without CUDA (e.g. CI, 2 CPU processes) the gloo backend is used
# automatically; set PY to choose the interpreter (default: .venv or python).
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$( [ -x "$ROOT/.venv/bin/python" ] && echo "$ROOT/.venv/bin/python" || echo python )}

PYTHONPATH="$ROOT":$PYTHONPATH \
"$PY" -m torch.distributed.run \
    --nnodes=$NNODES \
    --node_rank=$NODE_RANK \
    --master_addr=$MASTER_ADDR \
    --nproc_per_node=$GPUS \
    --master_port=$PORT \
    "$ROOT/tools/test.py" \
    $CONFIG $CHECKPOINT \
    --launcher pytorch ${@:4}
