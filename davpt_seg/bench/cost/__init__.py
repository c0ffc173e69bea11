# Copyright (c) davpt-seg contributors. Apache-2.0.
"""The cost benchmark behind ``tools/benchmark.py``: time and memory of
DA-VPT against VPT-Deep, full fine-tuning and mmseg's stock ViT
(``docs/benchmark_cpu.md``).

Modules: :mod:`.presets` (model sizes), :mod:`.variants` (rows),
:mod:`.build` (models, optimiser wrappers, DA-VPT hooks, input batch),
:mod:`.steps` (one step per row), :mod:`.extras` (mapping costs),
:mod:`.memory` (per-row memory in fresh processes), :mod:`.stats`
(summaries, ratios, targets, schema), :mod:`.report` (Markdown),
:mod:`.run` (the whole benchmark), :mod:`.hook_cost` (DAVPTHook's own
main-process cost at ADE20K's label shape).
"""
from .build import (BuiltRow, attach_davpt_hook, build_row, make_batch,
                    optim_wrapper_cfg, setr_model_cfg)
from .cpu_amp import CPUBf16AutocastOptimWrapper
from .extras import time_initial_pass, time_mapping_update
from .hook_cost import HOOK_PRESETS, hook_markdown, run_hook_benchmark
from .memory import fork_per_row, measure_memory, print_row_memory
from .presets import PRESETS, SCHEMA_ONLY_PRESETS, preset_config
from .report import markdown, memory_table
from .run import Options, run_benchmark, write_report
from .stats import (MEMORY_KEYS, ROW_KEYS, TARGETS, TIME_KEYS, check_schema,
                    evaluate_targets, summarize)
from .steps import ForwardHookTimer, make_step
from .system import setup_process
from .variants import VARIANTS, Variant, select_rows, variant_ids

__all__ = [
    'BuiltRow', 'attach_davpt_hook', 'build_row', 'make_batch',
    'optim_wrapper_cfg', 'setr_model_cfg', 'CPUBf16AutocastOptimWrapper',
    'time_initial_pass', 'time_mapping_update', 'fork_per_row',
    'measure_memory', 'print_row_memory', 'PRESETS', 'SCHEMA_ONLY_PRESETS',
    'preset_config', 'markdown', 'memory_table', 'Options', 'run_benchmark',
    'write_report', 'MEMORY_KEYS', 'ROW_KEYS', 'TARGETS', 'TIME_KEYS',
    'check_schema', 'evaluate_targets', 'summarize', 'ForwardHookTimer',
    'make_step', 'setup_process', 'VARIANTS', 'Variant', 'select_rows',
    'variant_ids', 'HOOK_PRESETS', 'hook_markdown', 'run_hook_benchmark'
]
