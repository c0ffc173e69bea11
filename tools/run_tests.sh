#!/usr/bin/env bash
# The README's test command: sets up ./.venv on first use, runs the test suite.
#   bash tools/run_tests.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
exec .venv/bin/python -m pytest "$@"
