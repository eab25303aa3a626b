"""`python -m mlpx`: the same command line as the `mlpx` script (see `mlpx --help`)."""

import sys

from .cli import main

sys.exit(main())
