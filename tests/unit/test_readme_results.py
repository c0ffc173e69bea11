"""The README's CamVid accuracy table is the committed results set: every
row (``| label | `variant` | trainable | mean +- std |``) names a variant
of ``docs/accuracy_camvid.json`` and gives its mean and std over seeds as
the JSON has them, and every variant of the JSON has a row."""
import json
import re

from helpers import ROOT

ROW = re.compile(r'^\|[^|\n]*\| `(?P<variant>\w+)` \|[^|\n]*\| '
                 r'\**(?P<mean>\d+\.\d\d) \+- (?P<std>\d+\.\d\d)\** \|$',
                 re.M)


def test_readme_table_matches_the_committed_json():
    results = json.loads((ROOT / 'docs' / 'accuracy_camvid.json').read_text())
    summary = results['summary']
    rows = {m['variant']: m for m in ROW.finditer(
        (ROOT / 'README.md').read_text())}
    assert set(rows) == set(summary)
    for variant, row in rows.items():
        s = summary[variant]
        assert row['mean'] == f"{s['mIoU_mean']:.2f}", variant
        assert row['std'] == f"{s['mIoU_std']:.2f}", variant
    assert results['settings']['eval_split'] == 'val'
    assert results['settings']['lr_chosen']  # chosen on select, not val
