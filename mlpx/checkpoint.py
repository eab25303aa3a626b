"""Checkpoints: one safetensors file holding the arrays, with JSON metadata in its header.

Layout (safetensors, https://github.com/huggingface/safetensors):

    8 bytes   little-endian u64 N: the size of the JSON header
    N bytes   JSON: {"__metadata__": {str: str}, "<tensor>": {"dtype", "shape", "data_offsets"}}
    rest      the tensors' raw little-endian bytes, back to back

mlpx stores the model's state dict (`Sequential.state_dict()`: parameters `layers.<i>.W`,
nested blocks as `layers.<i>.layers.<j>.W`, then buffers such as BatchNorm running statistics
and Dropout step counters), the optimiser's state arrays (`optimizer.state.<k>.<name>`) and the
arrays of callback state (`callbacks.<k>.<name>`, e.g. EarlyStopping's best weights).
`__metadata__` holds `format` ("mlpx"), `format_version`, and `mlpx`: a JSON document with the
architecture (every layer's class and config), dtype, seed, the state dict's parameter and
buffer names, loss, optimiser config and scalar state, and `training`: the run's position
(`epoch` completed, `fit_index` (the run), `step` and `loss_sum` within an interrupted epoch),
the training history and each callback's state (`callbacks`: class and state, in order), plus
a SHA-256 of the tensor bytes (safetensors itself has no checksum, so without it a flipped byte
in a weight would load silently). Files written before `step`, `loss_sum` and `callbacks`
existed load as runs at an epoch boundary with fresh callbacks.

This module converts state to bytes and back; it imports nothing from the model or the
training loop (the model builds its record, the trainer reads it).

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


# ------------------------------------------------------------------------- state <-> file
def split_arrays(obj: Any, prefix: str, tensors: dict[str, np.ndarray]) -> Any:
    """JSON-able copy of `obj` with arrays moved into `tensors` (replaced by references)."""
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
            if name not in tensors:
                raise CheckpointError(f"checkpoint {path!r} lacks the tensor {name!r}")
            return tensors[name]
        return {k: join_arrays(v, tensors, path) for k, v in obj.items()}
    if isinstance(obj, list):
        return [join_arrays(v, tensors, path) for v in obj]
    return obj


def write(path: str | os.PathLike, tensors: dict[str, np.ndarray], meta: dict) -> Path:
    """Write arrays and the mlpx metadata document to `path` atomically."""
    blob = encode(tensors, {
        "format": FORMAT, "format_version": str(FORMAT_VERSION),
        "mlpx": json.dumps(meta, separators=(",", ":"), allow_nan=True),
    })
    write_atomic(path, blob)
    return Path(path)


__all__ = ["CheckpointError", "FORMAT", "FORMAT_VERSION", "encode", "decode", "write_atomic",
           "read_file", "write", "split_arrays", "join_arrays"]
