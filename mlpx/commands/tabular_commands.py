"""`mlpx train` and `mlpx predict`: an MLP on a tabular file in one command.

`prepare_train` / `prepare_predict` read and check everything (the command line calls them
before any work, so a bad file or column is a usage error); `run_train` / `run_predict` do
the work. A trained model is a directory: `model.safetensors` (the mlpx checkpoint),
`model.json` (the preprocessing: feature columns, one-hot categories, standardisation, class
names or the target's scale; JSON, never pickle) and `loss_curves.png`.
"""

from __future__ import annotations

import csv
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..tabular import (
    Preprocessing,
    Table,
    TabularError,
    describe_task,
    drop_missing_rows,
    read_table,
)
from ..tabular.model import MODEL_FILE, TabularModel
from ..tabular.schema_file import preprocessing_json
from .outdir import check_out_dir


def _is_array_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in (".npy", ".npz")


# ---------------------------------------------------------------------------------- train
@dataclass
class TrainJob:
    pre: Preprocessing
    X: np.ndarray
    y: np.ndarray
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    raw_target: np.ndarray
    dropped_rows: int = 0
    warnings: list[str] = field(default_factory=list)


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    for name, f in (("--val-fraction", val_fraction), ("--test-fraction", test_fraction)):
        if not 0 <= f < 1:
            raise TabularError(f"{name} must be in [0, 1), got {f}")
    if val_fraction + test_fraction >= 1:
        raise TabularError(f"--val-fraction + --test-fraction must be below 1 (some rows must "
                           f"be left for training), got {val_fraction + test_fraction:g}")


def prepare_train(data: str, target: str, task: str = "auto", drop: list[str] | None = None,
                  val_fraction: float = 0.1, test_fraction: float = 0.2,
                  seed: int = 0, sep: str | None = None, decimal: str = "auto",
                  missing: str | None = None, max_categories: int | None = None,
                  na_values: list[str] | None = None) -> TrainJob:
    """Read, check and encode the training file; split its rows. Raises TabularError;
    doubtful columns are collected as warnings (`TrainJob.warnings`)."""
    check_fractions(val_fraction, test_fraction)
    table = read_table(data, sep=sep, decimal=decimal, na_values=na_values or ())
    array_file = _is_array_file(data)
    dropped = 0
    if missing is not None:  # rows without a target, and with --missing drop any gap
        from ..tabular import resolve_target

        name = resolve_target(table, target, array_file)
        used = [c for c in table if c not in (drop or ())] if missing == "drop" else [name]
        table, dropped = drop_missing_rows(table, used)
        if len(table[name]) == 0:
            raise TabularError(f"{data!r}: every row misses a value; --missing {missing} "
                               "leaves no rows to train on")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pre = Preprocessing.fit(table, target, task, drop, array_file=array_file,
                                missing=missing, max_categories=max_categories,
                                na_values=na_values)
    y_all = pre.targets_of(table) if pre.task == "classification" else None
    n = len(table[pre.target])
    rows = np.arange(n)
    test, rest = _split(rows, test_fraction, y_all, seed)
    val, train = _split(rest, val_fraction / (1 - test_fraction) if val_fraction else 0.0,
                        y_all, seed + 1)
    if len(train) < 2:
        raise TabularError(f"{data!r} has {n} rows: too few to train on after the validation "
                           "and test splits; use a larger file or smaller fractions")
    pre.fit_statistics(table, train)  # on the training rows only, as scikit-learn does
    return TrainJob(pre=pre, X=pre.features_of(table), y=pre.targets_of(table), train=train,
                    val=val, test=test, raw_target=table[pre.target], dropped_rows=dropped,
                    warnings=[str(w.message) for w in caught])


def _split(rows: np.ndarray, fraction: float, labels: np.ndarray | None,
           seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(held out, kept): stratified by class where every class has two rows or more."""
    if fraction <= 0 or len(rows) < 2:
        return rows[:0], rows
    from ..data import train_test_split

    stratify = None
    if labels is not None:
        counts = np.bincount(labels[rows])
        counts = counts[counts > 0]
        n_test = int(np.ceil(fraction * len(rows)))
        if counts.min() >= 2 and len(counts) <= n_test <= len(rows) - len(counts):
            stratify = labels[rows]
    kept, held = train_test_split(rows, test_size=fraction, random_state=seed,
                                  stratify=stratify)
    return np.sort(held), np.sort(kept)


def run_train(job: TrainJob, out: str, hidden: list[int], activation: str = "relu",
              epochs: int = 30, batch_size: int = 32, lr: float = 1e-3,
              optimizer: str = "adam", backend: str = "auto", seed: int = 0,
              verbose: int = 1, dtype: str = "float32") -> dict[str, Any]:
    """Train, print the held-out metric, save the model, its preprocessing and the plot."""
    from .. import MLP

    pre = job.pre
    out_dir = check_out_dir(out)
    classify = pre.task == "classification"
    model = MLP([pre.n_inputs, *hidden, pre.n_outputs], activation=activation,
                backend=backend, seed=seed, dtype=dtype)
    Xtr, ytr = job.X[job.train], job.y[job.train]
    if not classify:
        ytr = ytr.reshape(-1, 1)
    val = None
    if len(job.val):
        yv = job.y[job.val]
        val = (job.X[job.val], yv if classify else yv.reshape(-1, 1))
    what = (f"classification, {len(pre.classes)} classes" if classify else "regression")
    for message in job.warnings:
        print(f"mlpx train: warning: {message}", file=sys.stderr)
    if job.dropped_rows:
        print(f"mlpx train: {job.dropped_rows} rows with missing values left out "
              f"(--missing {pre.missing})")
    print(f"mlpx train: target {pre.target!r} ({what}: {describe_task(job.raw_target, pre.task)}"
          f"; override with --task), {pre.n_inputs} inputs from {len(pre.features)} columns, "
          f"{len(job.train)} train / {len(job.val)} validation / {len(job.test)} test rows, "
          f"backend={model.backend!r}")
    hist = model.fit(Xtr, ytr, loss="cross_entropy" if classify else "mse",
                     optimizer=optimizer, lr=lr, epochs=epochs, batch_size=batch_size,
                     validation_data=val, verbose=verbose)
    held, name = (job.test, "test") if len(job.test) else (job.val, "validation")
    result: dict[str, Any] = {"task": pre.task}
    if len(held):
        result.update(score(model, pre, job.X[held], job.y[held]))
        print(f"{name} {format_scores(result)} ({len(held)} rows)")
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = model.save(out_dir / MODEL_FILE)
    model_path.with_suffix(".json").write_text(preprocessing_json(pre), encoding="utf-8")
    print(f"model written to {model_path} (preprocessing: {model_path.with_suffix('.json')})")
    result["model"] = str(model_path)
    try:
        png = out_dir / "loss_curves.png"
        hist.plot(png, title=f"mlpx train: {pre.target} ({pre.task})")
        print(f"loss curves written to {png}")
        result["plot"] = str(png)
    except ImportError:
        print('loss-curve plot skipped: it needs matplotlib (pip install "mlpx[plot]")')
    return result


def score(model: Any, pre: Preprocessing, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Accuracy (classification) or R² and MSE in the target's units (regression)."""
    out = model.predict(X)
    if pre.task == "classification":
        return {"accuracy": float(np.mean(np.argmax(out, axis=1) == y))}
    pred, true = pre.values_of(out), pre.values_of(y)
    mse = float(np.mean((pred - true) ** 2))
    var = float(np.var(true))
    return {"r2": 1 - mse / var if var > 0 else float("nan"), "mse": mse}


def format_scores(s: dict[str, float]) -> str:
    if "accuracy" in s:
        return f"accuracy: {s['accuracy']:.4f}"
    return f"R²: {s['r2']:.4f}, MSE: {s['mse']:.6g}"


# -------------------------------------------------------------------------------- predict
@dataclass
class PredictJob:
    model: TabularModel
    table: Table
    X: np.ndarray
    warnings: list[str]


def prepare_predict(model: str, data: str, proba: bool = False, backend: str = "cpu",
                    sep: str | None = None, decimal: str = "auto",
                    na_values: list[str] | None = None) -> PredictJob:
    """Load the model and its preprocessing, read the file with the training schema and
    encode it. Raises TabularError; unseen text values are collected as warnings."""
    tabular = TabularModel.load(model, backend=backend)
    if proba and tabular.task != "classification":
        raise TabularError("--proba: the model is a regression model; probabilities exist for "
                           "classification only")
    table = tabular.read(data, sep=sep, decimal=decimal, na_values=na_values or ())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        X = tabular.preprocessing.features_of(table)
    return PredictJob(tabular, table, X, [str(w.message) for w in caught])


def run_predict(job: PredictJob, out: str = "-", proba: bool = False) -> np.ndarray:
    """Write one prediction per row (class labels or values; --proba adds a column per
    class) to `out` as CSV ("-": standard output); returns the predictions."""
    pre, model = job.model.preprocessing, job.model.network
    outputs = model.predict(job.X)
    header = [pre.target]
    preds = job.model.outputs_to_predictions(outputs)
    if pre.task == "classification":
        columns: list[Any] = [preds]
        if proba:
            p = model.predict_proba(job.X)
            header += [f"proba_{c}" for c in pre.classes]
            columns += [p[:, j] for j in range(p.shape[1])]
    else:
        columns = [preds]
    stream = sys.stdout if out == "-" else open(out, "w", newline="", encoding="utf-8")
    try:
        writer = csv.writer(stream)
        writer.writerow(header)
        for row in zip(*columns, strict=True):
            writer.writerow([f"{v:.8g}" if isinstance(v, (float, np.floating)) else v
                             for v in row])
    finally:
        if stream is not sys.stdout:
            stream.close()
    report = sys.stderr if out == "-" else sys.stdout
    for message in job.warnings:
        print(f"mlpx predict: warning: {message}", file=sys.stderr)
    print(f"{len(preds)} predictions written to {'standard output' if out == '-' else out}",
          file=report)
    if pre.target in job.table:  # labelled data: say how well the model does on it
        try:
            s = score(model, pre, job.X, pre.targets_of(job.table))
            print(f"{format_scores(s)} against the file's {pre.target!r} column", file=report)
        except TabularError:
            pass
    return preds
