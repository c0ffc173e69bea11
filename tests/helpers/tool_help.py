"""``python -m helpers.tool_help SCRIPT ...`` (from the repository root,
``tests/`` on ``PYTHONPATH``): prints one JSON object, {script: the text its
``--help`` prints, or null if it did not exit on ``--help``}.

Every script runs as ``__main__`` with ``sys.argv = [script, '--help']`` in
this one interpreter, so the imports they share (torch, mmseg) are paid
once instead of once per script; argparse prints the help and exits before
a script's ``main`` does anything.
"""
import contextlib
import io
import json
import runpy
import sys


def help_text(script: str):
    buf = io.StringIO()
    sys.argv = [script, '--help']
    with contextlib.redirect_stdout(buf):
        try:
            runpy.run_path(script, run_name='__main__')
        except SystemExit as e:
            if e.code not in (0, None):
                return None
            return buf.getvalue()
    return None


def main(scripts):
    texts = {script: help_text(script) for script in scripts}
    sys.stdout.write(json.dumps(texts))


if __name__ == '__main__':
    main(sys.argv[1:])
