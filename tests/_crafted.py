"""Crafted checkpoint files for the schema tests: a saved file's tensors and document, edited,
written back with a valid checksum (so only the schema can refuse them)."""

from __future__ import annotations

import copy
import json

import pytest

import mlpx
from mlpx.saving import container


def craft(tmp_path, original, edit_meta=None, edit_tensors=None, edit=None):
    """Write `original` = (tensors, document) after the edits to tmp_path/crafted.safetensors:
    edit_meta(meta), edit_tensors(tensors), or edit(tensors, meta) for both at once."""
    tensors, meta = copy.deepcopy(original[0]), copy.deepcopy(original[1])
    if edit_meta:
        edit_meta(meta)
    if edit_tensors:
        edit_tensors(tensors)
    if edit:
        edit(tensors, meta)
    path = tmp_path / "crafted.safetensors"
    path.write_bytes(container.encode(tensors, {
        "format": "mlpx", "format_version": str(container.FORMAT_VERSION),
        "mlpx": json.dumps(meta, separators=(",", ":"), allow_nan=True)}))
    return path


def refused(path, *fragments):
    """mlpx.load(path) raises a CheckpointError naming the file and every fragment."""
    with pytest.raises(container.CheckpointError) as info:
        mlpx.load(path)
    msg = str(info.value)
    assert path.name in msg
    for f in fragments:
        assert f in msg, msg
    return msg
