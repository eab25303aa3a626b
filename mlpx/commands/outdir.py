"""The output directory of a command, checked before any work starts (train, demo)."""

from __future__ import annotations

import os
from pathlib import Path


def check_out_dir(out: str | os.PathLike) -> Path:
    """`out` as a Path once it is, or can be created as, a writable directory; raises
    NotADirectoryError or PermissionError saying which path is in the way."""
    path = Path(out)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        where = "it is" if existing == path else f"{str(existing)!r} is"
        raise NotADirectoryError(f"cannot write to {str(path)!r}: {where} a file, not a "
                                 "directory; choose another --out")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write to {str(path)!r}: no permission to create files "
                              f"in {str(existing)!r}; choose another --out")
    return path
