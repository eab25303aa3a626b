"""Checkpoints: one safetensors file holding the arrays, with JSON metadata in its header.

Layout (safetensors, https://github.com/huggingface/safetensors):

    8 bytes   little-endian u64 N: the size of the JSON header
    N bytes   JSON: {"__metadata__": {str: str}, "<tensor>": {"dtype", "shape", "data_offsets"}}
    rest      the tensors' raw little-endian bytes, back to back

mlpx stores the trainable parameters (`layers.<i>.W`, nested blocks as
`layers.<i>.layers.<j>.W`), the layers' buffers (BatchNorm running statistics, Dropout step
counters) and the optimiser's state arrays (`optimizer.state.<k>.<name>`). `__metadata__` holds
`format` ("mlpx"), `format_version`, and `mlpx`: a JSON document with the architecture (every
layer's class and config), dtype, seed, loss, optimiser config and scalar state, the epoch count
and the training history, plus a SHA-256 of the tensor bytes (safetensors itself has no
checksum, so without it a flipped byte in a weight would load silently).

Why this format: loading never executes code (no pickle), any safetensors reader (Python, Rust,
JS) can open the arrays, and the file is a single self-describing blob that is cheap to write
atomically. Writes go to a temporary file in the same directory, are fsynced, then renamed over
the target with `os.replace`, so a crash mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "mlpx"
FORMAT_VERSION = 1
_MAX_HEADER = 100 * 1024 * 1024

_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_CODES = {dt: code for code, dt in _DTYPES.items()}


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupted, or not an mlpx checkpoint."""


# ------------------------------------------------------------------------ safetensors I/O
def _code(arr: np.ndarray) -> str:
    dt = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
    code = _CODES.get(np.dtype(dt))
    if code is None:
        raise TypeError(f"cannot store arrays of dtype {arr.dtype} in a checkpoint")
    return code


def encode(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    """The safetensors bytes of `tensors` (NumPy arrays) and string `metadata`."""
    header: dict[str, Any] = {"__metadata__": dict(metadata)}
    chunks = []
    offset = 0
    for name, arr in tensors.items():
        arr = np.asarray(arr)
        code = _code(arr)
        raw = np.ascontiguousarray(arr, dtype=_DTYPES[code]).tobytes()
        header[name] = {"dtype": code, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    data = b"".join(chunks)
    header["__metadata__"]["sha256"] = hashlib.sha256(data).hexdigest()
    hbytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hbytes += b" " * (-len(hbytes) % 8)  # keeps the tensor data 8-byte aligned
    return struct.pack("<Q", len(hbytes)) + hbytes + data


def decode(blob: bytes, path: str | os.PathLike = "<bytes>") -> tuple[dict, dict[str, str]]:
    """Parse and verify safetensors bytes; every problem raises CheckpointError naming `path`."""

    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"checkpoint {os.fspath(path)!r} is unreadable: {why}")

    if len(blob) < 8:
        raise bad(f"the file has {len(blob)} bytes, fewer than the 8-byte header size "
                  "(truncated or empty)")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > _MAX_HEADER:
        raise bad(f"its header claims {n} bytes: not a safetensors file, or corrupted")
    if 8 + n > len(blob):
        raise bad(f"its header needs {n} bytes but the file has only {len(blob) - 8} after the "
                  "size field (truncated)")
    try:
        header = json.loads(blob[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise bad(f"its JSON header does not parse ({e}); corrupted") from None
    if not isinstance(header, dict):
        raise bad("its header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    data = memoryview(blob)[8 + n :]
    tensors = {}
    end = 0
    for name, info in header.items():
        try:
            dt = _DTYPES[info["dtype"]]
            shape = tuple(int(s) for s in info["shape"])
            start, stop = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise bad(f"tensor {name!r} has a malformed entry {info!r}") from None
        count = int(np.prod(shape, dtype=np.int64))
        if stop - start != count * dt.itemsize or start < 0:
            raise bad(f"tensor {name!r}: offsets {start}..{stop} do not fit shape {shape}")
        if stop > len(data):
            raise bad(f"tensor {name!r} ends at byte {stop} of the data but the file holds "
                      f"only {len(data)} data bytes (truncated)")
        tensors[name] = np.frombuffer(data[start:stop], dtype=dt).reshape(shape).copy()
        end = max(end, stop)
    if end != len(data):
        raise bad(f"{len(data) - end} bytes follow the last tensor; corrupted")
    digest = metadata.get("sha256")
    if digest is not None and hashlib.sha256(data).hexdigest() != digest:
        raise bad("the SHA-256 of the tensor data does not match the header (corrupted)")
    return tensors, metadata


def write_atomic(path: str | os.PathLike, blob: bytes) -> None:
    """Write `blob` to `path` so that readers see the old file or the new one, never a mix."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():  # else mkstemp fails naming a temporary file the user never chose
        raise FileNotFoundError(
            f"cannot write {str(path)!r}: the directory {str(directory)!r} does not exist; "
            "create it first (e.g. os.makedirs(..., exist_ok=True))"
        )
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable (POSIX; not possible on Windows)
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def read_file(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Arrays and the decoded mlpx metadata of a checkpoint file."""
    p = os.fspath(path)
    try:
        with open(p, "rb") as f:
            blob = f.read()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {p!r} does not exist") from None
    except IsADirectoryError:
        raise CheckpointError(f"checkpoint {p!r} is a directory, not a file") from None
    tensors, metadata = decode(blob, p)
    if metadata.get("format") != FORMAT or "mlpx" not in metadata:
        raise CheckpointError(
            f"{p!r} is a safetensors file but not an mlpx checkpoint (no 'format': 'mlpx' "
            "metadata); load its arrays with safetensors.numpy.load_file instead"
        )
    try:
        version = int(metadata.get("format_version", "0"))
        meta = json.loads(metadata["mlpx"])
    except (ValueError, json.JSONDecodeError):
        raise CheckpointError(f"checkpoint {p!r} has corrupted mlpx metadata") from None
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {p!r} has format version {version}; this mlpx reads versions up to "
            f"{FORMAT_VERSION}: upgrade mlpx"
        )
    return tensors, meta


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
    try:
        model = _build_model(meta, backend, p)
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint {p!r} has an invalid architecture entry: {e}") from None
    restore(model, tensors, meta, p)
    return model


def resume(model: Any, path: str | os.PathLike) -> dict:
    """Load a checkpoint into an existing model (built or not) for `fit(resume_from=...)`."""
    p = os.fspath(path)
    tensors, meta = read_file(p)
    if not model.built:
        model.build(int(meta["model"]["input_dim"]))
    _check_compatible(model, meta, p)
    restore(model, tensors, meta, p)
    return meta


__all__ = ["save", "load", "resume", "CheckpointError", "FORMAT_VERSION", "encode", "decode",
           "write_atomic", "read_file"]
