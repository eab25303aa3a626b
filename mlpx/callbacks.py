"""Callbacks: hooks that `fit` calls around epochs (Keras's protocol, reduced to its core).

    model.fit(X, y, validation_split=0.2, epochs=100, callbacks=[
        mlpx.callbacks.EarlyStopping(monitor="val_loss", patience=5),
        mlpx.callbacks.ModelCheckpoint("best.safetensors", save_best_only=True),
    ])

`on_epoch_end(epoch, logs)` receives the epoch's index (counted from the start of the run, so
a resumed run continues the numbering) and the values History records (`loss`, `accuracy`,
`val_loss`, `val_accuracy`, the `metrics=` of fit, `lr`, ...). On epochs that
`validation_freq` leaves out, the `val_*` keys are absent and `logs.not_recorded` names them;
the callbacks here then skip the epoch when they monitor one of them. Setting
`model.stop_training = True` ends training after the epoch (after the batch when set in a
batch hook).

`on_train_batch_begin(batch, logs)` and `on_train_batch_end(batch, logs)` run around every
training step (`batch` counts the epoch's steps from 0). They are only called for callbacks
that override them, and their `logs` (the epoch's running `loss` and metrics so far) are read
from the device only when a callback looks a value up: a hook that does not read logs costs
no host synchronisation.
`after_epoch(epoch, logs)` runs once every callback's on_epoch_end has: the run's state for the
epoch is complete then (ModelCheckpoint saves there).

A callback with state of its own (best value so far, patience counter) returns it from
`state_dict()` (plain values and NumPy arrays) and takes it back in `load_state_dict(state)`;
checkpoints store it, and `fit(resume_from=...)` gives each callback the state saved by the
callback of the same class and rank (the first EarlyStopping gets the first saved
EarlyStopping's state). `validate_state_dict(state)` raises ValueError for a state that does
not fit (another monitor, say) before anything changes; `load_state_dict` runs after
`on_train_begin`.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np


class Callback:
    """Hooks called by `fit`. Set `model.stop_training = True` to end after this epoch."""

    model: Any = None

    def set_model(self, model: Any) -> None:
        self.model = model

    def on_train_begin(self, logs: dict | None = None) -> None: ...

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None: ...

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None: ...

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None: ...

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None: ...

    def on_train_end(self, logs: dict | None = None) -> None: ...

    def after_epoch(self, epoch: int, logs: dict | None = None) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        """The callback's own state, for checkpoints (stateless callbacks: {})."""
        return {}

    def validate_state_dict(self, state: dict[str, Any]) -> None:
        """Raise ValueError when `state` cannot be loaded into this callback."""
        if not isinstance(state, dict):
            raise ValueError(f"{type(self).__name__} state must be a dict, got {state!r}")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take back what state_dict() returned."""
        self.validate_state_dict(state)


class EpochLogs(dict):
    """An epoch's logs (what History records) and the keys this epoch left out
    (`not_recorded`: the validation keys on epochs that validation_freq skips)."""

    not_recorded: tuple[str, ...] = ()


def skipped(logs: Any, monitor: str) -> bool:
    """Whether the epoch of `logs` leaves `monitor` out on purpose (validation_freq)."""
    return monitor not in (logs or {}) and monitor in getattr(logs, "not_recorded", ())


class _MonitorState:
    """State checks shared by the callbacks that track the best value of a monitored key."""

    monitor: str
    mode: str

    def _check_monitor_state(self, state: dict[str, Any], keys: tuple[str, ...]) -> None:
        name = type(self).__name__
        if not isinstance(state, dict) or not set(keys) <= set(state):
            raise ValueError(f"{name} state in the checkpoint lacks entries {keys}: {state!r}")
        if (state["monitor"], state["mode"]) != (self.monitor, self.mode):
            raise ValueError(
                f"the checkpoint's {name} monitors {state['monitor']!r} in mode "
                f"{state['mode']!r}, this {name} monitors {self.monitor!r} in mode "
                f"{self.mode!r}; resume with the same settings or remove the callback"
            )
        try:
            float(state["best"])
        except (TypeError, ValueError):
            raise ValueError(f"{name} state has a non-numeric best value {state['best']!r}") \
                from None


def _resolve_mode(mode: str, monitor: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode != "auto":
        return mode
    return "max" if monitor.endswith(("accuracy", "acc")) else "min"


def _monitored(logs: dict | None, monitor: str, who: str) -> float:
    logs = logs or {}
    if monitor not in logs:
        hint = (
            "; validation metrics need validation_data= or validation_split= in fit"
            if monitor.startswith("val_") else ""
        )
        raise ValueError(
            f"{who} monitors {monitor!r}, which this fit does not record (recorded: "
            f"{', '.join(sorted(logs)) or 'nothing'}){hint}"
        )
    return float(logs[monitor])


class EarlyStopping(_MonitorState, Callback):
    """Stop when `monitor` has not improved by more than `min_delta` for `patience` epochs.

    With `restore_best_weights=True` (the default) the model ends training with the state
    (`model.state_dict()`: weights and BatchNorm running statistics) of its best epoch,
    whether patience ran out or the epochs did. `mode="auto"` minimises losses and maximises
    accuracies. Its state (best value and epoch, wait counter, best state) is checkpointed.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 0,
        min_delta: float = 0.0,
        restore_best_weights: bool = True,
        mode: str = "auto",
        verbose: int = 0,
    ):
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience must be a non-negative integer, got {patience!r}")
        if not (isinstance(min_delta, (int, float)) and math.isfinite(min_delta)):
            raise ValueError(f"min_delta must be a finite number, got {min_delta!r}")
        self.monitor = str(monitor)
        self.patience = patience
        self.min_delta = abs(float(min_delta))
        self.restore_best_weights = bool(restore_best_weights)
        self.mode = _resolve_mode(mode, self.monitor)
        self.verbose = verbose
        self._reset()

    def _reset(self) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch: int | None = None
        self.wait = 0
        self.stopped_epoch: int | None = None
        self._best_state: dict | None = None

    _KEYS = ("monitor", "mode", "best", "best_epoch", "wait", "stopped_epoch", "best_state")

    def state_dict(self) -> dict[str, Any]:
        return {"monitor": self.monitor, "mode": self.mode, "best": self.best,
                "best_epoch": self.best_epoch, "wait": self.wait,
                "stopped_epoch": self.stopped_epoch, "best_state": self._best_state}

    def validate_state_dict(self, state: dict[str, Any]) -> None:
        self._check_monitor_state(state, self._KEYS)
        if state["best_state"] is not None and not isinstance(state["best_state"], dict):
            raise ValueError("EarlyStopping state: best_state must be a state dict or None")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.validate_state_dict(state)
        self.best, self.best_epoch = float(state["best"]), state["best_epoch"]
        self.wait, self.stopped_epoch = int(state["wait"]), state["stopped_epoch"]
        best = state["best_state"]
        self._best_state = None if best is None else {k: np.array(v) for k, v in best.items()}

    def _improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._reset()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if skipped(logs, self.monitor):
            return
        value = _monitored(logs, self.monitor, "EarlyStopping")
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self._best_state = self.model.state_dict()
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.restore_best_weights and self._best_state is not None:
            self.model.load_state_dict(self._best_state)
        if self.verbose and self.best_epoch is not None:
            how = (
                f"stopped after epoch {self.stopped_epoch + 1}"
                if self.stopped_epoch is not None else "ran all epochs"
            )
            print(f"EarlyStopping: {how}; best {self.monitor}={self.best:.6g} at epoch "
                  f"{self.best_epoch + 1}" + (" (weights restored)"
                                              if self.restore_best_weights else ""))


class ModelCheckpoint(_MonitorState, Callback):
    """Save the model (`model.save`) every `every_n_epochs` epochs, or only when `monitor`
    improves (`save_best_only=True`). `path` may contain `{epoch}` and any logged value, e.g.
    "ckpt-{epoch:03d}-{val_loss:.3f}.safetensors". Each write is atomic and happens after
    every callback has seen the epoch, so the file holds the whole run's state for it.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        monitor: str = "val_loss",
        save_best_only: bool = False,
        every_n_epochs: int = 1,
        mode: str = "auto",
        verbose: int = 0,
    ):
        if isinstance(every_n_epochs, bool) or not isinstance(every_n_epochs, int) \
                or every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be a positive integer, got {every_n_epochs!r}")
        self.path = os.fspath(path)
        self.monitor = str(monitor)
        self.save_best_only = bool(save_best_only)
        self.every_n_epochs = every_n_epochs
        self.mode = _resolve_mode(mode, self.monitor)
        self.verbose = verbose
        self.best = math.inf if self.mode == "min" else -math.inf
        self.saved: list[str] = []
        self._pending: str | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"monitor": self.monitor, "mode": self.mode, "best": self.best,
                "saved": list(self.saved)}

    def validate_state_dict(self, state: dict[str, Any]) -> None:
        self._check_monitor_state(state, ("monitor", "mode", "best", "saved"))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.validate_state_dict(state)
        self.best, self.saved = float(state["best"]), [str(p) for p in state["saved"]]

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._pending = None
        if (epoch + 1) % self.every_n_epochs:
            return
        if self.save_best_only and skipped(logs, self.monitor):
            return
        logs = dict(logs or {})
        if self.save_best_only:
            value = _monitored(logs, self.monitor, "ModelCheckpoint")
            better = value < self.best if self.mode == "min" else value > self.best
            if not better:
                return
            self.best = value
        try:
            path = self.path.format(epoch=epoch + 1, **logs)
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(
                f"ModelCheckpoint path {self.path!r} could not be formatted ({e}); it may use "
                f"{{epoch}} and the logged values {', '.join(sorted(logs))}"
            ) from None
        self.saved.append(path)
        self._pending = path

    def after_epoch(self, epoch: int, logs: dict | None = None) -> None:
        path, self._pending = self._pending, None
        if path is None:
            return
        self.model.save(path, epoch=epoch + 1)
        if self.verbose:
            print(f"ModelCheckpoint: saved epoch {epoch + 1} to {path}")


__all__ = ["Callback", "EarlyStopping", "EpochLogs", "ModelCheckpoint"]
