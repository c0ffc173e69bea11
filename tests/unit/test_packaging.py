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

from helpers import ROOT

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


# ------------------------------------------------------------- documents
def _section(text: str, title: str) -> str:
    """The body of the README section ``## title`` (up to the next ``## ``
    heading)."""
    start = text.index(f'\n## {title}\n')
    end = text.find('\n## ', start + 1)
    return text[start:end if end >= 0 else None]


def test_readme_points_only_inside_the_repository():
    """Every repository path the README names exists; no document outside
    the repository is cited (../shared/data appears only as the real data
    the accuracy bench is pointed at, never committed)."""
    assert 'davpt-algorithm.md' not in README
    outside = set(re.findall(r'\.\./shared/[\w./-]*', README))
    assert outside and all(p == '../shared/data' or p.startswith(
        '../shared/data/') for p in outside)
    paths = set(re.findall(
        r'(?<![\w./-])((?:configs|tools|docs|demo|davpt_seg|tests)/'
        r'[\w./-]*\.(?:py|md|sh))', README))
    assert {'docs/method.md', 'demo/image_demo.py'} <= paths
    # paths of mmsegmentation's repository (its tools ship with the
    # package under .mim/)
    import mmseg
    mim = Path(mmseg.__file__).parent / '.mim'
    mmseg_docs = {'docs/en/user_guides/2_dataset_prepare.md'}
    missing = sorted(p for p in paths - mmseg_docs
                     if not (ROOT / p).is_file() and not (mim / p).is_file())
    assert not missing, missing


def test_method_document():
    text = (ROOT / 'docs' / 'method.md').read_text()
    assert '](docs/method.md)' in README
    assert '../shared' not in text
    for term in ('Proxy-Anchor', 'k-means', 'DA-VPT+', 'token_feature',
                 'target_rule', 'pos_norm', 'guided_layers'):
        assert term in text, term
    # the paper-versus-code table has a row per decision
    assert text.count('\n| ') >= 12


def test_citation_block():
    cite = _section(README, 'Citation')
    assert '```bibtex' in cite
    assert 'DA-VPT}: Semantic-Guided Visual Prompt Tuning for Vision ' \
        'Transformers' in cite
    assert 'Ren, Li and Chen, Chen and Wang, Liqiang and Hua, Kien' in cite
    assert 'CVPR' in cite and '2025' in cite


def test_dataset_preparation_pointers():
    text = _section(README, 'Datasets')
    for term in ('data/ade/ADEChallengeData2016', 'data/VOCdevkit/VOC2010',
                 'trainval_merged.json', 'pascal_context.py'):
        assert term in text, term
    # mmseg's converter is where the README says it is
    import mmseg
    assert (Path(mmseg.__file__).parent / '.mim' / 'tools' /
            'dataset_converters' / 'pascal_context.py').is_file()


def test_dropin_limits_documented():
    text = _section(README, 'Dropping DA-VPT into an existing mmseg config')
    for term in ('MAE', 'init_values', 'LayerDecayOptimizerConstructor',
                 'SETR-MLA', 'with_cls_token=True', 'DAVPTHook'):
        assert term in text, term


def test_checkpoint_size_claims():
    """The prompt-only sizes stated (measured for ADE20K SETR-PUP) and the
    hook option that halves them; no 'few tens of MB'."""
    text = _section(README, 'Prompt-only checkpoints')
    assert '~105 MiB' in text and '~53 MiB' in text
    assert 'save_optimizer=False' in text
    hook = (ROOT / 'davpt_seg' / 'engine' / 'hooks' /
            'prompt_checkpoint_hook.py').read_text()
    assert 'tens of MB' not in hook and '~105 MiB' in hook
