from . import backbones, losses, segmentors, utils  # noqa: F401  (registration)
