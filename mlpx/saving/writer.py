"""A model and its training run's state -> one checkpoint file (`Sequential.save`).

The writer asks the model for its state dict, parameter names, architecture, loss and
history, and takes the run's state as the trainer produced it (`Trainer.state_dict()`); it
lays them out as the document and tensors described in mlpx.saving and writes them
atomically (mlpx.saving.container).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..history import history_to_dict
from ..metrics import describe as describe_metrics
from .arrays import split_arrays
from .container import FORMAT, FORMAT_VERSION, encode, write_atomic


def buffer_names(state: dict[str, Any], params: list[str]) -> dict[str, list[str]]:
    """The state entries that are not parameters, by layer path: {"layers.1": ["mean"]}."""
    buffers: dict[str, list[str]] = {}
    for key in state:
        if key not in params:
            layer_path, name = key.rsplit(".", 1)
            buffers.setdefault(layer_path, []).append(name)
    return buffers


def checkpoint_document(model: Any, run: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict]:
    """The tensors and the `mlpx` document of a built `model` whose run's state is `run`
    (`Trainer.state_dict()`)."""
    from .. import __version__

    tensors = model.state_dict()
    params = model.parameter_names()
    loss = model.loss_
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mlpx_version": __version__,
        "model": model.get_config(),
        "params": params,
        "buffers": buffer_names(tensors, params),
        "loss": loss.name if loss is not None else None,
        "optimizer": split_arrays(run["optimizer"], "optimizer", tensors),
        "training": {
            "epoch": int(run["epoch"]), "fit_index": int(run["fit_index"]),
            "step": int(run["step"]), "loss_sum": float(run["loss_sum"]),
            "stopped": bool(run["stopped"]),
            "history": history_to_dict(model.history_),
            "callbacks": split_arrays(run["callbacks"], "callbacks", tensors),
            "metric_sums": split_arrays(run.get("metric_sums") or {}, "metric_sums", tensors),
            # the metrics evaluate() reports after mlpx.load: those of compile/fit
            "metrics": describe_metrics(model.compiled_metrics or []),
        },
    }
    return tensors, meta


def write(path: str | os.PathLike, tensors: dict[str, np.ndarray], meta: dict) -> Path:
    """Write arrays and the mlpx document to `path` atomically (whole-file SHA-256; see
    mlpx.saving.container)."""
    blob = encode(tensors, {
        "format": FORMAT, "format_version": str(FORMAT_VERSION),
        "mlpx": json.dumps(meta, separators=(",", ":"), allow_nan=True),
    })
    write_atomic(path, blob)
    return Path(path)


def write_checkpoint(path: str | os.PathLike, model: Any, run: dict[str, Any]) -> Path:
    """Write `model` and its run's state `run` (`Trainer.state_dict()`) to `path`."""
    tensors, meta = checkpoint_document(model, run)
    return write(path, tensors, meta)


__all__ = ["write_checkpoint", "checkpoint_document", "write", "buffer_names"]
