"""Where a warning should point: the user's line, however deep inside mlpx it is raised."""

from __future__ import annotations

import os
import sys

_ROOT = os.path.dirname(os.path.abspath(__file__)) + os.sep  # the mlpx package


def caller_level() -> int:
    """The warnings stacklevel, for the function that calls this one, of the first frame
    outside the mlpx package (a fixed stacklevel breaks whenever a call path gets deeper:
    a callback's warning reached through fit's epoch loop pointed into mlpx itself)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_ROOT):
        frame, level = frame.f_back, level + 1
    return level
