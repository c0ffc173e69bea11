# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Importing this module runs :func:`davpt_seg.compat.install`.

For configs run by stock launchers, which import ``custom_imports`` but call
nothing::

    custom_imports = dict(imports=['davpt_seg', 'davpt_seg.compat.enable'],
                          allow_failed_imports=False)
"""
from davpt_seg.compat import install

install()
