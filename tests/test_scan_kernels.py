"""The whole-array scans of `fit`'s input checks (mlpx.backends.scan_kernels): the same
answers as NumPy's, for every layout and any position of a bad value."""

from __future__ import annotations

import numpy as np
import pytest

from mlpx.backends import scan_kernels


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", [0, 1, 40_000, 99_999])
def test_all_finite_finds_a_single_bad_value_anywhere(dtype, bad, where):
    x = np.random.default_rng(0).standard_normal(100_000).astype(dtype).reshape(1000, 100)
    assert scan_kernels.all_finite(x)
    x.reshape(-1)[where] = bad
    assert not scan_kernels.all_finite(x)


def test_all_finite_takes_every_layout():
    x = np.arange(60_000, dtype=np.float32).reshape(300, 200)
    x[7, 3] = np.nan
    for view in (x, np.asfortranarray(x), x[:, ::2], x.T, x[::3]):
        assert scan_kernels.all_finite(view) == bool(np.isfinite(view).all())
    assert scan_kernels.all_finite(x[8:])
    assert scan_kernels.all_finite(np.empty((0, 5), np.float32))


def test_all_finite_keeps_large_finite_values():
    """max float and subnormals are finite: v - v is 0 for them."""
    x = np.full((100, 100), np.finfo(np.float32).max, np.float32)
    x[0, :50] = np.finfo(np.float32).smallest_subnormal
    assert scan_kernels.all_finite(x)


@pytest.mark.parametrize("step", [1, 3, 16])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_scan_statistics_match_numpy(monkeypatch, step, threads):
    monkeypatch.setattr(scan_kernels, "PARALLEL_MIN", 1000)
    monkeypatch.setattr(scan_kernels, "get_num_threads", lambda: threads)
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((500, 30)) * rng.uniform(0.1, 100, 30)).astype(np.float32)
    found = scan_kernels.scan(x, step)
    rows = x[::step].astype(np.float64)
    assert found.finite
    np.testing.assert_allclose(found.rms, np.sqrt((rows * rows).mean(axis=0)), rtol=1e-12)
    np.testing.assert_array_equal(found.top, np.abs(rows).max(axis=0))
    # any layout: a Fortran-ordered copy and a strided view read the same values
    for other in (np.asfortranarray(x), np.repeat(x, 2, axis=1)[:, ::2]):
        again = scan_kernels.scan(other, step)
        np.testing.assert_allclose(again.rms, found.rms, rtol=1e-12)
        np.testing.assert_array_equal(again.top, found.top)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_scan_finds_a_bad_value_in_any_row(monkeypatch, threads):
    monkeypatch.setattr(scan_kernels, "PARALLEL_MIN", 1000)
    monkeypatch.setattr(scan_kernels, "get_num_threads", lambda: threads)
    x = np.zeros((100, 100), np.float64)
    assert scan_kernels.scan(x, 7).finite
    for where in ((0, 0), (33, 5), (50, 99), (67, 1), (99, 99)):
        for bad in (np.nan, np.inf):
            y = x.copy()
            y[where] = bad
            assert not scan_kernels.scan(y, 7).finite, where
            assert not scan_kernels.scan(np.asfortranarray(y), 7).finite, where


@pytest.mark.parametrize("threads", [2, 3])
def test_all_finite_shared_between_threads_sees_every_part(monkeypatch, threads):
    monkeypatch.setattr(scan_kernels, "PARALLEL_MIN", 1000)
    monkeypatch.setattr(scan_kernels, "get_num_threads", lambda: threads)
    x = np.zeros((100, 100), np.float32)
    assert scan_kernels.all_finite(x)
    for where in (0, 3333, 5000, 6667, 9999):
        y = x.copy()
        y.reshape(-1)[where] = np.nan
        assert not scan_kernels.all_finite(y), where
