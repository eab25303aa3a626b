"""Dropout and its counter-based generator (Philox-4x32-10)."""

from __future__ import annotations

import numpy as np
import pytest

import mlpx
from mlpx.layers import Dense, Dropout, Residual
from mlpx.random import drop_threshold, philox4x32, random_bits, uniform


@pytest.mark.parametrize(
    "counter, key, expected",
    [  # known-answer vectors of the Random123 distribution (kat_vectors, philox4x32_10)
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        (
            (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
            (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
        ),
    ],
)
def test_philox_known_answers(counter, key, expected):
    assert tuple(int(w) for w in philox4x32(np, counter, key)) == expected


def test_random_bits_layout_and_independence():
    bits = random_bits(np, 10, seed=5, stream=2, step=7)
    assert bits.dtype == np.uint32 and bits.shape == (10,)
    # element 4b + j is word j of block b: any prefix or element is computable on its own
    block2 = philox4x32(np, (2, 2, 7, 0), (5, 0))
    assert [int(w) for w in block2][:2] == [int(b) for b in bits[8:10]]
    np.testing.assert_array_equal(random_bits(np, 4, 5, 2, 7), bits[:4])
    assert not np.array_equal(random_bits(np, 10, 5, 3, 7), bits)  # other stream
    assert not np.array_equal(random_bits(np, 10, 5, 2, 8), bits)  # other step
    assert not np.array_equal(random_bits(np, 10, 6, 2, 7), bits)  # other seed
    # 64-bit seeds and steps use the high words too
    assert not np.array_equal(random_bits(np, 10, 5 + 2**32, 2, 7), bits)
    assert not np.array_equal(random_bits(np, 10, 5, 2, 7 + 2**32), bits)


def test_uniforms_look_uniform():
    u = uniform(np, 200_000, seed=1, stream=0, step=0)
    assert 0.0 <= u.min() and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 4 * np.sqrt(1 / 12 / u.size)
    hist = np.histogram(u, bins=20, range=(0, 1))[0]
    expected = u.size / 20
    chi2 = (((hist - expected) ** 2) / expected).sum()
    assert chi2 < 50  # 19 degrees of freedom: p ~ 1e-4


def test_drop_threshold():
    assert drop_threshold(0.0) == 0
    assert drop_threshold(0.5) == 2**31
    assert drop_threshold(0.999999999999) == 2**32 - 1


def _model(backend, p=0.3, seed=0, width=64):
    return mlpx.Sequential([Dense(width), Dropout(p), Dense(3)], input_dim=5, backend=backend,
                           dtype="float64", seed=seed)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_drops_the_fraction_and_keeps_the_mean(backend, p):
    layer = Dropout(p)
    layer.build(500, mlpx.get_backend(backend), np.float64, np.random.default_rng(0))
    x = np.full((400, 500), 2.0)
    n = x.size
    y = mlpx.to_numpy(layer.forward(layer.ops.asarray(x), training=True))
    dropped = np.mean(y == 0)
    sd = np.sqrt(p * (1 - p) / n)
    assert abs(dropped - p) < 5 * sd, (dropped, p)
    # kept units are scaled by 1 / (1 - p), so the mean is kept
    np.testing.assert_allclose(np.unique(y[y != 0]), [2.0 / (1 - p)], rtol=1e-15)
    mean_sd = 2.0 * np.sqrt(p / (1 - p) / n)
    assert abs(y.mean() - 2.0) < 5 * mean_sd


def test_dropout_is_identity_at_inference(backend):
    model = _model(backend, p=0.5)
    X = np.random.default_rng(0).normal(size=(32, 5))
    layer = model.layers[1]
    h = model.layers[0].forward(model.ops.asarray(X), training=False)
    assert layer.forward(h, training=False) is h
    a = model.predict(X)
    b = model.predict(X)
    np.testing.assert_array_equal(a, b)
    assert layer.step == 0  # inference draws no masks


def test_same_seed_same_masks_and_masks_change_per_step(backend):
    X = np.random.default_rng(0).normal(size=(32, 5))
    runs = []
    for _ in range(2):
        model = _model(backend, seed=11)
        outs = [model.ops.to_numpy(model.forward(model.ops.asarray(X), training=True)).copy()
                for _ in range(3)]
        runs.append(outs)
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(runs[0][0], runs[0][1])  # a new mask every step
    other = _model(backend, seed=12)
    other.set_weights(_model(backend, seed=11).get_weights())
    out = other.ops.to_numpy(other.forward(other.ops.asarray(X), training=True))
    assert not np.array_equal(out, runs[0][0])  # another seed, other masks


def test_cpu_masks_equal_reference_backend_masks():
    """The cpu backend and the reference (pure xp) backend draw identical masks."""
    masks = []
    for name in ("cpu", "reference"):
        layer = Dropout(0.37)
        layer.build(33, mlpx.get_backend(name), np.float32, np.random.default_rng(0))
        layer.set_random_key(seed=123, stream=4)
        layer.step = 2**33 + 5
        layer.forward(layer.ops.asarray(np.ones((17, 33), np.float32)), training=True)
        masks.append(mlpx.to_numpy(layer._mask).copy())
    np.testing.assert_array_equal(*masks)


def test_mask_is_a_function_of_seed_stream_and_step():
    layer = Dropout(0.5)
    layer.build(8, mlpx.get_backend("cpu"), np.float64, np.random.default_rng(0))
    layer.set_random_key(seed=9, stream=1)
    layer.step = 4
    y = layer.forward(np.ones((4, 8)), training=True)
    keep = random_bits(np, 32, 9, 1, 4).reshape(4, 8) >= drop_threshold(0.5)
    np.testing.assert_array_equal(y != 0, keep)
    assert layer.step == 5


def test_layers_get_distinct_streams_depth_first():
    d1, d2, d3 = Dropout(0.5), Dropout(0.5), Dropout(0.5)
    mlpx.Sequential([Dense(4), d1, Residual([Dense(4), d2]), d3], input_dim=4, seed=3)
    assert (d1.seed, d2.seed, d3.seed) == (3, 3, 3)
    assert len({d1.stream, d2.stream, d3.stream}) == 3
    assert d1.stream < d2.stream < d3.stream


def test_dropout_rejects_bad_p():
    for p in (-0.1, 1.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            Dropout(p)
    with pytest.raises(TypeError):
        Dropout("0.5")


def test_training_with_dropout_is_reproducible(backend):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(128, 5)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    weights = []
    for _ in range(2):
        m = mlpx.Sequential([Dense(16, activation="relu"), Dropout(0.2), Dense(2)],
                            input_dim=5, backend=backend, seed=4)
        m.fit(X, y, loss="cross_entropy", lr=0.1, epochs=2, batch_size=32, verbose=0)
        weights.append(m.get_weights())
    for a, b in zip(*weights, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (64, 129)])
@pytest.mark.parametrize("p", [0.05, 0.5, 0.93])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cpu_dropout_kernels_equal_the_reference_bitwise(shape, p, dtype):
    x = np.random.default_rng(1).normal(size=shape).astype(dtype)
    outs = []
    for name in ("cpu", "reference"):
        layer = Dropout(p)
        layer.build(shape[1], mlpx.get_backend(name), dtype, np.random.default_rng(0))
        layer.set_random_key(seed=2**40 + 17, stream=3)
        y = mlpx.to_numpy(layer.forward(layer.ops.asarray(x), training=True)).copy()
        dx = mlpx.to_numpy(layer.backward(layer.ops.asarray(x))).copy()
        outs.append((y, dx))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])
