"""The CamVid accuracy bench behind ``tools/accuracy_bench.py``; the cost
(time / memory) benchmark behind ``tools/benchmark.py`` is the subpackage
:mod:`davpt_seg.bench.cost`."""
from .presets import (EVAL_SPLITS, EXTRA_VARIANTS, PRESETS, SPLIT_FILES,
                      VARIANTS, Preset, preset_config, scaled_schedule)
from .selection import chosen_lrs, selection_scores
from .results import (format_markdown, latest_valid_checkpoint,
                      median_step_time, plot_results, read_mapping_log,
                      read_prompt_gate, read_test_metrics, read_train_log,
                      summarise)

__all__ = ['EVAL_SPLITS', 'SPLIT_FILES', 'scaled_schedule', 'EXTRA_VARIANTS',
           'PRESETS', 'VARIANTS', 'Preset', 'preset_config',
           'format_markdown', 'latest_valid_checkpoint', 'median_step_time',
           'plot_results', 'read_test_metrics', 'read_train_log', 'summarise',
           'chosen_lrs', 'read_mapping_log', 'read_prompt_gate',
           'selection_scores']
