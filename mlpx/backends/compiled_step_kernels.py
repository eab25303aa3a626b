"""The whole training step of a Dense stack as one Numba function (mlpx.backends.compiled_step).

`step_<loss>` runs what `Sequential.forward`, the loss, `Sequential.backward` and the
optimiser's `step` run on the cpu backend, in the same order and with the same kernels: the
elementwise work calls the cpu backend's own Numba kernels (numba_activations, numba_losses,
numba_optim), and each GEMM calls, from compiled code, the same library function with the
same arguments as the layer path (`dnnl_sgemm` of oneDNN, or the `cblas_?gemm` of NumPy's
OpenBLAS that `np.matmul` calls). The weights after a step are therefore bit for bit those
of the layer path, without a Python call between the ops.

A GEMM whose route runs on one thread (gemm_routes' "numpy 1-thread", "onednn 1-thread")
sets the library's thread count to one, calls the same function and sets the count back to
mlpx's, as the layer path does around its call: OpenBLAS's `openblas_set_num_threads`, or
for oneDNN the calling thread's OpenMP count (`omp_set_num_threads` of libgomp). mlpx's
count, not one read before the call: OpenBLAS's count is the process's, and a count read
while another thread's call had set it to one would be put back as one.

The GEMM and thread-count functions are bound by name (`llvmlite.binding.add_symbol`) before
anything here compiles, so the compiled code, cached on disk, finds them again in a new
process.
Importing this module imports Numba; `bind_gemms` must have succeeded first.
"""

from __future__ import annotations

import ctypes

import llvmlite.binding as _llvm
import numpy as np
from numba.core import types as _t

from . import numba_activations as act
from . import numba_losses as losses
from . import numba_optim as optim
from .numba_common import jit, stamp_with_callees
from .small_batch_kernels import apply_ops

#: names the GEMM functions are bound to (add_symbol) for the compiled code
NUMPY_SGEMM, NUMPY_DGEMM, DNNL_SGEMM = "mlpx_step_sgemm", "mlpx_step_dgemm", "mlpx_step_dnnl"
#: and the thread-count setters: OpenBLAS's, and libgomp's for oneDNN
BLAS_SET_THREADS, OMP_SET_THREADS = "mlpx_step_blas_set_threads", "mlpx_step_omp_set_threads"

# GEMM routes, one per GEMM of the step, chosen in Python as the cpu backend would choose;
# ONE_THREAD added to a route runs its library on one thread for the call
# (routes[l] = forward, weight gradient, input gradient, then THREADS: mlpx's count)
ROUTE_NUMPY, ROUTE_DNNL, ROUTE_DNNL_PADDED = 0, 1, 2
ONE_THREAD = 4
ROUTE_NUMPY_1T, ROUTE_DNNL_1T, ROUTE_DNNL_PADDED_1T = 4, 5, 6
THREADS = 3
# the optimisers the step covers
OPT_SGD, OPT_MOMENTUM, OPT_ADAM = 0, 1, 2

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_i32, _i64, _ptr = _t.int32, _t.int64, _t.uintp
# NumPy's ILP64 OpenBLAS: cblas_?gemm(order, transa, transb, M, N, K, alpha, A, lda, B, ldb,
# beta, C, ldc) with 64-bit dimensions; pointers travel as integers (the same registers)
_cblas_sgemm = _t.ExternalFunction(NUMPY_SGEMM, _t.void(
    _i32, _i32, _i32, _i64, _i64, _i64, _t.float32, _ptr, _i64, _ptr, _i64, _t.float32, _ptr,
    _i64))
_cblas_dgemm = _t.ExternalFunction(NUMPY_DGEMM, _t.void(
    _i32, _i32, _i32, _i64, _i64, _i64, _t.float64, _ptr, _i64, _ptr, _i64, _t.float64, _ptr,
    _i64))
# dnnl_sgemm(transa, transb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc): row-major
_dnnl_sgemm = _t.ExternalFunction(DNNL_SGEMM, _i32(
    _t.int8, _t.int8, _i64, _i64, _i64, _t.float32, _ptr, _i64, _ptr, _i64, _t.float32, _ptr,
    _i64))
# void openblas_set_num_threads(int), void omp_set_num_threads(int)
_blas_set_threads = _t.ExternalFunction(BLAS_SET_THREADS, _t.void(_i32))
_omp_set_threads = _t.ExternalFunction(OMP_SET_THREADS, _t.void(_i32))

# Stand-in for a thread-count setter a process lacks: the name must resolve for the code to
# link, and route_codes never picks a route that would call it
_SET_STUB = ctypes.CFUNCTYPE(None, ctypes.c_int)(lambda n: None)


def bind_gemms(numpy_sgemm: int, numpy_dgemm: int, dnnl_sgemm: int | None,
               blas_set_threads: int | None = None, omp_set_threads: int | None = None) -> None:
    """Bind the GEMM functions' addresses to the names the compiled code calls, and the
    thread-count setters of OpenBLAS and OpenMP. Without oneDNN its name points at NumPy's
    sgemm, and a missing setter at a stand-in that does nothing; the routes then never
    choose them."""
    _llvm.add_symbol(NUMPY_SGEMM, numpy_sgemm)
    _llvm.add_symbol(NUMPY_DGEMM, numpy_dgemm)
    _llvm.add_symbol(DNNL_SGEMM, dnnl_sgemm or numpy_sgemm)
    stub = ctypes.cast(_SET_STUB, ctypes.c_void_p).value
    _llvm.add_symbol(BLAS_SET_THREADS, blas_set_threads or stub)
    _llvm.add_symbol(OMP_SET_THREADS, omp_set_threads or stub)


@jit
def _gemm(route, threads, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, pad):
    """c = op(a) @ op(b) along `route` (see _library_gemm); a ONE_THREAD route sets its
    library's thread count to one for the call and then to `threads` (mlpx's), as the layer
    path does (OpenBLAS's count for NumPy's BLAS; the calling thread's OpenMP count, which
    the parallel region of dnnl_sgemm takes, for oneDNN)."""
    if route < ONE_THREAD:
        return _library_gemm(route, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, pad)
    route = route - ONE_THREAD
    if route == ROUTE_NUMPY:
        _blas_set_threads(np.int32(1))
        status = _library_gemm(route, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, pad)
        _blas_set_threads(np.int32(threads))
    else:
        _omp_set_threads(np.int32(1))
        status = _library_gemm(route, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, pad)
        _omp_set_threads(np.int32(threads))
    return status


@jit
def _library_gemm(route, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, pad):
    """c = op(a) @ op(b), c row-major (m, n) and contiguous, as the cpu backend's matmul
    calls it: through oneDNN (the right operand first copied into `pad` on the padded
    route, as mlpx.backends._onednn does) or through np.matmul's CBLAS call."""
    if route == ROUTE_NUMPY:
        ta = _TRANS if trans_a else _NO_TRANS
        tb = _TRANS if trans_b else _NO_TRANS
        if c.itemsize == 4:  # float32
            _cblas_sgemm(_ROW_MAJOR, ta, tb, m, n, k, np.float32(1.0), a.ctypes.data, lda,
                         b.ctypes.data, ldb, np.float32(0.0), c.ctypes.data, n)
        else:
            _cblas_dgemm(_ROW_MAJOR, ta, tb, m, n, k, 1.0, a.ctypes.data, lda,
                         b.ctypes.data, ldb, 0.0, c.ctypes.data, n)
        return 0
    bptr = b.ctypes.data
    if route == ROUTE_DNNL_PADDED:
        rows, cols = b.shape
        for i in range(rows):
            for j in range(cols):
                pad[i, j] = b[i, j]
        bptr = pad.ctypes.data
        ldb = pad.shape[1]
    fa = np.int8(84) if trans_a else np.int8(78)  # b"T", b"N"
    fb = np.int8(84) if trans_b else np.int8(78)
    return _dnnl_sgemm(fa, fb, m, n, k, np.float32(1.0), a.ctypes.data, lda, bptr, ldb,
                       np.float32(0.0), c.ctypes.data, n)


@jit
def _forward_act(z, y, b, code, alpha, in_place):
    """y = f(z + b) as the cpu backend's bias_act runs it (y is z where in_place)."""
    if in_place:
        if code == act.ACT_RELU:
            act.bias_relu_(z, b)
        else:
            act.bias_act_(z, b, code, alpha)
    elif code == act.ACT_RELU:
        act.bias_relu(z, b, y)
    else:
        act.bias_act(z, b, code, alpha, y)


@jit
def _sum_rows(x, out):
    """out = x.sum(axis=0): from +0.0, row after row, in the array's dtype (as the fused
    act_backward_bias kernels, which match NumPy's sum bit for bit)."""
    n, m = x.shape
    out[:] = 0.0
    for i in range(n):
        for j in range(m):
            out[j] = out[j] + x[i, j]


@jit
def _update(kind, p, g, s1, s2, lr, h1, h2, h3, flag, wd, step):
    """One parameter's optimiser update, as the cpu backend's optimiser ops run it."""
    if kind == OPT_SGD:
        optim.sgd_update(p, g, lr)
    elif kind == OPT_MOMENTUM:  # h1 momentum, h2 dampening, flag nesterov
        optim.sgd_momentum_update(p, g, s1, lr, h1, h2, flag, wd)
    else:  # h1, h2 betas, h3 eps, flag decoupled
        optim.adam_update(p, g, s1, s2, lr, h1, h2, h3, wd, step, flag)


@jit
def _forward(x, ws, bs, zs, ys, pads, codes, alphas, in_place, routes):
    """Every layer's z = x W (GEMM), then y = f(z + b) (fused); returns the output."""
    n_layers = len(ws)
    m = x.shape[0]
    for layer in range(n_layers):
        src = x if layer == 0 else ys[layer - 1]
        w = ws[layer]
        k, n = w.shape
        _gemm(routes[layer, 0], routes[layer, THREADS], False, False, m, n, k, src, k, w, n,
              zs[layer], pads[layer])
        _forward_act(zs[layer], ys[layer], bs[layer], codes[layer], alphas[layer],
                     in_place[layer])
    return ys[n_layers - 1]


@jit
def _forward_layer(layer, src, ws, bs, zs, ys, pads, codes, alphas, in_place, routes):
    """Layer `layer` of _forward on the rows `src`."""
    w = ws[layer]
    k, n = w.shape
    _gemm(routes[layer, 0], routes[layer, THREADS], False, False, src.shape[0], n, k, src, k,
          w, n, zs[layer], pads[layer])
    _forward_act(zs[layer], ys[layer], bs[layer], codes[layer], alphas[layer], in_place[layer])


@jit
def _forward_ops(x, ws, bs, zs, ys, pads, codes, alphas, in_place, routes, ops):
    """_forward with the BatchNorm, LayerNorm and PReLU ops between the layers, in place
    (small_batch_kernels.apply_ops; `ops` as dense_chain takes it): those on the input on its
    copy in ops[7], those after layer i on ys[i]. Inference only; never a softmax op (its
    kernel is not the layers' bits: compiled_forward.plan), so apply_ops cannot fail."""
    starts, xin = ops[0], ops[7]
    # the first layer apart: x (perhaps read-only) and the copy are different types
    if starts[1] > starts[0]:
        xin[:, :] = x
        apply_ops(xin, starts[0], starts[1], ops)
        _forward_layer(0, xin, ws, bs, zs, ys, pads, codes, alphas, in_place, routes)
    else:
        _forward_layer(0, x, ws, bs, zs, ys, pads, codes, alphas, in_place, routes)
    apply_ops(ys[0], starts[1], starts[2], ops)
    for layer in range(1, len(ws)):
        _forward_layer(layer, ys[layer - 1], ws, bs, zs, ys, pads, codes, alphas, in_place,
                       routes)
        apply_ops(ys[layer], starts[layer + 1], starts[layer + 2], ops)
    return ys[len(ws) - 1]


@jit
def _backward_update(x, ws, bs, wgrads, bgrads, zs, ys, deltas, dxs, pads, codes, alphas,
                     routes, gbuf, opt_kind, w_s1, w_s2, b_s1, b_s2, lr, h1, h2, h3, flag, wd,
                     step):
    """Backward from dL/d(output) in gbuf, then the optimiser's update of every parameter."""
    n_layers = len(ws)
    m = x.shape[0]
    # delta = dy f'(z) with the bias gradient (fused), dW = x^T delta and dx = delta W^T
    # (GEMMs); the top layer reads gbuf, each lower one the dx of the layer above it
    for layer in range(n_layers - 1, -1, -1):
        dy = gbuf if layer == n_layers - 1 else dxs[layer + 1]
        z, y, bg = zs[layer], ys[layer], bgrads[layer]
        code = codes[layer]
        if code == act.ACT_IDENTITY:
            delta = dy
            _sum_rows(delta, bg)
        elif layer == n_layers - 1:  # the caller's array is never overwritten
            delta = deltas[layer]
            if code == act.ACT_RELU:
                act.relu_backward_bias(dy, z, delta, bg)
            else:
                act.act_backward_bias(dy, z, y, code, alphas[layer], delta, bg)
        else:  # delta over dy, the dx of the layer above
            delta = dy
            if code == act.ACT_RELU:
                act.relu_backward_bias_(dy, z, bg)
            else:
                act.act_backward_bias_(dy, z, y, code, alphas[layer], bg)
        src = x if layer == 0 else ys[layer - 1]
        w = ws[layer]
        k, n = w.shape
        _gemm(routes[layer, 1], routes[layer, THREADS], True, False, k, n, m, src, k, delta,
              n, wgrads[layer], pads[layer])
        if layer > 0:
            _gemm(routes[layer, 2], routes[layer, THREADS], False, True, m, k, n, delta, n, w,
                  n, dxs[layer], pads[layer])
    # the optimiser: parameters in model order (W then b, layer by layer)
    for layer in range(n_layers):
        _update(opt_kind, ws[layer], wgrads[layer], w_s1[layer], w_s2[layer], lr, h1, h2, h3,
                flag, wd, step)
        _update(opt_kind, bs[layer], bgrads[layer], b_s1[layer], b_s2[layer], lr, h1, h2, h3,
                flag, wd, step)


# One step per loss kernel (their targets have different types, and a kernel passed as an
# argument would make the compiled step uncacheable). Arguments, per layer l: weights ws[l]
# (in, out), biases bs[l], their gradients, the forward buffers zs[l] and ys[l] (one array
# where the activation runs in place), deltas[l] (the top layer's delta; lower layers write
# theirs over dxs[l + 1]), dxs[l] (dL/dx, for l > 0), pads[l] (oneDNN's padded copy of ws[l]
# where routes[l, 2] asks for it); routes[l] = the (forward, weight gradient, input
# gradient) GEMM routes and mlpx's thread count; gbuf receives dL/d(output). The optimiser
# state arrays w_s1 ... b_s2 are the gradients themselves where the optimiser keeps none (its
# kernel then neither reads nor writes them). Each returns the batch's mean loss.

@jit
def step_softmax_xent(x, target, ws, bs, wgrads, bgrads, zs, ys, deltas, dxs, pads, codes,
                      alphas, in_place, routes, gbuf, opt_kind, w_s1, w_s2, b_s1, b_s2, lr, h1,
                      h2, h3, flag, wd, step):
    out = _forward(x, ws, bs, zs, ys, pads, codes, alphas, in_place, routes)
    loss = losses.softmax_xent(out, target, gbuf, True)
    _backward_update(x, ws, bs, wgrads, bgrads, zs, ys, deltas, dxs, pads, codes, alphas,
                     routes, gbuf, opt_kind, w_s1, w_s2, b_s1, b_s2, lr, h1, h2, h3, flag, wd,
                     step)
    return loss


@jit
def step_mse(x, target, ws, bs, wgrads, bgrads, zs, ys, deltas, dxs, pads, codes, alphas,
             in_place, routes, gbuf, opt_kind, w_s1, w_s2, b_s1, b_s2, lr, h1, h2, h3, flag,
             wd, step):
    out = _forward(x, ws, bs, zs, ys, pads, codes, alphas, in_place, routes)
    loss = losses.mse(out, target, gbuf, True)
    _backward_update(x, ws, bs, wgrads, bgrads, zs, ys, deltas, dxs, pads, codes, alphas,
                     routes, gbuf, opt_kind, w_s1, w_s2, b_s1, b_s2, lr, h1, h2, h3, flag, wd,
                     step)
    return loss


@jit
def step_bce_logits(x, target, ws, bs, wgrads, bgrads, zs, ys, deltas, dxs, pads, codes,
                    alphas, in_place, routes, gbuf, opt_kind, w_s1, w_s2, b_s1, b_s2, lr, h1,
                    h2, h3, flag, wd, step):
    out = _forward(x, ws, bs, zs, ys, pads, codes, alphas, in_place, routes)
    loss = losses.bce_logits(out, target, gbuf, True)
    _backward_update(x, ws, bs, wgrads, bgrads, zs, ys, deltas, dxs, pads, codes, alphas,
                     routes, gbuf, opt_kind, w_s1, w_s2, b_s1, b_s2, lr, h1, h2, h3, flag, wd,
                     step)
    return loss


#: the step of each loss kernel the compiled step covers
STEPS = {"softmax_xent": step_softmax_xent, "mse": step_mse, "bce_logits": step_bce_logits}


def _callee_modules() -> tuple:
    from . import numba_common, vector_math_kernels

    return (act, losses, optim, numba_common, vector_math_kernels)


def _ops_callee_modules() -> tuple:
    from . import inference_ops, norm_kernels, proba_kernels, scan_kernels, small_batch_kernels

    return (*_callee_modules(), small_batch_kernels, inference_ops, norm_kernels,
            proba_kernels, scan_kernels)


stamp_with_callees((_gemm, _library_gemm, _forward_act, _sum_rows, _update, _forward,
                    _forward_layer, _backward_update, *STEPS.values()), _callee_modules())
stamp_with_callees((_forward_ops,), _ops_callee_modules())
