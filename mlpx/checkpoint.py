"""Checkpoints: a model's state <-> the tensors and JSON document of a checkpoint file.

The container (safetensors bytes, the whole-file SHA-256, atomic writes, safe reading) lives in
mlpx.checkpoint_file; the strict validation of a file's document against its tensors and the
model in mlpx.checkpoint_schema. This module maps a model to (tensors, document) and back.

mlpx stores the trainable parameters (`layers.<i>.W`, nested blocks as
`layers.<i>.layers.<j>.W`), the layers' buffers (BatchNorm running statistics, Dropout step
counters) and the optimiser's state arrays (`optimizer.state.<k>.<name>`). The `mlpx`
document holds the architecture (every layer's class and config), dtype, seed, loss,
optimiser config and scalar state, the epoch count and the training history.

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

from .checkpoint_file import (  # noqa: F401  (re-exported: mlpx.checkpoint.CheckpointError)
    FORMAT,
    FORMAT_VERSION,
    CheckpointError,
    OldCheckpointWarning,
    decode,
    encode,
    read_file,
    read_safetensors,
    write_atomic,
)
from .checkpoint_schema import check_before_build, check_model_matches, entry_errors


# ----------------------------------------------------------------------- model <-> arrays
def _walk(layers: list, prefix: str = "layers"):
    """(path, layer) for every layer, depth first (a block before its sub-layers)."""
    for i, layer in enumerate(layers):
        path = f"{prefix}.{i}"
        yield path, layer
        kids = layer.children()
        if kids:
            yield from _walk(kids, f"{path}.layers")


def _param_names(model: Any) -> list[str]:
    names = [f"{path}.{p.name}" for path, layer in _walk(model.layers) if not layer.children()
             for p in layer.parameters()]
    if len(names) != len(model.parameters()):  # a block with parameters of its own
        raise TypeError("layers with both sub-layers and own parameters cannot be saved")
    return names


def _split_arrays(obj: Any, prefix: str, tensors: dict[str, np.ndarray]) -> Any:
    """JSON-able copy of `obj` with arrays moved into `tensors` (replaced by references)."""
    if isinstance(obj, np.ndarray) or hasattr(obj, "__cuda_array_interface__"):
        tensors[prefix] = np.asarray(obj.get() if hasattr(obj, "get") else obj)
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {str(k): _split_arrays(v, f"{prefix}.{k}", tensors) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_split_arrays(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _join_arrays(obj: Any, tensors: dict[str, np.ndarray], path: str) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            name = obj["__tensor__"]
            if name not in tensors:
                raise CheckpointError(f"checkpoint {path!r} lacks the tensor {name!r}")
            return tensors[name]
        return {k: _join_arrays(v, tensors, path) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join_arrays(v, tensors, path) for v in obj]
    return obj


def _history_dict(history: Any) -> dict | None:
    if history is None:
        return None
    return {"epoch": [int(e) for e in history.epoch],
            "history": {k: [float(v) for v in vs] for k, vs in history.history.items()}}


def state_of(model: Any, epoch: int | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Arrays and metadata describing `model` completely (see the module docstring)."""
    from . import __version__
    from .layers.registry import layer_spec

    model._require_built()
    ops = model.ops
    tensors: dict[str, np.ndarray] = {}
    names = _param_names(model)
    for name, p in zip(names, model.parameters(), strict=True):
        tensors[name] = ops.to_numpy(p.data)
    buffers: dict[str, list[str]] = {}
    for path, layer in _walk(model.layers):
        for key, value in layer.buffers().items():
            tensors[f"{path}.{key}"] = np.asarray(
                value.get() if hasattr(value, "get") else value
            )
            buffers.setdefault(path, []).append(key)
    opt = model.optimizer_
    opt_meta = None
    if opt is not None and opt.ops is not None and opt.params:
        opt_meta = _split_arrays(opt.state_dict(), "optimizer", tensors)
    elif opt is not None:
        opt_meta = {"config": _split_arrays(opt.get_config(), "optimizer.config", tensors)}
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mlpx_version": __version__,
        "model": {
            "class": "Sequential",
            "input_dim": model.input_dim,
            "dtype": model.dtype.name,
            "seed": model.seed,
            "layers": [layer_spec(layer) for layer in model.layers],
        },
        "params": names,
        "buffers": buffers,
        "loss": model.loss_.name if model.loss_ is not None else None,
        "optimizer": opt_meta,
        "training": {
            "epoch": int(model.__dict__.get("epoch_", 0) if epoch is None else epoch),
            "fit_index": int(model.__dict__.get("_run_fit_index", model._fit_count)),
            "history": _history_dict(model.history_),
        },
    }
    return tensors, meta


def save(model: Any, path: str | os.PathLike, epoch: int | None = None) -> Path:
    """Write `model` (weights, buffers, architecture, loss, optimiser state, epoch) atomically."""
    tensors, meta = state_of(model, epoch)
    blob = encode(tensors, {
        "format": FORMAT, "format_version": str(FORMAT_VERSION),
        "mlpx": json.dumps(meta, separators=(",", ":"), allow_nan=True),
    })
    write_atomic(path, blob)
    return Path(path)


def _build_model(meta: dict, backend: Any, path: str):
    from .layers.registry import layer_from_spec
    from .model import Sequential

    spec = meta["model"]
    layers = [layer_from_spec(s) for s in spec["layers"]]
    return Sequential(layers, input_dim=spec["input_dim"], backend=backend, dtype=spec["dtype"],
                      seed=spec["seed"])


def _architecture_difference(saved: dict, input_dim: Any, ours: list[dict]) -> str:
    """The first difference between a saved architecture and a model's, for error messages.

    Class names alone can be identical (Dense vs Dense of another width), so name the config
    entries that differ.
    """
    if input_dim != saved["input_dim"]:
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
    return "the layer configurations differ"


def _check_compatible(model: Any, meta: dict, path: str) -> None:
    from .layers.registry import layer_spec

    saved = meta["model"]
    ours = [layer_spec(layer) for layer in model.layers]
    if ours != saved["layers"] or model.input_dim != saved["input_dim"]:
        raise CheckpointError(
            f"checkpoint {path!r} holds a different architecture than this model "
            f"({_architecture_difference(saved, model.input_dim, ours)}); load it with mlpx.load"
        )
    if model.dtype.name != saved["dtype"]:
        raise CheckpointError(
            f"checkpoint {path!r} holds {saved['dtype']} weights, this model is "
            f"{model.dtype.name}; build the model with dtype={saved['dtype']!r}"
        )


def restore(model: Any, tensors: dict[str, np.ndarray], meta: dict, path: str,
            optimizer: bool = True) -> None:
    """Copy a checkpoint's weights, buffers, loss, optimiser and counters into `model`."""
    from . import losses as L
    from . import optim as O

    ops = model.ops
    names = _param_names(model)
    if names != meta["params"]:
        raise CheckpointError(f"checkpoint {path!r} parameters {meta['params']} do not match "
                              f"the model's {names}")
    missing = [n for n in names if n not in tensors]
    if missing:
        raise CheckpointError(f"checkpoint {path!r} lacks the arrays {missing}")
    model.set_weights([tensors[n] for n in names])  # validates shapes and finiteness
    layers = dict(_walk(model.layers))
    for lpath, keys in meta.get("buffers", {}).items():
        layer = layers[lpath]
        for key in keys:
            value = tensors[f"{lpath}.{key}"]
            current = layer.buffers().get(key)
            if current is not None and tuple(np.shape(current)) != value.shape:
                raise CheckpointError(f"checkpoint {path!r}: buffer {lpath}.{key} has shape "
                                      f"{value.shape}, the model expects {np.shape(current)}")
            layer._set_buffer(key, ops.asarray(value) if value.ndim else value)
    if meta.get("loss"):
        model.loss_ = L.get(meta["loss"])
    opt_meta = meta.get("optimizer")
    if optimizer and opt_meta:
        sd = _join_arrays(opt_meta, tensors, path)
        model.optimizer_ = O.from_config(dict(sd["config"]))
        if "state" in sd:
            model.optimizer_.bind(model.parameters(), ops)
            model.optimizer_.load_state_dict(sd)
    train = meta.get("training") or {}
    model.epoch_ = int(train.get("epoch", 0))
    model._run_fit_index = int(train.get("fit_index", 0))
    model._fit_count = max(model._fit_count, model._run_fit_index + 1)
    hist = train.get("history")
    if hist is not None:
        from .history import History

        h = History()
        for i, e in enumerate(hist["epoch"]):
            h.append(e, {k: v[i] for k, v in hist["history"].items() if i < len(v)})
        model.history_ = h


def load(path: str | os.PathLike, backend: Any = "cpu") -> Any:
    """Rebuild the model saved at `path` on `backend` (weights bitwise, optimiser state,
    buffers, loss, epoch count and history). Never unpickles: only arrays and JSON are read.
    """
    p = os.fspath(path)
    tensors, meta = read_file(p)
    check_before_build(meta, tensors, p)
    with entry_errors(p, "model"):
        model = _build_model(meta, backend, p)
    check_model_matches(model, meta, tensors, p)
    with entry_errors(p, "a restored entry"):
        restore(model, tensors, meta, p)
    return model


def resume(model: Any, path: str | os.PathLike) -> dict:
    """Load a checkpoint into an existing model (built or not) for `fit(resume_from=...)`."""
    p = os.fspath(path)
    tensors, meta = read_file(p)
    check_before_build(meta, tensors, p)
    if not model.built:
        model.build(int(meta["model"]["input_dim"]))
    _check_compatible(model, meta, p)
    check_model_matches(model, meta, tensors, p)
    with entry_errors(p, "a restored entry"):
        restore(model, tensors, meta, p)
    return meta


def load_weights(model: Any, path: str | os.PathLike) -> None:
    """Copy the weights of a safetensors file into a built model (`model.load_weights`).

    The file may be a plain safetensors file holding exactly the model's parameters under
    their mlpx names (`layers.0.W`, `layers.0.b`, nested blocks as `layers.4.layers.0.W`) and,
    optionally, its buffers (`layers.1.running_mean`), or a full mlpx checkpoint (verified;
    its optimiser state is ignored). Names, shapes and dtypes are all checked before anything
    is assigned; floating-point weights are converted to the model's dtype.
    """
    from .checkpoint_file import dtype_code, is_mlpx_metadata

    p = os.fspath(path)
    model._require_built()
    tensors, metadata = read_safetensors(p)
    if is_mlpx_metadata(metadata):
        read_file(p)  # the version checks of a full checkpoint
        tensors = {k: v for k, v in tensors.items() if not k.startswith("optimizer.")}
    names = _param_names(model)
    buffers = {f"{lpath}.{key}": (layer, key, np.asarray(v.get() if hasattr(v, "get") else v))
               for lpath, layer in _walk(model.layers) for key, v in layer.buffers().items()}
    missing = [n for n in names if n not in tensors]
    unexpected = sorted(set(tensors) - set(names) - set(buffers))
    if missing or unexpected:
        raise CheckpointError(
            f"{p!r} does not hold this model's weights: "
            + "; ".join(([f"missing {missing[:6]}"] if missing else [])
                        + ([f"unexpected {unexpected[:6]}"] if unexpected else []))
            + f" (the model's parameters are {names[:6]}{' ...' if len(names) > 6 else ''})"
        )
    for name, param in zip(names, model.parameters(), strict=True):
        arr = tensors[name]
        if tuple(arr.shape) != param.shape or arr.dtype.kind != "f":
            raise CheckpointError(f"{p!r}: tensor {name!r} is {dtype_code(arr)} "
                                  f"{list(arr.shape)}, the model needs floating point "
                                  f"{list(param.shape)}")
    for name in set(tensors) & set(buffers):
        arr, current = tensors[name], buffers[name][2]
        if arr.shape != current.shape or arr.dtype.kind != current.dtype.kind:
            raise CheckpointError(f"{p!r}: buffer {name!r} is {dtype_code(arr)} "
                                  f"{list(arr.shape)}, the model holds {current.dtype} "
                                  f"{list(current.shape)}")
    with entry_errors(p, "a weight"):
        model.set_weights([tensors[n] for n in names])  # checks finiteness; all or nothing
    for name in set(tensors) & set(buffers):
        layer, key, current = buffers[name]
        value = tensors[name].astype(current.dtype)
        layer._set_buffer(key, model.ops.asarray(value) if value.ndim else value)


__all__ = ["save", "load", "load_weights", "resume", "CheckpointError", "FORMAT_VERSION",
           "encode", "decode", "write_atomic", "read_file"]
