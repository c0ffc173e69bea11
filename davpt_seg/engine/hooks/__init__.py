from .davpt_hook import DAVPTHook
from .param_report_hook import (ParamReportHook, format_parameter_report,
                                parameter_report)

__all__ = ['DAVPTHook', 'ParamReportHook', 'parameter_report',
           'format_parameter_report']
