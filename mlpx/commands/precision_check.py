"""The "mixed_bfloat16" policy checked against PyTorch autocast (`mlpx check --dtype
mixed_bfloat16`).

The reference is mlpx's reference backend under the policy (mlpx.backends.bfloat16's
contract: operands rounded to bfloat16, float32 accumulation, the rest float32), fed the same
float32 weights and batch. Every backend under the policy must match it to the float32
tolerance of mlpx.check times C_MIX * depth (one contract; below); PyTorch under
`torch.autocast("cpu", dtype=torch.bfloat16)`, which also rounds each product's output and
computes activations in bfloat16, must match it to the bfloat16 tolerance

    max|x - ref| / max|ref| <= C16 * depth * eps16,  eps16 = 2**-8 (bfloat16's unit roundoff)

per tensor, where `depth` counts the matrix products the tensor depends on: i + 1 for layer
i's output, the number of layers for the loss, twice that for the gradients (they go through
every layer twice). C16 = 4: each product rounds two operands; observed on every built-in
activation (softmax too) and loss, at most 0.6 of the bound. A wrong formula is off by O(1).
Two exceptions, both ill-conditioned rather than inexact:
- the loss is measured relative to the largest output it averages (max|last output|), not to
  its own value, which can cancel to ~0 (nll on raw outputs);
- l1's gradient is sign(y - t)/n: wherever PyTorch's bfloat16-rounded output crosses its
  target the gradient entry flips, so its gradients get C16_L1 = 16.

Backends under the policy meet the float32 tolerance times C_MIX * depth (C_MIX = 8): each
layer's output is rounded to bfloat16 again as the next product's operand, so where two
valid float32 results (two summation orders: oneDNN's against NumPy's) straddle a bfloat16
rounding boundary the operands differ by a bfloat16 unit, and that difference carries on.
Observed with oneDNN's GEMMs against the reference's, over five model shapes (48 to 2048
wide, 2-4 layers), two seeds, ReLU and tanh: at most 0.44 of the bound; a product left in
float32 or a wrong formula is still far outside it (tests/test_precision_check.py).

The float64 reference is no target here: rounding the operands moves values across ReLU's
kink, which changes the first layer's weight gradient by about 7 eps16 on the default model,
for PyTorch autocast as for mlpx.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

MIXED = "mixed_bfloat16"
C16 = 4.0
C16_L1 = 16.0
C_MIX = 8.0
EPS16 = 2.0**-8


def tolerance(depth: int, c16: float = C16) -> float:
    """The documented bound on max|x - ref| / max|ref| after `depth` bfloat16 products."""
    return c16 * depth * EPS16


def run_torch_autocast(sizes: Sequence[int], activation: Any, weights: list[np.ndarray],
                       X: np.ndarray, y: np.ndarray, loss: Any = "cross_entropy") -> Any:
    """(layer outputs, loss, gradients) of the Dense stack in PyTorch: float32 parameters,
    the forward under CPU bfloat16 autocast, the loss on float32 logits (as autocast does)."""
    import torch

    from .. import activations, losses
    from .comparison import torch_forward

    act = activations.get(activation)
    loss_fn = losses.get(loss)
    loss_name, loss_kwargs = loss_fn.torch_module()
    params = [torch.tensor(w.astype(np.float32), requires_grad=True) for w in weights]
    h = torch.tensor(X.astype(np.float32))
    outs: list[np.ndarray] = []
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = torch_forward(params, h, len(sizes) - 1, act,
                          lambda o: outs.append(o.detach().float().numpy().copy()))
    h = h.float()
    target = loss_fn.prepare_target(y, sizes[-1], np.float32)
    t = torch.as_tensor(target) if target.dtype.kind == "i" else torch.tensor(target)
    value = getattr(torch.nn, loss_name)(**loss_kwargs)(h, t)
    value.backward()
    return outs, float(value.detach()), [p.grad.float().numpy().copy() for p in params]


def compare_mixed(label: str, got: Any, ref: Any, names: list[str], loss_spec: Any) -> Any:
    """`got` against the reference `ref` with the bfloat16 tolerance by depth."""
    from .. import losses
    from .comparison import Comparison, TensorDiff, diff

    outs, loss, grads = got
    r_outs, r_loss, r_grads = ref
    comp = Comparison(label, MIXED)
    n = len(r_outs)
    for i, (o, ro) in enumerate(zip(outs, r_outs, strict=True)):
        comp.diffs.append(_with_tol(diff(f"L{i} output", o, ro, "float32", i + 1), i + 1))
    err = abs(loss - r_loss)
    scale = max(float(np.max(np.abs(r_outs[-1]))), abs(r_loss), 1e-300)
    comp.diffs.append(TensorDiff("loss", n, err, err / scale if np.isfinite(loss) else np.nan,
                                 tolerance(n)))
    c16 = C16_L1 if losses.get(loss_spec).name == "l1" else C16
    for name, g, rg in zip(names, grads, r_grads, strict=True):
        d = diff(f"{name} grad", g, rg, "float32", 2 * n)
        d.k, d.tol = 2 * n, tolerance(2 * n, c16)
        comp.diffs.append(d)
    return comp


def _rerounding_allowance(comp: Any, layers: int) -> None:
    """Scale each float32 tolerance of a backend's comparison under the policy by C_MIX times
    the products its tensor depends on (see the module notes): i + 1 for layer i's output,
    `layers` for the loss, twice that for the gradients."""
    for d in comp.diffs:
        if d.name.endswith(" output"):
            depth = int(d.name[1:].split()[0]) + 1
        else:
            depth = layers if d.name == "loss" else 2 * layers
        d.tol *= C_MIX * depth


def _with_tol(d: Any, depth: int) -> Any:
    d.k, d.tol = depth, tolerance(depth)
    return d


def check_mixed(backends: Sequence[str], sizes: Sequence[int], activation: Any, layers: Any,
                weights64: list[np.ndarray], X: np.ndarray, y: np.ndarray, loss: Any,
                names: list[str], fan_ins: Sequence[int], k_grad: int,
                use_torch: bool) -> list[Any]:
    """`mlpx check`'s comparisons for the policy: every backend under it against the
    reference backend under it (one contract: float32 tolerance, as the float32 check), and
    PyTorch autocast against that reference (the bfloat16 tolerance above)."""
    from .comparison import Comparison, compare, run_mlpx

    w = [a.astype(np.float32).astype(np.float64) for a in weights64]
    x = X.astype(np.float32).astype(np.float64)
    ref = run_mlpx("reference", MIXED, layers, sizes[0], w, x, y, loss)
    comparisons = []
    others = [b for b in backends if b.strip().lower() not in ("reference", "numpy")]
    for label in [*others, *(["pytorch"] if use_torch else [])]:
        try:
            if label == "pytorch":
                got = run_torch_autocast(sizes, activation, w, x, y, loss)
                comparisons.append(compare_mixed("pytorch autocast", got, ref, names, loss))
            else:
                got = run_mlpx(label, MIXED, layers, sizes[0], w, x, y, loss)
                comp = compare(label, "float32", got, ref, fan_ins, k_grad, names)
                comp.dtype = MIXED
                _rerounding_allowance(comp, len(ref[0]))
                comparisons.append(comp)
        except Exception as e:  # a backend that crashes is a failed check, not a crash
            comparisons.append(Comparison(label, MIXED, error=f"{type(e).__name__}: {e}"))
    return comparisons
