"""Where Numba caches compiled kernels.

Numba writes its cache next to the source by default, which fails on read-only installs
(site-packages owned by root, containers). Unless the user chose a directory with
NUMBA_CACHE_DIR, mlpx points Numba at a per-user cache directory (MLPX_CACHE_DIR, or
$XDG_CACHE_HOME/mlpx, or ~/.cache/mlpx).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def cache_root() -> Path:
    explicit = os.environ.get("MLPX_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mlpx"


def configure_cache() -> None:
    """Set Numba's cache directory before Numba is imported (or patch it if it already is)."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    path = str(cache_root() / "numba")
    os.environ["NUMBA_CACHE_DIR"] = path
    if "numba" in sys.modules:  # numba read its config already: update it in place
        from numba.core import config

        if not config.CACHE_DIR:
            config.CACHE_DIR = path
