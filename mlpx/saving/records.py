"""What a checkpoint holds, as records (`CheckpointRecord`, `RunRecord`), and the checks of a
state dict against a model's declaration (`check_state_dict`) and of an architecture against
another (`architecture_difference`). Pure functions of arrays and dicts: nothing here imports
the model or the training loop, and nothing reads or writes files (mlpx.saving.reader and
mlpx.saving.writer do).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..history import History, history_from_dict

Spec = dict[str, tuple[tuple[int, ...], np.dtype]]


def as_host_array(value: Any) -> np.ndarray:
    """A NumPy view or copy of a host or device array."""
    return np.asarray(value.get() if hasattr(value, "get") else value)


def check_state_dict(spec: Spec, state: Mapping[str, Any], strict: bool = True,
                     what: str = "state_dict") -> tuple[list[str], list[str]]:
    """Check `state` against a declaration `spec`; return (missing, unexpected) keys.

    Raises KeyError for missing/unexpected keys when `strict`, and ValueError for an entry of
    the wrong shape, a non-numeric entry, or NaN/inf in a floating-point entry.
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"{what} must be a dict of arrays, got {type(state).__name__}")
    missing = [k for k in spec if k not in state]
    unexpected = [k for k in state if k not in spec]
    if strict and (missing or unexpected):
        raise KeyError(
            f"{what} does not match the model: missing keys {missing}, unexpected keys "
            f"{unexpected}; pass strict=False to load the matching keys only"
        )
    for key, (shape, dtype) in spec.items():
        if key not in state:
            continue
        value = as_host_array(state[key])
        if value.dtype.kind not in "biuf":
            raise ValueError(f"{what} entry {key!r} must hold numbers, got dtype {value.dtype}")
        if tuple(value.shape) != tuple(shape):
            raise ValueError(
                f"{what} entry {key!r} has shape {tuple(value.shape)}, the model expects "
                f"shape {tuple(shape)}"
            )
        if np.dtype(dtype).kind == "f" and not np.isfinite(value).all():
            raise ValueError(f"{what} entry {key!r} must be finite (it holds NaN or inf)")
        if np.dtype(dtype).kind in "iu" and value.dtype.kind == "f":
            raise ValueError(f"{what} entry {key!r} is a counter and must hold integers")
    return missing, unexpected


def nonfinite_entries(arrays: Mapping[str, Any], ops: Any) -> list[str]:
    """Names of the floating-point arrays holding NaN or inf (checked on the device)."""
    return [k for k, v in arrays.items()
            if getattr(v, "dtype", np.dtype(np.int64)).kind == "f" and not ops.all_finite(v)]


# ---------------------------------------------------------------------------- architecture
def architecture_difference(saved: dict, input_dim: Any, ours: list[dict]) -> str | None:
    """The first difference between a saved architecture and a model's (None: the same).

    Class names alone can be identical (Dense vs Dense of another width), so name the config
    entries that differ. `input_dim` None (an unbuilt model) accepts any saved width.
    """
    if input_dim is not None and input_dim != saved["input_dim"]:
        return f"input_dim {saved['input_dim']} in the checkpoint, {input_dim} here"
    theirs = saved["layers"]
    if len(theirs) != len(ours):
        return (f"{len(theirs)} layers in the checkpoint ({[s['class'] for s in theirs]}), "
                f"{len(ours)} here ({[s['class'] for s in ours]})")
    for i, (a, b) in enumerate(zip(theirs, ours, strict=True)):
        if a == b:
            continue
        if a["class"] != b["class"]:
            return f"layer {i} is {a['class']} in the checkpoint, {b['class']} here"
        ca, cb = a.get("config", {}), b.get("config", {})
        diff = ", ".join(
            f"{k}={ca.get(k)!r} in the checkpoint, {cb.get(k)!r} here"
            for k in sorted(set(ca) | set(cb)) if ca.get(k) != cb.get(k)
        )
        return f"layer {i} ({a['class']}): {diff}"
    return None


# ---------------------------------------------------------------------------------- record
@dataclass
class RunRecord:
    """A training run's position and state as read from a checkpoint."""

    epoch: int = 0
    #: the index of the `fit` call that made the run (0 for the model's first): it seeds the
    #: batch order, so that a later fit's order differs from the saved run's
    fit_index: int = 0
    step: int = 0
    loss_sum: float = 0.0
    stopped: bool = False
    history: History | None = None
    callbacks: list[dict] = field(default_factory=list)
    #: the metrics' partial sums of an epoch interrupted after `step` steps, by metric name
    metric_sums: dict = field(default_factory=dict)
    #: the metrics of compile/fit, as mlpx.metrics.describe records them
    metrics: list[dict] = field(default_factory=list)


@dataclass
class CheckpointRecord:
    """What a checkpoint holds, parsed and checked against the state its architecture
    declares (`mlpx.saving.schema`); not yet checked against a particular model."""

    architecture: dict
    state: dict[str, np.ndarray]
    loss: str | None
    optimizer: dict | None
    run: RunRecord
    params: list[str] = field(default_factory=list)
    buffers: dict[str, list[str]] = field(default_factory=dict)


def read_record(tensors: dict[str, np.ndarray], meta: dict, path: str) -> CheckpointRecord:
    """Parse a checkpoint's arrays and document (`container.read_file`) into a record.

    Everything is checked first (`schema.check_document`: keys, types, ranges,
    the tensor table), then the tensors are compared with what the architecture declares
    (`check_declared`); any problem raises CheckpointError naming the file and the field.
    Nothing is built or allocated on the file's word.
    """
    from .arrays import join_arrays
    from .schema import check_declared, check_document

    check_document(meta, tensors, path)
    buffers = meta["buffers"]
    names = list(meta["params"]) + [f"{p}.{k}" for p, keys in buffers.items() for k in keys]
    train = meta["training"]
    run = RunRecord(
        epoch=train["epoch"], fit_index=train["fit_index"], step=train.get("step", 0),
        loss_sum=float(train.get("loss_sum", 0.0)), stopped=train.get("stopped", False),
        history=history_from_dict(train["history"]),
        callbacks=join_arrays(train.get("callbacks", []), tensors, path),
        metric_sums=join_arrays(train.get("metric_sums", {}), tensors, path),
        metrics=list(train.get("metrics", [])),
    )
    opt = meta["optimizer"]
    record = CheckpointRecord(
        architecture=meta["model"], state={n: tensors[n] for n in names}, loss=meta["loss"],
        optimizer=None if opt is None else join_arrays(opt, tensors, path), run=run,
        params=list(meta["params"]), buffers={p: list(k) for p, k in buffers.items()},
    )
    check_declared(record, path)
    return record
