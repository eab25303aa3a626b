"""The pieces `mlpx check` compares with: per-tensor differences and their tolerances (see
mlpx.commands.check for the rule), the same weights and batch run through an mlpx model or a
PyTorch autograd graph, and the comparison of two such runs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..activations import Activation
    from ..losses import Loss

F64_TOL = 1e-10
C32 = 1.0
EPS32 = float(np.finfo(np.float32).eps)


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
    #: what was left out of the comparison, and why
    notes: list[str] = field(default_factory=list)

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
                        f"{c.label} {c.dtype}: {d.name} differs from the {_reference(c)} by "
                        f"{d.max_rel:.3g} (relative to its largest value; tolerance {d.tol:.3g})"
                    )
        return out


def _reference(c: Comparison) -> str:
    return ("reference under the same policy" if c.dtype == "mixed_bfloat16"
            else "float64 reference")


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
#: builds the model's layers afresh (a list of unbuilt mlpx layers)
LayersFn = Callable[[], list[Any]]


def mlp_layers(sizes: Sequence[int], activation: Any) -> LayersFn:
    """The default model of `mlpx check`: Dense layers between `sizes`, hidden `activation`."""
    import mlpx

    def build() -> list[Any]:
        hidden = [mlpx.Dense(s, activation=activation) for s in sizes[1:-1]]
        return [*hidden, mlpx.Dense(sizes[-1])]

    return build


def model_output_width(layers: LayersFn, input_dim: int) -> int:
    """The output width of the model that `layers` builds (on the reference backend)."""
    return _model(layers, input_dim, "reference", "float64").output_dim


def _model(layers: LayersFn, input_dim: int, backend: str, dtype: str, seed: int = 0) -> Any:
    import mlpx

    return mlpx.Sequential(layers(), input_dim=input_dim, backend=backend, dtype=dtype,
                           seed=seed)


def run_mlpx(backend: str, dtype: str, layers: LayersFn, input_dim: int,
             weights: list[np.ndarray], X: np.ndarray, y: np.ndarray, loss_fn: Loss) -> Result:
    model = _model(layers, input_dim, backend, dtype)
    store = model.dtype  # the policy's variable dtype ("mixed_bfloat16" keeps float32)
    model.set_weights([w.astype(store) for w in weights])
    ops = model.ops
    h = ops.asarray(X.astype(store))
    outs = []
    for layer in model.layers:
        h = layer.forward(h, training=False)
        outs.append(ops.to_numpy(h).copy())
    value, grads = model.loss_and_grad(X.astype(store), y, loss=loss_fn)
    return outs, float(value), grads


def torch_unavailable_reason(sizes: Sequence[int], act: Activation, loss_fn: Loss,
                             custom_model: bool) -> str | None:
    """Why PyTorch cannot run the same model, or None when it can."""
    if custom_model:
        return "the model is user-defined, and PyTorch builds the default Dense stack only"
    from .. import activations

    if len(sizes) > 2 and activations.twin(act, "torch_module") is None and not _prelu(act):
        return f"activation {act.name!r} declares no PyTorch counterpart"
    if loss_fn.torch_module() is None:
        return f"loss {loss_fn.name!r} declares no PyTorch counterpart"
    return None


def _prelu(act: Activation) -> bool:
    from .. import activations

    return type(act) is activations.PReLU


def torch_activation(act: Activation) -> Callable[[Any, Any], Any]:
    """`act` in PyTorch as f(h, slopes): its declared twin module, or for PReLU its per-unit
    slopes (a parameter of the layer) through `torch.nn.functional.prelu`."""
    import torch

    from .. import activations

    if _prelu(act):
        return lambda h, slopes: torch.nn.functional.prelu(h, slopes)
    # never a parent's twin for a formula of its own
    declared = activations.twin(act, "torch_module")
    twin = declared() if declared is not None else None
    if twin is None:
        raise ValueError(f"activation {act.name!r} declares no PyTorch counterpart "
                         "(Activation.torch_module)")
    module = getattr(torch.nn, twin[0])(**twin[1])
    return lambda h, slopes: module(h)


def torch_forward(params: list[Any], h: Any, n_layers: int, act: Activation,
                  on_output: Callable[[Any], None]) -> Any:
    """The Dense stack in PyTorch on `params` (each layer's W, b, then its slopes where the
    hidden activation has some, mlpx's order); `on_output` sees every layer's output."""
    import torch

    f = torch_activation(act) if n_layers > 1 else None
    k = 0
    for i in range(n_layers):
        h = torch.addmm(params[k + 1], h, params[k])
        k += 2
        if i < n_layers - 1:
            slopes = params[k] if act.has_parameters else None
            k += 1 if act.has_parameters else 0
            h = f(h, slopes)
        on_output(h)
    return h


def run_torch(dtype: str, sizes: Sequence[int], act: Activation, weights: list[np.ndarray],
              X: np.ndarray, y: np.ndarray, loss_fn: Loss) -> Result:
    import torch

    loss_name, loss_kwargs = loss_fn.torch_module()
    tdt = {"float32": torch.float32, "float64": torch.float64}[dtype]
    params = [torch.tensor(w.astype(dtype), dtype=tdt, requires_grad=True) for w in weights]
    h = torch.tensor(X.astype(dtype), dtype=tdt)
    outs: list[np.ndarray] = []
    h = torch_forward(params, h, len(sizes) - 1, act,
                      lambda o: outs.append(o.detach().numpy().copy()))
    target = loss_fn.prepare_target(y, sizes[-1], dtype)
    t = torch.as_tensor(target) if target.dtype.kind == "i" else torch.tensor(target, dtype=tdt)
    value = getattr(torch.nn, loss_name)(**loss_kwargs)(h, t)
    value.backward()
    return outs, float(value.detach()), [p.grad.numpy().copy() for p in params]


def compare(label: str, dtype: str, got: Result, ref: Result, fan_ins: Sequence[int],
            k_grad: int, names: list[str]) -> Comparison:
    """Every output, the loss and every gradient of `got` against `ref`; `fan_ins[i]` is
    the largest GEMM inner dimension up to layer i, `k_grad` that of the gradients."""
    outs, loss, grads = got
    r_outs, r_loss, r_grads = ref
    comp = Comparison(label, dtype)
    for i, (o, ro) in enumerate(zip(outs, r_outs, strict=True)):
        comp.diffs.append(diff(f"L{i} output", o, ro, dtype, max(fan_ins[: i + 1])))
    comp.diffs.append(diff("loss", np.array([loss]), np.array([r_loss]), dtype, max(fan_ins)))
    for name, g, rg in zip(names, grads, r_grads, strict=True):
        comp.diffs.append(diff(f"{name} grad", g, rg, dtype, k_grad))
    return comp
