"""The warning `fit` gives when inputs look unscaled.

Networks initialised for inputs of unit scale train badly on raw features: pixel values in
0..255 saturate or blow up the first layer, and a feature measured in thousands next to one
in fractions leaves one of them ignored by plain SGD. Two statistics of (a strided sample
of) the training inputs, chosen so that they do not fire on standardised data, however
heavy-tailed, nor on one-hot, binary or min-max scaled columns:

- the largest per-feature root mean square: 1 for a standardised feature (whatever its
  outliers), at most 1 for binary and [0, 1] columns; raw pixels reach ~100;
- the spread of per-feature ranges (max |x|): 1 for every binary column whatever its rarity,
  a few to a few dozen for standardised ones; raw mixed units reach 1e3 and beyond.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

import numpy as np

from .errors import UnscaledInputWarning
from .preconditions import is_device_array

#: a feature whose root mean square exceeds this is far from unit scale
RMS_LIMIT = 20.0
#: largest / smallest per-feature range (max |x|) beyond which scales are "far apart"
RANGE_RATIO_LIMIT = 1e3
#: rows looked at (evenly spaced): enough for stable statistics, and a fixed cost (about 1 ms
#: for 784 features) however large the data, so `fit` pays it on every call without noticing
SAMPLE_ROWS = 1024


def scale_report(X: Any) -> str | None:
    """Why X looks unscaled (None when it does not); remembered for an unchanged large array
    (mlpx.array_memo)."""
    from .array_memo import input_scan, remembered

    if type(X) is np.ndarray and X.dtype in (np.float32, np.float64) and X.ndim == 2:
        found = input_scan(X)  # the finite-input check's pass: no second read
        return _report(found.rms, found.top)
    return remembered(X, "scale_report", _scale_report)


def _scale_report(X: Any) -> str | None:
    n = X.shape[0]
    rows = X if n <= SAMPLE_ROWS else X[:: -(-n // SAMPLE_ROWS)]
    if is_device_array(rows):
        xp = sys.modules["cupy"]
        rows = xp.asarray(rows, dtype=xp.float64)
        rms = xp.sqrt((rows * rows).mean(axis=0)).get()
        top = xp.abs(rows).max(axis=0).get()
    else:
        rows = np.asarray(rows, dtype=np.float64)
        rms = np.sqrt((rows * rows).mean(axis=0))
        top = np.abs(rows).max(axis=0)
    return _report(rms, top)


def _report(rms: np.ndarray, top: np.ndarray) -> str | None:
    j = int(rms.argmax())
    if rms[j] > RMS_LIMIT:
        return (f"feature {j} has a root mean square of {rms[j]:.3g} (values up to "
                f"{top.max():.3g} in magnitude), far above 1")
    used = np.flatnonzero(top > 0)
    if used.size >= 2:
        hi, lo = used[top[used].argmax()], used[top[used].argmin()]
        if top[hi] > RANGE_RATIO_LIMIT * top[lo]:
            return (f"feature scales are far apart: feature {hi} reaches {top[hi]:.3g}, "
                    f"feature {lo} only {top[lo]:.3g}")
    return None


def warn_if_unscaled(X: Any, stacklevel: int) -> None:
    """An UnscaledInputWarning when X looks unscaled (`stacklevel` as in warnings.warn)."""
    why = scale_report(X)
    if why is not None:
        warnings.warn(
            f"the training inputs look unscaled: {why}. Networks train badly (slowly, or "
            "into dead units) on such inputs; standardise them, e.g. "
            "sc = mlpx.Standardizer().fit(X_train); X_train = sc.transform(X_train) (or "
            "scikit-learn's StandardScaler), and apply the same transform to validation and "
            "test data. Silence with warnings.filterwarnings('ignore', "
            "category=mlpx.UnscaledInputWarning)",
            UnscaledInputWarning, stacklevel=stacklevel + 1,
        )
