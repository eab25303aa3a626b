"""The checkpoint container: safetensors bytes with mlpx metadata and a whole-file SHA-256.

Layout (safetensors, https://github.com/huggingface/safetensors; read and written by the
`safetensors` library, which validates offsets, shapes and sizes):

    8 bytes   little-endian u64 N: the size of the JSON header
    N bytes   JSON: {"__metadata__": {str: str}, "<tensor>": {"dtype", "shape", "data_offsets"}}
    rest      the tensors' raw little-endian bytes, back to back

An mlpx checkpoint's `__metadata__` holds exactly `format` ("mlpx"), `format_version`, `mlpx`
(a JSON document describing the model) and `sha256`: a digest over a canonical form of the
other metadata entries, the tensor table (name, dtype, shape) and every tensor's bytes, so a
flipped bit anywhere (header, table or data) is an error. A checksum detects corruption, not
tampering: whoever can edit the file can recompute it.

Reading treats the file as untrusted: only regular files are opened (a FIFO or a device would
block or never end), at most the file's own size is read, every entry of the header is
checked before any array is built, and every problem raises `CheckpointError` naming the file
and the field.

Writing is atomic: the bytes go to a temporary file in the target's directory, are fsynced and
renamed over the target with `os.replace`, so a crash mid-save leaves the previous file intact.
Temporary files carry the writer's process id; the next save to the same path removes those
whose writer is gone. The new file gets the mode `open(path, "w")` would give it (the umask for
a new file, the old file's mode when overwriting), and saving through a symlink writes its
target.

This module knows nothing about models: it converts (tensors, metadata) to bytes and back.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import socket
import stat
import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .._stack import caller_level

FORMAT = "mlpx"
#: version 2: the SHA-256 covers metadata, tensor table and data, and is required; the
#: document holds the whole run's state (mlpx.saving.schema.TRAINING_KEYS)
FORMAT_VERSION = 2
#: version 1 files (checksum over the tensor bytes only; the run's position and callback
#: states optional) still load, with a warning to re-save
OLDEST_READABLE_VERSION = 1
#: the `__metadata__` entries of an mlpx checkpoint, no more and no fewer
METADATA_KEYS = ("format", "format_version", "mlpx", "sha256")
_MAX_HEADER = 100_000_000  # the safetensors library's own limit
MAX_JSON_DEPTH = 64

_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_CODES = {dt: code for code, dt in _DTYPES.items()}
_TABLE_KEYS = {"dtype", "shape", "data_offsets"}


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupted, or not an mlpx checkpoint."""


class OldCheckpointWarning(UserWarning):
    """A checkpoint of an older format version was loaded; re-save it to upgrade it."""


def _bad(path: str, why: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {path!r} is unreadable: {why}")


# ---------------------------------------------------------------------------- checksum
def dtype_code(arr: np.ndarray) -> str:
    """The safetensors dtype code of a NumPy array ("F32", "I64", ...)."""
    code = _CODES.get(np.dtype(arr.dtype).newbyteorder("<")) or _CODES.get(np.dtype(arr.dtype))
    if code is None:
        raise TypeError(f"cannot store arrays of dtype {arr.dtype} in a checkpoint")
    return code


def checksum(metadata: dict[str, str], tensors: dict[str, np.ndarray]) -> str:
    """SHA-256 over the metadata (less `sha256`), the tensor table and the tensor bytes.

    The canonical form does not depend on the header's key order, spacing or data layout:
    sorted-key JSON of {"metadata", "tensors": [[name, dtype, shape], ...] by name}, its length,
    then each tensor's little-endian bytes in name order (their lengths follow from the table).
    """
    names = sorted(tensors)
    table = [[n, dtype_code(tensors[n]), [int(s) for s in tensors[n].shape]] for n in names]
    meta = {k: v for k, v in metadata.items() if k != "sha256"}
    canon = json.dumps({"metadata": meta, "tensors": table}, sort_keys=True,
                       separators=(",", ":"), ensure_ascii=True).encode("ascii")
    h = hashlib.sha256(b"mlpx-checkpoint\0")
    h.update(struct.pack("<Q", len(canon)))
    h.update(canon)
    for n in names:
        arr = tensors[n]
        h.update(np.asarray(arr, dtype=_DTYPES[dtype_code(arr)], order="C"))
    return h.hexdigest()


# ------------------------------------------------------------------------ encode/decode
def encode(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    """The safetensors bytes of `tensors` (NumPy arrays) and string `metadata`, with the
    `sha256` entry (see `checksum`) added."""
    from safetensors.numpy import save

    arrays = {}
    for name, arr in tensors.items():
        arr = np.asarray(arr)
        arrays[str(name)] = np.asarray(arr, dtype=_DTYPES[dtype_code(arr)], order="C")
    meta = {str(k): str(v) for k, v in metadata.items() if k != "sha256"}
    meta["sha256"] = checksum(meta, arrays)
    return save(arrays, metadata=meta)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"the key {k!r} appears twice")
        out[k] = v
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _depth(obj: Any) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        node, d = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, d)
            stack.extend((v, d + 1) for v in (node.values() if isinstance(node, dict) else node))
    return deepest


def parse_json(text: str | bytes, path: str, what: str, allow_nan: bool = False) -> Any:
    """Strict JSON: no duplicate keys, nesting at most MAX_JSON_DEPTH, NaN/Infinity only when
    `allow_nan`; every problem is a CheckpointError naming `path` and `what`."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        value = json.loads(text, object_pairs_hook=_no_duplicates,
                           parse_constant=None if allow_nan else _reject_constant)
    except RecursionError:
        raise _bad(path, f"{what} is nested more than {MAX_JSON_DEPTH} levels deep") from None
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError, huge ints, bad UTF-8
        raise _bad(path, f"{what} is not valid JSON ({e}); the file is corrupted") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise _bad(path, f"{what} is nested more than {MAX_JSON_DEPTH} levels deep")
    return value


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _check_table(header: dict, n_data: int, path: str) -> dict[str, tuple[str, tuple]]:
    """Validate every tensor entry; return {name: (dtype code, shape)}."""
    table: dict[str, tuple[str, tuple]] = {}
    spans = []
    for name, info in header.items():
        where = f"tensor {name!r}"
        if not name:
            raise _bad(path, "a tensor has an empty name")
        if not isinstance(info, dict) or set(info) != _TABLE_KEYS:
            got = sorted(info) if isinstance(info, dict) else type(info).__name__
            raise _bad(path, f"{where} must have exactly the fields {sorted(_TABLE_KEYS)}, "
                             f"got {got}")
        code, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(code, str) or code not in _DTYPES:
            raise _bad(path, f"{where}: dtype {code!r} is not one of {sorted(_DTYPES)}")
        if not isinstance(shape, list) or not all(_is_count(s) for s in shape):
            raise _bad(path, f"{where}: shape {shape!r} is not a list of non-negative integers")
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(_is_count(o) for o in offsets)):
            raise _bad(path, f"{where}: data_offsets {offsets!r} is not a pair of "
                             "non-negative integers")
        start, stop = offsets
        count = 1
        for s in shape:  # Python ints: no overflow, and a bound check instead of allocation
            count *= s
        nbytes = count * _DTYPES[code].itemsize
        if stop < start or stop - start != nbytes:
            raise _bad(path, f"{where}: data_offsets {offsets} span {stop - start} bytes, but "
                             f"shape {shape} of {code} needs {nbytes}")
        if stop > n_data:
            raise _bad(path, f"{where} ends at byte {stop} of the data but the file holds only "
                             f"{n_data} data bytes (truncated)")
        spans.append((start, stop, name))
        table[name] = (code, tuple(shape))
    pos = 0
    for start, stop, name in sorted(spans):
        if start != pos:
            what = "overlaps the previous tensor" if start < pos else f"leaves a gap at {pos}"
            raise _bad(path, f"tensor {name!r} (data_offsets [{start}, {stop}]) {what}")
        pos = stop
    if pos != n_data:
        raise _bad(path, f"{n_data - pos} bytes follow the last tensor; corrupted")
    return table


def is_mlpx_metadata(metadata: dict[str, str]) -> bool:
    """Whether a safetensors `__metadata__` claims to be an mlpx checkpoint's (other tools'
    files may carry a `format` entry of their own, e.g. "pt")."""
    return metadata.get("format") == FORMAT or any(k in metadata for k in METADATA_KEYS[1:])


def decode(blob: bytes, path: str | os.PathLike = "<bytes>") -> tuple[dict, dict[str, str]]:
    """Parse and verify safetensors bytes into ({name: array}, metadata).

    Every problem raises CheckpointError naming `path`. The header is validated entry by entry
    before the safetensors library builds any array; files with mlpx metadata must carry all of
    it, nothing else, and a matching `sha256`. Returned arrays are writable copies.
    """
    p = os.fspath(path)
    if len(blob) < 8:
        raise _bad(p, f"the file has {len(blob)} bytes, fewer than the 8-byte header size "
                      "(truncated or empty)")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > _MAX_HEADER:
        raise _bad(p, f"its header claims {n} bytes: not a safetensors file, or corrupted")
    if 8 + n > len(blob):
        raise _bad(p, f"its header needs {n} bytes but the file has only {len(blob) - 8} after "
                      "the size field (truncated)")
    header = parse_json(bytes(blob[8 : 8 + n]), p, "the JSON header")
    if not isinstance(header, dict):
        raise _bad(p, f"the header is a JSON {type(header).__name__}, not an object")
    metadata = header.pop("__metadata__", None)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _bad(p, "__metadata__ must map names to strings")
    table = _check_table(header, len(blob) - 8 - n, p)
    mlpx_file = is_mlpx_metadata(metadata)
    if mlpx_file:
        unknown = sorted(set(metadata) - set(METADATA_KEYS))
        missing = [k for k in METADATA_KEYS if k not in metadata]
        if unknown or missing:
            raise _bad(p, "__metadata__ of an mlpx checkpoint holds exactly "
                          f"{list(METADATA_KEYS)}; " + "; ".join(
                              ([f"unknown {unknown}"] if unknown else [])
                              + ([f"missing {missing}"] if missing else [])))
        if metadata["format"] != FORMAT:
            raise _bad(p, f"__metadata__.format is {metadata['format']!r}, not {FORMAT!r}")
    from safetensors.numpy import load as st_load

    try:
        loaded = st_load(bytes(blob))
    except Exception as e:  # the library's own checks: SafetensorError and friends
        raise _bad(p, f"the safetensors library rejects it ({e})") from None
    tensors = {}
    for name in list(loaded):
        arr = loaded.pop(name)
        if table.get(name) != (dtype_code(arr), tuple(arr.shape)):
            raise _bad(p, f"tensor {name!r} reads back as {arr.dtype} {arr.shape}, unlike its "
                          "header entry")
        tensors[name] = np.array(arr)  # writable; frees the library's buffer as we go
    if len(tensors) != len(table):
        raise _bad(p, "the safetensors library and the header disagree on the tensor names")
    if mlpx_file:
        version = metadata["format_version"]
        if version == "1":  # version 1 hashed the data section only
            digest = hashlib.sha256(memoryview(blob)[8 + n :]).hexdigest()
        else:
            digest = checksum(metadata, tensors)
        if digest != metadata["sha256"]:
            raise _bad(p, "its SHA-256 does not match the header's sha256 entry (the file is "
                          "corrupted)")
    return tensors, metadata


# ------------------------------------------------------------------------- safe reading
def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _directory_hint(p: str) -> str:
    """The checkpoints a directory holds, named in the error: `mlpx train --out` writes a
    directory, and loading it by that name is the natural first try."""
    try:
        names = sorted(e.name for e in os.scandir(p)
                       if e.name.endswith(".safetensors") and e.is_file())
    except OSError:
        return ""
    if not names:
        return ""
    hint = f": it holds {', '.join(names[:3])}{', ...' if len(names) > 3 else ''}, e.g. " \
           f"mlpx.load({os.path.join(p, names[0])!r})"
    if "model.safetensors" in names and os.path.isfile(os.path.join(p, "model.json")):
        hint += (f"; a model of mlpx train loads with its preprocessing by "
                 f"mlpx.TabularModel.load({p!r})")
    return hint


def read_regular_file(path: str | os.PathLike) -> bytes:
    """The bytes of `path` if it is a regular file (symlinks to one are fine).

    FIFOs, devices, sockets and directories are refused at once: opening is non-blocking and
    the file type is checked on the open descriptor, and no more than the size the file had
    when opened is read.
    """
    p = os.fspath(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(p, flags)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {p!r} does not exist") from None
    except IsADirectoryError:
        raise CheckpointError(f"checkpoint {p!r} is a directory, not a regular file; give "
                              f"the path of a saved checkpoint{_directory_hint(p)}") from None
    except NotADirectoryError:
        raise CheckpointError(f"checkpoint {p!r} does not exist: a parent of it is a file, "
                              "not a directory") from None
    except OSError as e:
        raise CheckpointError(f"cannot open checkpoint {p!r}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CheckpointError(f"checkpoint {p!r} is {_kind(st.st_mode)}, not a regular "
                                  "file; give the path of a saved checkpoint"
                                  + (_directory_hint(p) if stat.S_ISDIR(st.st_mode) else ""))
        chunks, left = [], st.st_size
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 24))
            if not chunk:
                break  # shrunk while reading: the checks on the content report it
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {p!r}: {e.strerror}") from None
    finally:
        os.close(fd)


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Arrays and raw metadata of any safetensors file (mlpx checkpoints are verified)."""
    p = os.fspath(path)
    return decode(read_regular_file(p), p)


def read_file(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Arrays and the parsed `mlpx` document of an mlpx checkpoint file."""
    p = os.fspath(path)
    tensors, metadata = read_safetensors(p)
    if not is_mlpx_metadata(metadata):
        raise CheckpointError(
            f"{p!r} is a safetensors file but not an mlpx checkpoint (no 'format': 'mlpx' "
            "metadata); load plain weights into a built model with model.load_weights(path), "
            "or read its arrays with safetensors.numpy.load_file"
        )
    raw = metadata["format_version"]
    if not re.fullmatch(r"[0-9]{1,6}", raw):
        raise _bad(p, f"__metadata__.format_version {raw!r} is not a version number")
    version = int(raw)
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {p!r} has format version {version}; this mlpx reads versions "
            f"{OLDEST_READABLE_VERSION} to {FORMAT_VERSION}: upgrade mlpx"
        )
    if version < OLDEST_READABLE_VERSION:
        raise CheckpointError(f"checkpoint {p!r} has format version {version}, which no mlpx "
                              f"release wrote; the file is corrupted")
    meta = parse_json(metadata["mlpx"], p, "the mlpx metadata", allow_nan=True)
    if not isinstance(meta, dict):
        raise _bad(p, "the mlpx metadata is not a JSON object")
    stated = meta.get("format_version")
    if type(stated) is not int or stated != version:
        raise _bad(p, f"the mlpx document's format_version {stated!r} differs from "
                      f"__metadata__.format_version {raw!r}; the file is corrupted")
    if version < FORMAT_VERSION:
        warnings.warn(
            f"checkpoint {p!r} has format version {version}, whose checksum covers the arrays "
            f"but not the metadata; re-save it (model.save) to upgrade it to version "
            f"{FORMAT_VERSION}", OldCheckpointWarning, stacklevel=caller_level(),
        )
    return tensors, meta


# ------------------------------------------------------------------------ atomic writes
_TMP_SUFFIX = ".mlpx-tmp"


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _tmp_prefix(name: str) -> str:
    return f".{name[:100]}."  # leaves room in NAME_MAX for the pid and random parts


def _writer_gone(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return False


def remove_stale_temporaries(target: Path) -> list[str]:
    """Delete temporary files left by interrupted saves to `target` whose writing process,
    on this host, no longer runs; return their names."""
    if os.name != "posix":  # os.kill(pid, 0) is no existence test elsewhere
        return []
    pattern = re.compile(re.escape(_tmp_prefix(target.name)) + r"(\d+)\.([0-9a-f]{8})\.\w+"
                         + re.escape(_TMP_SUFFIX) + "$")
    removed = []
    host = _host_tag()
    try:
        names = os.listdir(target.parent)
    except OSError:
        return []
    for entry in names:
        m = pattern.match(entry)
        if m and m.group(2) == host and _writer_gone(int(m.group(1))):
            try:
                os.unlink(target.parent / entry)
                removed.append(entry)
            except OSError:
                pass
    return removed


def resolve_target(path: str | os.PathLike) -> Path:
    """The file a save to `path` writes: the target of a symlink (as `open(path, "w")`
    writes it), after checking that the directory exists and the target is not a directory
    or a special file. Errors name `path`."""
    p = Path(os.fspath(path))
    if os.fspath(path) == "" or p.name in ("", ".", ".."):
        raise IsADirectoryError(f"cannot save to {os.fspath(path)!r}: give a file name")
    target = Path(os.path.realpath(p)) if p.is_symlink() else p
    if target.is_symlink():
        raise OSError(f"cannot save to {str(p)!r}: its symlinks form a loop")
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        ancestor = directory
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if ancestor.exists() and not ancestor.is_dir():
            raise NotADirectoryError(
                f"cannot save to {str(p)!r}: {str(ancestor)!r} is a file, not a directory"
            )
        raise FileNotFoundError(
            f"cannot save to {str(p)!r}: the directory {str(directory)!r} does not exist; "
            "create it first (e.g. os.makedirs(..., exist_ok=True))"
        )
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return target
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(f"cannot save to {str(p)!r}: it is a directory; give a file "
                                "name inside it")
    if not stat.S_ISREG(st.st_mode):
        raise OSError(f"cannot save to {str(p)!r}: it is {_kind(st.st_mode)}, not a regular "
                      "file")
    return target


def check_writable(path: str | os.PathLike) -> Path:
    """`resolve_target(path)`, plus a check that its directory accepts new files."""
    target = resolve_target(path)
    directory = target.parent if str(target.parent) else Path(".")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot save to {os.fspath(path)!r}: no permission to create "
                              f"files in {str(directory)!r}")
    return target


def write_atomic(path: str | os.PathLike, blob: bytes) -> None:
    """Write `blob` to `path` so that readers see the old file or the new one, never a mix."""
    user_path = os.fspath(path)
    target = resolve_target(path)
    directory = target.parent if str(target.parent) else Path(".")
    remove_stale_temporaries(target)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = None  # a new file: 0o666 less the umask, as open() gives
    tmp = directory / (f"{_tmp_prefix(target.name)}{os.getpid()}.{_host_tag()}."
                       f"{secrets.token_hex(4)}{_TMP_SUFFIX}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                     0o666)
    except OSError as e:
        raise type(e)(e.errno, f"cannot save to {user_path!r}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None:
                os.chmod(tmp, mode)
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError) and e.errno is not None:
            raise type(e)(e.errno, f"cannot save to {user_path!r}: {e.strerror}") from None
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


__all__ = [
    "CheckpointError", "OldCheckpointWarning", "FORMAT", "FORMAT_VERSION", "METADATA_KEYS",
    "checksum", "encode", "decode", "parse_json", "read_regular_file", "read_safetensors",
    "read_file", "write_atomic", "resolve_target", "check_writable", "remove_stale_temporaries",
    "is_mlpx_metadata", "dtype_code",
]
