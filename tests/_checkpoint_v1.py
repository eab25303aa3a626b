"""Writes checkpoints of format version 1 (mlpx 0.1.0) for the compatibility tests.

Version 1: a safetensors file whose `__metadata__` holds `format`, `format_version` "1",
`mlpx` (the document below) and a `sha256` of the data section only; tensors are stored in
insertion order. `encode_v1` reproduces that writer byte for byte, so no binary file needs
to live in the repository.
"""

from __future__ import annotations

import hashlib
import json
import struct

import numpy as np

_CODES = {np.dtype("<f4"): "F32", np.dtype("<f8"): "F64", np.dtype("<i8"): "I64"}


def encode_v1(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    header: dict = {"__metadata__": dict(metadata)}
    chunks, offset = [], 0
    for name, arr in tensors.items():
        raw = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": _CODES[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    data = b"".join(chunks)
    header["__metadata__"]["sha256"] = hashlib.sha256(data).hexdigest()
    hbytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hbytes += b" " * (-len(hbytes) % 8)
    return struct.pack("<Q", len(hbytes)) + hbytes + data


def _dense(units: int, activation: str, init: str) -> dict:
    return {"class": "Dense", "config": {
        "units": units, "activation": {"name": activation}, "init": init, "use_bias": True,
        "kernel_regularizer": None, "bias_regularizer": None, "name": None}}


def v1_checkpoint(seed: int = 0) -> tuple[dict[str, np.ndarray], dict]:
    """Tensors and document of a version-1 checkpoint: Dense(4, relu), BatchNorm,
    Dropout(0.25), Dense(2) on 3 inputs, trained 2 epochs with Adam (4 steps)."""
    rng = np.random.default_rng(seed)

    def f32(*shape: int) -> np.ndarray:
        return rng.normal(size=shape).astype(np.float32)

    shapes = {"layers.0.W": (3, 4), "layers.0.b": (4,), "layers.1.gamma": (4,),
              "layers.1.beta": (4,), "layers.3.W": (4, 2), "layers.3.b": (2,)}
    tensors = {name: f32(*shape) for name, shape in shapes.items()}
    tensors["layers.1.running_mean"] = f32(4)
    tensors["layers.1.running_var"] = np.abs(f32(4)) + np.float32(0.5)
    tensors["layers.1.num_batches_tracked"] = np.array(4, dtype=np.int64)
    tensors["layers.2.step"] = np.array(4, dtype=np.int64)
    state = []
    for i, shape in enumerate(shapes.values()):
        tensors[f"optimizer.state.{i}.exp_avg"] = f32(*shape) * np.float32(0.01)
        tensors[f"optimizer.state.{i}.exp_avg_sq"] = np.abs(f32(*shape)) * np.float32(1e-4)
        state.append({k: {"__tensor__": f"optimizer.state.{i}.{k}"}
                      for k in ("exp_avg", "exp_avg_sq")})
    document = {
        "format": "mlpx", "format_version": 1, "mlpx_version": "0.1.0",
        "model": {"class": "Sequential", "input_dim": 3, "dtype": "float32", "seed": 5,
                  "layers": [_dense(4, "relu", "he_normal"),
                             {"class": "BatchNorm",
                              "config": {"momentum": 0.1, "eps": 1e-05, "name": None}},
                             {"class": "Dropout", "config": {"p": 0.25, "name": None}},
                             _dense(2, "identity", "xavier_uniform")]},
        "params": list(shapes),
        "buffers": {"layers.1": ["running_mean", "running_var", "num_batches_tracked"],
                    "layers.2": ["step"]},
        "loss": "cross_entropy",
        "optimizer": {"config": {"name": "adam", "lr": 0.01, "betas": [0.9, 0.999],
                                 "eps": 1e-08, "weight_decay": 0.0},
                      "step_count": 4, "initial_lr": 0.01, "state": state},
        "training": {"epoch": 2, "fit_index": 0,
                     "history": {"epoch": [0, 1],
                                 "history": {"loss": [0.99, 0.77], "lr": [0.01, 0.01],
                                             "grad_norm": [1.07, 0.76]}}},
    }
    return tensors, document


def write_v1(path, tensors: dict[str, np.ndarray], document: dict) -> None:
    metadata = {"format": "mlpx", "format_version": "1",
                "mlpx": json.dumps(document, separators=(",", ":"), allow_nan=True)}
    with open(path, "wb") as f:
        f.write(encode_v1(tensors, metadata))
