"""The prompt-analysis tools end to end on quickly trained toy checkpoints
(DA-VPT full and prompt-only, VPT-Deep): visualize_prompts,
visualize_mapping, prompt_attention_metric, plot_logs."""
import json
from pathlib import Path

import matplotlib.image as mpimg
import pytest

from davpt_seg.datasets import generate_toy_dataset
from helpers.processes import run_python
from helpers.toy_run import toy_run_config
from tools.extract_prompts import main as extract_prompts
from tools.plot_logs import main as plot_logs
from tools.prompt_attention_metric import main as metric
from tools.visualize_mapping import main as visualize_mapping
from tools.visualize_prompts import main as visualize_prompts

pytestmark = pytest.mark.slow
ITERS = 8  # two mapping updates: 16 training images / batch 4 = 4 iters


def _train(tmp, vit, name, extra=''):
    cfg = tmp / f'{name}.py'
    cfg.write_text(toy_run_config(
        tmp / 'toy_ade', ITERS, checkpoint_interval=ITERS, logger_interval=2,
        extra=f"""model = dict(backbone=dict(init_cfg=dict(
    _delete_=True, type='Pretrained', checkpoint={str(vit)!r})))
""" + extra))
    work = tmp / name
    run_python('tools/train.py', cfg, '--work-dir', work, timeout=900)
    return cfg, work, work / f'iter_{ITERS}.pth'


@pytest.fixture(scope='module')
def toy(tmp_path_factory, toy_vit_path):
    tmp = tmp_path_factory.mktemp('prompt_tools')
    generate_toy_dataset(str(tmp / 'toy_ade'), num_train=16, num_val=6)
    davpt = _train(tmp, toy_vit_path, 'davpt')
    vpt = _train(tmp, toy_vit_path, 'vpt', 'custom_hooks = []\n')
    prompt_only = tmp / 'davpt_prompts.pth'
    extract_prompts([str(davpt[0]), str(davpt[2]), str(prompt_only)])
    val = tmp / 'toy_ade'
    images = sorted((val / 'images' / 'validation').glob('*.jpg'))[:2]
    anns = [val / 'annotations' / 'validation' / (p.stem + '.png')
            for p in images]
    return dict(tmp=tmp, davpt=davpt, vpt=vpt, prompt_only=prompt_only,
                images=[str(p) for p in images], anns=[str(p) for p in anns])


def _png(path):
    img = mpimg.imread(str(path))
    assert img.ndim == 3 and min(img.shape[:2]) > 200, img.shape
    return img


@pytest.mark.parametrize('which, extra', [
    ('davpt', ['--per-head', '--layers', '-2', '2']),
    ('prompt_only', ['--prompts', 'assigned']),
    ('vpt', ['--mapping-from', 'DAVPT']),
])
def test_visualize_prompts(toy, which, extra):
    cfg, _, ckpt = toy['vpt' if which == 'vpt' else 'davpt']
    if which == 'prompt_only':
        ckpt = toy['prompt_only']
    extra = [str(toy['davpt'][2]) if a == 'DAVPT' else a for a in extra]
    out = toy['tmp'] / f'sheets_{which}'
    visualize_prompts([str(cfg), str(ckpt), *toy['images'], '--out',
                       str(out), '--ann', *toy['anns'], *extra])
    for img in toy['images']:
        _png(out / (Path(img).stem + '.png'))


def test_visualize_prompts_without_annotation_and_duplicate_names(toy,
                                                                  capsys):
    cfg, _, ckpt = toy['vpt']
    out = toy['tmp'] / 'sheets_plain'
    img = toy['images'][0]
    visualize_prompts([str(cfg), str(ckpt), img, img, '--out', str(out),
                       '--layers', '0'])
    stem = Path(img).stem
    _png(out / f'{stem}.png')
    _png(out / f'{stem}_1.png')
    capsys.readouterr()
    with pytest.raises(SystemExit, match='^2$'):  # argparse's usage error
        visualize_prompts([str(cfg), str(ckpt), img, '--out', str(out),
                           '--ann', *toy['anns']])
    assert '--ann needs one annotation per image' in capsys.readouterr().err


def test_visualize_mapping(toy):
    cfg, _, ckpt = toy['davpt']
    for name, path in (('full', ckpt), ('prompt_only', toy['prompt_only'])):
        out = toy['tmp'] / f'mapping_{name}'
        visualize_mapping([str(cfg), str(path), '--out', str(out)])
        _png(out / 'mapping.png')
        info = json.loads((out / 'mapping.json').read_text())
        assert info['initialized'] is True
        assert sum(info['cluster_sizes']) == 8
        assert sorted(c for p in info['prompts'] for c in p['class_ids']) \
            == list(range(8))
        sim = info['centroid_cosine_similarity']
        assert len(sim) == 4 and all(abs(sim[i][i] - 1) < 1e-4
                                     for i in range(4))
    with pytest.raises(SystemExit, match='holds no class->prompt mapping'):
        visualize_mapping([str(toy['vpt'][0]), str(toy['vpt'][2]), '--out',
                           str(toy['tmp'] / 'mapping_vpt')])


def _check_metric(path, assignment):
    result = json.loads(path.read_text())
    assert result['num_images'] == 4 and result['layers'] == [2]
    assert result['assignment'] == assignment
    assert len(result['prompts']) == 4  # the guided layer's 4 prompts
    for entry in result['prompts']:
        for key in ('mapped', 'best_class') if assignment else \
                ('best_class', ):
            stats = entry[key]
            assert 0 <= stats['num_images'] <= 4
            for v in (stats['precision'], stats['chance']):
                assert v is None or 0. <= v <= 1.
        if not assignment:
            assert 'mapped' not in entry
    assert 0. < result['overall'].pop('spread') <= 1.
    for entry in result['prompts']:
        assert 0. < entry['spread'] <= 1.
    for key, o in result['overall'].items():
        for v in (o['precision'], o['chance'], o['micro_precision'],
                  o['micro_chance']):
            assert v is None or 0. <= v <= 1.
        assert (o['precision'] is None) == (o['num_prompts'] == 0)
    assert result['overall']['best_class']['num_prompts'] > 0
    assert ('mapped' in result['overall']) == bool(assignment)
    assert path.with_suffix('.md').read_text().count('\n|') >= 6
    return result


def test_prompt_attention_metric(toy):
    tmp = toy['tmp']
    cfg, _, ckpt = toy['davpt']
    metric([str(cfg), str(ckpt), '--max-images', '4', '--min-images', '1',
            '--out', str(tmp / 'metric' / 'davpt.json')])
    davpt = _check_metric(tmp / 'metric' / 'davpt.json', 'checkpoint mapping')
    assert davpt['method'] == 'DA-VPT'
    vcfg, _, vckpt = toy['vpt']
    metric([str(vcfg), str(vckpt), '--max-images', '4', '--min-images',
            '1', '--out', str(tmp / 'metric' / 'vpt.json')])
    _check_metric(tmp / 'metric' / 'vpt.json', None)
    metric([str(vcfg), str(vckpt), '--max-images', '4', '--min-images',
            '1', '--mapping-from', str(ckpt), '--out',
            str(tmp / 'metric' / 'vpt_mapped.json')])
    vpt = _check_metric(tmp / 'metric' / 'vpt_mapped.json',
                        'mapping of iter_8.pth by index')
    # the same classes per prompt, so the same chance levels
    for a, b in zip(davpt['prompts'], vpt['prompts']):
        assert a['mapped']['class_ids'] == b['mapped']['class_ids']
        assert a['mapped']['chance'] == pytest.approx(b['mapped']['chance'])


def test_plot_logs(toy):
    out = toy['tmp'] / 'curves.png'
    plot_logs([str(toy['davpt'][1]), str(toy['vpt'][1]), '--labels',
               'DA-VPT', 'VPT', '--keys', 'loss', 'loss_davpt_token',
               'loss_davpt_cls', '--out', str(out)])
    _png(out)
