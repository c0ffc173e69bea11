# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Analysis helpers behind ``tools/visualize_prompts.py``,
``tools/visualize_mapping.py``, ``tools/prompt_attention_metric.py`` and
``tools/plot_logs.py``: ``loading`` (model / image / annotation / mapping),
``prompt_attention`` (maps and the attention-precision metric), ``figures``
(matplotlib, imported only by the tools that draw) and ``logs`` (scalar
logs). Nothing here is imported by ``import davpt_seg``."""
