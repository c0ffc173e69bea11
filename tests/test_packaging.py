"""What ships besides the code: setup.py's extras, the licence, the Slurm
scripts' interpreter and the documents the README points to."""
import os
import re
import runpy
import shutil
import subprocess
from pathlib import Path
from unittest import mock

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / 'README.md').read_text()


def setup_kwargs() -> dict:
    """The keyword arguments setup.py hands to ``setuptools.setup``."""
    captured = {}
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        with mock.patch('setuptools.setup', captured.update):
            runpy.run_path(str(ROOT / 'setup.py'), run_name='__main__')
    finally:
        os.chdir(cwd)
    return captured


def test_vis_extra_for_mmseg_log_plots():
    """mmseg's tools/analysis_tools/analyze_logs.py imports seaborn (which
    needs pandas): ``pip install -e .[vis]``, and the README says so."""
    extras = setup_kwargs()['extras_require']
    assert {'seaborn', 'pandas'} <= set(extras['vis'])
    assert '.[vis]' in README and 'analyze_logs.py' in README


def test_license_is_apache_2():
    text = (ROOT / 'LICENSE').read_text()
    assert 'Apache License' in text and 'Version 2.0, January 2004' in text
    assert 'END OF TERMS AND CONDITIONS' in text
    assert setup_kwargs()['license'] == 'Apache License 2.0'


@pytest.mark.parametrize('script, args, tool', [
    ('slurm_train.sh', ['part', 'job', 'cfg.py'], 'train.py'),
    ('slurm_test.sh', ['part', 'job', 'cfg.py', 'ckpt.pth'], 'test.py'),
])
@pytest.mark.parametrize('with_venv', [True, False])
def test_slurm_scripts_use_the_project_venv(tmp_path, script, args, tool,
                                            with_venv):
    """Like tools/dist_*.sh: PY defaults to ROOT/.venv/bin/python when it
    exists, else ``python``. A fake ``srun`` records its command line."""
    root = tmp_path / 'repo'
    (root / 'tools').mkdir(parents=True)
    shutil.copy(ROOT / 'tools' / script, root / 'tools' / script)
    if with_venv:
        venv_py = root / '.venv' / 'bin' / 'python'
        venv_py.parent.mkdir(parents=True)
        venv_py.write_text('#!/bin/sh\n')
        venv_py.chmod(0o755)
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    srun = bin_dir / 'srun'
    srun.write_text('#!/bin/sh\necho "SRUN $*"\n')
    srun.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != 'PY'}
    env['PATH'] = f'{bin_dir}{os.pathsep}{env["PATH"]}'
    out = subprocess.run(['bash', str(root / 'tools' / script), *args],
                         env=env, capture_output=True, text=True,
                         check=True).stdout
    (line, ) = [x for x in out.splitlines() if x.startswith('SRUN ')]
    expected = str(root / '.venv' / 'bin' / 'python') if with_venv \
        else 'python'
    assert re.search(rf' {re.escape(expected)} -u \S*/tools/{tool} cfg\.py',
                     line), line
