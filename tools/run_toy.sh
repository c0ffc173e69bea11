#!/usr/bin/env bash
# The README's main command, on the embedded CPU default: sets up ./.venv on
# first use, generates the toy dataset, trains DA-VPT (configs/davpt_setr_toy.py)
# and evaluates the last checkpoint single-scale and multi-scale + flip.
#   bash tools/run_toy.sh [extra tools/train.py args, e.g. --cfg-options ...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
py=.venv/bin/python
work=${WORK_DIR:-work_dirs/davpt_setr_toy}
$py tools/make_toy_data.py --root data/toy_ade
$py tools/train.py configs/davpt_setr_toy.py --work-dir "$work" "$@"
ckpt=$(cat "$work/last_checkpoint")
echo "== single-scale evaluation of $ckpt"
$py tools/test.py configs/davpt_setr_toy.py "$ckpt" --work-dir "$work/test_ss"
echo "== multi-scale + flip evaluation (--tta) of $ckpt"
$py tools/test.py configs/davpt_setr_toy.py "$ckpt" --work-dir "$work/test_ms" --tta
