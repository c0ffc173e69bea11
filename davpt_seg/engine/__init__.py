from . import hooks  # noqa: F401  (registration)
from .optim_log import install_frozen_param_log_filter

__all__ = ['install_frozen_param_log_filter']
