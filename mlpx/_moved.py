"""Old import paths of moved modules: each stays importable and warns where it is imported."""

from __future__ import annotations

import importlib
import sys
import warnings


def alias_module(old: str, new: str) -> None:
    """Make `old` the module `new` in sys.modules (one object, so patching either patches
    both) and warn the importer that the path has moved."""
    warnings.warn(f"{old} has moved to {new}; import {new} instead (the old path will be "
                  "removed in a future release)", DeprecationWarning, stacklevel=3)
    sys.modules[old] = importlib.import_module(new)
