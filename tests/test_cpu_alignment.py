"""The cpu backend allocates 64-byte aligned arrays: parameters, gradients, optimiser state,
layer work arrays and the batch buffers (OpenBLAS runs the step's GEMMs 2-6 % faster on
them; benchmarks/test_aligned_gemm.py)."""

from __future__ import annotations

import numpy as np
import pytest

import mlpx
from mlpx.backends.gemm_plumbing import _ALIGN_MIN_BYTES, ALIGNMENT, aligned_empty

CPU = mlpx.get_backend("cpu")


def _aligned(a: np.ndarray) -> bool:
    return a.ctypes.data % ALIGNMENT == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.uint8])
@pytest.mark.parametrize("shape", [(4096,), (1, 1024), (257, 1023), (3, 5, 700), 5000])
def test_aligned_empty(shape, dtype):
    a = aligned_empty(shape, dtype)
    want = (shape,) if isinstance(shape, int) else shape
    assert a.shape == want and a.dtype == dtype
    assert a.flags.c_contiguous and a.flags.writeable
    assert _aligned(a) or a.nbytes < _ALIGN_MIN_BYTES
    a[...] = 7  # the whole extent is writable and independent of other arrays
    assert (a == 7).all()
    assert not np.shares_memory(a, aligned_empty(shape, dtype))


@pytest.mark.parametrize("shape", [(0,), (0, 10), (3,), (2, 3)])
def test_small_and_empty_arrays_are_plain(shape):
    a = aligned_empty(shape, np.float32)
    assert a.shape == shape and a.nbytes < _ALIGN_MIN_BYTES


def test_backend_allocations_are_aligned_and_zeroed():
    z = CPU.zeros((300, 17), np.float32)
    assert _aligned(z) and not z.any()
    src = np.arange(5000, dtype=np.float64)[::2]  # not contiguous
    c = CPU.copy(src)
    assert _aligned(c) and c.flags.c_contiguous
    np.testing.assert_array_equal(c, src)


def _large(arrays):
    return [a for a in arrays if isinstance(a, np.ndarray) and a.nbytes >= _ALIGN_MIN_BYTES]


def _model_arrays(model):
    out = []
    for _path, layer in model.walk():
        for p in layer.parameters():
            out += [p.data, p.grad]
        out += list(layer.buffers().values()) + list(layer._ws.values())
    return out


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_trained_model_state_is_aligned(optimizer, rng):
    X = rng.standard_normal((200, 40)).astype(np.float32)
    y = rng.integers(0, 3, 200)
    model = mlpx.Sequential([mlpx.Dense(64, "relu"), mlpx.BatchNorm(), mlpx.Dense(3)],
                            backend="cpu", seed=0)
    model.fit(X, y, loss="cross_entropy", optimizer=optimizer, epochs=2, batch_size=64,
              verbose=0)
    arrays = _large(_model_arrays(model))
    assert len(arrays) >= 6  # W, grad, work arrays of both Dense layers at least
    assert all(_aligned(a) for a in arrays)
    slots = [v for s in model.optimizer_.state for v in s.values()]
    assert all(_aligned(a) for a in _large(slots))


def test_alignment_survives_loading_and_moving(tmp_path, rng):
    model = mlpx.MLP([30, 50, 4], backend="cpu", seed=0)
    other = mlpx.MLP([30, 50, 4], backend="reference", seed=1)  # NumPy's own allocations
    model.load_state_dict(other.state_dict())
    assert all(_aligned(a) for a in _large(_model_arrays(model)))
    other.to("cpu")
    assert all(_aligned(a) for a in _large(_model_arrays(other)))
    path = tmp_path / "m.mlpx"
    model.save(path)
    loaded = mlpx.load(path)
    assert all(_aligned(a) for a in _large(_model_arrays(loaded)))
