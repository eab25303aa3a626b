"""Deprecated path of `mlpx.commands.cli`.

`main` stays here without a warning: `mlpx` scripts installed before the move import
`mlpx.cli:main`, and their users should not see a warning meant for programmers. Any other
name warns and comes from `mlpx.commands.cli`.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any


def main(argv: list[str] | None = None) -> int:
    """The `mlpx` command line (see mlpx.commands.cli.main)."""
    from .commands.cli import main as run

    return run(argv)


def __getattr__(name: str) -> Any:
    if name.startswith("__"):  # the import system's probes (__path__, ...) are not a use
        raise AttributeError(name)
    warnings.warn("mlpx.cli has moved to mlpx.commands.cli; import mlpx.commands.cli instead "
                  "(the old path will be removed in a future release)", DeprecationWarning,
                  stacklevel=2)
    return getattr(importlib.import_module("mlpx.commands.cli"), name)


if __name__ == "__main__":
    import sys

    sys.exit(main())
