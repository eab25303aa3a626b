"""A training step without Python between the ops: plain Dense stacks on the cpu backend.

`fit` runs each step of a covered model as one call of a compiled function
(mlpx.backends.compiled_step_kernels) that does the forward GEMMs, the fused bias
+ activation, the loss and its gradient, the backward GEMMs with the fused derivative and
bias gradient, and the optimiser's update. It calls the same kernels and the same GEMM
library functions with the same arguments as the layer-by-layer path, so the weights, the
optimiser state and the loss are bit for bit the same; only the Python between the ops goes.
Each GEMM takes the route the cpu backend's matmul takes for it (mlpx.backends.gemm_routes),
a route on one thread included: the compiled code sets the library's thread count to one
around that call and then to mlpx's (OpenBLAS's count, or the calling thread's OpenMP count
for oneDNN), as the layer path does; where the setter is not found, a batch with such a
route runs the layer path.

Covered: the cpu backend with float32 or float64 variables (not "mixed_bfloat16"), GEMMs on
oneDNN or NumPy's BLAS (MLPX_BLAS=auto, onednn or numpy, with NumPy's ILP64 OpenBLAS), a
stack of `Dense` layers with biases, built-in elementwise activations and no regularisers;
the losses cross_entropy (integer labels), mse and bce; the optimisers SGD (with or without
momentum, Nesterov, weight decay), Adam and AdamW. Everything else runs the layer path, as
does a step whose products NumPy would not hand to GEMM (a dimension of 1). MLPX_COMPILED_STEP=0
turns the compiled step off (and with it the chunks of steps per call of
mlpx.backends.compiled_epoch).
"""

from __future__ import annotations

import ctypes
import functools
import os
from typing import Any

import numpy as np

from . import gemm_routes, numpy_blas
from .gemm_plumbing import aligned_empty

_ENV = "MLPX_COMPILED_STEP"
_NUMPY_GEMMS = ("scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_")  # NumPy >= 2's ILP64 OpenBLAS
# its thread-count setter (the one threadpoolctl calls), and whether it runs its own pthreads
# (1; an OpenMP build's count would be another call's)
_NUMPY_SET_THREADS = "scipy_openblas_set_num_threads64_"
_NUMPY_PARALLEL = "scipy_openblas_get_parallel64_"
_OMP_SET_THREADS = "omp_set_num_threads"  # libgomp's, as gemm_routes sets it for oneDNN
_PAD_FLOATS = 16  # oneDNN's padded copy: rows 64 bytes longer (mlpx.backends._onednn._PAD)


def enabled() -> bool:
    """False when MLPX_COMPILED_STEP is 0, false, no or off."""
    return os.environ.get(_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def _addresses(lib: ctypes.CDLL, names: tuple[str, ...]) -> tuple[int, ...]:
    return tuple(ctypes.cast(getattr(lib, name), ctypes.c_void_p).value  # type: ignore[misc]
                 for name in names)


@functools.cache
def _numpy_blas() -> ctypes.CDLL | None:
    """NumPy's bundled ILP64 OpenBLAS, or None where NumPy's BLAS is not that library."""
    path = numpy_blas.path()
    if path is None:
        return None
    try:
        lib = ctypes.CDLL(path)  # already loaded by NumPy: the same handle, the same symbols
        _addresses(lib, _NUMPY_GEMMS)
    except (OSError, AttributeError):
        return None
    return lib


def _numpy_gemm_addresses() -> tuple[int, int] | None:
    """Addresses of the sgemm and dgemm np.matmul calls, or None when NumPy's BLAS is not
    the bundled ILP64 OpenBLAS whose symbols are known."""
    lib = _numpy_blas()
    return None if lib is None else _addresses(lib, _NUMPY_GEMMS)  # type: ignore[return-value]


@functools.cache
def _thread_setter(path: str) -> int | None:
    """The address of the thread-count setter a one-thread route of `path` ("numpy" or
    "onednn") calls around its GEMM, or None where it is not found (its one-thread routes
    then take the layer path)."""
    try:
        if path == "numpy":
            lib = _numpy_blas()
            if lib is None or getattr(lib, _NUMPY_PARALLEL)() != 1:
                return None
            return _addresses(lib, (_NUMPY_SET_THREADS,))[0]
        return _addresses(ctypes.CDLL("libgomp.so.1"), (_OMP_SET_THREADS,))[0]
    except (OSError, AttributeError):
        return None


def one_thread_paths() -> frozenset[str]:
    """The GEMM libraries whose one-thread routes the compiled code calls."""
    return frozenset(p for p in ("numpy", "onednn") if _thread_setter(p) is not None)


@functools.cache
def _kernels() -> Any:
    """The compiled step's module, its GEMM and thread-count setter names bound first
    (None: no known NumPy BLAS)."""
    numpy_gemms = _numpy_gemm_addresses()
    if numpy_gemms is None:
        return None
    from . import _onednn

    lib = _onednn.load()
    dnnl = ctypes.cast(lib.dnnl_sgemm, ctypes.c_void_p).value if lib is not None else None
    from . import compiled_step_kernels as k

    omp = _thread_setter("onednn") if dnnl is not None else None  # libgomp: oneDNN's
    k.bind_gemms(*numpy_gemms, dnnl, _thread_setter("numpy"), omp)
    return k


def _loss_kernel(loss: Any) -> str | None:
    from .. import losses

    kind = type(loss)
    if kind is losses.CrossEntropyLoss:
        return "softmax_xent"
    if kind is losses.MSELoss:
        return "mse"
    if kind is losses.BCEWithLogitsLoss:
        return "bce_logits"
    return None


def _optimizer_kind(opt: Any, k: Any) -> int | None:
    from .. import optim

    kind = type(opt)
    if kind is optim.SGD:
        return k.OPT_SGD if opt.momentum == 0 and opt.weight_decay == 0 else k.OPT_MOMENTUM
    if kind in (optim.Adam, optim.AdamW):
        return k.OPT_ADAM
    return None


def inference_layers(model: Any) -> bool:
    """Whether the compiled forward pass covers `model`: Dense layers only, each with a bias
    and a built-in elementwise activation, each at least 2 wide (np.matmul runs GEMV, not
    GEMM, for a width of 1)."""
    from .. import activations
    from ..layers.dense import Dense

    for layer in model.layers:
        if type(layer) is not Dense or layer.b is None or layer.slopes is not None:
            return False
        if min(layer.W.data.shape) < 2 or activations.scalar_kernel(layer.activation) is None:
            return False
    return True


def _covered_layers(model: Any) -> bool:
    """inference_layers, and what the backward pass needs: differentiable activations and
    no regulariser (the step adds no penalty gradient)."""
    if not inference_layers(model):
        return False
    for layer in model.layers:
        if layer.kernel_regularizer is not None or layer.bias_regularizer is not None:
            return False
        if not layer.activation.differentiable:
            return False
    return True


def route_codes(k: Any, libraries: tuple[str, ...], operands: list[tuple]) -> list[int] | None:
    """The compiled code's route of each float32 GEMM `(a, b, out, trans_a, trans_b)`: the
    one the cpu backend's matmul takes for the same operands (mlpx.backends.gemm_routes,
    measured per shape class), or None where one of them is a route compiled code does not
    call (another library, or one thread of a library whose thread-count setter was not
    found)."""
    from . import _onednn, gemm_routes

    onednn_ok = _onednn.available() and not _onednn._state.get("forked")
    codes = []
    for a, b, out, trans_a, trans_b in operands:
        route = gemm_routes.route_for(libraries, a, b, out, trans_a, trans_b)
        if route.path not in ("numpy", "onednn"):
            return None
        if route.path == "numpy" or not onednn_ok:
            code = k.ROUTE_NUMPY
        elif route.pad and trans_b and (b.strides[0] % _onednn._PAGE) == 0:
            code = k.ROUTE_DNNL_PADDED
        else:
            code = k.ROUTE_DNNL
        # the layer path limits the route's own library (NumPy's BLAS, where it stands in for
        # a oneDNN that declines, keeps its threads), and only where it has a way to
        ran = "numpy" if code == k.ROUTE_NUMPY else "onednn"
        if (route.one_thread and ran == route.path
                and gemm_routes.thread_limit(route.path) is not None):
            if _thread_setter(route.path) is None:
                return None
            code += k.ONE_THREAD
        codes.append(code)
    return codes


def plan(model: Any, loss: Any, optimizer: Any) -> CompiledStep | None:
    """The compiled step for `model` trained with `loss` and `optimizer`, or None where it
    does not cover them (the caller then runs the layer path)."""
    from .cpu import CPUBackend

    if not enabled() or type(model.ops) is not CPUBackend or model.policy.mixed:
        return None
    if np.dtype(model.dtype) not in (np.float32, np.float64) or not _covered_layers(model):
        return None
    loss_name = _loss_kernel(loss)
    if loss_name is None or model.ops.blas not in ("onednn", "numpy"):
        return None
    k = _kernels()
    if k is None:
        return None
    opt_kind = _optimizer_kind(optimizer, k)
    if opt_kind is None:
        return None
    return CompiledStep(model, k, loss_name, opt_kind)


class CompiledStep:
    """One model's compiled step; `run` takes a batch and updates the model."""

    def __init__(self, model: Any, kernels: Any, loss_name: str, opt_kind: int) -> None:
        from .. import activations
        from ..layers.dense import _act_in_place

        self.model, self._k, self._opt_kind = model, kernels, opt_kind
        self.loss_name = loss_name
        self._labels = loss_name == "softmax_xent"  # integer class labels
        self._step = kernels.STEPS[loss_name]
        acts = [layer.activation for layer in model.layers]
        self._codes = np.array([activations.scalar_kernel(a) for a in acts], np.int64)
        self._alphas = np.array([float(getattr(a, "alpha", 0.0) or 0.0) for a in acts])
        self._in_place = np.array([_act_in_place(a) for a in acts], np.bool_)
        self._batches: dict[int, tuple] = {}  # batch size -> its buffers and GEMM routes
        self._routes_generation = gemm_routes.generation
        # what the step was compiled for: a callback that swaps a part falls back
        self._parts = [(layer, layer.activation) for layer in model.layers]
        self._optimizer = model.optimizer_
        from ..optim import Optimizer

        self._optimizer_step = Optimizer.step

    def covers(self, x: Any, target: Any, g: Any) -> bool:
        """Whether this batch can take the compiled step: contiguous arrays, the targets the
        loss kernel reads, and every GEMM dimension above 1 (np.matmul runs GEMV or no BLAS
        at all for a dimension of 1)."""
        if g is None or x.shape[0] < 2 or not (
                x.flags.c_contiguous and target.flags.c_contiguous and g.flags.c_contiguous
        ) or x.dtype != g.dtype or not self._unchanged():
            return False
        if self._labels:
            if not (target.ndim == 1 and target.dtype == np.int64):
                return False
        elif not (target.shape == g.shape and target.dtype == g.dtype):
            return False
        return self._batch(x.shape[0]) is not None

    def _batch(self, m: int) -> tuple | None:
        """The buffers and GEMM routes of a batch of m rows (None: a GEMM of this batch size
        takes a route compiled code does not call); looked up again after the routes were
        (set_num_threads: routes are measured per thread count)."""
        if self._routes_generation != gemm_routes.generation:
            self._batches.clear()
            self._routes_generation = gemm_routes.generation
        if m not in self._batches:
            self._batches[m] = self._buffers(m)
        return self._batches[m]

    def _unchanged(self) -> bool:
        """Nothing the step was compiled for was swapped, and no method it stands in for
        was replaced (an instrumented `opt.step` or backend op must see every step)."""
        model, opt = self.model, self.model.optimizer_
        if opt is not self._optimizer or len(model.layers) != len(self._parts):
            return False
        if type(opt).step is not self._optimizer_step or "step" in vars(opt):
            return False
        for value in vars(model.ops).values():  # a wrapped op on the backend instance
            if callable(value):
                return False
        for layer, (was, activation) in zip(model.layers, self._parts, strict=True):
            if layer is not was or layer.activation is not activation:
                return False
        return True

    def run(self, x: Any, target: Any, g: Any, lr: float) -> tuple[float, Any]:
        """One step on the batch (x, target), dL/d(output) into g; the batch's mean loss and
        the model's outputs for the batch (as the forward pass left them: the update does not
        touch them). The optimiser's step count goes up by one, as `Optimizer.step` does."""
        args = self.step_args(x.shape[0], g, lr)
        opt = self.model.optimizer_
        opt.step_count += 1
        loss = self._step(x, target, *args, float(opt.step_count))
        self.model._grads_pending = False
        return loss, self.outputs(x.shape[0])

    def step_args(self, m: int, g: Any, lr: float) -> tuple:
        """The compiled step's arguments after the batch and before the step count, for a
        batch of m rows (dL/d(output) into g): parameters, gradients, work arrays, routes and
        the optimiser's state and hyperparameters (mlpx.backends.compiled_step_kernels)."""
        bufs = self._batch(m)
        if bufs is None:
            raise RuntimeError("the compiled step does not cover this batch size (covers())")
        zs, ys, deltas, dxs, pads, routes = bufs
        layers = self.model.layers
        ws = tuple(layer.W.data for layer in layers)
        bs = tuple(layer.b.data for layer in layers)
        wg = tuple(layer.W.grad for layer in layers)
        bg = tuple(layer.b.grad for layer in layers)
        w_s1, w_s2, b_s1, b_s2, h1, h2, h3, flag, wd = self._optimizer_args(
            self.model.optimizer_, wg, bg)
        return (ws, bs, wg, bg, zs, ys, deltas, dxs, pads, self._codes, self._alphas,
                self._in_place, routes, g, self._opt_kind, w_s1, w_s2, b_s1, b_s2, float(lr),
                h1, h2, h3, flag, wd)

    def outputs(self, m: int) -> Any:
        """The model's outputs of the last step on m rows (the top layer's y buffer)."""
        return self._batches[m][1][-1]

    def _optimizer_args(self, opt: Any, wg: tuple, bg: tuple) -> tuple:
        """The state arrays and hyperparameters of the update, as the cpu backend's
        optimiser ops receive them (the gradient stands for state the optimiser lacks)."""
        k = self._k
        if self._opt_kind == k.OPT_SGD:
            return wg, wg, bg, bg, 0.0, 0.0, 0.0, False, 0.0
        states = opt.state
        if self._opt_kind == k.OPT_MOMENTUM:
            if opt.momentum == 0.0:
                bufs_w, bufs_b = wg, bg
            else:
                bufs = [s["momentum_buffer"] for s in states]
                bufs_w, bufs_b = tuple(bufs[0::2]), tuple(bufs[1::2])
            return (bufs_w, bufs_w, bufs_b, bufs_b, float(opt.momentum),
                    float(opt.dampening), 0.0, bool(opt.nesterov), float(opt.weight_decay))
        m = [s["exp_avg"] for s in states]
        v = [s["exp_avg_sq"] for s in states]
        return (tuple(m[0::2]), tuple(v[0::2]), tuple(m[1::2]), tuple(v[1::2]),
                float(opt.betas[0]), float(opt.betas[1]), float(opt.eps), bool(opt.decoupled),
                float(opt.weight_decay))

    def _buffers(self, m: int) -> tuple | None:
        """The layers' own work arrays for a batch of m rows (those the layer path uses),
        and the GEMM routes the cpu backend takes for that batch."""
        layers, dtype = self.model.layers, np.dtype(self.model.dtype)
        spare = np.zeros((1, 1), dtype)  # stands for an array a layer does not use
        zs, ys, deltas, dxs, pads, routes = [], [], [], [], [], []
        top = len(layers) - 1
        for i, layer in enumerate(layers):
            n_in, n_out = layer.W.data.shape
            z = layer._buffer("z", (m, n_out))
            zs.append(z)
            ys.append(z if self._in_place[i] else layer._buffer("y", (m, n_out)))
            identity = self._codes[i] == self._k.act.ACT_IDENTITY
            deltas.append(layer._buffer("delta", (m, n_out)) if i == top and not identity
                          else spare)
            dxs.append(layer._buffer("dx", (m, n_in)) if i > 0 else spare)
            route = self._routes(m, i, dtype)
            if route is None:
                return None
            routes.append(route)
            pads.append(aligned_empty((n_in, n_out + _PAD_FLOATS), dtype)
                        if route[2] % self._k.ONE_THREAD == self._k.ROUTE_DNNL_PADDED
                        else spare)
        return (tuple(zs), tuple(ys), tuple(deltas), tuple(dxs), tuple(pads),
                np.array(routes, np.int64))

    def _routes(self, m: int, layer_index: int, dtype: np.dtype) -> list[int] | None:
        """The routes of a layer's forward, weight-gradient and input-gradient GEMMs: those
        the cpu backend's matmul takes for the same operands (mlpx.backends.gemm_routes:
        measured per shape class), then mlpx's thread count (a one-thread route's count
        after its call), or None where one of them is a route the compiled step does not
        call (see route_codes): the batch then takes the layer path."""
        k = self._k
        threads = gemm_routes._mlpx_threads()
        if dtype != np.float32:  # float64: NumPy's BLAS (MKL is excluded by plan)
            return [k.ROUTE_NUMPY] * 3 + [threads]
        W = self.model.layers[layer_index].W.data
        n_in, n_out = W.shape
        x = np.empty((m, n_in), dtype)
        z = np.empty((m, n_out), dtype)
        operands = [(x, W, z, False, False), (x, z, W, True, False)]
        if layer_index > 0:  # the first layer computes no input gradient
            operands.append((z, W, x, False, True))
        codes = route_codes(k, self.model.ops._gemm_libraries, operands)
        return None if codes is None else codes + [k.ROUTE_NUMPY] * (3 - len(codes)) + [threads]
