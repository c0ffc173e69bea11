"""The CamVid accuracy bench behind ``tools/accuracy_bench.py``; the cost
(time / memory) benchmark behind ``tools/benchmark.py`` is the subpackage
:mod:`davpt_seg.bench.cost`."""
from .presets import EXTRA_VARIANTS, PRESETS, VARIANTS, Preset, preset_config
from .results import (format_markdown, latest_valid_checkpoint,
                      median_step_time, plot_results, read_test_metrics,
                      read_train_log, summarise)

__all__ = ['EXTRA_VARIANTS', 'PRESETS', 'VARIANTS', 'Preset', 'preset_config',
           'format_markdown', 'latest_valid_checkpoint', 'median_step_time',
           'plot_results', 'read_test_metrics', 'read_train_log', 'summarise']
