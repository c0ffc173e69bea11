# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Drop mmengine's one WARNING per frozen parameter.

With a ``paramwise_cfg`` (SETR sets one to give heads a x10 learning rate),
mmengine 0.10.7's ``DefaultOptimWrapperConstructor.add_params`` logs
``"<name> is skipped since its requires_grad=False"`` for every frozen
parameter through ``print_log(logger='current')``, i.e. on
``MMLogger.get_current_instance()``: the latest ``MMLogger`` made by
``MMLogger.get_instance`` (the runner makes its own). Those parameters are
meant to be skipped; ``DAVPTHook`` / ``ParamReportHook`` log the
frozen/trainable totals once instead.
"""
import logging
import re

from mmengine.logging import MMLogger

__all__ = ['FrozenParamLogFilter', 'install_frozen_param_log_filter']


class FrozenParamLogFilter(logging.Filter):
    """Rejects exactly mmengine's "... is skipped since its
    requires_grad=False" records; passes every other record."""

    PATTERN = re.compile(r' is skipped since its requires_grad=False$')

    def filter(self, record: logging.LogRecord) -> bool:
        return self.PATTERN.search(record.getMessage()) is None


#: The one filter instance (``Logger.addFilter`` skips a filter it has).
FROZEN_PARAM_FILTER = FrozenParamLogFilter()

_get_instance = MMLogger.get_instance.__func__


def _get_instance_with_filter(cls, name: str, **kwargs) -> MMLogger:
    logger = _get_instance(cls, name, **kwargs)
    logger.addFilter(FROZEN_PARAM_FILTER)
    return logger


_GET_INSTANCE_WITH_FILTER = classmethod(_get_instance_with_filter)


def install_frozen_param_log_filter() -> None:
    """Add :data:`FROZEN_PARAM_FILTER` to the current ``MMLogger`` and to
    every ``MMLogger`` that ``MMLogger.get_instance`` returns from now on
    (it wraps that classmethod: the runner's logger is created later).
    Only earlier instances that are no longer current (which
    ``print_log(logger='current')`` no longer reaches) are left as they are.
    Idempotent."""
    if MMLogger.__dict__.get('get_instance') is not _GET_INSTANCE_WITH_FILTER:
        MMLogger.get_instance = _GET_INSTANCE_WITH_FILTER
    MMLogger.get_current_instance().addFilter(FROZEN_PARAM_FILTER)
