"""Deprecated: the checkpoint format moved to mlpx.saving.

This path keeps working, with a DeprecationWarning, for code written against earlier releases.
"""

import warnings

from .saving import arrays, container, writer

warnings.warn("mlpx.checkpoint is deprecated; import mlpx.saving instead", DeprecationWarning,
              stacklevel=2)
_MOVED_TO = (container, arrays, writer)


def __getattr__(name: str):
    for module in _MOVED_TO:
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
