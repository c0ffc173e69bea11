from . import backbones, davpt, losses, segmentors  # noqa: F401  (registration)
