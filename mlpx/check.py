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
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

F64_TOL = 1e-10
C32 = 1.0
EPS32 = float(np.finfo(np.float32).eps)
DEFAULT_SIZES = (784, 1024, 1024, 10)


@dataclass
class TensorDiff:
    name: str
    k: int | None
    max_abs: float
    max_rel: float
    tol: float

    @property
    def ok(self) -> bool:
        # NaN differences fail too (comparisons with NaN are False)
        return bool(self.max_rel <= self.tol)


@dataclass
class Comparison:
    label: str
    dtype: str
    diffs: list[TensorDiff] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and all(d.ok for d in self.diffs)


@dataclass
class CheckReport:
    comparisons: list[Comparison]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.comparisons)

    def failures(self) -> list[str]:
        out = []
        for c in self.comparisons:
            if c.error is not None:
                out.append(f"{c.label} {c.dtype}: {c.error}")
            for d in c.diffs:
                if not d.ok:
                    out.append(
                        f"{c.label} {c.dtype}: {d.name} differs from the float64 reference by "
                        f"{d.max_rel:.3g} (relative to its largest value; tolerance {d.tol:.3g})"
                    )
        return out


def tolerance(dtype: str, k: int) -> float:
    """The documented bound on max|x - ref| / max|ref| for a tensor of inner dimension K."""
    return F64_TOL if dtype == "float64" else C32 * k * EPS32


def diff(name: str, x: np.ndarray, ref: np.ndarray, dtype: str, k: int) -> TensorDiff:
    x = np.asarray(x, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if x.shape != ref.shape:
        return TensorDiff(name, k, float("inf"), float("inf"), tolerance(dtype, k))
    d = float(np.max(np.abs(x - ref))) if x.size else 0.0
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    rel = d / scale if scale > 0 else (0.0 if d == 0 else float("inf"))
    if not np.isfinite(x).all():
        d = rel = float("nan")
    return TensorDiff(name, k, d, rel, tolerance(dtype, k))


# ----------------------------------------------------------------------------- runners
# Each runner returns (layer outputs, loss, gradients aligned with `names`).
Result = tuple[list[np.ndarray], float, list[np.ndarray]]


def run_mlpx(backend: str, dtype: str, sizes: Sequence[int], activation: str,
             weights: list[np.ndarray], X: np.ndarray, y: np.ndarray) -> Result:
    import mlpx

    model = mlpx.MLP(sizes, activation=activation, backend=backend, dtype=dtype, seed=0)
    model.set_weights([w.astype(dtype) for w in weights])
    ops = model.ops
    h = ops.asarray(X.astype(dtype))
    outs = []
    for layer in model.layers:
        h = layer.forward(h, training=False)
        outs.append(ops.to_numpy(h).copy())
    loss, grads = model.loss_and_grad(X.astype(dtype), y, loss="cross_entropy")
    return outs, float(loss), grads


def run_torch(dtype: str, sizes: Sequence[int], activation: str, weights: list[np.ndarray],
              X: np.ndarray, y: np.ndarray) -> Result:
    import torch
    import torch.nn.functional as F

    from . import activations as A

    act = A.get(activation)
    twin = act.torch_module()
    if twin is None:
        raise ValueError(f"activation {act.name!r} declares no PyTorch counterpart "
                         "(Activation.torch_module)")
    module = getattr(torch.nn, twin[0])(**twin[1])
    tdt = {"float32": torch.float32, "float64": torch.float64}[dtype]
    params = [torch.tensor(w.astype(dtype), dtype=tdt, requires_grad=True) for w in weights]
    h = torch.tensor(X.astype(dtype), dtype=tdt)
    outs = []
    n_layers = len(sizes) - 1
    for i in range(n_layers):
        W, b = params[2 * i], params[2 * i + 1]
        h = torch.addmm(b, h, W)
        if i < n_layers - 1:
            h = module(h)
        outs.append(h.detach().numpy().copy())
    loss = F.cross_entropy(h, torch.as_tensor(y, dtype=torch.int64))
    loss.backward()
    return outs, float(loss.detach()), [p.grad.numpy().copy() for p in params]


def compare(label: str, dtype: str, got: Result, ref: Result, sizes: Sequence[int],
            batch: int, names: list[str]) -> Comparison:
    outs, loss, grads = got
    r_outs, r_loss, r_grads = ref
    comp = Comparison(label, dtype)
    fan_ins = list(sizes[:-1])
    for i, (o, ro) in enumerate(zip(outs, r_outs, strict=True)):
        comp.diffs.append(diff(f"L{i} output", o, ro, dtype, max(fan_ins[: i + 1])))
    comp.diffs.append(diff("loss", np.array([loss]), np.array([r_loss]), dtype, max(fan_ins)))
    k_grad = max(batch, *sizes)
    for name, g, rg in zip(names, grads, r_grads, strict=True):
        comp.diffs.append(diff(f"{name} grad", g, rg, dtype, k_grad))
    return comp


def run_check(
    sizes: Sequence[int] = DEFAULT_SIZES,
    batch: int = 256,
    activation: str = "relu",
    dtypes: Sequence[str] = ("float64", "float32"),
    backends: Sequence[str] | None = None,
    torch: bool = True,
    seed: int = 0,
) -> CheckReport:
    """Compare every backend (and PyTorch) against the float64 reference; see the module doc."""
    import mlpx
    from mlpx._compat import has_module

    sizes = [int(s) for s in sizes]
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"sizes must be at least two positive widths, got {sizes}")
    if sizes[-1] < 2:
        raise ValueError("mlpx check uses softmax cross-entropy: the output width must be >= 2")
    backends = list(backends) if backends is not None else mlpx.available_backends()
    rng = np.random.default_rng(seed)
    # Inputs of unit scale; logits of O(1) so that the softmax is not saturated.
    X = rng.standard_normal((batch, sizes[0]))
    y = rng.integers(0, sizes[-1], size=batch)
    base = mlpx.MLP(sizes, activation=activation, backend="reference", dtype="float64", seed=seed)
    weights64 = base.get_weights()
    names = [f"L{i} {p.name}" for i, layer in enumerate(base.layers) for p in layer.parameters()]

    comparisons = []
    for dtype in dtypes:
        # The reference sees exactly the weights and inputs the dtype under test stores.
        w = [a.astype(dtype).astype(np.float64) for a in weights64]
        x = X.astype(dtype).astype(np.float64)
        ref = run_mlpx("reference", "float64", sizes, activation, w, x, y)
        labels = list(backends) + (["pytorch"] if torch and has_module("torch") else [])
        for label in labels:
            try:
                if label == "pytorch":
                    got = run_torch(dtype, sizes, activation, w, x, y)
                else:
                    got = run_mlpx(label, dtype, sizes, activation, w, x, y)
            except Exception as e:  # a backend that crashes is a failed check, not a crash
                comparisons.append(Comparison(label, dtype, error=f"{type(e).__name__}: {e}"))
                continue
            comparisons.append(compare(label, dtype, got, ref, sizes, batch, names))
    return CheckReport(comparisons)


def format_report(report: CheckReport) -> str:
    lines = []
    for c in report.comparisons:
        lines.append(f"{c.label} {c.dtype} vs reference float64: {'ok' if c.ok else 'FAILED'}")
        if c.error:
            lines.append(f"  error: {c.error}")
            continue
        lines.append(f"  {'tensor':<14}{'K':>7}{'max abs':>12}{'max rel':>12}{'tolerance':>12}")
        for d in c.diffs:
            k = "-" if c.dtype == "float64" else str(d.k)
            lines.append(f"  {d.name:<14}{k:>7}{d.max_abs:>12.3g}{d.max_rel:>12.3g}"
                         f"{d.tol:>12.3g}  {'ok' if d.ok else 'EXCEEDS'}")
    return "\n".join(lines)


def _sizes(text: str) -> list[int]:
    try:
        v = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--sizes must be comma-separated integers such as 784,256,10; got {text!r}"
        ) from None
    if len(v) < 2 or min(v) < 1:
        raise argparse.ArgumentTypeError(f"--sizes needs at least two positive widths: {text!r}")
    return v


def add_check_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "check",
        help="compare outputs and gradients of every backend (and PyTorch) with a float64 "
             "reference; non-zero exit on any difference above tolerance",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--sizes", type=_sizes, default=list(DEFAULT_SIZES),
                   help="layer widths, input first (default 784,1024,1024,10)")
    p.add_argument("--batch", type=int, default=256, help="batch size (default 256)")
    p.add_argument("--activation", default="relu", help="hidden activation (default relu)")
    p.add_argument("--dtype", default="float64,float32", help="dtypes to check")
    p.add_argument("--backend", action="append", default=None,
                   help="backend to check (repeatable); default every available backend")
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_check)
    return p


def activation_error(name: str) -> str | None:
    """Why `name` cannot be the hidden activation of a trained MLP, or None if it can."""
    from . import activations as A

    try:
        act = A.get(name)
    except (ValueError, TypeError) as e:
        return str(e)
    if not act.differentiable:
        return (f"the {act.name!r} activation has no gradient, so there is no training step to "
                "measure or check; choose a differentiable one such as relu or tanh")
    return None


def _cmd_check(args: argparse.Namespace) -> int:
    dtypes = [d.strip() for d in args.dtype.split(",") if d.strip()]
    if not dtypes or any(d not in ("float32", "float64") for d in dtypes):
        print(f"mlpx check: --dtype must be float32, float64 or both; got {args.dtype!r}",
              file=sys.stderr)
        return 2
    if args.batch < 1:
        print("mlpx check: --batch must be >= 1", file=sys.stderr)
        return 2
    from .backends import VALID_NAMES

    for b in args.backend or []:
        if b.lower() not in ("cpu", "cuda", "auto", "reference") and not re.fullmatch(
                r"cuda:\d+", b.lower()):
            print(f"mlpx check: unknown --backend {b!r}; valid names are "
                  f"{', '.join(VALID_NAMES)}", file=sys.stderr)
            return 2
    problem = activation_error(args.activation)
    if problem:  # else a traceback from deep inside the first backend's run
        print(f"mlpx check: --activation: {problem}", file=sys.stderr)
        return 2
    report = run_check(args.sizes, args.batch, args.activation, dtypes, args.backend,
                       torch=not args.no_torch, seed=args.seed)
    print(f"model {'-'.join(map(str, args.sizes))} {args.activation}, batch {args.batch}, "
          f"softmax cross-entropy; float64 tolerance {F64_TOL:g}, float32 tolerance "
          f"{C32:g}*K*eps32 (eps32 = {EPS32:.3g})")
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
