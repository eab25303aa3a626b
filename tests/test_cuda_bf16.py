"""The cuda backend's bfloat16 products ("mixed_bfloat16"): mlpx/backends/_cuda_bf16.py, the
to_bfloat16 kernel (kernels/bfloat16.cu) and its Numba twin (numba_bfloat16.py).

Without a GPU: the kernel runs on the host (tests/cuda_host.py) and must give the reference's
bits (mlpx.backends.bfloat16) on random, NaN, inf, subnormal and tie values; the GemmEx
arguments are run through a NumPy model of cuBLAS's column-major GemmEx; whole models under
the policy on the host-emulated backend match the cpu backend within the float32
accumulation bound. On a GPU (skipped, with the reason, elsewhere): the same bits, the
product against the contract, forward and gradients against the cpu backend, and training.
"""

from __future__ import annotations

import re
import threading

import numpy as np
import pytest
from conftest import cuda_skip_reason

import mlpx
from mlpx.backends import _cuda_bf16
from mlpx.backends import _cuda_kernels as cuda_kernels
from mlpx.backends.bfloat16 import round_to_bfloat16, to_bfloat16_bits
from mlpx.commands.comparison import tolerance
from mlpx.errors import BackendUnavailableError

cuda_host = pytest.importorskip("cuda_host")
needs_gxx = pytest.mark.skipif(not cuda_host.have_compiler(),
                               reason="g++ not found: cannot build the kernels for the host")
needs_gpu = pytest.mark.skipif(cuda_skip_reason() is not None, reason=cuda_skip_reason() or "")

_SPECIAL_BITS = [
    0x00000000, 0x80000000,  # +-0
    0x7F800000, 0xFF800000,  # +-inf
    0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7FFFFFFF, 0x7FBFFFFF,  # NaNs
    0x7F7FFFFF, 0xFF7FFFFF, 0x7F7F7FFF, 0x7F7F8000,  # largest finite: to inf, or not
    0x00000001, 0x80000001, 0x007FFFFF, 0x00008000, 0x00018000, 0x00017FFF,  # subnormals
    0x3F808000, 0x3F818000, 0xBF808000, 0x3F808001, 0x3F807FFF,  # ties and near ties
    0x3F800000, 0x00800000, 0x0080FFFF,  # exact, smallest normal, normal rounding up
]


def _values(rng, n=4096) -> np.ndarray:
    """Special bit patterns, random bit patterns (every class) and normal values."""
    bits = np.concatenate([
        np.array(_SPECIAL_BITS, np.uint32),
        rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32),
        (rng.integers(0, 2**16, n, dtype=np.uint32) << 16) | 0x8000,  # every tie
    ])
    normal = (rng.standard_normal(n) * 10.0 ** rng.integers(-30, 30, n)).astype(np.float32)
    return np.concatenate([bits.view(np.float32), normal])


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    if not cuda_host.have_compiler():
        pytest.skip("g++ not found: cannot build the kernels for the host")
    return cuda_host.HostEmulatedCUDABackend(cuda_host.build(tmp_path_factory.mktemp("bf16")))


# ------------------------------------------------------------------ the conversion, bitwise
@needs_gxx
def test_conversion_kernel_gives_the_reference_bits(emu, rng):
    x = _values(rng)
    got = emu._bfloat16_operand("a", x).copy()
    np.testing.assert_array_equal(got, to_bfloat16_bits(x).reshape(-1), strict=True)
    assert emu.launches[-1] == "to_bfloat16"


def test_numba_twin_gives_the_reference_bits(rng):
    from mlpx.backends.numba_bfloat16 import to_bfloat16

    x = _values(rng)
    out = np.empty(x.size, np.uint16)
    to_bfloat16(x.view(np.uint32), out)
    np.testing.assert_array_equal(out, to_bfloat16_bits(x), strict=True)


def test_reference_rounding_of_the_edge_values():
    """The contract itself on the edge values: ties to even, overflow to inf, NaN kept."""
    x = np.array([0x3F808000, 0x3F818000, 0x7F7FFFFF, 0xFFC00001, 0x00008000, 0x00018000],
                 np.uint32).view(np.float32)
    got = to_bfloat16_bits(x)
    assert [hex(v) for v in got] == ["0x3f80", "0x3f82", "0x7f80", "0xffc0", "0x0", "0x2"]


# --------------------------------------------------------------------- GemmEx arguments
def test_cublas_args_run_the_row_major_product_column_major():
    args = _cuda_bf16.cublas_args((32, 784), (784, 1024))  # x @ W
    assert args == _cuda_bf16.GemmArgs(0, 0, 1024, 32, 784, 1024, 784, 1024)
    args = _cuda_bf16.cublas_args((32, 784), (32, 1024), trans_a=True)  # x^T @ delta
    assert (args.transa, args.transb, args.m, args.n, args.k) == (0, 1, 1024, 784, 32)
    args = _cuda_bf16.cublas_args((32, 1024), (784, 1024), trans_b=True)  # delta @ W^T
    assert (args.transa, args.transb, args.m, args.n, args.k, args.lda) == (1, 0, 784, 32,
                                                                          1024, 1024)


@needs_gxx
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("shape", [(1, 1, 1), (5, 7, 9), (33, 17, 129), (64, 3, 1)])
def test_emulated_product_meets_the_contract(emu, rng, trans_a, trans_b, shape):
    """The GemmEx call, modelled column-major on the host, is the contract's product."""
    m, n, k = shape
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    out = np.full((m, n), np.nan, np.float32)
    emu.matmul_bf16(a, b, out, trans_a, trans_b)
    ra, rb = round_to_bfloat16(a).astype(np.float64), round_to_bfloat16(b).astype(np.float64)
    ra, rb = (ra.T if trans_a else ra), (rb.T if trans_b else rb)
    assert (np.abs(out - ra @ rb) <= k * 2.0**-24 * (np.abs(ra) @ np.abs(rb))).all()
    assert emu.gemm_calls[-1] == _cuda_bf16.cublas_args(a.shape, b.shape, trans_a, trans_b)


@needs_gxx
def test_operand_buffers_grow_are_reused_and_belong_to_a_thread(emu, rng):
    big, small = rng.standard_normal(300).astype(np.float32), np.ones(10, np.float32)
    first = emu._bfloat16_operand("b", big)
    again = emu._bfloat16_operand("b", small)
    assert again.base is first.base and again.size == 10  # the same memory, no allocation
    seen = {}
    t = threading.Thread(target=lambda: seen.update(b=emu._bfloat16_operand("b", small)))
    t.start()
    t.join()
    assert seen["b"].base is not first.base  # another thread: its own buffer


@needs_gxx
def test_other_layouts_take_the_reference_path(emu, rng):
    a = rng.standard_normal((8, 6)).astype(np.float32)
    b = rng.standard_normal((6, 8)).astype(np.float32)[:, ::2]  # not contiguous
    out = np.empty((8, 4), np.float32)
    calls = len(emu.gemm_calls)
    emu.matmul_bf16(a, b, out)
    assert len(emu.gemm_calls) == calls
    np.testing.assert_array_equal(out, round_to_bfloat16(a) @ round_to_bfloat16(b))


# ---------------------------------------------------------------------- the policy, whole
def test_old_gpus_are_refused_with_the_reason():
    assert _cuda_bf16.unsupported_reason("80") is None
    assert _cuda_bf16.unsupported_reason("90") is None
    msg = _cuda_bf16.unsupported_reason("75", "GPU 0")
    assert "8.0" in msg and "GPU 0 has 7.5" in msg and "dtype='float32'" in msg


@needs_gxx
def test_a_model_on_an_old_gpu_says_why(emu, monkeypatch):
    monkeypatch.setattr(emu, "compute_capability", "70")
    with pytest.raises(BackendUnavailableError, match="bfloat16 tensor cores.*has 7.0"):
        mlpx.MLP([4, 8, 2], backend=emu, dtype="mixed_bfloat16")


def _forward_and_grads(backend, sizes, act, loss, X, y, weights):
    model = mlpx.MLP(sizes, activation=act, backend=backend, dtype="mixed_bfloat16", seed=0)
    model.set_weights(weights)
    value, grads = model.loss_and_grad(X, y, loss=loss)
    return model.predict(X), float(value), grads


def _assert_close(got, want, k):
    out, value, grads = got
    r_out, r_value, r_grads = want
    tol = tolerance("float32", k)
    for x, ref in [(out, r_out), (np.array([value]), np.array([r_value])),
                   *zip(grads, r_grads, strict=True)]:
        x, ref = np.asarray(x, np.float64), np.asarray(ref, np.float64)
        assert np.max(np.abs(x - ref)) <= tol * np.max(np.abs(ref)), (x, ref)


def _case(rng, sizes, n=64):
    X = rng.standard_normal((n, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], n)
    weights = mlpx.MLP(sizes, seed=1).get_weights()
    return X, y, weights


@needs_gxx
@pytest.mark.parametrize("act", ["relu", "gelu", "tanh"])
def test_emulated_cuda_model_matches_the_cpu_backend(emu, rng, act):
    sizes = [20, 48, 32, 5]
    X, y, w = _case(rng, sizes)
    start = len(emu.gemm_calls)
    got = _forward_and_grads(emu, sizes, act, "cross_entropy", X, y, w)
    want = _forward_and_grads("cpu", sizes, act, "cross_entropy", X, y, w)
    _assert_close(got, want, max(sizes[:-1] + [len(X)]))
    # forward x W, and both backward products (x^T delta, delta W^T), all through GemmEx
    flags = {(c.transa, c.transb) for c in emu.gemm_calls[start:]}
    assert flags == {(0, 0), (0, 1), (1, 0)}


def test_the_kernel_file_is_compiled_and_launched():
    assert "bfloat16.cu" in cuda_kernels.KERNEL_FILES
    assert cuda_kernels.kernel_names("bfloat16.cu") == ["to_bfloat16"]
    source = cuda_kernels.kernel_source("bfloat16.cu")
    # compiles with NVRTC alone: no header beyond common.cuh (NVRTC has no cuda_bf16.h)
    assert not re.search(r"^\s*#include", source, re.M)


@needs_gxx
def test_describe_names_the_path_or_the_reason(emu, monkeypatch):
    assert _cuda_bf16.describe(emu).startswith("native: cuBLAS GemmEx")
    assert "compute capability 9.0" in _cuda_bf16.describe(emu)
    monkeypatch.setattr(emu, "compute_capability", "75")
    assert _cuda_bf16.describe(emu).startswith("not available: ")


@needs_gxx
def test_training_under_the_policy_reads_nothing_back_per_step(emu, rng, monkeypatch):
    """The mixed products add no host read to a training step (the GemmEx scalars are host
    values, the operands stay on the device): reads do not grow with the number of steps."""
    reads = []
    for op in ("to_float", "to_numpy", "all_finite"):
        orig = getattr(emu, op)

        def counted(*a, _o=orig, _n=op, **k):
            reads.append(_n)
            return _o(*a, **k)

        monkeypatch.setattr(emu, op, counted)
    X = rng.standard_normal((320, 6))
    y = rng.integers(0, 3, 320)
    counts, losses = [], []
    for batch_size in (32, 16):  # 10 and 20 steps per epoch
        reads.clear()
        m = mlpx.MLP([6, 16, 3], backend=emu, dtype="mixed_bfloat16", seed=0)
        hist = m.fit(X, y, loss="cross_entropy", optimizer="sgd", lr=0.1, epochs=3,
                     batch_size=batch_size, verbose=0)
        counts.append(len(reads))
        losses.append(hist.history["loss"])
    assert counts[0] == counts[1] > 0, f"host reads grow with the number of steps: {counts}"
    assert all(h[-1] < h[0] for h in losses)

# ------------------------------- fused bfloat16 activation kernels (activations.cu), on the host
#: hidden activations whose saved activations mlpx.layers.bf16_chain keeps in bfloat16
CHAIN_ACTIVATIONS = ["identity", "relu", "leaky_relu", "sigmoid", "tanh", "elu", "gelu", "silu",
                     "softplus"]


def _fused_case(rng, name, m=37):
    act = mlpx.activations.get(name)
    z = np.concatenate([rng.standard_normal(40 * m) * 4, np.linspace(-30, 30, 40 * m)])
    z = z.astype(np.float32).reshape(-1, m)
    z[0, :6] = [0.0, -0.0, 1e-40, -1e-40, np.inf, -np.inf]
    b = rng.standard_normal(m).astype(np.float32)
    return act, z, b, float(act.alpha or 0.0)


def _forward_bits(be, kernel, z, b, n_outs, act, alpha, with_bias):
    """The bits `kernel` writes on backend `be` (host-emulated or a GPU), as NumPy arrays."""
    n, m = z.shape
    outs = [be.empty(z.shape, np.uint16) for _ in range(n_outs)]
    be._launch("activations.cu", kernel, cuda_kernels.grid(z.size),
               (be.asarray(z), be.asarray(b), *outs, np.int64(n), np.int64(m),
                np.int32(act.code), np.float64(alpha), np.int32(with_bias)))
    return [be.to_numpy(o) for o in outs]


def _check_fused_forward(be, rng, name, with_bias):
    from mlpx.backends import numba_bfloat16 as nb

    act, z, b, alpha = _fused_case(rng, name)
    (ybits,) = _forward_bits(be, "bias_act_bf16", z, b, 1, act, alpha, with_bias)
    want_y, want_z = np.empty(z.shape, np.uint16), np.empty(z.shape, np.uint16)
    if with_bias:
        nb.bias_act_bits(z, b, act.code, alpha, want_y)
    else:
        nb.act_bits(z, act.code, alpha, want_y)
    np.testing.assert_array_equal(ybits, want_y, strict=True)
    zbits, ybits = _forward_bits(be, "bias_act_z_bf16", z, b, 2, act, alpha, with_bias)
    nb.bias_act_z_bits(z, b, act.code, alpha, with_bias, want_z, want_y)
    np.testing.assert_array_equal(zbits, want_z, strict=True)
    np.testing.assert_array_equal(ybits, want_y, strict=True)
    # the bits are the contract's rounding of the float32 path's z + b
    v = (z + b).astype(np.float32) if with_bias else z
    np.testing.assert_array_equal(zbits, to_bfloat16_bits(v), strict=True)


def _check_fused_derivative(be, rng, name):
    from mlpx.backends import numba_activations as na
    from mlpx.backends import numba_bfloat16 as nb
    from mlpx.layers import bf16_chain

    act, z, b, alpha = _fused_case(rng, name)
    zbits, ybits = np.empty(z.shape, np.uint16), np.empty(z.shape, np.uint16)
    nb.bias_act_z_bits(z, b, act.code, alpha, True, zbits, ybits)
    kept = bf16_chain.saved(act)
    zin = zbits if kept == "z" else ybits
    dy = rng.standard_normal(z.shape).astype(np.float32)
    d = be.asarray(dy.copy())
    be._launch("activations.cu", "act_bwd_bf16", cuda_kernels.grid(z.size),
               (d, be.asarray(zin), be.asarray(ybits), np.int64(z.size), np.int32(act.code),
                np.float64(alpha)))
    got = be.to_numpy(d)
    want, bgrad = dy.copy(), np.empty(z.shape[1], np.float32)
    if kept == "sign":
        nb.sign_backward_bits_(want, ybits, act.code, alpha, bgrad, True)
    else:
        nb.act_backward_bits_(want, zin, ybits, act.code, alpha, bgrad, True)
    np.testing.assert_array_equal(round_to_bfloat16(got), want, strict=True)
    rows = np.zeros(z.shape[1], np.float32)
    for row in got:  # float32, row after row: the Numba twin's order
        rows += row
    np.testing.assert_array_equal(rows, bgrad, strict=True)
    if kept != "sign":  # and it is not the derivative at float32 z and y: the bits were read
        zf = (z + b).astype(np.float32)
        yf, plain = np.empty_like(zf), np.empty_like(zf)
        na.act_forward(zf, act.code, alpha, yf)
        na.act_backward(dy, zf, yf, act.code, alpha, plain)
        assert not np.array_equal(got, plain)


@needs_gxx
@pytest.mark.parametrize("name", CHAIN_ACTIVATIONS)
@pytest.mark.parametrize("with_bias", [True, False])
def test_fused_forward_kernels_write_the_numba_twins_bits(emu, rng, name, with_bias):
    _check_fused_forward(emu, rng, name, with_bias)


@needs_gxx
@pytest.mark.parametrize("name", CHAIN_ACTIVATIONS)
def test_fused_derivative_kernel_matches_the_numba_twin(emu, rng, name):
    """act_bwd_bf16 leaves delta unrounded (the product rounds it, sum_rows sums it); rounded,
    and summed in row order, it is the Numba twin's bit for bit."""
    _check_fused_derivative(emu, rng, name)


# ------------------------------------------------------------------------------- on a GPU
@pytest.fixture(scope="module")
def gpu():
    return mlpx.get_backend("cuda")


@pytest.mark.cuda
@needs_gpu
def test_gpu_conversion_gives_the_reference_bits(gpu, rng):
    x = _values(rng, 1 << 16)
    got = gpu.to_numpy(gpu._bfloat16_operand("a", gpu.asarray(x)))
    np.testing.assert_array_equal(got, to_bfloat16_bits(x), strict=True)


@pytest.mark.cuda
@needs_gpu
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("shape", [(33, 17, 129), (1024, 1024, 784), (784, 1024, 1024)])
def test_gpu_product_meets_the_contract(gpu, rng, trans_a, trans_b, shape):
    m, n, k = shape
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    out = gpu.empty((m, n), np.float32)
    gpu.matmul_bf16(gpu.asarray(a), gpu.asarray(b), out, trans_a, trans_b)
    ra, rb = round_to_bfloat16(a).astype(np.float64), round_to_bfloat16(b).astype(np.float64)
    ra, rb = (ra.T if trans_a else ra), (rb.T if trans_b else rb)
    err = np.abs(gpu.to_numpy(out) - ra @ rb)
    assert (err <= k * _cuda_bf16.ACCUMULATION_UNIT * (np.abs(ra) @ np.abs(rb))).all()


@pytest.mark.cuda
@needs_gpu
@pytest.mark.parametrize("act,loss", [("relu", "cross_entropy"), ("gelu", "mse"),
                                      ("sigmoid", "bce")])
def test_gpu_forward_and_gradients_match_the_cpu_backend(rng, act, loss):
    sizes = [64, 256, 128, 10]
    X, y, w = _case(rng, sizes, n=512)
    if loss != "cross_entropy":
        y = (rng.random((len(X), sizes[-1])) < 0.5).astype(np.float32)
    got = _forward_and_grads("cuda", sizes, act, loss, X, y, w)
    want = _forward_and_grads("cpu", sizes, act, loss, X, y, w)
    _assert_close(got, want, max(sizes[:-1] + [len(X)]))


@pytest.mark.cuda
@needs_gpu
def test_gpu_training_under_the_policy_learns_like_the_cpu(rng):
    centers = rng.standard_normal((4, 16)) * 3
    y = rng.integers(0, 4, 2048)
    X = (centers[y] + rng.standard_normal((2048, 16))).astype(np.float32)
    acc = {}
    for backend in ("cuda", "cpu"):
        m = mlpx.MLP([16, 64, 64, 4], backend=backend, dtype="mixed_bfloat16", seed=0)
        hist = m.fit(X, y, loss="cross_entropy", optimizer="adam", lr=1e-3, epochs=5,
                     batch_size=128, verbose=0)
        assert hist.history["loss"][-1] < 0.5 * hist.history["loss"][0]
        assert m.compute_dtype == "bfloat16" and m.dtype == np.float32
        acc[backend] = float(np.mean(m.predict(X).argmax(axis=1) == y))
    assert abs(acc["cuda"] - acc["cpu"]) <= 0.02 and acc["cuda"] > 0.9


@pytest.mark.cuda
@needs_gpu
@pytest.mark.parametrize("name", CHAIN_ACTIVATIONS)
def test_gpu_fused_bfloat16_activation_kernels_match_the_numba_twins(gpu, rng, name):
    """On the GPU: the same bits as the cpu's kernels. libdevice's float64 math may differ
    from the host's in a last bit, which changes a float32 only at a tie: not expected on
    these few thousand values; a failure here names that first."""
    for with_bias in (True, False):
        _check_fused_forward(gpu, rng, name, with_bias)
    _check_fused_derivative(gpu, rng, name)
