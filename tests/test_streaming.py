"""Training data that does not fit on the device: batch sources, streaming and its ordering.

The resident path runs for real on every backend. The cuda backend's streamed path (pinned
buffers, a copy stream, events) runs on the host emulation (tests/cuda_host.py), whose copy
stream executes copies only when something waits for them: a batch used before its copy is
waited for would hold stale data, and training would diverge from the resident path. On a
GPU the same checks run with CuPy.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import cuda_skip_reason

import mlpx
from mlpx.backends.batches import (
    RESIDENT_FRACTION,
    ResidentBatches,
    StreamedBatches,
    check_stream_data,
    data_nbytes,
)

cuda_host = pytest.importorskip("cuda_host")
needs_gxx = pytest.mark.skipif(
    not cuda_host.have_compiler(), reason="g++ not found: cannot build the kernels for the host"
)


@pytest.fixture(scope="module")
def libs(tmp_path_factory):
    if not cuda_host.have_compiler():
        pytest.skip("g++ not found: cannot build the kernels for the host")
    return cuda_host.build(tmp_path_factory.mktemp("cuda_host_stream"))


@pytest.fixture
def emu(libs):
    return cuda_host.HostEmulatedCUDABackend(libs)


def _data(rng, n=203, d=7, classes=3):
    return rng.standard_normal((n, d)), rng.integers(0, classes, n)


def _fit(backend, X, y, **kw):
    m = mlpx.MLP([X.shape[1], 16, 3], activation="tanh", backend=backend, seed=5,
                 dtype=kw.pop("dtype", "float32"))
    opts = dict(loss="cross_entropy", optimizer="adam", lr=0.01, epochs=3, batch_size=32,
                verbose=0)
    opts.update(kw)
    h = m.fit(X, y, **opts)
    return m, h


def _same_models(a, b):
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb, strict=True)


# ---------------------------------------------------------------------- the resident path
def test_resident_source_yields_the_shuffled_rows(rng):
    ops = mlpx.get_backend("cpu")
    X, y = rng.standard_normal((10, 3)), np.arange(10)
    src = ops.batch_source(X, y, 4, np.float32)
    assert isinstance(src, ResidentBatches) and not src.streamed
    assert (src.n, src.batch_size, src.steps) == (10, 4, 3)
    order = rng.permutation(10)
    got = [(xb.copy(), yb.copy()) for xb, yb in src.epoch(order)]
    assert [len(b[1]) for b in got] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b[1] for b in got]), order)
    np.testing.assert_array_equal(got[2][0], X[order[8:]].astype(np.float32))
    in_order = [yb.copy() for _, yb in src.epoch(None)]
    np.testing.assert_array_equal(np.concatenate(in_order), np.arange(10))


def test_host_backends_always_fit_and_ignore_stream_data(rng):
    X, y = _data(rng)
    assert mlpx.get_backend("cpu").fits_on_device(10**15)
    a, ha = _fit("cpu", X, y)
    b, hb = _fit("cpu", X, y, stream_data=True)
    _same_models(a, b)
    assert ha["loss"] == hb["loss"]


@pytest.mark.parametrize("bad", ["yes", 1, 0.5])
def test_stream_data_must_be_none_or_bool(rng, bad):
    X, y = _data(rng, n=20)
    with pytest.raises(TypeError, match="stream_data must be None"):
        _fit("cpu", X, y, stream_data=bad)
    assert check_stream_data(None) is None and check_stream_data(True) is True


def test_data_nbytes_counts_the_model_dtype():
    X = np.zeros((100, 8), np.float64)
    y = np.zeros(100, np.int64)
    assert data_nbytes(X, y, np.float32) == 100 * 8 * 4 + 100 * 8


# -------------------------------------------------------- the cuda backend's decision
@needs_gxx
def test_cuda_decides_from_free_memory(emu, rng):
    X, y = _data(rng, n=64)
    need = data_nbytes(X, y, np.float32)
    emu.free_bytes = int(need / RESIDENT_FRACTION) + 1
    assert emu.fits_on_device(need)
    assert isinstance(emu.batch_source(X, y, 16, np.float32), ResidentBatches)
    emu.free_bytes = int(need / RESIDENT_FRACTION) - 1
    assert not emu.fits_on_device(need)
    src = emu.batch_source(X, y, 16, np.float32)
    assert isinstance(src, StreamedBatches) and src.streamed
    # forcing wins over the decision, both ways
    assert isinstance(emu.batch_source(X, y, 16, np.float32, stream=False), ResidentBatches)
    emu.free_bytes = 10**12
    assert isinstance(emu.batch_source(X, y, 16, np.float32, stream=True), StreamedBatches)


def test_free_bytes_counts_the_memory_pool():
    from types import SimpleNamespace

    from mlpx.backends.cuda import CUDABackend

    fake = SimpleNamespace(
        _device=SimpleNamespace(mem_info=(1000, 8000)),
        xp=SimpleNamespace(get_default_memory_pool=lambda: SimpleNamespace(free_bytes=lambda: 24)),
    )
    assert CUDABackend._free_bytes(fake) == 1024


# ------------------------------------------------ streamed == resident, bit for bit
@needs_gxx
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shuffle", [True, False])
def test_streamed_fit_equals_resident_fit_bitwise(emu, rng, dtype, shuffle):
    X, y = _data(rng)  # 203 rows, batch 32: a last batch of 11
    Xv, yv = _data(rng, n=50)
    runs = {}
    for mode in (False, True):
        runs[mode] = _fit(emu, X, y, dtype=dtype, shuffle=shuffle, stream_data=mode,
                          validation_data=(Xv, yv), clip_norm=1.0)
        if mode:
            assert emu.runtime is not None and any(e[0] == "copy" for e in emu.runtime.log)
    _same_models(runs[False][0], runs[True][0])
    assert runs[False][1]["loss"] == runs[True][1]["loss"]
    assert runs[False][1]["val_loss"] == runs[True][1]["val_loss"]


@needs_gxx
def test_fit_streams_by_itself_when_the_data_does_not_fit(emu, rng):
    X, y = _data(rng)
    resident, _ = _fit(emu, X, y)
    assert emu.runtime is None
    emu.free_bytes = 1000  # far less than twice the 7 kB of data
    streamed, _ = _fit(emu, X, y)
    assert emu.runtime is not None and emu.runtime.log, "fit did not stream"
    _same_models(resident, streamed)
    # evaluate and predict of data that does not fit go through the device in batches
    emu.free_bytes = 80 * 1024**3
    want = resident.evaluate(X, y, batch_size=50)
    emu.free_bytes = 1000
    assert streamed.evaluate(X, y, batch_size=50) == want
    np.testing.assert_array_equal(streamed.predict(X, batch_size=50), resident.predict(X))


@needs_gxx
def test_skipping_the_wait_for_a_copy_is_caught(emu, rng, monkeypatch):
    """The emulation is strict enough to fail a source that uses a batch before its copy."""
    _waits = cuda_host.FakeStream.wait_event
    X, y = _data(rng)
    resident, _ = _fit(emu, X, y, stream_data=False)
    monkeypatch.setattr(cuda_host.FakeStream, "wait_event", lambda self, event: None)
    # fresh device memory as NaN (np.empty could hand back an earlier batch's bytes, which
    # would hide the misuse): a batch read before its copy poisons the training
    plain_empty = emu.empty

    def poisoned_empty(shape, dtype=None):
        out = plain_empty(shape, dtype)
        if np.dtype(out.dtype).kind == "f":
            out.fill(np.nan)
        return out

    monkeypatch.setattr(emu, "empty", poisoned_empty)
    with pytest.raises(mlpx.NonFiniteLossError):
        _fit(emu, X, y, stream_data=True)
    monkeypatch.setattr(cuda_host.FakeStream, "wait_event", _waits)
    ok, _ = _fit(emu, X, y, stream_data=True)  # with the waits, the same memory is harmless
    _same_models(resident, ok)


@needs_gxx
def test_copy_wait_and_use_order(emu, rng):
    """Per step: the compute stream waits (on the device) for the batch's copy event before
    the batch is used; the next batch is gathered and copied after the current step was
    queued (overlapping its compute); a device buffer is rewritten only after the copy
    stream waited for the step that read it; the host waits only on copy events, before it
    overwrites a pinned buffer."""
    X, y = _data(rng, n=100)
    src = emu.batch_source(X, y, 16, np.float32, stream=True)  # 7 steps, last of 4
    rt = emu.runtime
    copied = [e.name for e in src.copied]
    consumed = [e.name for e in src.consumed]
    dev_ptr = [a.__array_interface__["data"][0] for a in src.dev_x]
    order = rng.permutation(100)
    for epoch in range(2):
        rt.log.clear()
        rows = []
        for s, (xb, yb) in enumerate(src.epoch(order)):
            rt.log.append(("use", s))
            np.testing.assert_array_equal(yb, y[order[s * 16 : (s + 1) * 16]])
            np.testing.assert_array_equal(xb, X[order[s * 16 : (s + 1) * 16]].astype(np.float32))
            rows.append(len(yb))
        assert rows == [16] * 6 + [4]
        log = rt.log
        uses = [i for i, e in enumerate(log) if e[0] == "use"]
        copies = [i for i, e in enumerate(log) if e[0] == "copy" and e[3][1:] == (7,)]
        assert len(uses) == 7 and len(copies) == 7
        for s, u in enumerate(uses):
            slot = s % 2
            # batch s's X copy was queued before its use, into its slot's device buffer
            assert copies[s] < u and log[copies[s]][2] == dev_ptr[slot]
            # ...and the compute stream waited for that copy's event in between
            assert ("wait", "compute", copied[slot]) in log[copies[s]:u]
            if s >= 1:
                # the copy of batch s was queued after step s-1 was in use (overlap)
                assert uses[s - 1] < copies[s]
            if s >= 2 or epoch:
                before = log[(uses[s - 2] if s >= 2 else 0):copies[s]]
                if s >= 2:  # the step that used the slot released it
                    assert ("record", consumed[slot], "compute") in log[uses[s - 2]:copies[s]]
                assert ("wait", "copy", consumed[slot]) in before
                assert ("host_wait", copied[slot]) in before
        host_waits = {e[1] for e in log if e[0] == "host_wait"}
        assert host_waits <= set(copied), "the host waited on something other than a copy"
        assert not any(e[0] == "sync" for e in log), "a stream was synchronised inside steps"
    src.close()
    assert ("sync", "copy") in rt.log


# ---------------------------------------------------------------------- on a real GPU
@pytest.mark.cuda
@pytest.mark.skipif(cuda_skip_reason() is not None, reason=str(cuda_skip_reason()))
@pytest.mark.parametrize("shuffle", [True, False])
def test_gpu_streamed_fit_equals_resident_fit(rng, shuffle):
    """CuPy pinned memory, a copy stream and events: the same weights as the resident path."""
    import cupy

    X, y = _data(rng, n=5000, d=20)
    runs = [_fit("cuda", X, y, stream_data=mode, shuffle=shuffle, batch_size=512,
                 validation_data=(X[:300], y[:300])) for mode in (False, True)]
    _same_models(runs[0][0], runs[1][0])
    assert runs[0][1]["loss"] == runs[1][1]["loss"]
    ops = runs[1][0].ops
    src = ops.batch_source(X, y, 512, np.float32, stream=True)
    assert isinstance(src, StreamedBatches)
    assert isinstance(src.pinned_x[0], np.ndarray) and isinstance(src.dev_x[0], cupy.ndarray)
    src.close()
