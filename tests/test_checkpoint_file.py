"""The checkpoint container: whole-file checksum, strict header table, safe reading."""

from __future__ import annotations

import json
import os
import struct
import threading

import numpy as np
import pytest

import mlpx
from mlpx.layers import BatchNorm, Dense, Dropout, LayerNorm
from mlpx.saving import container
from mlpx.saving.container import CheckpointError


def _model():
    model = mlpx.Sequential([Dense(5, activation=mlpx.activations.LeakyReLU(0.1)), LayerNorm(),
                             BatchNorm(), Dropout(0.1), Dense(2)], input_dim=3, seed=1)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(24, 3)).astype(np.float32)
    model.fit(X, (X[:, 0] > 0).astype(np.int64), loss="cross_entropy", optimizer="adam",
              lr=0.01, epochs=1, batch_size=8, verbose=0)
    return model


@pytest.fixture(scope="module")
def saved_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "good.safetensors"
    _model().save(path)
    return path.read_bytes()


@pytest.fixture
def good(tmp_path, saved_bytes):
    path = tmp_path / "good.safetensors"
    path.write_bytes(saved_bytes)
    return path


def _split(blob: bytes) -> tuple[dict, bytes]:
    n = struct.unpack("<Q", blob[:8])[0]
    return json.loads(blob[8 : 8 + n]), blob[8 + n :]


def _join(header: dict | bytes, data: bytes) -> bytes:
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


def _load_error(path) -> str:
    with pytest.raises(CheckpointError) as info:
        mlpx.load(path)
    assert str(path.name) in str(info.value)
    return str(info.value)


# ---------------------------------------------------------------- encode / decode
def test_encode_decode_round_trip_of_every_dtype_and_shape():
    tensors = {
        "scalar": np.array(7, dtype=np.int64),
        "empty": np.zeros((0, 3), np.float32),
        "big_endian": np.arange(6, dtype=">f8").reshape(2, 3),
        "u8": np.arange(5, dtype=np.uint8),
        "flags": np.array([True, False]),
        "half": np.linspace(0, 1, 4).astype(np.float16),
        "strided": np.arange(12, dtype=np.int32).reshape(3, 4)[:, ::2],
    }
    meta = {"format": "mlpx", "format_version": "2", "mlpx": "{}"}
    blob = container.encode(tensors, meta)
    back, got_meta = container.decode(blob, "x.safetensors")
    assert set(back) == set(tensors)
    for name, arr in tensors.items():
        assert back[name].shape == arr.shape and back[name].dtype == arr.dtype.newbyteorder("=")
        np.testing.assert_array_equal(back[name], arr)
        assert back[name].flags.writeable
    assert got_meta["sha256"] == container.checksum(meta, tensors)
    # written by the safetensors library, so any of its readers opens it
    from safetensors.numpy import load

    np.testing.assert_array_equal(load(blob)["strided"], tensors["strided"])


def test_checksum_does_not_depend_on_layout_but_on_every_entry():
    t = {"a": np.arange(3, dtype=np.float32), "b": np.ones((2, 2))}
    m = {"format": "mlpx", "format_version": "2", "mlpx": "{}"}
    base = container.checksum(m, t)
    assert container.checksum(m, dict(reversed(t.items()))) == base
    assert container.checksum({**m, "sha256": "anything"}, t) == base  # cannot cover itself
    assert container.checksum({**m, "mlpx": "{ }"}, t) != base
    assert container.checksum(m, {"a": t["a"].view(np.int32), "b": t["b"]}) != base  # same bytes
    assert container.checksum(m, {"a": t["a"].reshape(3, 1), "b": t["b"]}) != base
    assert container.checksum(m, {"a2": t["a"], "b": t["b"]}) != base


# ------------------------------------------------ every bit of the file is covered
def _replace_once(blob: bytes, old: bytes, new: bytes) -> bytes:
    assert len(old) == len(new) and blob.count(old) >= 1
    return blob.replace(old, new, 1)


@pytest.mark.parametrize("old,new", [
    (b'\\"negative_slope\\":0.1', b'\\"negative_slope\\":0.3'),  # LeakyReLU slope
    (b'\\"eps\\":1e-05', b'\\"eps\\":1e-15'),        # LayerNorm eps
    (b'\\"optimizer\\"', b'\\"optimizes\\"'),        # a renamed document entry
    (b'\\"epoch\\":1', b'\\"epoch\\":3'),
    (b'"dtype":"F32"', b'"dtype":"I32"'),            # same byte length, other meaning
])
def test_a_change_anywhere_in_the_header_is_detected(good, saved_bytes, old, new):
    good.write_bytes(_replace_once(saved_bytes, old, new))
    assert "SHA-256" in _load_error(good)


def test_a_flipped_data_bit_is_detected(good, saved_bytes):
    blob = bytearray(saved_bytes)
    blob[-5] ^= 0x01
    good.write_bytes(bytes(blob))
    assert "SHA-256" in _load_error(good)


@pytest.mark.parametrize("edit", ["rename", "drop", "extra", "format"])
def test_mlpx_metadata_is_exactly_four_entries(good, saved_bytes, edit):
    header, data = _split(saved_bytes)
    meta = header["__metadata__"]
    if edit == "rename":
        meta["sha257"] = meta.pop("sha256")
    elif edit == "drop":
        del meta["sha256"]
    elif edit == "extra":
        meta["comment"] = "hi"
    else:
        meta["format"] = "mlpy"
    good.write_bytes(_join(header, data))
    msg = _load_error(good)
    assert {"rename": "sha256", "drop": "missing ['sha256']", "extra": "comment",
            "format": "'mlpy'"}[edit] in msg


# ------------------------------------------------------------- crafted headers
_ONE = b"\0" * 4


@pytest.mark.parametrize("header,data,field", [
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0.0, 4.0]}}, _ONE, "data_offsets"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
      "b": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, _ONE, "overlaps"),
    ({"a": {"dtype": "U8", "shape": "ab", "data_offsets": [0, 2]}}, b"\0\0", "shape"),
    ({"a": {"dtype": "F32", "shape": [1e300], "data_offsets": [0, 4]}}, _ONE, "shape"),
    ({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, _ONE, "shape"),
    ({"a": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}}, _ONE, "shape"),
    ({"a": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 4]}}, _ONE, "needs"),
    ({"a": {"dtype": "F64", "shape": [1], "data_offsets": [0, 4]}}, _ONE, "needs 8"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8, "gap"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 8, "follow"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"", "truncated"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "x": 1}}, _ONE, "fields"),
    ({"a": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}}, _ONE, "dtype 'BF16'"),
    ({"a": {"dtype": 3, "shape": [1], "data_offsets": [0, 4]}}, _ONE, "dtype 3"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0]}}, _ONE, "data_offsets"),
    ({"a": [1, 2]}, _ONE, "fields"),
    ({"": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, _ONE, "empty name"),
    ({"__metadata__": {"x": 1}}, b"", "__metadata__"),
    ({"__metadata__": [1]}, b"", "__metadata__"),
    ([1, 2], b"", "not an object"),
    (b'{"a":1,"a":2}', b"", "twice"),
    (b"[" * 100_000 + b"]" * 100_000, b"", "nested"),
    (b'{"x": NaN}', b"", "NaN"),
    (b'{"x": ' + b"9" * 5000 + b"}", b"", "not valid JSON"),
    (b"\xff\xfe{}", b"", "not valid JSON"),
])
def test_crafted_headers_are_refused_naming_the_field(tmp_path, header, data, field):
    path = tmp_path / "crafted.safetensors"
    path.write_bytes(_join(header, data))
    with pytest.raises(CheckpointError, match="crafted.safetensors") as info:
        container.read_safetensors(path)
    assert field in str(info.value)


@pytest.mark.parametrize("prefix", [struct.pack("<Q", 2**62), struct.pack("<Q", 10**8 + 1),
                                    struct.pack("<Q", 50), b"\1\2\3"])
def test_impossible_header_sizes_allocate_nothing(tmp_path, prefix):
    path = tmp_path / "size.safetensors"
    path.write_bytes(prefix + b"{}")
    msg = _load_error(path)
    assert "header" in msg or "truncated" in msg


def test_deeply_nested_document_is_a_checkpoint_error(tmp_path):
    deep = "[" * 50_000 + "]" * 50_000
    path = tmp_path / "deep.safetensors"
    path.write_bytes(container.encode({}, {"format": "mlpx", "format_version": "2", "mlpx": deep}))
    assert "nested" in _load_error(path)


def test_plain_safetensors_file_is_never_taken_for_a_checkpoint(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"layers.0.W": np.zeros((3, 5), np.float32)}, str(path), metadata={"format": "pt"})
    assert "load_weights" in _load_error(path)


# ------------------------------------------------------------------ regular files only
def _finishes_quickly(fn, seconds=10.0):
    result: dict = {}

    def run():
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - reported to the test below
            result["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "reading blocked"
    return result.get("error")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_is_refused_at_once(tmp_path):
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    err = _finishes_quickly(lambda: mlpx.load(fifo))
    assert isinstance(err, CheckpointError) and "FIFO" in str(err) and "pipe" in str(err)


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null", "/dev/urandom"])
def test_devices_are_refused_at_once(device):
    if not os.path.exists(device):
        pytest.skip(f"{device} does not exist on this platform")
    err = _finishes_quickly(lambda: mlpx.load(device))
    assert isinstance(err, CheckpointError) and "character device" in str(err)


def test_directory_and_missing_files_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="is a directory"):
        mlpx.load(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        mlpx.load(tmp_path / "missing.safetensors")
    (tmp_path / "f").write_text("x")
    with pytest.raises(CheckpointError, match="parent of it is a file"):
        mlpx.load(tmp_path / "f" / "m.safetensors")


def test_a_directory_of_checkpoints_names_them(tmp_path):
    """mlpx.load on a directory (an `mlpx train --out` one, say) names the checkpoints in it
    and, for a model of mlpx train, the loader that also applies its preprocessing."""
    model = mlpx.MLP([3, 2], seed=0)
    model.save(tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"it holds model.safetensors, e.g. "
                                              r"mlpx.load\('.*model.safetensors'\)$"):
        mlpx.load(tmp_path)
    (tmp_path / "model.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"mlpx.TabularModel.load\("):
        mlpx.load(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"saved checkpoint$"):  # nothing to name
        mlpx.load(tmp_path)


def test_symlink_to_a_checkpoint_loads(good, tmp_path):
    link = tmp_path / "link.safetensors"
    link.symlink_to(good)
    assert mlpx.load(link).epoch_ == 1
