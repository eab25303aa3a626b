"""Arrays inside a JSON document: state with arrays in it (optimiser slots, callback states,
metric sums) <-> a JSON-able document plus named tensors. Each array is stored under the
name of its place in the document (`optimizer.state.0.exp_avg`) and replaced there by a
reference, `{"__tensor__": name}`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .container import CheckpointError


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


__all__ = ["split_arrays", "join_arrays"]
