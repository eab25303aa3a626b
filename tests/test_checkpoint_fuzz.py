"""Fuzzing the checkpoint reader: every mutated file gives a CheckpointError or the model that
was saved, and reading it never allocates much more than the file's own size.

The example count is bounded for CI (a few seconds, the same examples every run);
MLPX_FUZZ_EXAMPLES=5000 MLPX_FUZZ_RANDOM=1 searches longer with fresh examples.
"""

from __future__ import annotations

import copy
import json
import os
import struct
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import mlpx  # noqa: E402
from mlpx.callbacks import EarlyStopping, ModelCheckpoint  # noqa: E402
from mlpx.layers import BatchNorm, Dense, Dropout, LayerNorm, PReLU, Residual  # noqa: E402
from mlpx.saving import container  # noqa: E402
from mlpx.saving.container import CheckpointError  # noqa: E402
from mlpx.schedules import ReduceLROnPlateau  # noqa: E402

EXAMPLES = int(os.environ.get("MLPX_FUZZ_EXAMPLES", "120"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                derandomize=not os.environ.get("MLPX_FUZZ_RANDOM"),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
#: reading a file may use this many bytes beyond a few times its size (the model it builds,
#: JSON objects, the library's buffers)
SLACK = 4 * 2**20


_DIR = Path(tempfile.mkdtemp(prefix="mlpx-fuzz-"))


class _StopInsideTheLastEpoch(mlpx.Callback):
    """Ctrl-C after two steps of the third epoch: the file holds a position inside an epoch
    and the metrics' running sums."""

    def on_train_batch_end(self, batch, logs=None):
        if self.model.epoch_ == 2 and batch == 1:
            raise KeyboardInterrupt


def _build():
    model = mlpx.Sequential(
        [Dense(6, activation=mlpx.activations.LeakyReLU(0.1)), BatchNorm(), PReLU(),
         Dropout(0.2), Residual([Dense(6, activation="tanh"), LayerNorm(), Dense(6)]),
         Dense(2)], input_dim=4, seed=3)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(32, 4)).astype(np.float32)
    # callbacks with state, so the document holds callback states and their tensors
    callbacks = [EarlyStopping(monitor="loss", patience=5), ReduceLROnPlateau(monitor="loss"),
                 ModelCheckpoint(_DIR / "best.safetensors", monitor="loss", save_best_only=True),
                 _StopInsideTheLastEpoch()]
    # metrics (sums in the file) and validation every second epoch (History lists of
    # different lengths)
    with pytest.raises(KeyboardInterrupt):
        model.fit(X, (X[:, 0] > 0).astype(np.int64), loss="cross_entropy", optimizer="adam",
                  lr=0.01, epochs=3, batch_size=8, verbose=0, callbacks=callbacks,
                  metrics=["top_1_accuracy"], validation_split=0.25, validation_freq=2)
    return model


_ORIGINAL = _DIR / "orig.safetensors"
_MODEL = _build()
_MODEL.save(_ORIGINAL)
BLOB = _ORIGINAL.read_bytes()
_N = struct.unpack("<Q", BLOB[:8])[0]
HEADER = json.loads(BLOB[8 : 8 + _N])
DATA = BLOB[8 + _N :]


def _state(model) -> dict:
    run = model.trainer_
    return {
        "state": {k: (v.dtype.str, v.shape, v.tobytes()) for k, v in model.state_dict().items()},
        "run": (run.fit_index, run.epoch, run.step, run.loss_sum, run.stopped),
        "optimizer": model.optimizer_.state_dict()["config"],
        "slots": [{k: mlpx.to_numpy(v).tobytes() for k, v in s.items()}
                  for s in model.optimizer_.state],
        "step_count": model.optimizer_.step_count,
        "epoch": model.epoch_, "loss": model.loss_.name,
        "history": model.history_.history,
        "validated": model.history_.epochs_of("val_loss"),
        "metric_sums": {k: [a.tobytes() for a in v]
                        for k, v in run.state_dict()["metric_sums"].items()},
        "layers": repr(model.layers), "dtype": model.dtype.name, "seed": model.seed,
    }


SAVED = _state(_MODEL)
assert SAVED["run"][2] == 2 and len(SAVED["metric_sums"]) == 2 and SAVED["validated"] == [1]


def _check(blob: bytes, must_match: bool = True) -> None:
    """Load `blob`: a CheckpointError, or (when `must_match`) exactly the saved model."""
    path = _DIR / "mutant.safetensors"
    path.write_bytes(blob)
    tracemalloc.start()
    try:
        try:
            model = mlpx.load(path)
        except CheckpointError as e:
            assert "mutant.safetensors" in str(e)
            model = None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * len(blob) + SLACK, f"reading {len(blob)} bytes peaked at {peak}"
    if model is not None and must_match:
        assert _state(model) == SAVED


def _encode_header(header) -> bytes:
    raw = json.dumps(header, allow_nan=True).encode()
    return struct.pack("<Q", len(raw)) + raw


def test_the_unmutated_file_loads_identically():
    _check(BLOB)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(BLOB) - 1), st.integers(0, 7)), min_size=1,
                max_size=4))
def test_bit_flips(flips):
    blob = bytearray(BLOB)
    for pos, bit in flips:
        blob[pos] ^= 1 << bit
    _check(bytes(blob))


@FUZZ
@given(st.integers(0, len(BLOB) - 1), st.binary(min_size=1, max_size=16))
def test_overwritten_bytes(pos, junk):
    _check(BLOB[:pos] + junk + BLOB[pos + len(junk) :])


@FUZZ
@given(st.integers(0, len(BLOB) - 1), st.binary(max_size=64))
def test_truncation_and_appended_bytes(keep, tail):
    _check(BLOB[:keep] + tail)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                  max_size=4),
    max_leaves=12,
)


def _paths(obj, prefix=()):
    """Every path into a JSON value (the mlpx document is parsed and counted as nested)."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


_DOC = json.loads(HEADER["__metadata__"]["mlpx"])
_DOC_PATHS = list(_paths(_DOC))
_TABLE_PATHS = [p for p in _paths(HEADER) if p[:2] != ("__metadata__", "mlpx")]


def _set(obj, path, value):
    if not path:
        return value
    node = obj
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return obj


def _rewrite(doc=None, header=None, reseal=False) -> bytes:
    header = copy.deepcopy(HEADER) if header is None else header
    if doc is not None:
        header["__metadata__"]["mlpx"] = json.dumps(doc, allow_nan=True)
    if reseal:  # as someone editing the file on purpose: a valid checksum
        tensors, meta = container.decode(BLOB)
        return container.encode(tensors, {**meta, "mlpx": header["__metadata__"]["mlpx"]})
    return _encode_header(header) + DATA


@FUZZ
@given(st.sampled_from(_DOC_PATHS), _JSON)
def test_document_edits(path, value):
    doc = _set(copy.deepcopy(_DOC), path, value)
    _check(_rewrite(doc=doc))  # the checksum no longer matches


@FUZZ
@given(st.sampled_from(_DOC_PATHS), _JSON)
def test_document_edits_with_a_valid_checksum(path, value):
    """A deliberately edited document: refused cleanly, or a model that loads (it may differ
    from the saved one, as the file says), never another exception or a large allocation."""
    doc = _set(copy.deepcopy(_DOC), path, value)
    _check(_rewrite(doc=doc, reseal=True), must_match=False)


@FUZZ
@given(st.sampled_from(_TABLE_PATHS), _JSON)
def test_header_and_tensor_table_edits(path, value):
    header = _set(copy.deepcopy(HEADER), path, value)
    _check(_rewrite(header=header) if isinstance(header, dict) else _encode_header(header))


@FUZZ
@given(_JSON, st.binary(max_size=64))
def test_random_headers(header, data):
    _check(_encode_header(header) + data)
