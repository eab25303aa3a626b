"""The CUDA kernel sources and the cuda backend's dispatch, run on the host (no GPU needed).

`cuda_host.HostEmulatedCUDABackend` is the real `CUDABackend` with its kernels compiled for
the host by g++ (see tests/cuda_host.py). Against the cpu backend (Numba twins) every stored
array must agree bit for bit: both sides evaluate the same expression in double with the same
libm and no FMA. Losses are sums in a different order (per-block partial sums), so they agree
to a few float64 ulps. This checks the kernels' formulas, clamping, activation codes and the
Python launch arguments against the C signatures; the GPU's own libm is checked by the
GPU-only parity tests.
"""

from __future__ import annotations

import numpy as np
import pytest

import mlpx
from mlpx import activations

cuda_host = pytest.importorskip("cuda_host")

pytestmark = pytest.mark.skipif(
    not cuda_host.have_compiler(), reason="g++ not found: cannot build the kernels for the host"
)

DTYPES = [np.float32, np.float64]
# every built-in with scalar kernels (from the registry), parametrised ones off their defaults
_NON_DEFAULT = {"leaky_relu": activations.LeakyReLU(0.1), "elu": activations.ELU(0.7)}
ACTS = [_NON_DEFAULT.get(c.name, c.name) for c in activations.builtins()
        if activations.scalar_kernel(c()) is not None]


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    libs = cuda_host.build(tmp_path_factory.mktemp("cuda_host"))
    return cuda_host.HostEmulatedCUDABackend(libs)


@pytest.fixture(scope="module")
def cpu():
    return mlpx.get_backend("cpu")


@pytest.fixture
def numpy_gemms(monkeypatch):
    """The emulation's GEMMs are NumPy's: whole networks compare bit for bit with the cpu
    backend only when it uses NumPy's BLAS too (not the optional MKL path)."""
    monkeypatch.setattr(mlpx.get_backend("cpu"), "_blas", "numpy")


def _data(rng, shape, dtype, scale=3.0):
    x = rng.standard_normal(shape) * scale
    flat = x.reshape(-1)
    # edge values: zero (kink of relu/step), large magnitudes (clamped exp), tiny values
    specials = [0.0, -0.0, 40.0, -40.0, 750.0, -750.0, 1e-30, -1e-30]
    flat[: len(specials)] = specials[: flat.size]
    return x.astype(dtype)


def _same(a, b):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), strict=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("act", ACTS, ids=str)
def test_bias_act_and_backward_bitwise(emu, cpu, rng, act, dtype):
    act = activations.get(act)
    z0 = _data(rng, (37, 19), dtype)
    b = _data(rng, (19,), dtype, 1.0)
    outs = {}
    for name, ops in (("emu", emu), ("cpu", cpu)):
        z = z0.copy()
        y = np.empty_like(z)
        ops.bias_act(z, b, act, out=y)
        outs[name] = (z, y)
    _same(outs["emu"][0], outs["cpu"][0])
    _same(outs["emu"][1], outs["cpu"][1])
    if act.differentiable:
        z, y = outs["cpu"]
        dy = _data(rng, z.shape, dtype, 1.0)
        got, want = np.empty_like(z), np.empty_like(z)
        emu.act_backward(dy, z, y, act, out=got)
        cpu.act_backward(dy, z, y, act, out=want)
        _same(got, want)
    assert any(k.startswith(("bias_act", "bias_relu")) for k in emu.launches)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_prelu_bitwise(emu, cpu, rng, dtype):
    act = activations.PReLU(0.2)
    z0 = _data(rng, (300, 7), dtype)
    b = _data(rng, (7,), dtype, 1.0)
    slopes = rng.uniform(0.0, 0.5, 7).astype(dtype)
    res = {}
    for name, ops in (("emu", emu), ("cpu", cpu)):
        z = z0.copy()
        y = np.empty_like(z)
        ops.bias_act(z, b, act, out=y, slopes=slopes)
        dy = np.linspace(-1, 1, z.size).reshape(z.shape).astype(dtype)
        dx = np.empty_like(z)
        ds = np.empty_like(slopes)
        ops.prelu_backward(dy, z, slopes, dx, ds)
        res[name] = (z, y, dx, ds)
    for got, want in zip(res["emu"], res["cpu"], strict=True):
        _same(got, want)
    assert "prelu_bwd_" + ("f32" if dtype == np.float32 else "f64") in emu.launches


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("n", [1, 5, 2000])
def test_softmax_cross_entropy(emu, cpu, rng, dtype, n):
    z = _data(rng, (n, 11), dtype)
    labels = rng.integers(0, 11, n).astype(np.int64)
    g1, g2 = np.empty_like(z), np.empty_like(z)
    l1 = emu.softmax_cross_entropy(z, labels, g1)
    l2 = cpu.softmax_cross_entropy(z, labels, g2)
    _same(g1, g2)
    assert np.ndim(l1) == 0 and l1.dtype == np.float64
    np.testing.assert_allclose(float(l1), float(l2), rtol=1e-13)
    # without a gradient the logits are left untouched
    z_before = z.copy()
    l3 = emu.softmax_cross_entropy(z, labels)
    _same(z, z_before)
    np.testing.assert_allclose(float(l3), float(l2), rtol=1e-13)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("loss", ["bce_with_logits", "mse", "l1"])
@pytest.mark.parametrize("shape", [(3, 1), (700, 9)])
def test_elementwise_losses(emu, cpu, rng, dtype, loss, shape):
    y = _data(rng, shape, dtype)
    if loss == "bce_with_logits":
        t = rng.uniform(0, 1, shape).astype(dtype)
    else:
        t = _data(rng, shape, dtype)
        t.reshape(-1)[1] = y.reshape(-1)[1]  # d == 0: sign(0) = 0 for l1
    g1, g2 = np.empty_like(y), np.empty_like(y)
    l1 = getattr(emu, loss)(y, t, g1)
    l2 = getattr(cpu, loss)(y, t, g2)
    _same(g1, g2)
    np.testing.assert_allclose(float(l1), float(l2), rtol=1e-13)
    blocks_used = [k for k in emu.launches if k.startswith(loss.split("_")[0])]
    assert blocks_used, "the fused kernel was not launched"


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_optimiser_updates_bitwise(emu, cpu, rng, dtype):
    shape = (33, 5)
    cases = [
        ("sgd_update", lambda p, g, s: (p, g, 0.05)),
        ("sgd_momentum_update", lambda p, g, s: (p, g, s[0], 0.1, 0.9, 0.1, False, 0.01)),
        ("sgd_momentum_update", lambda p, g, s: (p, g, s[0], 0.1, 0.9, 0.0, True, 0.0)),
        ("adagrad_update", lambda p, g, s: (p, g, s[0], 0.1, 0.01, 1e-10)),
        ("rmsprop_update", lambda p, g, s: (p, g, s[0], s[1], s[2], 0.01, 0.99, 1e-8, 0.01,
                                            0.9, True)),
        ("rmsprop_update", lambda p, g, s: (p, g, s[0], None, None, 0.01, 0.99, 1e-8, 0.0,
                                            0.0, False)),
        ("adam_update", lambda p, g, s: (p, g, s[0], s[1], 1e-3, 0.9, 0.999, 1e-8, 0.01, 3,
                                         False)),
        ("adam_update", lambda p, g, s: (p, g, s[0], s[1], 1e-3, 0.9, 0.999, 1e-8, 0.01, 7,
                                         True)),
        ("add_penalty_grad", lambda p, g, s: (p, g, 0.01, 0.02)),
        ("scale_", lambda p, g, s: (p, 0.37)),
        ("clip_", lambda p, g, s: (p, -0.5, 0.5)),
    ]
    for op, make_args in cases:
        if not hasattr(cpu, op):
            continue
        p0 = _data(rng, shape, dtype, 1.0)
        g0 = _data(rng, shape, dtype, 1.0)
        s0 = [np.abs(_data(rng, shape, dtype, 1.0)) for _ in range(3)]
        res = {}
        for name, ops in (("emu", emu), ("cpu", cpu)):
            p, g, s = p0.copy(), g0.copy(), [a.copy() for a in s0]
            getattr(ops, op)(*make_args(p, g, s))
            res[name] = [p, g, *s]
        for got, want in zip(res["emu"], res["cpu"], strict=True):
            _same(got, want)
    if hasattr(cpu, "sum_abs"):
        x = _data(rng, (1000,), dtype)
        np.testing.assert_allclose(float(emu.sum_abs(x)), float(cpu.sum_abs(x)), rtol=1e-13)


def test_scale_by_device_scalar(emu, rng):
    """A 0-d factor (a clipping scale computed on the device) takes the scale_dev kernel."""
    x = _data(rng, (50,), np.float32, 1.0)
    want = (x.astype(np.float64) * 0.25).astype(np.float32)
    emu.scale_(x, np.full((), 0.25))
    _same(x, want)
    assert "scale_dev_f32" in emu.launches


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("act", ["tanh", "gelu", activations.PReLU(0.1)], ids=str)
def test_network_training_bitwise(emu, dtype, act, rng, numpy_gemms):
    """Same network on the emulated cuda backend and on cpu: identical weights after fit."""
    X = rng.standard_normal((150, 6))
    y = rng.integers(0, 3, 150)
    models = []
    for ops in (emu, "cpu"):
        m = mlpx.MLP([6, 16, 12, 3], activation=act, backend=ops, dtype=dtype, seed=3)
        m.fit(X, y, loss="cross_entropy", lr=0.1, epochs=3, batch_size=32, verbose=0)
        models.append(m)
    for a, b in zip(models[0].get_weights(), models[1].get_weights(), strict=True):
        _same(a, b)
    np.testing.assert_allclose(
        models[0].history_["loss"], models[1].history_["loss"], rtol=1e-12
    )


def test_model_moves_between_cpu_and_cuda_backend(emu, rng, numpy_gemms):
    """model.to(cuda) / to("cpu") keep every weight and the optimiser state bit for bit, and
    training continues identically on either side."""
    X = rng.standard_normal((64, 5))
    y = rng.integers(0, 2, 64)
    a = mlpx.MLP([5, 8, 2], activation="silu", backend="cpu", seed=1)
    b = mlpx.MLP([5, 8, 2], activation="silu", backend="cpu", seed=1)
    for m in (a, b):
        m.fit(X, y, loss="cross_entropy", lr=0.05, epochs=1, batch_size=16, verbose=0)
    b.to(emu)
    assert b.ops is emu and all(p.data.flags.c_contiguous for p in b.parameters())
    for m in (a, b):
        m.fit(X, y, lr=0.05, epochs=2, batch_size=16, verbose=0)
    b.to("cpu")
    assert b.backend == "cpu"
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        _same(wa, wb)
    _same(a.predict(X), b.predict(X))


def test_no_host_read_inside_training_steps(emu, rng, monkeypatch):
    """The fit loop reads device values back per epoch, never per step: the number of reads
    does not change when the same epochs take twice as many steps."""
    reads = []
    for op in ("to_float", "to_numpy", "all_finite"):
        orig = getattr(emu, op)

        def counted(*a, _o=orig, _n=op, **k):
            reads.append(_n)
            return _o(*a, **k)

        monkeypatch.setattr(emu, op, counted)
    X = rng.standard_normal((320, 6))
    y = rng.integers(0, 3, 320)
    counts = []
    for batch_size in (32, 16):  # 10 and 20 steps per epoch
        reads.clear()
        m = mlpx.MLP([6, 16, 3], activation="gelu", backend=emu, seed=0)
        m.fit(X, y, loss="cross_entropy", optimizer="sgd", lr=0.1, epochs=3,
              batch_size=batch_size, verbose=0)
        counts.append(len(reads))
    assert counts[0] == counts[1], f"host reads grow with the number of steps: {counts}"
    assert counts[0] > 0  # the per-epoch loss is read (the counter works)


def test_out_of_memory_error_names_the_largest_batch(emu):
    """The OOM message says how many rows of the failing array fit in the free memory."""
    from types import SimpleNamespace

    gib = 1024**3
    fake = cuda_host.HostEmulatedCUDABackend(emu._libs)
    fake._device = SimpleNamespace(mem_info=(2 * gib, 80 * gib))
    fake.xp = SimpleNamespace(get_default_memory_pool=lambda: SimpleNamespace(free_bytes=lambda: 0))
    err = fake._out_of_memory((1_000_000, 4096), np.float32)
    assert isinstance(err, MemoryError)
    msg = str(err)
    rows = 2 * gib // (4096 * 4)
    assert f"about {rows} rows" in msg and "batch_size" in msg
    assert "15.3 GiB" in msg and "2.0 GiB of 80.0 GiB" in msg


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("n", [1, 7, 4096 + 3])
def test_dropout_bitwise(emu, cpu, rng, p, n):
    """Same (seed, stream, step): the same mask on the cuda kernel, the Numba kernel and the
    reference; applying it agrees bit for bit."""
    from mlpx.backends.base import Backend

    seed, stream, step = 2**40 + 12345, 3, 2**33 + 7
    masks = {}
    for name, ops in (("emu", emu), ("cpu", cpu), ("ref", Backend())):
        mask = np.full((n,), 7, np.uint8)
        ops.dropout_mask(seed, stream, step, p, mask)
        masks[name] = mask
    _same(masks["emu"], masks["ref"])
    _same(masks["cpu"], masks["ref"])
    assert set(np.unique(masks["emu"])) <= {0, 1}
    for dtype in DTYPES:
        x = _data(rng, (n,), dtype)
        got, want = np.empty_like(x), np.empty_like(x)
        emu.dropout_apply(x, masks["emu"], 1.0 / (1.0 - p), got)
        cpu.dropout_apply(x, masks["emu"], 1.0 / (1.0 - p), want)
        _same(got, want)
    assert "dropout_mask" in emu.launches


@pytest.mark.parametrize("offset, n", [(0, 9), (1, 6), (3, 1), (5, 11), (4096 + 2, 37)])
def test_dropout_mask_at_an_offset_is_a_slice_of_the_whole(emu, cpu, offset, n):
    """A mask that starts at word `offset` (a data-parallel shard's rows) equals that slice of
    the mask drawn from word 0, on the cuda kernel, the Numba kernel and the reference."""
    from mlpx.backends.base import Backend

    seed, stream, step, p = 2**33 + 5, 2, 9, 0.5
    whole = np.empty(offset + n, np.uint8)
    Backend().dropout_mask(seed, stream, step, p, whole)
    for ops in (emu, cpu, Backend()):
        part = np.full(n, 7, np.uint8)
        ops.dropout_mask(seed, stream, step, p, part, offset)
        _same(part, whole[offset:])


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_sum_squares_and_global_norm(emu, cpu, rng, dtype):
    """Per-array block partials, then one deterministic sum (and sqrt) on the device: the
    cpu's Numba sums within a few float64 ulps; a fresh 0-d float64 array each call."""
    from mlpx.backends.base import Backend

    arrays = [_data(rng, shape, dtype, 1.0) for shape in [(300, 40), (40,), (0,), (7, 3)]]
    emu.launches.clear()
    norm = emu.global_norm(arrays)
    assert isinstance(norm, np.ndarray) and norm.shape == () and norm.dtype == np.float64
    assert emu.launches.count("sum_squares_" + ("f32" if dtype == np.float32 else "f64")) == 3
    assert emu.launches[-1] == "sum_partials"
    want = np.sqrt(sum(np.sum(a.astype(np.float64) ** 2) for a in arrays))
    np.testing.assert_allclose(float(norm), want, rtol=1e-14)
    np.testing.assert_allclose(float(norm), float(cpu.global_norm(arrays)), rtol=1e-14)
    np.testing.assert_allclose(float(norm), float(Backend().global_norm(arrays)), rtol=1e-14)
    again = emu.global_norm(arrays[:1])
    assert again is not norm and float(norm) != float(again)  # not a reused scratch value
    s = emu.sum_squares(arrays[0])
    assert s.shape == () and s.dtype == np.float64
    np.testing.assert_allclose(float(s), float(cpu.sum_squares(arrays[0])), rtol=1e-14)
    assert float(emu.global_norm([np.zeros(0, dtype)])) == 0.0


@pytest.mark.parametrize("norm", [0.0, 0.5, 0.999999, 1.000001, 3.0, 1e300, np.inf, np.nan])
def test_clip_scale_bitwise(emu, norm):
    """min(1, max_norm / (norm + 1e-6)) on the device, as the reference (NaN propagates)."""
    from mlpx.backends.base import Backend

    n = np.full((), norm, np.float64)
    got = emu.clip_scale(n, 1.0)
    want = Backend().clip_scale(n, 1.0)
    assert got.shape == () and got.dtype == np.float64 and emu.launches[-1] == "clip_scale"
    np.testing.assert_array_equal(got, np.asarray(want, np.float64))


def test_clip_norm_training_matches_cpu(emu, rng):
    """fit with clip_norm on the emulated cuda kernels (global norm, clip scale, device-side
    scaling) against the cpu backend: the same weights within a float32 ulp or two."""
    X = rng.standard_normal((96, 6)) * 5
    y = rng.integers(0, 3, 96)
    models = []
    for ops in (emu, "cpu"):
        m = mlpx.MLP([6, 16, 3], activation="relu", backend=ops, seed=2)
        h = m.fit(X, y, loss="cross_entropy", lr=0.2, epochs=3, batch_size=16, verbose=0,
                  clip_norm=0.5)
        models.append((m, h))
    for a, b in zip(models[0][0].get_weights(), models[1][0].get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=4 * np.finfo(np.float32).eps)
    np.testing.assert_allclose(models[0][1]["grad_norm"], models[1][1]["grad_norm"], rtol=1e-6)
    assert models[0][1]["grad_norm"][-1] > 0.5  # clipping was active


# --- block reductions at the GPU's block size (256 threads, a real barrier per tree level)

def _tree_partials(terms: np.ndarray, blocks: int) -> np.ndarray:
    """The kernels' order, modelled in NumPy: thread t of the grid adds terms t, t + stride,
    ... from 0.0 in order (cumsum is sequential), then each block adds its 256 threads'
    sums in a tree (sh[i] += sh[i + s], s = 128, 64, ..., 1)."""
    from mlpx.backends import _cuda_kernels as cuda_kernels

    stride = blocks * cuda_kernels.BLOCK
    rows = -(-terms.size // stride)
    t = np.zeros((rows + 1, stride))
    t[1:].reshape(-1)[: terms.size] = terms
    sh = np.cumsum(t, axis=0)[-1].reshape(blocks, cuda_kernels.BLOCK)
    s = cuda_kernels.BLOCK // 2
    while s:
        sh[:, :s] = sh[:, :s] + sh[:, s : 2 * s]
        s //= 2
    return sh[:, 0]


@pytest.mark.parametrize("size", [1, 255, 256, 257, 8 * 256 + 1, 3 * 8 * 256 + 5])
def test_block_reductions_run_the_tree_with_256_threads(emu, rng, monkeypatch, size):
    """sum_squares (+ sum_partials), sum_abs and the mse partials agree bit for bit with the
    tree order at blockDim 256 (a skipped or misplaced barrier would change the bits), and
    with float64 NumPy within rounding. The grid is capped at 8 blocks here, so the last two
    sizes wrap around the grid-stride loop as 262145 elements do on the GPU's 1024 blocks
    (the GPU kit runs those sizes and 2**28)."""
    from mlpx.backends import _cuda_kernels as cuda_kernels

    monkeypatch.setattr(cuda_kernels, "MAX_BLOCKS", 8)
    assert emu.threads == cuda_kernels.BLOCK == 256
    x = rng.standard_normal(size).astype(np.float32)
    x64 = x.astype(np.float64)
    blocks = cuda_kernels.grid(size)
    total = emu.sum_squares(x)
    partials = _tree_partials(x64 * x64, blocks)
    _same(emu._scratch[("sumsq", blocks)][:blocks], partials)
    np.testing.assert_array_equal(float(total), _tree_partials(partials, 1)[0])
    np.testing.assert_allclose(float(total), np.sum(x64 * x64), rtol=1e-13)
    s_abs = emu.sum_abs(x)
    _same(emu._scratch[("abs", blocks)], _tree_partials(np.abs(x64), blocks))
    np.testing.assert_allclose(float(s_abs), np.sum(np.abs(x64)), rtol=1e-13)
    t = rng.standard_normal(size).astype(np.float32)
    loss = emu.mse(x, t)
    d = x64 - t.astype(np.float64)
    _same(emu._scratch[("partial", blocks)], _tree_partials(d * d, blocks))
    np.testing.assert_allclose(float(loss), np.mean(d * d), rtol=1e-13)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("classes", [33, 100, 1000])
@pytest.mark.parametrize("n", [1, 9, 70])
def test_wide_softmax_cross_entropy(emu, cpu, rng, dtype, classes, n):
    """Above 32 classes a group of 32 threads per row (tree max and sum): the loss and the
    gradient agree with the cpu backend within float64 rounding, float32 gradients nearly
    always bitwise; a bad label still gives NaN."""
    z = _data(rng, (n, classes), dtype)
    labels = rng.integers(0, classes, n).astype(np.int64)
    g1, g2 = np.empty_like(z), np.empty_like(z)
    emu.launches.clear()
    l1 = emu.softmax_cross_entropy(z, labels, g1)
    l2 = cpu.softmax_cross_entropy(z, labels, g2)
    assert emu.launches == ["softmax_xent_wide_" + ("f32" if dtype == np.float32 else "f64")]
    np.testing.assert_allclose(float(l1), float(l2), rtol=1e-13)
    np.testing.assert_allclose(g1, g2, rtol=1e-13 if dtype == np.float64 else 2e-7, atol=0)
    z_before = z.copy()
    l3 = emu.softmax_cross_entropy(z, labels)
    _same(z, z_before)
    np.testing.assert_allclose(float(l3), float(l2), rtol=1e-13)
    labels[-1] = classes  # out of range: NaN, no out-of-bounds read
    assert np.isnan(float(emu.softmax_cross_entropy(z, labels)))


@pytest.mark.parametrize("shape", [(1, 1), (64, 1), (65, 3), (1000, 1), (130, 300)])
def test_prelu_two_stage_slope_gradient_bitwise(emu, cpu, rng, shape):
    """Chunks of 64 rows, then the chunks in order, on the cuda kernels, the Numba kernel and
    the reference alike: the slope gradient is bitwise the same everywhere."""
    from mlpx.backends.base import Backend

    dy = _data(rng, shape, np.float32, 1.0)
    z = _data(rng, shape, np.float32)
    slopes = rng.uniform(0.0, 0.5, shape[1]).astype(np.float32)
    res = {}
    for name, ops in (("emu", emu), ("cpu", cpu), ("ref", Backend())):
        dx, ds = np.empty_like(z), np.empty_like(slopes)
        ops.prelu_backward(dy, z, slopes, dx, ds)
        res[name] = (dx, ds)
    for name in ("cpu", "ref"):
        _same(res["emu"][0], res[name][0])
        _same(res["emu"][1], res[name][1])
    assert emu.launches[-2:] == ["prelu_bwd_f32", "prelu_dslopes_f32"]


def test_warmup_loads_every_kernel_of_every_file(emu, monkeypatch):
    from mlpx.backends import _cuda_kernels as cuda_kernels
    from mlpx.backends.cuda import CUDABackend

    loaded = []
    monkeypatch.setattr(cuda_kernels, "get_kernel", lambda dev, f, name: loaded.append((f, name)))
    CUDABackend.warmup(emu)
    assert {f for f, _ in loaded} == set(cuda_kernels.KERNEL_FILES)
    assert ("random.cu", "dropout_mask") in loaded and ("optim.cu", "sum_partials") in loaded
    assert len(loaded) == sum(len(cuda_kernels.kernel_names(f)) for f in cuda_kernels.KERNEL_FILES)
    with pytest.raises(ValueError, match="float32 and float64"):
        CUDABackend.warmup(emu, dtypes=(np.float16,))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_bias_free_activations_take_kernels_bitwise(emu, cpu, rng, dtype):
    """Dense(use_bias=False) and the PReLU layer: act_fwd / prelu_fwd, never the reference,
    bit for bit the cpu backend's twins; every built-in with a scalar kernel, from the
    registry."""
    sfx = "f32" if dtype == np.float32 else "f64"
    z0 = _data(rng, (37, 19), dtype)
    slopes = rng.uniform(0.0, 0.5, 19).astype(dtype)
    acts = [c() for c in activations.builtins() if activations.scalar_kernel(c()) is not None]
    acts.append(activations.PReLU())
    for act in acts:
        s = slopes if act.has_parameters else None
        emu.launches.clear()
        outs = []
        for ops in (emu, cpu):
            y = np.empty_like(z0)
            ops.bias_act(z0.copy(), None, act, out=y, slopes=s)
            outs.append(y)
        _same(outs[0], outs[1])
        if act.has_parameters:
            assert emu.launches == [f"prelu_fwd_{sfx}"], act
        elif not activations.is_identity(act):
            assert emu.launches == [f"act_fwd_{sfx}"], act
