"""`python -m mlpx`: the same command line as the `mlpx` script (see `mlpx --help`)."""

import sys

from .commands.cli import main

sys.exit(main())
