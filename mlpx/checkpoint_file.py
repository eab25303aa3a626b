"""Deprecated: the checkpoint container moved to mlpx.saving.container.

This path keeps working, with a DeprecationWarning, for code written against earlier releases.
"""

import warnings

from .saving import container

warnings.warn("mlpx.checkpoint_file is deprecated; import mlpx.saving.container instead",
              DeprecationWarning, stacklevel=2)
_MOVED_TO = (container,)


def __getattr__(name: str):
    for module in _MOVED_TO:
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
