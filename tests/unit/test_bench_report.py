"""The accuracy bench's report: the learned prompt gates read from a
checkpoint, and the mapping / gate sections of the Markdown."""
import torch

from davpt_seg.bench import format_markdown, read_prompt_gate


def test_prompt_gate_is_read_from_an_mmengine_checkpoint(tmp_path):
    gate = torch.tensor([[0., 0.], [1., -1.], [0.5, 0.5]])
    torch.save(dict(meta={}, state_dict={'backbone.prompt_gate': gate}),
               tmp_path / 'gated.pth')
    torch.save(dict(meta={}, state_dict={'backbone.cls_token': gate}),
               tmp_path / 'plain.pth')
    got = read_prompt_gate(str(tmp_path / 'gated.pth'))
    assert got == [0., 0., round(float(torch.tanh(torch.tensor(0.5))), 4)]
    assert read_prompt_gate(str(tmp_path / 'plain.pth')) is None


def _run(variant, seed, miou, **extra):
    return dict(variant=variant, seed=seed, mIoU=miou, **extra)


def test_report_shows_mapping_updates_and_gates():
    summary = dict(mIoU_mean=20., mIoU_std=0.5, n=2, aAcc_mean=60.,
                   trainable_params=1, total_params=10, class_iou_mean={},
                   step_time_median=None)
    updates = [dict(iter=0, accepted=True, sizes=[1, 2], cos_mean=0.5,
                    cos_max=0.75),
               dict(iter=46, accepted=False, sizes=[1, 2], cos_mean=None,
                    cos_max=None)]
    runs = [_run('davpt_gated', 0, 19.5, mapping_updates=updates,
                 prompt_gate=[0.1, 0.3]),
            _run('davpt_gated', 1, 20.5, mapping_updates=[],
                 prompt_gate=[0.3, 0.5])]
    md = format_markdown(dict(
        summary=dict(davpt_gated=summary), runs=runs,
        settings=dict(preset='cpu', eval_split='val', iters=100,
                      batch_size=8, crop=[140, 140], scale=[224, 168])))
    assert '| davpt_gated | 0 | 0 | [1, 2] | 0.500 / 0.750 |' in md
    assert '| davpt_gated | 0 | 46 *kept* | [1, 2] | - |' in md
    assert '| variant | L0 | L1 |' in md
    assert '| davpt_gated | 0.200 | 0.400 |' in md


def test_report_shows_the_selection_grid_and_the_choice():
    summary = dict(mIoU_mean=20., mIoU_std=0.5, n=1, aAcc_mean=60.,
                   trainable_params=1, total_params=10, class_iou_mean={},
                   step_time_median=None)
    md = format_markdown(dict(
        summary=dict(vpt=summary), runs=[_run('vpt', 0, 20.)],
        settings=dict(preset='cpu', eval_split='val', iters=100,
                      batch_size=8, crop=[140, 140], scale=[224, 168],
                      lr_chosen=dict(vpt=0.01), lr_chosen_from=['a.json'],
                      lr_grid_scores=dict(vpt={'0.003': 18.5, '0.01': 19.},
                                          heads={'0.03': 30.}))))
    assert '| variant | 0.003 | 0.01 | 0.03 |' in md
    assert '| vpt | 18.50 | **19.00** | - |' in md
    assert '| heads |' not in md  # not a row of this report
    assert 'chosen on the selection split (`a.json`): vpt 0.01' in md
