"""Checkpoints: a model's state <-> the tensors and JSON document of one safetensors file.

The container (safetensors bytes, the whole-file SHA-256, atomic writes, safe reading) lives in
mlpx.checkpoint_file; the strict validation of a file's document against its tensors and the
layers' state declarations in mlpx.checkpoint_schema. This module converts state to bytes and
back; it imports nothing from the model or the training loop (the model builds its document,
mlpx.state turns a file back into a checked record).

mlpx stores the model's state dict (`Sequential.state_dict()`: parameters `layers.<i>.W`,
nested blocks as `layers.<i>.layers.<j>.W`, then buffers such as BatchNorm running statistics
and Dropout step counters), the optimiser's state arrays (`optimizer.state.<k>.<name>`) and the
arrays of callback state (`callbacks.<k>.state.<name>...`, e.g. EarlyStopping's best weights):
every array is stored under the name of its place in the document. The `mlpx` document holds
the architecture (every layer's class and config), dtype, seed, the state dict's parameter and
buffer names, loss, optimiser config and scalar state, and `training`: the run's position
(`epoch` completed, `fit_index` (the run), `step` and `loss_sum` within an interrupted epoch,
`stopped`), the training history and each callback's state (`callbacks`: class and state, in
order).

Why this format: loading never executes code (no pickle), any safetensors reader (Python, Rust,
JS) can open the arrays, and the file is a single self-describing blob that is cheap to write
atomically.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .container import (  # noqa: F401  (re-exported: mlpx.checkpoint.CheckpointError)
    FORMAT,
    FORMAT_VERSION,
    OLDEST_READABLE_VERSION,
    CheckpointError,
    OldCheckpointWarning,
    check_writable,
    decode,
    encode,
    is_mlpx_metadata,
    read_file,
    read_safetensors,
    write_atomic,
)


# ------------------------------------------------------------------------- state <-> file
def split_arrays(obj: Any, prefix: str, tensors: dict[str, np.ndarray]) -> Any:
    """JSON-able copy of `obj` with arrays moved into `tensors` (replaced by references named
    after their place: `prefix`, then `.key` or `.index` per level)."""
    if isinstance(obj, np.ndarray) or hasattr(obj, "__cuda_array_interface__"):
        tensors[prefix] = np.asarray(obj.get() if hasattr(obj, "get") else obj)
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {str(k): split_arrays(v, f"{prefix}.{k}", tensors) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [split_arrays(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def join_arrays(obj: Any, tensors: dict[str, np.ndarray], path: str) -> Any:
    """The inverse of `split_arrays`: references replaced by the arrays of `tensors`."""
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            name = obj["__tensor__"]
            if not isinstance(name, str) or name not in tensors:
                raise CheckpointError(f"checkpoint {path!r} lacks the tensor {name!r}")
            return tensors[name]
        return {k: join_arrays(v, tensors, path) for k, v in obj.items()}
    if isinstance(obj, list):
        return [join_arrays(v, tensors, path) for v in obj]
    return obj


def write(path: str | os.PathLike, tensors: dict[str, np.ndarray], meta: dict) -> Path:
    """Write arrays and the mlpx metadata document to `path` atomically (whole-file SHA-256;
    see mlpx.checkpoint_file)."""
    blob = encode(tensors, {
        "format": FORMAT, "format_version": str(FORMAT_VERSION),
        "mlpx": json.dumps(meta, separators=(",", ":"), allow_nan=True),
    })
    write_atomic(path, blob)
    return Path(path)


__all__ = ["CheckpointError", "OldCheckpointWarning", "FORMAT", "FORMAT_VERSION", "encode",
           "decode", "write_atomic", "check_writable", "read_file", "read_safetensors",
           "is_mlpx_metadata", "write", "split_arrays", "join_arrays"]
