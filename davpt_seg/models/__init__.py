from . import backbones, losses, utils  # noqa: F401  (registration)
