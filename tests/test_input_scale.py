"""The unscaled-input warning: fires on raw pixels and mixed units, and stays silent on
standardised (however heavy-tailed), min-max scaled, one-hot and binary data."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import mlpx
from mlpx.input_scale import scale_report


def _standardise(X):
    return (X - X.mean(axis=0)) / X.std(axis=0)


def _quiet_cases():
    rng = np.random.default_rng(0)
    cases = {}
    for n in (50, 20_000):
        cases[f"normal-{n}"] = _standardise(rng.standard_normal((n, 10)))
        cases[f"student-t-1.5-{n}"] = _standardise(rng.standard_t(1.5, (n, 10)))
        cases[f"lognormal-{n}"] = _standardise(rng.lognormal(0.0, 2.0, (n, 10)))
        cases[f"min-max-{n}"] = rng.random((n, 10))
        onehot = np.eye(40)[rng.integers(0, 40, n)]
        rare = (rng.random((n, 4)) < 1e-4).astype(float)
        cases[f"one-hot+standardised+rare-binary-{n}"] = np.hstack(
            [onehot, _standardise(rng.standard_normal((n, 5))), rare])
        cases[f"binary-{n}"] = (rng.random((n, 30)) < rng.random(30) * 0.02).astype(float)
        outlier = np.vstack([rng.standard_normal((n - 1, 3)), [[1e3, 1e3, 1e3]]])
        cases[f"standardised-with-an-outlier-{n}"] = _standardise(outlier)
    cases["pixels/255"] = rng.integers(0, 256, (500, 64)) / 255.0
    cases["small-counts"] = rng.poisson(3.0, (500, 8)).astype(float)
    return cases


QUIET = _quiet_cases()


@pytest.mark.parametrize("name", sorted(QUIET))
def test_silent_on_scaled_data(name):
    assert scale_report(QUIET[name]) is None


def test_silent_on_scikit_learn_data_sets_that_train_as_they_are():
    datasets = pytest.importorskip("sklearn.datasets")
    for load in (datasets.load_iris, datasets.load_digits, datasets.load_diabetes):
        assert scale_report(load().data) is None, load.__name__


def test_fires_on_raw_pixels_and_far_apart_scales():
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (300, 50)).astype(float)
    assert "root mean square" in scale_report(pixels)
    mixed = np.hstack([_standardise(rng.normal(size=(300, 2))),
                       1e-4 * _standardise(rng.normal(size=(300, 1)))])
    assert "far apart" in scale_report(mixed)
    years = 2000 + rng.integers(0, 20, (300, 1))
    assert scale_report(years.astype(float)) is not None


def test_fit_warns_at_the_callers_line_and_names_the_fix():
    rng = np.random.default_rng(2)
    X, y = rng.integers(0, 256, (64, 5)).astype(np.float32), rng.integers(0, 2, 64)
    model = mlpx.MLP([5, 2], seed=0)
    with pytest.warns(mlpx.UnscaledInputWarning, match="Standardizer") as record:
        model.fit(X, y, loss="cross_entropy", verbose=0)
    assert record[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.fit(mlpx.Standardizer().fit(X).transform(X), y, verbose=0)


def test_reads_a_fixed_size_sample_of_large_inputs(monkeypatch):
    import mlpx.input_scale as input_scale
    from mlpx.backends import scan_kernels

    seen = []  # rows each path reads
    real_asarray, real_scan = np.asarray, scan_kernels.scan

    def spy_asarray(a, *args, **kwargs):
        seen.append(np.shape(a)[0])
        return real_asarray(a, *args, **kwargs)

    def spy_scan(x, step):
        seen.append(-(-x.shape[0] // step))
        return real_scan(x, step)

    monkeypatch.setattr(input_scale.np, "asarray", spy_asarray)
    monkeypatch.setattr(scan_kernels, "scan", spy_scan)
    X = np.random.default_rng(3).standard_normal((100_000, 6)).astype(np.float32)
    for data in (X, (X * 10).astype(np.int64)):  # the compiled scan, and NumPy's
        seen.clear()
        assert scale_report(data) is None
        assert seen and max(seen) <= 2048  # not a tenth of the rows
    X[::7, 2] *= 1e4  # a feature far from unit scale is still seen in the sample
    assert "feature 2" in scale_report(X)
