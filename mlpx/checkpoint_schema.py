"""Deprecated: the checkpoint schema moved to mlpx.saving.schema.

This path keeps working, with a DeprecationWarning, for code written against earlier releases.
"""

import warnings

from .saving import schema

warnings.warn("mlpx.checkpoint_schema is deprecated; import mlpx.saving.schema instead",
              DeprecationWarning, stacklevel=2)
_MOVED_TO = (schema,)
#: the old name of the check of a record against a model's state spec
check_state = schema.check_record_fits_model


def __getattr__(name: str):
    for module in _MOVED_TO:
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
