"""The documents (README.md, docs/*.md) are executable: their config
snippets build, their command lines name existing scripts and flags, and
the symbols they name exist. Nothing is trained; the whole file takes
about half a minute on one core (most of it building ViT-L models and one
interpreter that prints every tool's ``--help``).

Config snippets (:func:`helpers.markdown.config_snippets`): every ```python
block that assigns ``model``, ``custom_hooks`` or ``_base_`` at the top
level is a config file. It is read as if saved in ``configs/`` (relative
``_base_`` paths resolve from there; ``mmseg::`` bases as usual), loaded
with mmengine's ``Config.fromfile`` and built: ``MODELS.build(cfg.model)``
(full size, no forward), and every ``custom_hooks`` entry with
``HOOKS.build``; a ``DAVPTHook`` also builds its objective on the model
(``build_objective``: class count from ``decode_head.num_classes``, prompts
from the backbone). A config that uses a davpt_seg component must list
``davpt_seg`` in ``custom_imports`` (stock launchers need it). Markers, as
an HTML comment just before the opening fence:

* ``<!-- doc-test: skip (reason) -->``: a deliberately partial snippet,
  not built (the reason is required);
* ``<!-- doc-test: dir configs/camvid -->``: the folder the snippet is
  saved in, instead of ``configs/``;
* ``<!-- doc-test: base configs/X.py -->``: the snippet has no ``_base_``
  and is merged onto ``configs/X.py``.

Commands (:func:`helpers.markdown.commands`): the lines of ```bash / sh /
shell / console blocks (``\\`` continuations joined, comments dropped) and
inline code spans that run ``tools/X.py|sh`` or ``demo/X.py`` (after
optional ``VAR=value`` assignments and ``python``/``bash``/...). The script
must exist, every ``--flag`` must be one its ``--help`` lists (shell
scripts: the Python tool they forward their arguments to,
:data:`FORWARDS`) and every ``configs/*.py`` argument must exist.

Names: every ``davpt_seg.a.b`` dotted name anywhere in the documents must
import / resolve; every inline-code ``ClassName`` (``ClassName.attr``,
``ClassName(...)``) of the prose, and every ``type='Name'`` in inline code,
must be a builtin, be registered in one of mmseg's registries (which fall
back to mmengine's), be an attribute of a davpt_seg module, or be one of
:data:`EXTERNAL` (checked in its module); ``.attr`` must exist on it.
"""
import ast
import builtins
import copy
import importlib
import importlib.util
import json
import os
import pkgutil
import re
import subprocess
import sys

import pytest
from mmengine.config import Config
from mmengine.registry import Registry, init_default_scope
from mmseg import registry as mmseg_registry
from mmseg.registry import HOOKS, MODELS

import davpt_seg
from davpt_seg.engine.hooks import DAVPTHook
from helpers import ROOT
from helpers import markdown as md
from helpers.processes import subprocess_env

init_default_scope('mmseg')


def _ids(blocks):
    return [b.where for b in blocks]


# ------------------------------------------------------- config snippets
SNIPPETS = md.config_snippets()
BUILT = [b for b in SNIPPETS if 'skip' not in b.markers]


def snippet_config(block: md.Block, tmp_path) -> Config:
    """The snippet as a config file (see the module docstring)."""
    folder = ROOT / block.markers.get('dir', 'configs')
    assert folder.is_dir(), f'{block.where}: no folder {folder}'
    tree = ast.parse(block.text)
    if 'base' in block.markers:
        assert '_base_' not in md.top_level_names(block.text), (
            f'{block.where}: a `base` marker and a `_base_` line')
        tree.body.insert(0, ast.parse(
            f"_base_ = [{str(ROOT / block.markers['base'])!r}]").body[0])
    for node in tree.body:  # relative _base_ entries -> absolute paths
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == '_base_'
                for t in node.targets):
            for c in ast.walk(node.value):
                if isinstance(c, ast.Constant) and isinstance(c.value, str) \
                        and '::' not in c.value \
                        and not os.path.isabs(c.value):
                    c.value = os.path.normpath(str(folder / c.value))
    path = tmp_path / 'doc_snippet.py'
    path.write_text(ast.unparse(tree) + '\n')
    return Config.fromfile(str(path))


def uses_davpt_seg(cfg: Config) -> bool:
    """Whether a ``type`` anywhere in the model or hooks is davpt_seg's."""
    types = re.findall(r"'type': '(\w+)'",
                       repr(cfg.get('model', {})) +
                       repr(cfg.get('custom_hooks', [])))
    for name in types:
        for reg in (MODELS, HOOKS):
            cls = reg.get(name)
            if cls is not None and cls.__module__.startswith('davpt_seg'):
                return True
    return False


@pytest.mark.parametrize('block', BUILT, ids=_ids(BUILT))
def test_config_snippet_builds(block, tmp_path):
    """Loads, builds the model and the hooks (DAVPTHook: its objective)."""
    try:
        cfg = snippet_config(block, tmp_path)
        model = MODELS.build(copy.deepcopy(cfg.model))
        hooks = [HOOKS.build(copy.deepcopy(h))
                 for h in cfg.get('custom_hooks', [])]
        for hook in hooks:
            if isinstance(hook, DAVPTHook):
                objective = hook.build_objective(model)
                assert objective.num_classes == \
                    model.decode_head.num_classes
    except Exception as e:
        pytest.fail(f'{block.where}: the config snippet does not build: '
                    f'{type(e).__name__}: {e}\n{block.text}')
    if uses_davpt_seg(cfg):
        imports = cfg.get('custom_imports', {}).get('imports', [])
        assert 'davpt_seg' in imports, (
            f'{block.where}: uses davpt_seg components but its '
            f'custom_imports do not import davpt_seg: {imports}')


def test_skipped_snippets_say_why():
    for block in md.python_blocks():
        if 'skip' in block.markers:
            assert re.fullmatch(r'\(.+\)', block.markers['skip']), (
                f'{block.where}: `doc-test: skip (reason)` needs a reason')


def test_markers_only_on_config_snippets():
    """A ``dir`` / ``base`` marker on a block that is not built is a
    mistake (e.g. a block that lost its ``model``)."""
    snippets = {b.where for b in SNIPPETS}
    for path in md.DOCUMENTS:
        for block in md.fenced_blocks(path):
            if set(block.markers) & {'dir', 'base'}:
                assert block.where in snippets and \
                    'skip' not in block.markers, block.where


def test_python_blocks_parse():
    for block in md.python_blocks():
        if 'skip' not in block.markers:
            try:
                ast.parse(block.text)
            except SyntaxError as e:
                pytest.fail(f'{block.where}: {e}\n{block.text}')


def test_readme_dropin_snippet_is_built():
    """The README's drop-in example (the headline use) is among the
    snippets built above, and is DA-VPT: prompted backbone + hook."""
    text = (ROOT / 'README.md').read_text()
    start = text.index('\n## Dropping DA-VPT into an existing mmseg config')
    end = text.index('\n## ', start + 1)
    first, last = (text.count('\n', 0, i) + 1 for i in (start, end))
    dropin = [b for b in BUILT if b.path.name == 'README.md'
              and first < b.line < last]
    assert len(dropin) == 1, [b.where for b in dropin]
    assert "type='PromptedVisionTransformer'" in dropin[0].text
    assert "type='DAVPTHook'" in dropin[0].text


# ------------------------------------------------------------- commands
COMMANDS = md.commands()
#: Shell scripts -> the tool their extra arguments go to (None: not a
#: Python tool; ``run_tests.sh`` passes them to pytest, ``install.sh``
#: takes none).
FORWARDS = {
    'tools/dist_train.sh': 'tools/train.py',
    'tools/dist_test.sh': 'tools/test.py',
    'tools/slurm_train.sh': 'tools/train.py',
    'tools/slurm_test.sh': 'tools/test.py',
    'tools/run_toy.sh': 'tools/train.py',
    'tools/run_tests.sh': None,
    'tools/install.sh': None,
}


def tool_of(script: str):
    """The Python tool whose ``--help`` lists ``script``'s flags."""
    if script.endswith('.sh'):
        assert script in FORWARDS, (
            f'{script}: add it to FORWARDS (the tool it forwards to)')
        return FORWARDS[script]
    return script


def help_flags(text: str) -> set:
    """The option strings of an argparse help text (option lines only)."""
    flags = set()
    for line in text.splitlines():
        if line.lstrip().startswith('-'):
            flags.update(re.findall(r'(?:^|, )(--?[\w-]+)', line.strip()))
    return flags


@pytest.fixture(scope='module')
def helps():
    """{tool: its --help text}, one interpreter for all of them
    (``helpers/tool_help.py``)."""
    tools = sorted({tool_of(c.script) for c in COMMANDS} - {None})
    proc = subprocess.run(
        [sys.executable, '-m', 'helpers.tool_help', *tools], cwd=ROOT,
        env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


def test_commands_name_existing_scripts():
    assert COMMANDS, 'no command lines found'
    missing = [f'{c.where}: {c.script}' for c in COMMANDS
               if not (ROOT / c.script).is_file()]
    assert not missing, missing


def test_shell_scripts_forward_as_stated():
    for script, tool in FORWARDS.items():
        if tool is not None:
            assert tool in (ROOT / script).read_text(), (script, tool)


def test_command_flags_are_in_the_help(helps):
    wrong = []
    for c in COMMANDS:
        tool = tool_of(c.script)
        if tool is None:
            continue
        assert helps[tool] is not None, f'{tool} did not exit on --help'
        known = help_flags(helps[tool])
        wrong += [f'{c.where}: {c.script} {flag} (not in {tool} --help)'
                  for flag in c.flags if flag not in known]
    assert not wrong, '\n'.join(wrong)


def test_command_config_arguments_exist():
    missing = [f'{c.where}: {p}' for c in COMMANDS for p in c.config_paths
               if not (ROOT / p).is_file()]
    assert not missing, missing


# ----------------------------------------------------------------- names
#: Names from outside davpt_seg and the registries: {name: module}.
EXTERNAL = {
    'Runner': 'mmengine.runner',
    'CheckpointLoader': 'mmengine.runner',
    'FlopAnalyzer': 'mmengine.analysis',
    'HistoryBuffer': 'mmengine.logging',
    'MMSegInferencer': 'mmseg.apis',
}
#: Backticked CamelCase words that are not Python names: {word: what}.
NOT_SYMBOLS = {'VmHWM': 'a field of /proc/self/status'}
_CLASS_SPAN = re.compile(r'([A-Z]\w*[a-z]\w*)((?:\.\w+)*)(?:\(.*\))?')
_FILE_SPAN = re.compile(r'.*\.(zip|tar|gz|py|md|json|png|jpg|pth|npz|txt)')


def _davpt_seg_modules():
    """Every davpt_seg module (``compat.enable`` left out: importing it
    installs the compat changes)."""
    mods = []
    for info in pkgutil.walk_packages(davpt_seg.__path__, 'davpt_seg.'):
        if info.name != 'davpt_seg.compat.enable':
            mods.append(importlib.import_module(info.name))
    return mods


def resolve_class(name: str, modules):
    """The object a documented class name stands for, or None."""
    if name in EXTERNAL:
        return getattr(importlib.import_module(EXTERNAL[name]), name, None)
    if hasattr(builtins, name):
        return getattr(builtins, name)
    for reg in vars(mmseg_registry).values():
        if isinstance(reg, Registry) and reg.get(name) is not None:
            return reg.get(name)
    for mod in modules:
        if hasattr(mod, name):
            return getattr(mod, name)
    return None


def resolve_dotted(name: str):
    """``name`` if it is a module (found, not imported), else import the
    longest importable prefix and getattr the rest; raises what fails."""
    try:
        if importlib.util.find_spec(name) is not None:
            return name  # a module, not imported (compat.enable installs)
    except ModuleNotFoundError:  # a parent is missing or not a package
        pass
    parts = name.split('.')
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module('.'.join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(name)


def test_dotted_names_resolve():
    wrong = []
    for path in md.DOCUMENTS:
        for m in re.finditer(r'\bdavpt_seg(?:\.\w+)+', path.read_text()):
            try:
                resolve_dotted(m.group())
            except (ImportError, AttributeError) as e:
                line = path.read_text().count('\n', 0, m.start()) + 1
                wrong.append(f'{md.rel(path)}:{line}: {m.group()} ({e})')
    assert not wrong, '\n'.join(wrong)


def test_class_names_resolve():
    modules = _davpt_seg_modules()
    wrong, checked = [], 0
    for path in md.DOCUMENTS:
        for line, code in md.inline_spans(path):
            for name in re.findall(r"(?<!\w)type='(\w+)'", code):
                checked += 1
                if resolve_class(name, modules) is None:
                    wrong.append(f"{md.rel(path)}:{line}: `{code}`: "
                                 f"type='{name}' is not registered")
            m = _CLASS_SPAN.fullmatch(code)
            if not m or _FILE_SPAN.fullmatch(code) or \
                    m.group(1) in NOT_SYMBOLS:
                continue
            checked += 1
            where = f'{md.rel(path)}:{line}: `{code}`'
            obj = resolve_class(m.group(1), modules)
            if obj is None:
                wrong.append(f'{where}: no class {m.group(1)}')
                continue
            for attr in filter(None, m.group(2).split('.')):
                if not hasattr(obj, attr):
                    wrong.append(f'{where}: {obj.__name__} has no {attr}')
                    break
                obj = getattr(obj, attr)
    assert checked > 20, checked
    assert not wrong, '\n'.join(wrong)
