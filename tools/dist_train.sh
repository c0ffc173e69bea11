#!/usr/bin/env bash
# Distributed training with torchrun (mirrors mmseg's tools/dist_train.sh).
#   bash tools/dist_train.sh CONFIG GPUS [train.py args...]
# Without CUDA (e.g. CI: `OMP_NUM_THREADS=1 bash tools/dist_train.sh ... 2`;
# `CUDA_VISIBLE_DEVICES=` forces it on a GPU machine) GPUS is the number of
# CPU processes: tools/train.py switches to the gloo backend, initialises the
# process group itself and wraps the model in DDP without device ids.
# PORT picks the master port (default 29500; give concurrent jobs distinct
# ones); PY the interpreter (default: .venv or python). NNODES / NODE_RANK /
# MASTER_ADDR for several nodes. Timeouts, teardown and what a rank reports
# when a peer dies: docs/distributed.md (train.py's --dist-timeout).
CONFIG=$1
GPUS=$2
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
    "$ROOT/tools/train.py" \
    $CONFIG \
    --launcher pytorch ${@:3}
