"""`mlpx check`: the same network, weights and batch on every backend, compared tensor by tensor.

One MLP is built once (seeded); its weights are copied into a model on every available
backend in each dtype, into the float64 NumPy reference backend and, when PyTorch is
installed, into a PyTorch autograd graph. The same batch runs through each; every layer's
output, the loss and every parameter gradient are compared against the float64 reference.
A float32 run is compared against the reference fed the *same* float32-rounded weights and
inputs, so only the arithmetic is under test.

Tolerances, on max|x - ref| / max|ref| per tensor (relative to the tensor's largest magnitude,
so that entries that cancel to ~0 do not dominate):

| dtype   | tolerance                  | K                                                      |
|---------|----------------------------|--------------------------------------------------------|
| float64 | 1e-10                      | -                                                      |
| float32 | C32 * K * eps32 (C32 = 1)  | largest GEMM inner dimension the tensor depends on     |

eps32 = 2**-23. For a layer's output (and the loss) K is the largest fan-in up to that layer;
for gradients K is the largest of the batch size and every layer width (dW sums over the
batch, dX over the next layer's width). A float32 GEMM's worst-case error grows like K*eps;
the observed errors are far below it (about 0.005 K eps32 on the default model, for mlpx
and PyTorch alike), so C32 = 1 leaves room for the error carried from layer to layer and for
other BLAS libraries while still catching any wrong formula, whose error is of the order of
the values themselves. TF32 GEMMs (eps 2**-10) do not meet it, by design.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .arguments import DEFAULT_SIZES
from .comparison import (
    C32,
    EPS32,
    F64_TOL,
    CheckReport,
    Comparison,
    LayersFn,
    TensorDiff,
    _model,
    compare,
    mlp_layers,
    run_mlpx,
    run_torch,
    torch_unavailable_reason,
)

if TYPE_CHECKING:
    from ..losses import Loss


#: relative agreement of a central difference with the analytic directional derivative
FD_TOL = 1e-6


def finite_difference_check(layers: LayersFn, input_dim: int, weights: list[np.ndarray],
                            X: np.ndarray, y: np.ndarray, loss_fn: Loss, directions: int = 3,
                            seed: int = 0) -> Comparison:
    """The reference backend's gradients against float64 central differences of its loss
    (independent of every backward pass): along random directions v, (L(w + hv) - L(w - hv))
    / 2h against sum(grad * v). Needs nothing but the forward pass."""
    model = _model(layers, input_dim, "reference", "float64")
    model.set_weights(weights)
    _, grads = model.loss_and_grad(X, y, loss=loss_fn)
    rng = np.random.default_rng(seed + 1)
    comp = Comparison("finite differences", "float64")
    for d in range(directions):
        v = [rng.standard_normal(w.shape) for w in weights]
        norm = math.sqrt(sum(float((a * a).sum()) for a in v))
        v = [a / norm for a in v]
        h = 1e-5 * max(1.0, max(float(np.abs(w).max()) for w in weights))
        values = []
        for sign in (1.0, -1.0):
            model.set_weights([w + sign * h * a for w, a in zip(weights, v, strict=True)])
            values.append(float(model.loss_and_grad(X, y, loss=loss_fn)[0]))
        fd = (values[0] - values[1]) / (2 * h)
        analytic = sum(float((g * a).sum()) for g, a in zip(grads, v, strict=True))
        scale = max(abs(fd), abs(analytic), 1e-300)
        err = abs(fd - analytic)
        comp.diffs.append(TensorDiff(f"direction {d}", None, err, err / scale, FD_TOL))
    return comp


def needs_classes(loss_fn: Loss) -> bool:
    """Whether the loss takes integer class labels (and so needs two outputs or more)."""
    return loss_fn.name in ("cross_entropy", "nll")


def output_width_problem(loss_fn: Loss, n_outputs: int) -> str | None:
    """Why a model with `n_outputs` outputs cannot be checked with this loss, or None."""
    if needs_classes(loss_fn) and n_outputs < 2:
        return (f"loss {loss_fn.name!r} needs at least 2 outputs (one per class), got "
                f"{n_outputs}")
    return None


def _targets(loss_fn: Loss, n_out: int, batch: int, rng: np.random.Generator) -> np.ndarray:
    name = loss_fn.name
    if needs_classes(loss_fn):
        return rng.integers(0, n_out, size=batch)
    if name == "bce":
        return rng.integers(0, 2, size=(batch, n_out)).astype(np.float64)
    return rng.standard_normal((batch, n_out))


def run_check(
    sizes: Sequence[int] = DEFAULT_SIZES,
    batch: int = 256,
    activation: Any = "relu",
    dtypes: Sequence[str] = ("float64", "float32"),
    backends: Sequence[str] | None = None,
    torch: bool = True,
    seed: int = 0,
    loss: Any = "cross_entropy",
    model: LayersFn | None = None,
) -> CheckReport:
    """Compare every backend (and PyTorch) against the float64 reference; see the module doc.

    `activation` and `loss` may be names (built-in or registered) or objects; `model`, a
    function returning a fresh list of layers (user-defined ones included), replaces the
    Dense stack of `sizes` (then `sizes[0]` is its input width)."""
    import mlpx
    from mlpx._compat import has_module

    sizes = [int(s) for s in sizes]
    if min(sizes, default=0) < 1 or len(sizes) < (1 if model else 2):
        raise ValueError(f"sizes must be positive widths, an input and an output width at "
                         f"least (with model=, the input width alone); got {sizes}")
    loss_fn = mlpx.losses.get(loss)  # looked up once; every runner takes the object
    act = mlpx.activations.get(activation)
    layers = model or mlp_layers(sizes, activation)
    base = _model(layers, sizes[0], "reference", "float64", seed)
    n_out = base.output_dim
    problem = output_width_problem(loss_fn, n_out)
    if problem:
        raise ValueError(f"{problem}; make the last width the number of classes, or use a "
                         "loss for values such as mse")
    backends = list(backends) if backends is not None else mlpx.available_backends()
    rng = np.random.default_rng(seed)
    # Inputs of unit scale; outputs of O(1) so that a softmax is not saturated.
    X = rng.standard_normal((batch, sizes[0]))
    y = _targets(loss_fn, n_out, batch, rng)
    weights64 = base.get_weights()
    names = [f"L{i} {p.name}" for i, layer in enumerate(base.layers) for p in layer.parameters()]
    fan_ins = [max(layer.input_dim for layer in base.layers[: i + 1])
               for i in range(len(base.layers))]
    k_grad = max(batch, sizes[0], *(layer.output_dim for layer in base.layers))

    notes = []
    no_torch = torch_unavailable_reason(sizes, act, loss_fn, model is not None)
    use_torch = torch and has_module("torch") and no_torch is None
    if torch and no_torch is not None:
        notes.append(f"PyTorch left out: {no_torch}")
    elif torch and not has_module("torch"):
        notes.append("PyTorch left out: it is not installed (pip install torch)")
    comparisons = []
    for dtype in dtypes:
        if dtype == "mixed_bfloat16":  # own reference, tolerances: precision_check
            from .precision_check import check_mixed

            comparisons += check_mixed(backends, sizes, activation, layers, weights64, X, y,
                                       loss, names, fan_ins, k_grad, use_torch)
            continue
        # The reference sees exactly the weights and inputs the dtype under test stores.
        w = [a.astype(dtype).astype(np.float64) for a in weights64]
        x = X.astype(dtype).astype(np.float64)
        ref = run_mlpx("reference", "float64", layers, sizes[0], w, x, y, loss_fn)
        labels = list(backends) + (["pytorch"] if use_torch else [])
        for label in labels:
            try:
                if label == "pytorch":
                    got = run_torch(dtype, sizes, act, w, x, y, loss_fn)
                else:
                    got = run_mlpx(label, dtype, layers, sizes[0], w, x, y, loss_fn)
            except Exception as e:  # a backend that crashes is a failed check, not a crash
                comparisons.append(Comparison(label, dtype, error=f"{type(e).__name__}: {e}"))
                continue
            comparisons.append(compare(label, dtype, got, ref, fan_ins, k_grad, names))
    if any(b.strip().lower() in ("reference", "numpy") for b in backends):
        # The reference against itself proves nothing: its gradients meet an independent
        # check, central differences of its own loss; its outputs meet PyTorch's, if any.
        comparisons.append(finite_difference_check(layers, sizes[0], weights64, X, y, loss_fn,
                                                    seed=seed))
        notes.append(
            "reference: its float64 outputs are the definition the others are compared with; "
            "independently, its gradients are checked against central finite differences"
            + (" and everything against PyTorch" if use_torch else
               " (outputs only against PyTorch, which is left out here)")
        )
    return CheckReport(comparisons, notes)


def format_report(report: CheckReport) -> str:
    lines = []
    for c in report.comparisons:
        if c.label == "finite differences":
            lines.append(f"reference float64 gradients vs central finite differences: "
                         f"{'ok' if c.ok else 'FAILED'}")
            lines.extend(f"  {d.name:<14}{'':>7}{d.max_abs:>12.3g}{d.max_rel:>12.3g}"
                         f"{d.tol:>12.3g}  {'ok' if d.ok else 'EXCEEDS'}" for d in c.diffs)
            continue
        against = f"reference {'mixed_bfloat16' if c.dtype == 'mixed_bfloat16' else 'float64'}"
        lines.append(f"{c.label} {c.dtype} vs {against}: {'ok' if c.ok else 'FAILED'}")
        if c.error:
            lines.append(f"  error: {c.error}")
            continue
        lines.append(f"  {'tensor':<14}{'K':>7}{'max abs':>12}{'max rel':>12}{'tolerance':>12}")
        for d in c.diffs:
            k = "-" if c.dtype == "float64" else str(d.k)
            lines.append(f"  {d.name:<14}{k:>7}{d.max_abs:>12.3g}{d.max_rel:>12.3g}"
                         f"{d.tol:>12.3g}  {'ok' if d.ok else 'EXCEEDS'}")
    lines.extend(f"note: {n}" for n in report.notes)
    return "\n".join(lines)


def run_command(args: argparse.Namespace) -> int:
    """`mlpx check` with arguments the command line has already checked (mlpx.commands.cli)."""
    report = run_check(args.sizes, args.batch, args.activation, args.dtype, args.backend,
                       torch=not args.no_torch, seed=args.seed, loss=args.loss_fn,
                       model=args.model)
    what = "user-defined model" if args.model else (
        f"model {'-'.join(map(str, args.sizes))} {args.activation}")
    print(f"{what}, batch {args.batch}, loss {args.loss}; float64 tolerance {F64_TOL:g}, "
          f"float32 tolerance {C32:g}*K*eps32 (eps32 = {EPS32:.3g})"
          + ("; PyTorch autocast against mixed_bfloat16: C16*K*eps16, K the products' depth "
             "(see mlpx.commands.precision_check)" if "mixed_bfloat16" in args.dtype else ""))
    print(format_report(report))
    failures = report.failures()
    if failures:
        print("\nmlpx check FAILED:")
        for f in failures:
            print(f"  {f}")
        return 1
    print(f"\nmlpx check passed: {len(report.comparisons)} comparisons, every tensor within "
          "tolerance")
    return 0
