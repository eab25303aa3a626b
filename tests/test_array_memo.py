"""Facts about a large input array are remembered between fit calls, never across a change
the fingerprint sees, nor for another array."""

from __future__ import annotations

import numpy as np
import pytest

import mlpx
from mlpx import array_memo


def _counting():
    calls = []

    def compute(a):
        calls.append(1)
        return bool(np.isfinite(a).all())

    return calls, compute


def _big(rows=4096, cols=300, seed=0):
    return np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32)


def test_same_unchanged_array_is_checked_once():
    X = _big()
    calls, compute = _counting()
    assert array_memo.remembered(X, "t-once", compute) is True
    assert array_memo.remembered(X, "t-once", compute) is True
    assert len(calls) == 1


def test_a_change_in_place_to_the_sampled_rows_is_checked_again():
    X = _big()
    calls, compute = _counting()
    array_memo.remembered(X, "t-change", compute)
    X[0, 0] = np.nan  # the first row is always in the fingerprint
    assert array_memo.remembered(X, "t-change", compute) is False
    X *= 0  # whole-array changes too
    X[0, 0] = 1
    assert array_memo.remembered(X, "t-change", compute) is True
    assert len(calls) == 3


def test_equal_copies_and_small_arrays_are_not_trusted():
    X = _big()
    calls, compute = _counting()
    array_memo.remembered(X, "t-copy", compute)
    array_memo.remembered(X.copy(), "t-copy", compute)  # another array object
    small = X[:10]
    array_memo.remembered(small, "t-copy", compute)
    array_memo.remembered(small, "t-copy", compute)
    assert len(calls) == 4


def test_fit_still_refuses_nan_put_into_an_array_it_has_seen():
    X = _big(rows=4096, cols=256)
    y = np.arange(4096) % 3
    model = mlpx.MLP([256, 3], seed=0)
    model.fit(X, y, loss="cross_entropy", epochs=0, verbose=0)
    X[-1, 5] = np.inf  # the last row is in the fingerprint
    with pytest.raises(ValueError, match="NaN or infinite"):
        model.fit(X, y, epochs=0, verbose=0)
