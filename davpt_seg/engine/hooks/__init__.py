from .checkpoint_check_hook import (CheckpointShapeCheckHook,
                                    checkpoint_mismatches)
from .davpt_hook import DAVPTHook
from .prompt_checkpoint_hook import PromptOnlyCheckpointHook
from .param_report_hook import (ParamReportHook, format_parameter_report,
                                parameter_report)

__all__ = ['DAVPTHook', 'ParamReportHook', 'parameter_report',
           'format_parameter_report', 'PromptOnlyCheckpointHook',
           'CheckpointShapeCheckHook', 'checkpoint_mismatches']
