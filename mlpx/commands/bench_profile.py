"""Where a training step's time goes: every backend op of `fit`, timed in place.

`profile_fit` wraps each public method of the model's backend object (instance attributes
shadowing the class's, removed afterwards), runs a few epochs of `fit`, and adds up the wall
time of every outermost op call (an op that calls another counts once) under a label:

- GEMMs by layer and pass (`L1 fwd`, `L1 dW`, `L1 dX`), from the operands' shapes;
- elementwise kernels by layer (`bias_act L0`, `act_backward_bias_grad L0`, `sum_rows L2`): a
  forward kernel belongs to the layer of the GEMM before it, `act_backward` (with or without
  the bias gradient in the same pass) to the layer below the
  `dX` GEMM before it, the bias gradient to the layer of its `dW`;
- the batch gather (`take_rows`), the loss, the optimiser update, and any other op.

What no op accounts for is Python: the layers' and the loop's own code, the wrappers' calls
included (their cost per call is measured and reported as `timer_per_call_s`). On a GPU the
ops are asynchronous, so the profile synchronises after each one and shows the device time.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections import defaultdict
from typing import Any

GEMM, ELEMENTWISE, GATHER, LOSS, UPDATE, OTHER = (
    "gemm", "elementwise", "gather", "loss", "update", "other")
_LOSS_OPS = ("softmax_cross_entropy", "softmax_cross_entropy_soft", "bce_with_logits", "mse",
             "l1", "nll")
_UPDATE_OPS = ("sgd_update", "sgd_momentum_update", "adam_update", "adagrad_update",
               "rmsprop_update", "global_norm", "scale_", "clip_", "clip_scale",
               "add_penalty_grad")
_ELEMENTWISE_OPS = ("bias_act", "act_backward", "act_backward_bias_grad", "sum_rows",
                    "prelu_backward", "dropout_mask", "dropout_apply")
_NOT_OPS = ("synchronize",)


class OpTimer:
    """Accumulates per-label wall time of a backend's op calls while installed."""

    def __init__(self, ops: Any, sizes: list[int]) -> None:
        self.ops = ops
        self.pairs = list(zip(sizes[:-1], sizes[1:], strict=True))
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.kind: dict[str, str] = {}
        self._depth = 0
        self._last_gemm: tuple[int, str] = (0, "fwd")
        self._names: list[str] = []
        self._sync = ops.synchronize if getattr(ops, "name", "cpu") != "cpu" else None

    def _layer(self, a_shape: tuple, b_shape: tuple, trans_a: bool, trans_b: bool) -> int:
        if trans_b:  # dX = delta @ W.T: b is W (in, out)
            pair = tuple(b_shape)
        elif trans_a:  # dW = x.T @ delta: a is x (m, in), b is delta (m, out)
            pair = (a_shape[1], b_shape[1])
        else:  # z = x @ W
            pair = tuple(b_shape)
        return self.pairs.index(pair) if pair in self.pairs else -1

    def label(self, name: str, args: tuple, kwargs: dict) -> tuple[str, str]:
        if name == "matmul":
            a, b = args[0], args[1]
            ta = bool(kwargs.get("trans_a", args[3] if len(args) > 3 else False))
            tb = bool(kwargs.get("trans_b", args[4] if len(args) > 4 else False))
            layer = self._layer(a.shape, b.shape, ta, tb)
            kind = "dW" if ta else "dX" if tb else "fwd"
            self._last_gemm = (layer, kind)
            return f"GEMM L{layer} {kind}", GEMM
        layer, kind = self._last_gemm
        if name in ("act_backward", "act_backward_bias_grad", "prelu_backward"):
            return f"{name} L{layer - 1 if kind == 'dX' else layer}", ELEMENTWISE
        if name in _ELEMENTWISE_OPS:
            return f"{name} L{layer}", ELEMENTWISE
        if name == "take_rows":
            return "gather (take_rows)", GATHER
        if name in _LOSS_OPS:
            return f"loss ({name})", LOSS
        if name in _UPDATE_OPS:
            return f"update ({name})", UPDATE
        return name, OTHER

    def _wrap(self, name: str, fn: Any) -> Any:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self._depth:
                return fn(*args, **kwargs)
            self._depth += 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                if self._sync is not None:
                    self._sync()
                dt = time.perf_counter() - t0
                self._depth -= 1
                label, kind = self.label(name, args, kwargs)
                self.seconds[label] += dt
                self.calls[label] += 1
                self.kind[label] = kind

        return timed

    def install(self) -> None:
        for name, _member in inspect.getmembers(type(self.ops), inspect.isfunction):
            if name.startswith("_") or name in _NOT_OPS or name in vars(self.ops):
                continue
            setattr(self.ops, name, self._wrap(name, getattr(self.ops, name)))
            self._names.append(name)

    def remove(self) -> None:
        for name in self._names:
            delattr(self.ops, name)
        self._names = []

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()


def _timer_cost(timer: OpTimer) -> float:
    """Seconds one wrapped call adds, measured on a wrapper around a function doing nothing."""
    wrapped = timer._wrap("_noop", lambda *a, **k: None)
    reps = 20000
    t0 = time.perf_counter()
    for _ in range(reps):
        wrapped()
    per_call = (time.perf_counter() - t0) / reps
    for d in (timer.seconds, timer.calls):
        d.pop("_noop", None)
    return per_call


def profile_fit(model: Any, X: Any, y: Any, sizes: list[int], batch: int, steps: int,
                epochs: int = 3) -> dict[str, Any]:
    """Per-step seconds of every op label over `epochs` epochs of `model.fit` (already
    warmed up with the same batch size), and the step's total with the timers installed."""
    ops = model.ops
    timer = OpTimer(ops, sizes)
    per_call = _timer_cost(timer)
    timer.install()
    try:
        timer.reset()
        ops.synchronize()
        t0 = time.perf_counter()
        model.fit(X, y, epochs=epochs, batch_size=batch, verbose=0)
        ops.synchronize()
        total = time.perf_counter() - t0
    finally:
        timer.remove()
    n_steps = steps * epochs
    ops_rows = [
        {"label": label, "kind": timer.kind[label], "calls_per_step": timer.calls[label] / n_steps,
         "s_per_step": timer.seconds[label] / n_steps}
        for label in timer.seconds
    ]
    order = (GATHER, GEMM, ELEMENTWISE, LOSS, UPDATE, OTHER)
    ops_rows.sort(key=lambda r: (order.index(r["kind"]), r["label"]))
    step = total / n_steps
    return {
        "step_s": step,
        "ops": ops_rows,
        "ops_s": sum(r["s_per_step"] for r in ops_rows),
        "python_s": step - sum(r["s_per_step"] for r in ops_rows),
        "calls_per_step": sum(r["calls_per_step"] for r in ops_rows),
        "timer_per_call_s": per_call,
        "epochs": epochs,
    }
