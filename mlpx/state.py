"""Deprecated: checkpoint records and state-dict checks moved to mlpx.saving.records.

This path keeps working, with a DeprecationWarning, for code written against earlier releases.
"""

import warnings
from typing import Any

import numpy as np

from . import history
from .saving import records, schema

warnings.warn("mlpx.state is deprecated; import mlpx.saving.records instead", DeprecationWarning,
              stacklevel=2)
_MOVED_TO = (records, history)
#: the old name of the check of a state dict against a model's declaration
check_state = records.check_state_dict


def check_record(record: Any, spec: dict, params: list[str], dtype: Any, path: str) -> None:
    """The old name and signature of `mlpx.saving.schema.check_record_fits_model`."""
    schema.check_record_fits_model(record, spec, params, np.dtype(dtype), path)


def __getattr__(name: str):
    for module in _MOVED_TO:
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
