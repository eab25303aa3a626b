"""Learning-rate schedules, stepped once per epoch as in PyTorch.

Each schedule is a training callback: pass it to `fit`,

    model.fit(X, y, optimizer="sgd", lr=0.1, epochs=30,
              callbacks=[mlpx.schedules.StepLR(step_size=10, gamma=0.5)])

The closed-form schedules (StepLR, ExponentialLR, CosineAnnealing, LambdaLR) set the
optimiser's `lr` at the start of every epoch from its `initial_lr` (the learning rate it had
when a schedule first touched it) and the epoch index, so the lr of epoch `e` equals what
PyTorch's scheduler gives after `e` calls of `scheduler.step()`. ReduceLROnPlateau lowers the
lr at the end of an epoch whose monitored value did not improve, for the following epochs.
The History's "lr" is the learning rate used during each epoch.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

from ._stack import caller_level
from .callbacks import Callback, _MonitorState, _resolve_mode, skipped
from .optim import Optimizer
from .preconditions import as_float, check_float, check_positive_int


def _check_factor(value: Any, name: str, *, upper_open: bool = False) -> float:
    """A float in (0, 1] (or (0, 1) with upper_open)."""
    v = as_float(value, name)
    if not (v > 0 and (v < 1 if upper_open else v <= 1)):
        upper = "< 1" if upper_open else "<= 1"
        raise ValueError(f"{name} must be > 0 and {upper}, got {value!r}")
    return v


class LRSchedule(Callback):
    """Base class of the closed-form schedules: subclasses implement `factor(epoch)` or
    `lr_at(epoch, base_lr)`. They hold no state of their own: the learning rate of an epoch
    follows from the epoch and the optimiser's `initial_lr`, both in checkpoints."""

    state_format: dict[str, str] | None = {}

    def _optimizer(self) -> Optimizer:
        opt = getattr(self.model, "optimizer_", None)
        if opt is None:
            raise RuntimeError(f"{type(self).__name__} needs a model with an optimiser; "
                               "use it as fit(..., callbacks=[schedule])")
        return opt

    def on_train_begin(self, logs: dict | None = None) -> None:
        opt = self._optimizer()
        opt.initial_lr = opt.initial_lr  # pin the base lr this schedule scales

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        opt = self._optimizer()
        opt.lr = self.lr_at(int(epoch), opt.initial_lr)

    def lr_at(self, epoch: int, base_lr: float) -> float:
        """The learning rate of 0-based `epoch` for an initial learning rate `base_lr`."""
        return base_lr * self.factor(epoch)

    def factor(self, epoch: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class StepLR(LRSchedule):
    """lr = initial_lr * gamma ** (epoch // step_size), as torch.optim.lr_scheduler.StepLR."""

    def __init__(self, step_size: int, gamma: float = 0.1):
        self.step_size = check_positive_int(step_size, "step_size")
        self.gamma = _check_factor(gamma, "gamma")

    def factor(self, epoch: int) -> float:
        return self.gamma ** (epoch // self.step_size)

    def get_config(self) -> dict[str, Any]:
        return {"step_size": self.step_size, "gamma": self.gamma}


class ExponentialLR(LRSchedule):
    """lr = initial_lr * gamma ** epoch, as torch.optim.lr_scheduler.ExponentialLR."""

    def __init__(self, gamma: float):
        self.gamma = _check_factor(gamma, "gamma")

    def factor(self, epoch: int) -> float:
        return self.gamma**epoch

    def get_config(self) -> dict[str, Any]:
        return {"gamma": self.gamma}


class CosineAnnealing(LRSchedule):
    """Linear warm-up, then cosine annealing from initial_lr down to eta_min.

    Epochs 0 .. warmup_epochs-1:  lr = initial_lr * (s + (1 - s) * epoch / warmup_epochs),
    with s = warmup_start_factor (default 1 / (warmup_epochs + 1): an even ramp);
    then with t = epoch - warmup_epochs:
        lr = eta_min + (initial_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2   (t <= T_max)
        lr = eta_min                                                             (t > T_max)

    Without warm-up this is torch.optim.lr_scheduler.CosineAnnealingLR for t <= T_max (PyTorch
    then rises again; here the lr stays at eta_min). With warm-up it equals PyTorch's
    SequentialLR([LinearLR(s, 1.0, warmup_epochs), CosineAnnealingLR(T_max, eta_min)],
    milestones=[warmup_epochs]).
    """

    def __init__(
        self,
        T_max: int,  # noqa: N803 - PyTorch's name
        eta_min: float = 0.0,
        warmup_epochs: int = 0,
        warmup_start_factor: float | None = None,
    ):
        self.T_max = check_positive_int(T_max, "T_max")
        self.eta_min = check_float(eta_min, "eta_min")
        self.warmup_epochs = check_positive_int(warmup_epochs, "warmup_epochs", minimum=0)
        if warmup_start_factor is None:
            warmup_start_factor = 1.0 / (self.warmup_epochs + 1)
        self.warmup_start_factor = _check_factor(warmup_start_factor, "warmup_start_factor")

    def lr_at(self, epoch: int, base_lr: float) -> float:
        w = self.warmup_epochs
        if epoch < w:
            s = self.warmup_start_factor
            return base_lr * (s + (1.0 - s) * epoch / w)
        t = epoch - w
        if t >= self.T_max:
            return self.eta_min
        cosine = (1.0 + math.cos(math.pi * t / self.T_max)) / 2.0
        return self.eta_min + (base_lr - self.eta_min) * cosine

    def get_config(self) -> dict[str, Any]:
        return {
            "T_max": self.T_max, "eta_min": self.eta_min, "warmup_epochs": self.warmup_epochs,
            "warmup_start_factor": self.warmup_start_factor,
        }


class LambdaLR(LRSchedule):
    """lr = initial_lr * lr_lambda(epoch), as torch.optim.lr_scheduler.LambdaLR."""

    def __init__(self, lr_lambda: Callable[[int], float]):
        if not callable(lr_lambda):
            raise TypeError(f"lr_lambda must be a function of the epoch, got {lr_lambda!r}")
        self.lr_lambda = lr_lambda

    def factor(self, epoch: int) -> float:
        f = float(self.lr_lambda(epoch))
        if not (math.isfinite(f) and f > 0):
            raise ValueError(f"lr_lambda({epoch}) returned {f}; it must be a positive factor")
        return f


class ReduceLROnPlateau(_MonitorState, Callback):
    """Multiply the lr by `factor` when `monitor` stopped improving for `patience` epochs, as
    torch.optim.lr_scheduler.ReduceLROnPlateau (same names and defaults, except `mode`:
    "auto", as in Keras, follows the direction the monitored loss or metric declares, so
    losses are minimised as with torch's "min" and val_r2 or val_accuracy maximised).

    An epoch improves on the best value so far when (mode "min") value < best * (1 -
    threshold) with threshold_mode "rel", or value < best - threshold with "abs" (Keras's
    `min_delta=d` is threshold=d, threshold_mode="abs"). After `patience` epochs without
    improvement the lr becomes max(lr * factor, min_lr) (changes smaller than `eps` are
    skipped) and the count pauses for `cooldown` epochs. The new lr applies from the next
    epoch. `monitor="val_loss"` falls back to the training "loss" (with a warning) when fit
    has no validation data. The counters start afresh at the beginning of each `fit`; a run
    resumed from a checkpoint continues them (they are in its state_dict()).
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        mode: str = "auto",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: float = 0.0,
        eps: float = 1e-8,
        min_delta: float | None = None,
    ):
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
        if not isinstance(monitor, str):
            raise TypeError(f"monitor must be a History key such as 'val_loss', got {monitor!r}")
        self.monitor = monitor
        self.asked_mode = mode
        self.mode = _resolve_mode(mode, monitor)
        self.factor = _check_factor(factor, "factor", upper_open=True)
        self.patience = check_positive_int(patience, "patience", minimum=0)
        if min_delta is not None:
            threshold, threshold_mode = min_delta, "abs"
        self.threshold = check_float(threshold, "threshold")
        self.threshold_mode = threshold_mode
        self.cooldown = check_positive_int(cooldown, "cooldown", minimum=0)
        self.min_lr = check_float(min_lr, "min_lr")
        self.eps = check_float(eps, "eps")
        self._reset()

    def _reset(self) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self._warned = False

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._settle_mode(logs)
        self._reset()

    state_format = {"monitor": "str", "mode": "mode", "best": "number",
                    "num_bad_epochs": "count", "cooldown_counter": "count", "warned": "bool"}

    def state_dict(self) -> dict[str, Any]:
        return {"monitor": self.monitor, "mode": self.mode, "best": self.best,
                "num_bad_epochs": self.num_bad_epochs,
                "cooldown_counter": self.cooldown_counter, "warned": self._warned}

    def validate_state_dict(self, state: dict[str, Any]) -> None:
        self._check_monitor_state(state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.validate_state_dict(state)
        self.best = float(state["best"])
        self.num_bad_epochs = int(state["num_bad_epochs"])
        self.cooldown_counter = int(state["cooldown_counter"])
        self._warned = bool(state["warned"])

    def is_better(self, value: float, best: float) -> bool:
        t = self.threshold
        if self.mode == "min":
            return value < (best * (1.0 - t) if self.threshold_mode == "rel" else best - t)
        return value > (best * (1.0 + t) if self.threshold_mode == "rel" else best + t)

    def _value(self, logs: dict) -> float:
        if self.monitor in logs:
            return float(logs[self.monitor])
        if self.monitor == "val_loss" and "loss" in logs:
            if not self._warned:
                warnings.warn(
                    "ReduceLROnPlateau monitors 'val_loss' but fit has no validation data; "
                    "using the training 'loss' (pass validation_data= or monitor='loss')",
                    UserWarning, stacklevel=caller_level(),
                )
                self._warned = True
            return float(logs["loss"])
        raise ValueError(
            f"ReduceLROnPlateau monitors {self.monitor!r}, which this fit does not record; "
            f"available: {', '.join(sorted(logs))}"
        )

    def step(self, value: float, opt: Optimizer) -> None:
        """One epoch's bookkeeping (PyTorch's `scheduler.step(metric)`)."""
        if self.is_better(value, self.best):
            self.best = value
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            new_lr = max(opt.lr * self.factor, self.min_lr)
            if opt.lr - new_lr > self.eps:
                opt.lr = new_lr
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        opt = getattr(self.model, "optimizer_", None)
        if opt is None:
            raise RuntimeError("ReduceLROnPlateau needs a model with an optimiser")
        if skipped(logs, self.monitor):  # a validation_freq epoch without validation
            return
        if self.mode == "auto":  # used without fit's on_train_begin
            self._settle_mode()
            self._reset()
        self.step(self._value(logs or {}), opt)

    def __repr__(self) -> str:
        return (
            f"ReduceLROnPlateau(monitor={self.monitor!r}, factor={self.factor}, "
            f"patience={self.patience}, threshold={self.threshold}, cooldown={self.cooldown}, "
            f"min_lr={self.min_lr})"
        )


__all__ = [
    "LRSchedule", "StepLR", "ExponentialLR", "CosineAnnealing", "LambdaLR", "ReduceLROnPlateau",
]
