"""Inference of a Dense stack on a few rows as one compiled call (the compiled training step's
forward pass): each layer's GEMM, called from compiled code with the same library function
and arguments as the cpu backend's matmul (mlpx.backends.compiled_step_kernels), then its
fused bias and activation. The outputs are those of the layers' own `infer`, bit for bit,
without the Python between the ops (about 40 us a call on a three-layer model: buffer
allocation, route lookup and kernel dispatch per layer), which is most of a prediction's
time on a handful of rows.

BatchNorm, LayerNorm and PReLU layers (and PReLU activations) run between the Dense layers as
their own kernels, in place (mlpx.backends.inference_ops). `predict` uses it for rows above the
small-batch chain's cut-off (mlpx.backends.small_batch) and up to 64; MLPX_COMPILED_STEP=0 turns
it off with the compiled training step.
Thread-safe and re-entrant: weights are only read, each thread has its own hidden-layer
buffers, and the output is a new array.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from . import compiled_step, gemm_routes


class CompiledForward:
    """One model's compiled inference (see the module); call it on C-contiguous rows."""

    def __init__(self, model: Any, kernels: Any, dense: list[Any],
                 positions: list[list[Any]]) -> None:
        from ..layers.dense import _act_in_place
        from .inference_ops import InferenceOps, activation_code, is_prelu

        self.model, self._k, self._dense = model, kernels, dense
        self._codes = np.array([activation_code(d) for d in dense], np.int64)
        self._alphas = np.array([float(getattr(d.activation, "alpha", 0.0) or 0.0)
                                 for d in dense])
        # a PReLU layer's bias in place, its slopes an op after it
        self._in_place = np.array([is_prelu(d) or _act_in_place(d.activation) for d in dense],
                                  np.bool_)
        self._dtype = np.dtype(model.dtype)
        self._ops = InferenceOps(positions, self._dtype)
        self._spare = np.zeros((1, 1), self._dtype)
        self._routes: dict[int, Any] = {}  # rows -> the forward GEMMs' routes (None: not here)
        self._routes_generation = gemm_routes.generation
        self._local = threading.local()

    def _routes_for(self, m: int) -> Any:
        """The forward GEMM routes for m rows, as the cpu backend's matmul takes them, or None
        where one is a route compiled code does not call; looked up again after the routes
        were forgotten (set_num_threads: routes are measured per thread count)."""
        if m < 2:  # np.matmul runs one row as a GEMV, not the GEMM called here
            return None
        if self._routes_generation != gemm_routes.generation:
            self._routes.clear()
            self._routes_generation = gemm_routes.generation
        if m not in self._routes:
            k, codes = self._k, []
            threads = gemm_routes._mlpx_threads()  # a one-thread route's count after its call
            for layer in self._dense:
                W = layer.W.data
                if self._dtype == np.float32:
                    x = np.empty((m, W.shape[0]), self._dtype)
                    z = np.empty((m, W.shape[1]), self._dtype)
                    code = compiled_step.route_codes(
                        k, self.model.ops._gemm_libraries, [(x, W, z, False, False)])
                else:  # float64: NumPy's BLAS
                    code = [k.ROUTE_NUMPY]
                if code is None:
                    codes = None
                    break
                codes.append(code * 3 + [threads])  # forward; the other two are not called
            self._routes[m] = None if codes is None else np.array(codes, np.int64)
        return self._routes[m]

    def _buffers(self, m: int) -> tuple[tuple, tuple, tuple]:
        """This thread's z and y arrays for m rows (the last layer's are new: the result),
        and the ops' work arrays (InferenceOps.buffers)."""
        cache = getattr(self._local, "buffers", None)
        if cache is None:
            cache = self._local.buffers = {}
        hidden = cache.get(m)
        layers = self._dense
        if hidden is None:
            zs, ys = [], []
            for i, layer in enumerate(layers[:-1]):
                z = np.empty((m, layer.W.data.shape[1]), self._dtype)
                zs.append(z)
                ys.append(z if self._in_place[i] else np.empty_like(z))
            scratch = self._ops.buffers(m, [layers[0].W.data.shape[0]]
                                        + [d.W.data.shape[1] for d in layers])
            hidden = cache[m] = (zs, ys, scratch)
        z = np.empty((m, layers[-1].W.data.shape[1]), self._dtype)
        y = z if self._in_place[-1] else np.empty_like(z)
        return (*hidden[0], z), (*hidden[1], y), hidden[2]

    def __call__(self, x: np.ndarray) -> np.ndarray | None:
        """The model's outputs for the rows `x`, or None where this path does not serve them
        (a GEMM route compiled code does not call, an op's array of another dtype)."""
        routes = self._routes_for(x.shape[0])
        if routes is None:
            return None
        layers = self._dense
        ws = tuple([layer.W.data for layer in layers])  # read per call: set_weights swaps
        bs = tuple([layer.b.data for layer in layers])
        zs, ys, scratch = self._buffers(x.shape[0])
        pads = (self._spare,) * len(layers)
        if not self._ops:
            return self._k._forward(x, ws, bs, zs, ys, pads, self._codes, self._alphas,
                                    self._in_place, routes)
        ops = self._ops.pack(*scratch)
        if ops is None:
            return None
        return self._k._forward_ops(x, ws, bs, zs, ys, pads, self._codes, self._alphas,
                                    self._in_place, routes, ops)


def plan(model: Any) -> CompiledForward | None:
    """The compiled inference of `model`, or None where it does not cover it: the cpu backend
    in float32/float64; Dense layers, each with a bias and a built-in elementwise or PReLU
    activation (not softmax), at least 2 wide (np.matmul runs GEMV, not GEMM, for a width
    of 1); Dropout, BatchNorm, LayerNorm and PReLU layers anywhere
    (mlpx.backends.inference_ops)."""
    from .cpu import CPUBackend
    from .inference_ops import is_softmax, split_model

    if not compiled_step.enabled() or type(model.ops) is not CPUBackend:
        return None
    if np.dtype(model.dtype) not in (np.float32, np.float64) or model.policy.mixed:
        return None
    split = split_model(model)
    if split is None or not split[0] or model.ops.blas not in ("onednn", "numpy"):
        return None
    if any(is_softmax(layer) for layer in split[0]):
        return None  # softmax_rows may differ from the layers' NumPy softmax by an ulp
    for layer in split[0]:
        if layer.b is None or min(layer.W.data.shape) < 2:
            return None
    k = compiled_step._kernels()
    return None if k is None else CompiledForward(model, k, *split)
