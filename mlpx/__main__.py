"""`python -m mlpx`: the same command line as the `mlpx` script (demo, bench, check, info)."""

import sys

from .cli import main

sys.exit(main())
