"""Shared test helpers, importable as ``helpers`` (``pytest.ini`` puts
``tests/`` and the repository root on ``sys.path``; subprocesses get both
from :func:`helpers.processes.subprocess_env`).

Paths are defined here once so that test files do not depend on their own
depth below ``tests/``.
"""
from pathlib import Path

#: The repository root.
ROOT = Path(__file__).resolve().parents[2]
#: ``tests/`` (the directory that holds ``helpers``).
TESTS = ROOT / 'tests'
#: ``configs/``.
CONFIG_DIR = ROOT / 'configs'
#: The CPU toy config every end-to-end test builds on.
TOY_CONFIG = CONFIG_DIR / 'davpt_setr_toy.py'
