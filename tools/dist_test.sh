#!/usr/bin/env bash
# Distributed testing with torchrun (mirrors mmseg's tools/dist_test.sh).
#   bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args...]
# Without CUDA (e.g. CI: `OMP_NUM_THREADS=1 bash tools/dist_test.sh ... 2`;
# `CUDA_VISIBLE_DEVICES=` forces it on a GPU machine) GPUS is the number of
# CPU processes: tools/test.py switches to the gloo backend, initialises the
# process group itself and wraps the model in DDP without device ids.
# PORT picks the master port (default 29500; give concurrent jobs distinct
# ones); PY the interpreter (default: .venv or python).
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
