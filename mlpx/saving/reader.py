"""A checkpoint file -> a checked record: the one way mlpx reads its checkpoints (`mlpx.load`,
`fit(resume_from=...)`, `Sequential.load_weights`).

`read_checkpoint` verifies the container, the document and the tensors against the
architecture's declarations (mlpx.saving.schema) and returns a `CheckpointRecord`; nothing is
built or allocated on the file's word. `check_fits_model` and `check_resumable` then compare
the record with a particular model before anything is assigned. The model is passed in and
used through its public methods only.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .container import CheckpointError, is_mlpx_metadata, read_file, read_safetensors
from .records import CheckpointRecord, architecture_difference, read_record
from .schema import check_record_fits_model


def read_checkpoint(path: str | os.PathLike) -> CheckpointRecord:
    """The checked record of the mlpx checkpoint at `path` (CheckpointError on any problem)."""
    p = os.fspath(path)
    return read_record(*read_file(p), p)


def read_weights(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The state tensors of a safetensors file: a plain one as it is, an mlpx checkpoint
    verified (its optimiser and training state left out)."""
    p = os.fspath(path)
    tensors, metadata = read_safetensors(p)
    if is_mlpx_metadata(metadata):
        return read_checkpoint(p).state
    return tensors


def check_fits_model(record: CheckpointRecord, model: Any, path: str | os.PathLike,
                     input_dim: int | None = None) -> None:
    """Check a record against a model's `state_spec()` (for the input width `input_dim`,
    default the model's own) before anything is assigned: every state entry, optimiser slot
    and callback state dict."""
    spec = model.state_spec(input_dim)
    params = list(model.state_spec(input_dim, buffers=False))
    check_record_fits_model(record, spec, params, np.dtype(model.dtype), os.fspath(path))


def check_resumable(record: CheckpointRecord, model: Any, path: str | os.PathLike) -> None:
    """Check that `model` can continue the run of `record`: the same architecture and dtype,
    and every array fits (`check_fits_model`); the model does not change."""
    p = os.fspath(path)
    arch = record.architecture
    diff = architecture_difference(arch, model.input_dim, model.get_config()["layers"])
    if diff is not None:
        raise CheckpointError(f"checkpoint {p!r} holds a different architecture than this "
                              f"model ({diff}); load it with mlpx.load")
    if model.dtype.name != arch["dtype"]:
        raise CheckpointError(
            f"checkpoint {p!r} holds {arch['dtype']} weights, this model is "
            f"{model.dtype.name}; build the model with dtype={arch['dtype']!r}"
        )
    check_fits_model(record, model, p, arch["input_dim"])


__all__ = ["read_checkpoint", "read_weights", "check_fits_model", "check_resumable"]
