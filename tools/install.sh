#!/usr/bin/env bash
# Creates the project's virtual environment in ./.venv (ignored by git) with the verified CPU stack
# and installs davpt_seg in editable mode. Idempotent: a complete environment is left as it is.
#
#   bash tools/install.sh            # runtime + test dependencies
#
# mmcv 2.1.0 is built from its sdist with its C++ ops (~13 min on 2 cores, once: pip caches the
# wheel). To reuse a prebuilt wheel, point pip at it: PIP_FIND_LINKS=/path/to/wheels bash tools/install.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="${DAVPT_VENV:-$root/.venv}"
py="${PYTHON:-python3}"
stamp="$venv/.davpt-installed"
if [ -f "$stamp" ] && [ "$stamp" -nt "$root/requirements.txt" ] && [ "$stamp" -nt "$root/setup.py" ]; then
  exit 0
fi
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --disable-pip-version-check)
# Build tools first: mmcv's setup.py imports torch and setuptools at build time (--no-build-isolation).
"${pip[@]}" "setuptools>=77.0.3,<81" wheel ninja
"${pip[@]}" "torch==2.13.0,!=2.13.0+cpu" "torchvision==0.28.0" "numpy>=1.24,<3"
MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-2}" "${pip[@]}" --no-build-isolation "mmcv==2.1.0"
"${pip[@]}" -r "$root/requirements.txt" -r "$root/requirements-test.txt"
"${pip[@]}" --no-build-isolation --no-deps -e "$root"
"$venv/bin/python" -c "import mmcv.ops, mmseg, timm, davpt_seg; print('davpt_seg environment ready:', '$venv')"
touch "$stamp"
