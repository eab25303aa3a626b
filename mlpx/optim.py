"""Optimisers. Each binds to a model's parameters once (allocating its per-parameter state
on the model's backend) and then updates every parameter in place with one fused kernel per
parameter per step.

Names and hyperparameters follow PyTorch: `mlpx.optim.SGD(lr=0.01)`; by name,
`fit(optimizer="sgd", lr=0.01)`. For a hand-written training loop, build the optimiser on the
model's parameters as in PyTorch, `mlpx.optim.SGD(model.parameters(), lr=0.1)`, and call
`step()` after each `model.backward(...)`, then `zero_grad()` (see docs/training-loop.md).
"""

from __future__ import annotations

import copy
import functools
import math
import weakref
from typing import Any

import numpy as np

from .backends.base import Backend
from .layers.base import Parameter
from .preconditions import as_float, check_float
from .registry import Registry


def _is_param_list(value: Any) -> bool:
    """A first positional argument that is a collection (not a learning rate): parameters,
    checked when attached."""
    return isinstance(value, (list, tuple)) or (
        hasattr(value, "__iter__") and not isinstance(value, (str, bytes)))


def check_lr(lr: Any) -> float:
    value = as_float(lr, "learning rate")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"learning rate must be a positive finite number, got {lr!r}")
    return value


class Optimizer:
    """Base class: subclasses implement `_update(i, param)` and declare `state_names`."""

    name = ""
    #: the torch.optim class with the same update and hyperparameter names (tests compare)
    torch_name: str | None = None
    #: per-parameter state arrays allocated at bind time (e.g. ("momentum",))
    state_names: tuple[str, ...] = ()
    default_lr = 0.01

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return

        # PyTorch's call: SGD(model.parameters(), lr=0.1) binds at once; SGD(lr=0.1) (or
        # SGD(0.1)) stays unbound until fit() or compile() binds it
        @functools.wraps(init)
        def init_with_params(self: Optimizer, *args: Any, **kw: Any) -> None:
            params = kw.pop("params", None)
            if params is None and args and _is_param_list(args[0]):
                params, args = args[0], args[1:]
            init(self, *args, **kw)
            if params is not None:
                self._attach(params)

        cls.__init__ = init_with_params

    def __init__(self, lr: float | None = None):
        self.lr = check_lr(self.default_lr if lr is None else lr)
        self.ops: Backend | None = None
        self.params: list[Parameter] = []
        self.state: list[dict[str, Any]] = []
        self.step_count = 0
        self._model: Any = None  # weak reference to the model the parameters belong to
        self._manual = False

    def _attach(self, params: Any) -> None:
        params = list(params) if not isinstance(params, list) else params
        model = getattr(params, "model", None)
        if model is None or not all(isinstance(p, Parameter) for p in params):
            raise TypeError(
                f"{type(self).__name__} takes a model's parameters, as in "
                f"{type(self).__name__}(model.parameters(), lr=0.1); got {type(params).__name__}"
            )
        model._require_built()
        self.bind(params, model.ops)
        self._manual = True
        model._manual_loop = True

    def bind(self, params: list[Parameter], ops: Backend) -> None:
        """Attach to parameters; keeps existing state when the shapes still match."""
        model = getattr(params, "model", None)
        self._model = weakref.ref(model) if model is not None else None
        shapes = [p.shape for p in params]
        same = self.state and [p.shape for p in self.params] == shapes and self.ops is ops
        self.params, self.ops = list(params), ops
        if not same:
            self.state = [
                {k: ops.zeros(p.shape, p.data.dtype) for k in self.state_names} for p in params
            ]
            self.step_count = 0  # fresh state: bias corrections and momentum start over

    def _bound_model(self) -> Any:
        return self._model() if self._model is not None else None

    def step(self) -> None:
        """Update every parameter from its gradient (written by the model's backward)."""
        if self.ops is None:
            raise RuntimeError(
                f"{type(self).__name__}.step(): the optimiser has no parameters; build it on "
                f"the model's, {type(self).__name__}(model.parameters(), lr=...), or pass it "
                "to fit()"
            )
        model = self._bound_model()
        if self._manual and model is not None and not model._grads_pending:
            raise RuntimeError(
                "step() found no new gradients: call model.backward(grad) before each "
                "opt.step(); if backward() did run, this optimiser was built on another "
                "model's parameters"
            )
        self.step_count += 1
        for i, p in enumerate(self.params):
            self._update(i, p)
        if model is not None:
            model._grads_pending = False

    def zero_grad(self) -> None:
        """Set every parameter's gradient to zero (PyTorch's zero_grad): what backward()
        wrote is discarded."""
        for p in self.params:
            p.grad[...] = 0
        model = self._bound_model()
        if model is not None:
            model._grads_pending = False

    def _update(self, i: int, p: Parameter) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def hyperparameters(self) -> dict[str, Any]:
        return {"lr": self.lr}

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, **self.hyperparameters()}

    @property
    def initial_lr(self) -> float:
        """The learning rate before any schedule changed `lr` (what schedules scale)."""
        return getattr(self, "_initial_lr", None) or self.lr

    @initial_lr.setter
    def initial_lr(self, value: float) -> None:
        self._initial_lr = check_lr(value)

    def state_dict(self) -> dict[str, Any]:
        """Hyperparameters (the current lr), step count, the schedules' base lr and
        per-parameter state (PyTorch's state names) as NumPy arrays."""
        ops = self.ops
        return {
            "config": self.get_config(),
            "step_count": self.step_count,
            "initial_lr": self.initial_lr,
            "state": [{k: ops.to_numpy(v).copy() for k, v in s.items()} for s in self.state],
        }

    def check_state_dict(self, sd: Any, shapes: list[tuple[int, ...]]) -> None:
        """Raise ValueError unless `sd` (state_dict() output) fits this optimiser on parameters
        of `shapes`. Reads nothing from the bound parameters: callable before binding."""
        if not isinstance(sd, dict):
            raise ValueError(f"optimiser state must be a dict, got {type(sd).__name__}")
        name = (sd.get("config") or {}).get("name", self.name)
        if name != self.name:
            raise ValueError(f"cannot load {name!r} optimiser state into {self!r}")
        state = sd.get("state") or []
        if not isinstance(state, list) or (state and len(state) != len(shapes)):
            raise ValueError(
                f"optimiser state has {len(state) if isinstance(state, list) else '?'} "
                f"parameter entries, the model has {len(shapes)}"
            )
        for i, (saved, shape) in enumerate(zip(state, shapes, strict=False)):
            if not isinstance(saved, dict) or set(saved) != set(self.state_names):
                got = sorted(saved) if isinstance(saved, dict) else saved
                raise ValueError(
                    f"optimiser state of parameter {i} holds {got}, {self!r} expects "
                    f"{sorted(self.state_names)}; build the optimiser with the saved config"
                )
            for k, v in saved.items():
                v = np.asarray(v)
                if tuple(v.shape) != tuple(shape):
                    raise ValueError(
                        f"optimiser state {k!r} of parameter {i} has shape {v.shape}, the "
                        f"parameter has shape {tuple(shape)}"
                    )
                if v.dtype.kind not in "biuf" or not np.isfinite(v).all():
                    raise ValueError(
                        f"optimiser state {k!r} of parameter {i} must be finite numbers"
                    )
        try:
            steps = int(sd.get("step_count", 0))
            lr = (sd.get("config") or {}).get("lr")
            if lr is not None:
                check_float(lr, "lr")
            if sd.get("initial_lr") is not None:
                check_lr(sd["initial_lr"])
        except (TypeError, ValueError) as e:
            raise ValueError(f"optimiser state has a bad scalar entry: {e}") from None
        if steps < 0:
            raise ValueError(f"optimiser step count must be >= 0, got {steps}")

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        """Restore `state_dict()` output: state arrays, step count and learning rates.
        Everything is validated before anything is written."""
        if self.ops is None:
            raise RuntimeError("bind the optimiser to parameters before loading its state")
        self.check_state_dict(sd, [p.shape for p in self.params])
        for s, saved in zip(self.state, sd.get("state") or [], strict=False):
            for k, v in saved.items():
                self.ops.copy_into(s[k], self.ops.asarray(np.asarray(v, dtype=s[k].dtype)))
        self.step_count = int(sd.get("step_count", 0))
        if "lr" in (sd.get("config") or {}):
            self.lr = check_float(sd["config"]["lr"], "lr")
        if sd.get("initial_lr") is not None:
            self.initial_lr = sd["initial_lr"]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, as torch.optim.SGD.

        g = grad + weight_decay * w
        buf = momentum * buf + (1 - dampening) * g     (buf = g on the first step)
        w <- w - lr * (g + momentum * buf if nesterov else buf)   (w - lr * g without momentum)

    `weight_decay` is PyTorch's: an L2 term added to the gradient of every parameter.

    Parameters
    ----------
    lr
        The learning rate (default 0.01); a hand-written loop passes
        `model.parameters()` first, `SGD(model.parameters(), lr=0.1)`.
    momentum
        The momentum factor (default 0: plain SGD).
    dampening
        Dampening of the momentum (default 0).
    nesterov
        Nesterov momentum (needs momentum > 0 and dampening 0).
    weight_decay
        An L2 term added to the gradient (default 0).
    """

    name = "sgd"
    torch_name = "SGD"

    def __init__(
        self,
        lr: float | None = None,
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ):
        super().__init__(lr)
        self.momentum = check_float(momentum, "momentum")
        self.dampening = check_float(dampening, "dampening", 0.0, 1.0, hi_open=False)
        self.nesterov = bool(nesterov)
        self.weight_decay = check_float(weight_decay, "weight_decay")
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError(
                "Nesterov momentum requires momentum > 0 and dampening = 0, e.g. "
                "SGD(lr=0.01, momentum=0.9, nesterov=True)"
            )
        self.state_names = ("momentum_buffer",) if self.momentum != 0 else ()

    def _update(self, i: int, p: Parameter) -> None:
        if self.momentum == 0 and self.weight_decay == 0:
            self.ops.sgd_update(p.data, p.grad, self.lr)
            return
        buf = self.state[i].get("momentum_buffer")
        # PyTorch starts the buffer at g: with buf = 0 that is one undampened step
        dampening = 0.0 if self.step_count == 1 else self.dampening
        self.ops.sgd_momentum_update(
            p.data, p.grad, buf, self.lr, self.momentum, dampening, self.nesterov,
            self.weight_decay,
        )

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "lr": self.lr, "momentum": self.momentum, "dampening": self.dampening,
            "nesterov": self.nesterov, "weight_decay": self.weight_decay,
        }


class Adagrad(Optimizer):
    """AdaGrad (Duchi et al. 2011), as torch.optim.Adagrad: per-weight step sizes that shrink
    with the sum of squared gradients.

        g = grad + weight_decay * w;  sum += g^2
        w <- w - lr / (1 + (t - 1) * lr_decay) * g / (sqrt(sum) + eps)
    """

    name = "adagrad"
    torch_name = "Adagrad"
    state_names = ("sum",)
    default_lr = 0.01

    def __init__(
        self,
        lr: float | None = None,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
    ):
        super().__init__(lr)
        self.lr_decay = check_float(lr_decay, "lr_decay")
        self.weight_decay = check_float(weight_decay, "weight_decay")
        self.initial_accumulator_value = check_float(
            initial_accumulator_value, "initial_accumulator_value"
        )
        self.eps = check_float(eps, "eps")

    def bind(self, params: list[Parameter], ops: Backend) -> None:
        before = self.state
        super().bind(params, ops)
        if self.state is not before and self.initial_accumulator_value != 0:
            for s in self.state:
                s["sum"][...] = self.initial_accumulator_value

    def _update(self, i: int, p: Parameter) -> None:
        clr = self.lr / (1.0 + (self.step_count - 1) * self.lr_decay)
        self.ops.adagrad_update(
            p.data, p.grad, self.state[i]["sum"], clr, self.weight_decay, self.eps
        )

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "lr": self.lr, "lr_decay": self.lr_decay, "weight_decay": self.weight_decay,
            "initial_accumulator_value": self.initial_accumulator_value, "eps": self.eps,
        }


class RMSprop(Optimizer):
    """RMSProp (Hinton's lecture 6e), as torch.optim.RMSprop: divide the gradient by a running
    root mean square of recent gradients.

        g = grad + weight_decay * w
        sq = alpha * sq + (1 - alpha) * g^2
        avg = sqrt(sq) + eps   (centered: sqrt(sq - ga^2) + eps, ga the running mean of g)
        w <- w - lr * g / avg  (with momentum: buf = momentum * buf + g / avg; w -= lr * buf)
    """

    name = "rmsprop"
    torch_name = "RMSprop"
    default_lr = 0.01

    def __init__(
        self,
        lr: float | None = None,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
    ):
        super().__init__(lr)
        self.alpha = check_float(alpha, "alpha", 0.0, 1.0, hi_open=False)
        self.eps = check_float(eps, "eps")
        self.weight_decay = check_float(weight_decay, "weight_decay")
        self.momentum = check_float(momentum, "momentum")
        self.centered = bool(centered)
        names = ["square_avg"]
        if self.momentum > 0:
            names.append("momentum_buffer")
        if self.centered:
            names.append("grad_avg")
        self.state_names = tuple(names)

    def _update(self, i: int, p: Parameter) -> None:
        s = self.state[i]
        self.ops.rmsprop_update(
            p.data, p.grad, s["square_avg"], s.get("grad_avg"), s.get("momentum_buffer"),
            self.lr, self.alpha, self.eps, self.weight_decay, self.momentum, self.centered,
        )

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "lr": self.lr, "alpha": self.alpha, "eps": self.eps,
            "weight_decay": self.weight_decay, "momentum": self.momentum,
            "centered": self.centered,
        }


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015), as torch.optim.Adam: bias-corrected running means of the
    gradient (m) and of its square (v).

        g = grad + weight_decay * w        (L2 coupled into the gradient, as PyTorch's Adam)
        m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
        w <- w - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

    Parameters
    ----------
    lr
        The learning rate (default 0.001); a hand-written loop passes
        `model.parameters()` first, `Adam(model.parameters(), lr=1e-3)`.
    betas
        The decay rates of the moment estimates (default (0.9, 0.999)).
    eps
        Added to the denominator for stability (default 1e-8).
    weight_decay
        An L2 term added to the gradient (default 0; AdamW decouples it).
    """

    name = "adam"
    torch_name = "Adam"
    state_names = ("exp_avg", "exp_avg_sq")
    default_lr = 1e-3
    decoupled = False

    def __init__(
        self,
        lr: float | None = None,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        super().__init__(lr)
        try:
            b1, b2 = betas
        except (TypeError, ValueError):
            raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}") from None
        self.betas = (
            check_float(b1, "betas[0]", 0.0, 1.0), check_float(b2, "betas[1]", 0.0, 1.0)
        )
        self.eps = check_float(eps, "eps")
        self.weight_decay = check_float(weight_decay, "weight_decay")

    def _update(self, i: int, p: Parameter) -> None:
        s = self.state[i]
        self.ops.adam_update(
            p.data, p.grad, s["exp_avg"], s["exp_avg_sq"], self.lr, self.betas[0],
            self.betas[1], self.eps, self.weight_decay, self.step_count, self.decoupled,
        )

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "lr": self.lr, "betas": self.betas, "eps": self.eps,
            "weight_decay": self.weight_decay,
        }


class AdamW(Adam):
    """AdamW (Loshchilov & Hutter 2019), as torch.optim.AdamW: Adam with decoupled weight
    decay. The weights shrink by lr * weight_decay * w each step, outside the adaptive
    scaling, instead of adding weight_decay * w to the gradient:

        w <- w * (1 - lr * weight_decay), then the Adam step with g = grad
    """

    name = "adamw"
    torch_name = "AdamW"
    decoupled = True

    def __init__(
        self,
        lr: float | None = None,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ):
        super().__init__(lr, betas, eps, weight_decay)


#: every optimiser name: the built-in ones and those registered with `register`
NAMES = Registry("optimizer", Optimizer, "mlpx.optim.register")
for _cls in (SGD, Adagrad, RMSprop, Adam, AdamW):
    NAMES.add_builtin(_cls.name, _cls)
# shorthand names: SGD presets with the momentum everyone uses
_PRESETS: dict[str, dict[str, Any]] = {
    "momentum": {"momentum": 0.9},
    "nesterov": {"momentum": 0.9, "nesterov": True},
}


def names() -> list[str]:
    return sorted([*NAMES.names(), *_PRESETS])


def register(cls: type[Optimizer]) -> type[Optimizer]:
    """Register an Optimizer subclass under its `name` (a class attribute of its own), so
    that `optimizer="name"` finds it and saved models restore it. Built-in names are
    refused."""
    if not (isinstance(cls, type) and issubclass(cls, Optimizer)):
        raise TypeError(f"mlpx.optim.register takes an Optimizer subclass, got {cls!r}")
    if not cls.__dict__.get("name"):
        raise ValueError(
            f"optimizer class {cls.__name__} declares no name of its own; set the class "
            "attribute name = 'my_optimizer' before registering it"
        )
    NAMES.register(cls.name, cls)
    return cls


def get(spec: str | Optimizer, lr: float | None = None) -> Optimizer:
    """An optimiser from a name (+ lr) or an object (then `lr` must be None)."""
    if isinstance(spec, Optimizer):
        if lr is not None:
            raise ValueError(
                "give the learning rate either to the optimiser object or as lr=, not both: "
                f"fit(optimizer={spec!r}) or fit(optimizer='{spec.name}', lr={lr})"
            )
        return spec
    if isinstance(spec, type) and issubclass(spec, Optimizer):  # the class, not an object
        raise TypeError(
            f"optimizer={spec.__name__} is a class; pass an object, "
            f"optimizer={spec.__name__}(lr=...), or its name, optimizer='{spec.name}', lr=..."
        )
    cls = NAMES.lookup_class(spec)
    if cls is not None:
        return cls(lr=lr)
    if isinstance(spec, str) and spec.lower() in _PRESETS:
        return SGD(lr=lr, **_PRESETS[spec.lower()])
    raise ValueError(f"unknown optimizer {spec!r}; valid names are {', '.join(names())}")


def for_model(opt: Optimizer, model: Any) -> Optimizer:
    """`opt` for training `model`: itself, unless it already trains another model that is
    still alive; then a fresh optimiser of the same kind and hyperparameters (its learning
    rate before any schedule, no state), so that one model's moments and step count never
    carry into another's and the first model keeps its own."""
    owner = opt._bound_model()
    if owner is None or owner is model:
        return opt
    fresh = copy.copy(opt)
    fresh.__dict__.pop("_initial_lr", None)
    fresh.lr = opt.initial_lr
    fresh.ops, fresh.params, fresh.state, fresh.step_count = None, [], [], 0
    fresh._model, fresh._manual = None, False
    return fresh
def name_for_saving(opt: Optimizer) -> str:
    """The name a checkpoint records for `opt`: one that brings back its very class on load
    (or nothing yet: the load then needs it registered or in `custom_objects`). Raises
    UnsaveablePartError (a ValueError) with the fix otherwise."""
    return NAMES.name_for_saving(opt, opt.name or None)


NAMES.saver = name_for_saving


def resolve(current: Optimizer | None, spec: str | Optimizer | None,
            lr: float | None) -> Optimizer:
    """The optimiser a fit/compile call asks for, built without changing `current`:

    - `spec` given: that optimiser (a name with `lr`, or an object);
    - only `lr`: `current`'s kind and hyperparameters with the new learning rate (fresh state);
    - neither: `current`, or SGD when there is none.
    """
    if spec is None:
        if current is not None and lr is not None:
            return from_config({**current.get_config(), "lr": check_lr(lr)})
        if current is not None:
            return current
        spec = "sgd"
    return get(spec, lr)


def from_config(cfg: dict[str, Any]) -> Optimizer:
    """The optimiser `get_config()` describes (a fresh one: no state)."""
    cfg = dict(cfg)
    name = cfg.pop("name", None)
    cls = NAMES.lookup_class(name)
    if cls is None:
        raise ValueError(
            f"unknown optimizer {name!r} in config; valid names are {names()} (a saved "
            "model's own optimiser must be registered with mlpx.optim.register before "
            f"loading, or given as mlpx.load(path, custom_objects={{{name!r}: ...}}))"
        )
    # a schedule may have taken lr to 0 (cosine to eta_min=0): allowed here, not from users
    lr = cfg.pop("lr", None)
    opt = cls(**cfg)
    if lr is not None:
        opt.lr = check_float(lr, "lr")
    return opt


# the public API (what the API reference lists; the rest serves fit and checkpoints)
__all__ = ["Optimizer", "SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "register", "names",
           "get"]
