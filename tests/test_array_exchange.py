"""Inputs from PyTorch, JAX and CuPy (CPU and CUDA) read without copies, and outputs handed
to them through DLPack."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import cuda_skip_reason

import mlpx
from mlpx.preconditions import as_host_or_device


def _data(n=32):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 3)).astype(np.float32)
    # weights exact in float32: JAX keeps 32-bit numbers unless x64 is enabled
    return X, (X[:, 0] > 0).astype(np.int64), rng.random(n).astype(np.float32).astype(float)


def _fit(X, y, w):
    model = mlpx.MLP([3, 5, 2], seed=0)
    h = model.fit(X, y, loss="cross_entropy", lr=0.1, epochs=2, batch_size=8, verbose=0,
                  sample_weight=w, validation_data=(X, y))
    return model, h


def _same_training(X, y, w, Xf, yf, wf):
    """Training on foreign arrays gives the weights and history of NumPy arrays."""
    a, ha = _fit(X, y, w)
    b, hb = _fit(Xf, yf, wf)
    for p, q in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(p, q)
    assert ha.history == hb.history
    np.testing.assert_array_equal(a.predict(X), b.predict(Xf))
    assert a.evaluate(X, y) == b.evaluate(Xf, yf)


def test_pytorch_cpu_tensors_are_read_in_place_and_train_like_numpy():
    torch = pytest.importorskip("torch")
    X, y, w = _data()
    t = torch.from_numpy(X.copy())
    host = as_host_or_device(t, "X")
    assert isinstance(host, np.ndarray) and np.shares_memory(host, t.numpy())
    grad = torch.from_numpy(X.copy()).requires_grad_()
    assert np.shares_memory(as_host_or_device(grad, "X"), grad.detach().numpy())
    _same_training(X, y, w, t, torch.from_numpy(y), torch.from_numpy(w))
    np.testing.assert_array_equal(mlpx.to_numpy(grad), X)


def test_jax_cpu_arrays_are_read_in_place_and_train_like_numpy():
    jax = pytest.importorskip("jax")
    # placed on JAX's CPU device explicitly: with its CUDA plugin, JAX puts new arrays on
    # the GPU by default
    cpu = jax.devices("cpu")[0]
    X, y, w = _data()
    j = jax.device_put(X, cpu)
    assert j.devices() == {cpu}
    host = as_host_or_device(j, "X")
    assert isinstance(host, np.ndarray) and np.shares_memory(host, np.from_dlpack(j))
    _same_training(X, y, w, j, jax.device_put(y.astype(np.int32), cpu),
                   jax.device_put(w.astype(np.float32), cpu))


def test_outputs_reach_pytorch_and_jax_without_a_copy():
    torch = pytest.importorskip("torch")
    X, y, _ = _data()
    model, _ = _fit(X, y, None)
    out = model.predict(X, device=True)
    t = torch.from_dlpack(out)
    assert t.data_ptr() == out.ctypes.data and t.shape == (32, 2)
    np.testing.assert_array_equal(t.numpy(), model.predict(X))
    proba = torch.from_dlpack(model.predict_proba(X, device=True))
    np.testing.assert_allclose(proba.sum(dim=1).numpy(), 1.0, rtol=1e-6)
    jax_dlpack = pytest.importorskip("jax.dlpack")
    np.testing.assert_array_equal(np.asarray(jax_dlpack.from_dlpack(out)), model.predict(X))


def test_unsupported_tensor_dtypes_get_a_clear_error():
    torch = pytest.importorskip("torch")
    X, y, _ = _data()
    model = mlpx.MLP([3, 2], seed=0)
    with pytest.raises(TypeError, match=r"X could not be converted.*tensor\.float\(\)"):
        model.fit(torch.from_numpy(X).to(torch.bfloat16), y, loss="cross_entropy", verbose=0)


# ------------------------------------------------------------------------------ CUDA arrays
needs_gpu = pytest.mark.skipif(cuda_skip_reason() is not None,
                               reason=cuda_skip_reason() or "")


@pytest.mark.cuda
@needs_gpu
def test_cuda_tensors_and_cupy_arrays_are_used_in_place():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("this PyTorch build has no CUDA support")
    import cupy

    X, y, w = _data()
    t = torch.from_numpy(X).cuda()
    dev = as_host_or_device(t, "X")
    assert isinstance(dev, cupy.ndarray) and dev.data.ptr == t.data_ptr()
    c = cupy.asarray(X)
    assert as_host_or_device(c, "X") is c
    ref = mlpx.MLP([3, 5, 2], backend="cuda", seed=0)
    ref.fit(X, y, loss="cross_entropy", epochs=2, batch_size=8, verbose=0, sample_weight=w)
    for Xf, yf, wf in [(t, torch.from_numpy(y).cuda(), torch.from_numpy(w).cuda()),
                       (c, cupy.asarray(y), cupy.asarray(w))]:
        m = mlpx.MLP([3, 5, 2], backend="cuda", seed=0)
        m.fit(Xf, yf, loss="cross_entropy", epochs=2, batch_size=8, verbose=0,
              sample_weight=wf)
        for p, q in zip(ref.get_weights(), m.get_weights(), strict=True):
            np.testing.assert_allclose(p, q, rtol=1e-6, atol=1e-7)
    out = ref.predict(t, device=True)
    back = torch.from_dlpack(out)
    assert back.is_cuda and back.data_ptr() == out.data.ptr
    np.testing.assert_allclose(back.cpu().numpy(), ref.predict(X), rtol=1e-6, atol=1e-6)
    # a CPU model takes CUDA inputs too (copied to the host once)
    cpu = mlpx.MLP([3, 5, 2], seed=0)
    np.testing.assert_allclose(cpu.predict(t), cpu.predict(X))
