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

In a data-parallel fit (`distributed=True`) every hook runs on every process, except
`after_epoch`, which runs on rank 0 alone. Epoch logs are the same everywhere (totalled over
the processes); batch logs are each process's own (the rows of its shards), and a batch hook
that sets `stop_training` on any process stops them all after the same step.

A callback with state of its own (best value so far, patience counter) returns it from
`state_dict()` (plain values and NumPy arrays) and takes it back in `load_state_dict(state)`;
checkpoints store it, and `fit(resume_from=...)` gives each callback the state saved by the
callback of the same class and rank (the first EarlyStopping gets the first saved
EarlyStopping's state). `validate_state_dict(state)` raises ValueError for a state that does
not fit (another monitor, say) before anything changes; `load_state_dict` runs after
`on_train_begin`.
"""

from __future__ import annotations

import csv
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from . import metrics


class Callback:
    """Hooks called by `fit`. Set `model.stop_training = True` to end after this epoch."""

    model: Any = None
    #: {entry: kind} of what `state_dict()` returns, checked before a checkpoint's state is
    #: used (see `check_state_format`); None: any dict (callbacks that declare nothing)
    state_format: dict[str, str] | None = None

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

    @classmethod
    def check_state_format(cls, state: Any) -> None:
        """Raise ValueError unless `state` has the entries and types `state_format` declares
        (no others): what a checkpoint's state is checked against before it is used. Kinds:
        "str", "mode" ("min"/"max"), "number" (not NaN), "count" (integer >= 0),
        "count_or_none", "bool", "strings" (list of str), "state_dict_or_none" (a model's
        state dict of arrays, or None)."""
        name = cls.__name__
        if not isinstance(state, dict):
            raise ValueError(f"{name} state must be a dict, got {type(state).__name__}")
        if cls.state_format is None:
            return
        unknown = sorted(set(state) - set(cls.state_format))
        missing = sorted(set(cls.state_format) - set(state))
        if unknown or missing:
            raise ValueError(f"{name} state must hold exactly {sorted(cls.state_format)}"
                             + (f"; unknown {unknown}" if unknown else "")
                             + (f"; missing {missing}" if missing else ""))
        for key, kind in cls.state_format.items():
            if not _STATE_KINDS[kind](state[key]):
                raise ValueError(f"{name} state entry {key!r} must be {_KIND_NAMES[kind]}, got "
                                 f"{_short(state[key])}")

    def validate_state_dict(self, state: dict[str, Any]) -> None:
        """Raise ValueError when `state` cannot be loaded into this callback."""
        self.check_state_format(state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take back what state_dict() returned."""
        self.validate_state_dict(state)


def _is_count(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) \
        and not math.isnan(float(v))


def _is_state_dict(v: Any) -> bool:
    return v is None or (isinstance(v, dict) and all(
        isinstance(k, str) and isinstance(a, np.ndarray) for k, a in v.items()))


_STATE_KINDS = {
    "str": lambda v: isinstance(v, str),
    "mode": lambda v: v in ("min", "max"),
    "number": _is_number,
    "count": _is_count,
    "count_or_none": lambda v: v is None or _is_count(v),
    "bool": lambda v: isinstance(v, (bool, np.bool_)),
    "strings": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    "state_dict_or_none": _is_state_dict,
}
_KIND_NAMES = {
    "str": "a string", "mode": "'min' or 'max'", "number": "a number (not NaN)",
    "count": "an integer >= 0", "count_or_none": "an integer >= 0 or None",
    "bool": "true or false", "strings": "a list of strings",
    "state_dict_or_none": "a state dict of arrays or None",
}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


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
    mode: str  # "min" or "max"; "auto" until the fit's metrics tell (see _settle_mode)
    asked_mode: str = "auto"  # what the user gave

    def _settle_mode(self, logs: dict | None = None) -> None:
        """With mode="auto", take the direction the loss or metric recorded under `monitor`
        declares (the fit's metrics, then the built-ins), at the start of each fit."""
        if self.asked_mode != "auto":
            return
        model = getattr(self, "model", None)
        direction = metrics.direction_of(self.monitor, getattr(model, "metrics_", None) or [])
        if direction is not None:
            self.mode = direction
            return
        recorded = (logs or {}).get("metrics")
        if recorded is not None and self.monitor not in recorded:
            self.mode = "min"  # not recorded at all: the lookup of the value says so
            return
        name = type(self).__name__
        raise ValueError(
            f"{name}(monitor={self.monitor!r}, mode='auto') cannot tell whether "
            f"{self.monitor!r} is better larger or smaller: its metric declares no direction. "
            f"Pass mode='max' or mode='min', or declare it on the metric (a Metric subclass's "
            "direction = 'max', FunctionMetric(fn, direction='max'), or fn.direction = 'max')"
        )

    def _check_monitor_state(self, state: dict[str, Any]) -> None:
        name = type(self).__name__
        self.check_state_format(state)  # type: ignore[attr-defined]
        # an "auto" mode not settled yet is compared once it is (load_state_dict)
        mode = state["mode"] if self.mode == "auto" else self.mode
        if (state["monitor"], state["mode"]) != (self.monitor, mode):
            raise ValueError(
                f"the checkpoint's {name} monitors {state['monitor']!r} in mode "
                f"{state['mode']!r}, this {name} monitors {self.monitor!r} in mode "
                f"{self.mode!r}; resume with the same settings or remove the callback"
            )


def _resolve_mode(mode: str, monitor: str) -> str:
    """"min"/"max" as given or as the built-in loss or metric `monitor` names declares;
    "auto" when that depends on the fit's metrics (settled in on_train_begin)."""
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode != "auto":
        return mode
    return metrics.direction_of(monitor) or "auto"


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
    whether patience ran out or the epochs did. `mode="auto"` follows the direction the
    monitored loss or metric declares (losses, mae, mse: min; accuracy, top-k accuracy, r2:
    max; a custom metric's `direction`). Its state (best value and epoch, wait counter, best
    state) is checkpointed.

    Parameters
    ----------
    monitor
        The logged value to watch, e.g. `"val_loss"`, `"val_accuracy"` or `"loss"`.
    patience
        Epochs without improvement before training stops (0: stop at the first).
    min_delta
        The smallest change that counts as an improvement.
    restore_best_weights
        End with the state of the best epoch (also when the epochs run out).
    mode
        `"min"`, `"max"` or `"auto"` (the direction the monitored metric declares).
    verbose
        1 prints a line when training stops.
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
        self.asked_mode = mode
        self.mode = _resolve_mode(mode, self.monitor)
        self.verbose = verbose
        self._reset()

    def _reset(self) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch: int | None = None
        self.wait = 0
        self.stopped_epoch: int | None = None
        self._best_state: dict | None = None

    state_format = {"monitor": "str", "mode": "mode", "best": "number",
                    "best_epoch": "count_or_none", "wait": "count",
                    "stopped_epoch": "count_or_none", "best_state": "state_dict_or_none"}

    def state_dict(self) -> dict[str, Any]:
        return {"monitor": self.monitor, "mode": self.mode, "best": self.best,
                "best_epoch": self.best_epoch, "wait": self.wait,
                "stopped_epoch": self.stopped_epoch, "best_state": self._best_state}

    def validate_state_dict(self, state: dict[str, Any]) -> None:
        self._check_monitor_state(state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.validate_state_dict(state)
        self.best = float(state["best"])
        self.best_epoch = None if state["best_epoch"] is None else int(state["best_epoch"])
        self.wait = int(state["wait"])
        self.stopped_epoch = None if state["stopped_epoch"] is None \
            else int(state["stopped_epoch"])
        best = state["best_state"]
        self._best_state = None if best is None else {k: np.array(v) for k, v in best.items()}

    def _improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._settle_mode(logs)
        self._reset()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if skipped(logs, self.monitor):
            return
        value = _monitored(logs, self.monitor, "EarlyStopping")
        if self.mode == "auto":  # used without fit's on_train_begin
            self._settle_mode()
            self._reset()
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

    Before the first training step (`on_train_begin`) it checks that the directory exists and
    accepts files, that every `{key}` of the pattern is a value the fit records, and, with
    `save_best_only`, that `monitor` is recorded. Each fit is a run of its own, so `best`
    starts afresh there; `fit(resume_from=...)` restores the saved run's `best`.

    Parameters
    ----------
    path
        The file to write; may hold `{epoch}` and any logged value as format fields.
    monitor
        The logged value that decides "best" with `save_best_only`.
    save_best_only
        Save only when `monitor` improves (else every `every_n_epochs` epochs).
    every_n_epochs
        Save every N epochs (without `save_best_only`).
    mode
        `"min"`, `"max"` or `"auto"`, as in EarlyStopping.
    verbose
        1 prints a line for each file written.
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
        self.asked_mode = mode
        self.mode = _resolve_mode(mode, self.monitor)
        self.verbose = verbose
        self.best = math.inf if self.mode == "min" else -math.inf
        self.saved: list[str] = []
        self._pending: str | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"monitor": self.monitor, "mode": self.mode, "best": self.best,
                "saved": list(self.saved)}

    state_format = {"monitor": "str", "mode": "mode", "best": "number", "saved": "strings"}

    def validate_state_dict(self, state: dict[str, Any]) -> None:
        self._check_monitor_state(state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.validate_state_dict(state)
        self.best, self.saved = float(state["best"]), [str(p) for p in state["saved"]]

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
        from .saving.container import check_writable

        # a new run: its best starts afresh (a resumed run's comes back in load_state_dict,
        # which fit calls after this)
        if self.save_best_only:
            self._settle_mode(logs)
        elif self.mode == "auto":
            self.mode = "min"  # unused: every epoch is saved
        self.best = math.inf if self.mode == "min" else -math.inf
        self._pending = None
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
        self._pending = None
        if (epoch + 1) % self.every_n_epochs:
            return
        if self.save_best_only and skipped(logs, self.monitor):
            return
        if any(skipped(logs, name) for name, _ in self._pattern_fields()):
            return  # the file name needs a value this epoch leaves out (validation_freq)
        logs = dict(logs or {})
        if self.save_best_only:
            value = _monitored(logs, self.monitor, "ModelCheckpoint")
            if self.mode == "auto":  # used without fit's on_train_begin
                self._settle_mode()
                self.best = math.inf if self.mode == "min" else -math.inf
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


# ---- callbacks that write each epoch's logs to files: CSVLogger (a table, Keras's) and
# TensorBoard (event files, through the optional `tensorboard` package). Both write in
# `after_epoch`, once the epoch's logs are complete, and in a data-parallel fit on rank 0
# alone, so several processes never write the same file.


def _check_path(path: Any, what: str) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{what} must be a path (str or os.PathLike), got {type(path).__name__}")
    return Path(path)


class CSVLogger(Callback):
    """Append one row per epoch to a CSV file (Keras's `CSVLogger`).

    The columns are `epoch` (counted from 0, as in `on_epoch_end`) and every value the
    epoch's logs can hold (`loss`, the metrics, `val_*`, `lr`, `grad_norm`); a value not
    recorded that epoch (validation left out by `validation_freq`) is written as `NA`.
    Each row is flushed when written, so the file can be followed while training runs.

    Parameters
    ----------
    filename
        The CSV file to write. Its folder must exist.
    separator
        The one-character field separator, e.g. `";"` or `"\\t"`.
    append
        False (default): each fit starts the file afresh. True: rows are added to an
        existing file (its header is kept), the choice for `fit(resume_from=...)`.
    """

    def __init__(self, filename: str | os.PathLike, separator: str = ",",
                 append: bool = False) -> None:
        self.filename = _check_path(filename, "CSVLogger's filename")
        if not isinstance(separator, str) or len(separator) != 1 or separator in "\r\n\"":
            raise ValueError(
                f"CSVLogger's separator must be one character other than a quote or a line "
                f"break, such as ',' or ';' or '\\t'; got {separator!r}"
            )
        self.separator = separator
        self.append = bool(append)
        self._columns: list[str] = ["epoch"]
        self._fresh = not self.append

    def on_train_begin(self, logs: dict | None = None) -> None:
        folder = self.filename.parent
        if not folder.is_dir():  # fail before training, not after the first epoch
            raise FileNotFoundError(
                f"CSVLogger cannot write {str(self.filename)!r}: the folder {str(folder)!r} "
                "does not exist; create it first"
            )
        self._columns = ["epoch", *(logs or {}).get("metrics", [])]
        self._fresh = not self.append

    def after_epoch(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        path = self.filename
        header = self._fresh or not path.exists() or path.stat().st_size == 0
        with open(path, "w" if self._fresh else "a", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, delimiter=self.separator)
            if header:
                writer.writerow(self._columns)
            writer.writerow([epoch, *(_cell(logs.get(k)) for k in self._columns[1:])])
        self._fresh = False


def _cell(value: Any) -> str:
    return "NA" if value is None else repr(float(value))


class TensorBoard(Callback):
    """Write each epoch's logs as TensorBoard scalars (Keras's `TensorBoard`, scalars only).

    Training values go to `log_dir/train`, validation values to `log_dir/validation`
    under the same names (`val_loss` is `epoch_loss` there), so TensorBoard draws each
    metric's training and validation curves together: `tensorboard --logdir log_dir`.
    The step of each point is the epoch number (from 0).

    Needs the `tensorboard` package: `pip install tensorboard` (it does not need
    TensorFlow).

    Parameters
    ----------
    log_dir
        The folder for the event files; created when missing.
    """

    def __init__(self, log_dir: str | os.PathLike = "logs") -> None:
        self.log_dir = _check_path(log_dir, "TensorBoard's log_dir")
        _summary_module()  # a missing package is an error here, not after the first epoch
        self._writers: dict[str, Any] = {}

    def _writer(self, name: str) -> Any:
        if name not in self._writers:
            folder = self.log_dir / name
            folder.mkdir(parents=True, exist_ok=True)
            self._writers[name] = _summary_module().Writer(str(folder))
        return self._writers[name]

    def after_epoch(self, epoch: int, logs: dict | None = None) -> None:
        for key, value in (logs or {}).items():
            if value is None or not math.isfinite(float(value)):
                continue
            if key.startswith("val_"):
                run, name = "validation", key[len("val_"):]
            else:
                run, name = "train", "learning_rate" if key == "lr" else key
            self._writer(run).add_scalar(f"epoch_{name}", float(value), step=int(epoch))
        for writer in self._writers.values():
            writer.flush()

    def on_train_end(self, logs: dict | None = None) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers = {}


def _summary_module() -> Any:
    try:
        import tensorboard.summary as summary
    except ImportError:
        raise ImportError(
            "the TensorBoard callback writes event files with the tensorboard package, which "
            'is not installed: pip install tensorboard (or ".[tensorboard]" in a clone of mlpx)'
        ) from None
    return summary


__all__ = ["Callback", "EarlyStopping", "EpochLogs", "ModelCheckpoint", "CSVLogger",
           "TensorBoard"]
