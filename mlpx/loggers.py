"""Callbacks that write each epoch's logs to files: `CSVLogger` (a table, Keras's) and
`TensorBoard` (event files for TensorBoard, through the optional `tensorboard` package).

Both write in `after_epoch`, which runs once the epoch's logs are complete, and in a
data-parallel fit on rank 0 alone, so several processes never write the same file.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

from .callbacks import Callback


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
