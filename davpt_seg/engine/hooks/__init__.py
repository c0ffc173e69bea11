from .checkpoint_check_hook import (CheckpointShapeCheckHook,
                                    checkpoint_mismatches)
from .davpt_hook import DAVPTHook
from .prompt_checkpoint_hook import (PromptOnlyCheckpointHook,
                                     frozen_backbone_keys, make_prompt_only)
from .param_report_hook import (ParamReportHook, format_parameter_report,
                                parameter_report)

__all__ = ['DAVPTHook', 'ParamReportHook', 'parameter_report',
           'format_parameter_report', 'PromptOnlyCheckpointHook',
           'frozen_backbone_keys', 'make_prompt_only',
           'CheckpointShapeCheckHook', 'checkpoint_mismatches']
