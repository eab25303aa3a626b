"""Callbacks: hooks that `fit` calls around epochs (Keras's protocol, reduced to its core).

    model.fit(X, y, validation_split=0.2, epochs=100, callbacks=[
        mlpx.callbacks.EarlyStopping(monitor="val_loss", patience=5),
        mlpx.callbacks.ModelCheckpoint("best.safetensors", save_best_only=True),
    ])

`on_epoch_end(epoch, logs)` receives the epoch's index (counted from the start of the run, so
a resumed run continues the numbering) and the values History records (`loss`, `val_loss`,
`val_accuracy`, `lr`, ...). Setting `model.stop_training = True` ends training after the epoch.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any


class Callback:
    """Hooks called by `fit`. Set `model.stop_training = True` to end after this epoch."""

    model: Any = None

    def set_model(self, model: Any) -> None:
        self.model = model

    def on_train_begin(self, logs: dict | None = None) -> None: ...

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None: ...

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None: ...

    def on_train_end(self, logs: dict | None = None) -> None: ...


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


def _walk_layers(layers: list):
    for layer in layers:
        yield layer
        yield from _walk_layers(layer.children())


def capture_state(model: Any) -> tuple[list[Any], list[tuple[Any, str, Any]]]:
    """Device copies of the parameters and of the floating-point buffers (running statistics).

    Integer buffers (Dropout's step counter) are left out: rewinding them would replay masks.
    """
    ops = model.ops
    params = [ops.copy(p.data) for p in model.parameters()]
    bufs = []
    for layer in _walk_layers(model.layers):
        for key, value in layer.buffers().items():
            if getattr(value, "dtype", None) is not None and value.dtype.kind == "f":
                bufs.append((layer, key, ops.copy(value)))
    return params, bufs


def apply_state(model: Any, state: tuple[list[Any], list[tuple[Any, str, Any]]]) -> None:
    params, bufs = state
    ops = model.ops
    for p, saved in zip(model.parameters(), params, strict=True):
        ops.copy_into(p.data, saved)
    for layer, key, saved in bufs:
        layer._set_buffer(key, ops.copy(saved))


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved by more than `min_delta` for `patience` epochs.

    With `restore_best_weights=True` (the default) the model ends training with the weights
    (and BatchNorm running statistics) of its best epoch, whether patience ran out or the
    epochs did. `mode="auto"` minimises losses and maximises accuracies.
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
        self._best_state: Any = None

    def _improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._reset()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = _monitored(logs, self.monitor, "EarlyStopping")
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self._best_state = capture_state(self.model)
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.restore_best_weights and self._best_state is not None:
            apply_state(self.model, self._best_state)
            self._best_state = None
        if self.verbose and self.best_epoch is not None:
            how = (
                f"stopped after epoch {self.stopped_epoch + 1}"
                if self.stopped_epoch is not None else "ran all epochs"
            )
            print(f"EarlyStopping: {how}; best {self.monitor}={self.best:.6g} at epoch "
                  f"{self.best_epoch + 1}" + (" (weights restored)"
                                              if self.restore_best_weights else ""))


class ModelCheckpoint(Callback):
    """Save the model (`model.save`) every `every_n_epochs` epochs, or only when `monitor`
    improves (`save_best_only=True`). `path` may contain `{epoch}` and any logged value, e.g.
    "ckpt-{epoch:03d}-{val_loss:.3f}.safetensors". Each write is atomic.

    Before the first training step (`on_train_begin`) it checks that the directory exists and
    accepts files, that every `{key}` of the pattern is a value the fit records, and, with
    `save_best_only`, that `monitor` is recorded.
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

    def _pattern_fields(self) -> list[tuple[str, str]]:
        """(name, format spec) of every `{...}` in the path pattern."""
        import string

        try:
            parsed = list(string.Formatter().parse(self.path))
        except ValueError as e:
            raise ValueError(f"ModelCheckpoint path {self.path!r} is not a valid pattern ({e}); "
                             "write literal braces as {{ and }}") from None
        return [(re.split(r"[.\[]", name, maxsplit=1)[0], spec or "")
                for _, name, spec, _ in parsed if name is not None]

    def on_train_begin(self, logs: dict | None = None) -> None:
        from .checkpoint_file import check_writable

        recorded = (logs or {}).get("metrics")  # the names fit will log, when it says
        fields = self._pattern_fields()
        if any(name == "" or name.isdigit() for name, _ in fields):
            raise ValueError(f"ModelCheckpoint path {self.path!r} has a positional {{}} field; "
                             "name the value, e.g. {epoch:03d} or {val_loss:.3f}")
        sample = None
        if recorded is not None:
            values = {"epoch": 1, **{k: 0.0 for k in recorded}}
            unknown = sorted({n for n, _ in fields} - set(values))
            if unknown:
                raise ValueError(
                    f"ModelCheckpoint path {self.path!r} uses {{{unknown[0]}}}, which this fit "
                    f"does not record; it may use {{epoch}} and {', '.join(recorded)}"
                    + ("; validation values need validation_data= or validation_split= in fit"
                       if unknown[0].startswith("val_") else "")
                )
            if self.save_best_only:
                _monitored(dict.fromkeys(recorded, 0.0), self.monitor, "ModelCheckpoint")
            try:
                sample = self.path.format(**values)
            except (ValueError, TypeError, IndexError, KeyError) as e:
                raise ValueError(f"ModelCheckpoint path {self.path!r} could not be formatted "
                                 f"({e})") from None
        head, _, _ = self.path.partition("{")
        if "{" in os.path.dirname(self.path) or sample is None:
            # the directory depends on the epoch: check the part that does not
            fixed = os.path.dirname(head) or "."
            if not os.path.isdir(fixed):
                check_writable(os.path.join(fixed, "checkpoint"))  # raises, naming the path
        else:
            check_writable(sample)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if (epoch + 1) % self.every_n_epochs:
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
        self.model.save(path, epoch=epoch + 1)
        self.saved.append(path)
        if self.verbose:
            print(f"ModelCheckpoint: saved epoch {epoch + 1} to {path}")


__all__ = ["Callback", "EarlyStopping", "ModelCheckpoint", "capture_state", "apply_state"]
