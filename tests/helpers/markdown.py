"""What the documents say, as data for ``tests/unit/test_docs*.py``: the
fenced code blocks of README.md and docs/*.md with their ``doc-test``
markers, the inline code spans of the prose, and the command lines of both.

A marker is an HTML comment on the lines just before a block's opening
fence (blank lines between are allowed)::

    <!-- doc-test: skip (why the snippet cannot be built) -->
    <!-- doc-test: dir configs/camvid -->
    <!-- doc-test: base configs/davpt_setr_ade20k.py -->
"""
import ast
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

from . import ROOT

#: The documents checked: the README and every page of docs/.
DOCUMENTS = [ROOT / 'README.md'] + sorted((ROOT / 'docs').glob('*.md'))
#: The marker keywords a block may carry.
MARKER_KEYS = ('skip', 'dir', 'base')
#: Top-level names that make a ```python block a config snippet.
CONFIG_NAMES = ('model', 'custom_hooks', '_base_')
SHELL_LANGS = ('bash', 'sh', 'shell', 'console')

_FENCE = re.compile(r'^(\s*)(`{3,}|~{3,})\s*([\w+-]*)\s*$')
_MARKER = re.compile(r'^\s*<!--\s*doc-test:\s*(\w+)\s*(.*?)\s*-->\s*$')
_COMMENT = re.compile(r'^[ \t]*<!--.*?-->[ \t]*$', re.S | re.M)
_SPAN = re.compile(r'`([^`]+)`')
#: A command: environment assignments, an interpreter, then a script of
#: tools/ or demo/ (not of a subfolder: those are mmseg's, cited by path).
_COMMAND = re.compile(
    r'^(?:[A-Za-z_]\w*=\S*\s+)*'
    r'(?:(?:\S*/)?(?:python3?(?:\.\d+)?|bash|sh)\s+)?'
    r'(?:\./)?(?P<script>(?:tools|demo)/[\w-]+\.(?:py|sh))(?=\s|$)'
    r'(?P<args>.*)$', re.S)
_FLAG = re.compile(r'(?<![\w-])--[A-Za-z][\w-]*')


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


@dataclass
class Block:
    """A fenced code block: its document, the line of its opening fence
    (1-based), language, text (dedented by the fence's indentation) and
    ``doc-test`` markers ({keyword: value})."""
    path: Path
    line: int
    lang: str
    text: str
    markers: Dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f'{rel(self.path)}:{self.line}'


def _markers(lines: List[str], fence: int, where: str) -> Dict[str, str]:
    """The markers on the lines before ``lines[fence]``."""
    found = {}
    i = fence - 1
    while i >= 0 and (not lines[i].strip() or _MARKER.match(lines[i])):
        m = _MARKER.match(lines[i])
        if m:
            key, value = m.groups()
            assert key in MARKER_KEYS, (
                f'{where}: unknown doc-test marker {key!r} '
                f'(known: {", ".join(MARKER_KEYS)})')
            found[key] = value
        i -= 1
    return found


def fenced_blocks(path: Path) -> List[Block]:
    """Every fenced code block of ``path``."""
    lines = path.read_text(encoding='utf-8').splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.groups()
        start = i
        body = []
        i += 1
        while i < len(lines) and lines[i].strip() != fence:
            body.append(lines[i][len(indent):]
                        if lines[i].startswith(indent) else lines[i])
            i += 1
        where = f'{rel(path)}:{start + 1}'
        blocks.append(Block(path, start + 1, lang.lower(),
                            '\n'.join(body) + '\n',
                            _markers(lines, start, where)))
        i += 1
    return blocks


def prose(path: Path) -> str:
    """``path`` without its fenced blocks and the HTML comments that stand
    on lines of their own (blanked, so that line numbers stay)."""
    lines = path.read_text(encoding='utf-8').splitlines()
    for block in fenced_blocks(path):
        end = block.line + block.text.count('\n')
        for j in range(block.line - 1, min(end + 1, len(lines))):
            lines[j] = ''
    text = '\n'.join(lines)
    return _COMMENT.sub(lambda m: '\n' * m.group().count('\n'), text)


def inline_spans(path: Path) -> Iterator[Tuple[int, str]]:
    """(line, code) of every inline code span of the prose; a span that
    wraps across lines is joined with single spaces."""
    text = prose(path)
    for m in _SPAN.finditer(text):
        line = text.count('\n', 0, m.start()) + 1
        yield line, ' '.join(m.group(1).split())


def top_level_names(source: str) -> set:
    """Names assigned at the top level of ``source`` (Python)."""
    names = set()
    for node in ast.parse(source).body:
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, (ast.AnnAssign,
                                               ast.AugAssign)) else []
        names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def python_blocks() -> List[Block]:
    return [b for p in DOCUMENTS for b in fenced_blocks(p)
            if b.lang in ('python', 'py')]


def config_snippets() -> List[Block]:
    """The ```python blocks that assign ``model``, ``custom_hooks`` or
    ``_base_`` at the top level (a block that does not parse is one too:
    building it reports the syntax error)."""
    out = []
    for block in python_blocks():
        try:
            names = top_level_names(block.text)
        except SyntaxError:
            names = set(CONFIG_NAMES)
        if names & set(CONFIG_NAMES):
            out.append(block)
    return out


def _shell_lines(block: Block) -> Iterator[Tuple[int, str]]:
    """(line, logical line) of a shell block: ``\\`` continuations joined,
    comments dropped, split at `` && ``, `` || ``, ``; `` and `` | `` (a
    ``|`` without spaces is an alternative: ``--preset cpu|gpu``)."""
    pending, first = '', None
    for k, raw in enumerate(block.text.splitlines()):
        if first is None:
            first = block.line + 1 + k
        if raw.rstrip().endswith('\\'):
            pending += raw.rstrip()[:-1] + ' '
            continue
        logical = re.sub(r'(^|\s)#.*$', '', pending + raw)
        pending = ''
        for part in re.split(r'\s(?:&&|\|\||\|)\s|;\s', logical):
            if part.strip():
                yield first, part.strip()
        first = None


@dataclass
class Command:
    """A command line of a document: where, the script it runs and its
    arguments (text after the script)."""
    where: str
    script: str
    args: str

    @property
    def flags(self) -> List[str]:
        return _FLAG.findall(self.args)

    @property
    def config_paths(self) -> List[str]:
        try:
            words = shlex.split(self.args)
        except ValueError:
            words = self.args.split()
        return [w for w in words
                if re.fullmatch(r'configs/[\w./-]+\.py', w)]


def parse_command(where: str, text: str) -> Optional[Command]:
    m = _COMMAND.match(text.strip())
    if m is None:
        return None
    return Command(where, m.group('script'), m.group('args'))


def commands() -> List[Command]:
    """Every command line of the shell blocks and every inline code span
    that is a command (see :data:`_COMMAND`)."""
    out = []
    for path in DOCUMENTS:
        for block in fenced_blocks(path):
            if block.lang in SHELL_LANGS:
                for line, text in _shell_lines(block):
                    cmd = parse_command(f'{rel(path)}:{line}', text)
                    if cmd:
                        out.append(cmd)
        for line, code in inline_spans(path):
            cmd = parse_command(f'{rel(path)}:{line}', code)
            if cmd:
                out.append(cmd)
    return out
