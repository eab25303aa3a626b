"""mlpx: multi-layer perceptrons on NumPy + Numba (CPU) or CuPy (CUDA) with one argument.

    import mlpx
    model = mlpx.MLP([784, 256, 10], activation="relu", backend="cpu", seed=0)
    model.fit(X, y, loss="cross_entropy", optimizer="sgd", lr=0.1, epochs=10)

Importing mlpx imports neither CuPy nor Numba and compiles nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import (
    activations,
    callbacks,
    clipping,
    distributed,
    initializers,
    losses,
    metrics,
    optim,
    regularizers,
    schedules,
)
from .activations import register_activation
from .backends import available_backends, get_backend
from .backends.threads import get_num_threads, set_num_threads
from .callbacks import Callback, CSVLogger, EarlyStopping, ModelCheckpoint, TensorBoard
from .custom_objects import custom_object_scope
from .data import Standardizer, minibatches, one_hot, train_test_split
from .errors import BackendUnavailableError, NonFiniteLossError, UnscaledInputWarning
from .history import History
from .layers import (
    BatchNorm,
    Dense,
    Dropout,
    Layer,
    LayerNorm,
    Parameter,
    PReLU,
    Residual,
    register_layer,
)
from .losses import register_loss
from .model import MLP, Sequential, load
from .perceptron import Perceptron
from .saving.container import CheckpointError
from .tabular.model import TabularModel

__version__ = "0.1.0"


def to_numpy(a: Any) -> np.ndarray:
    """Any array (NumPy, CuPy, PyTorch, JAX, anything with DLPack or __array__) as a NumPy
    array: host data without a copy where the layout allows, GPU data copied to the host."""
    from .preconditions import to_host

    return to_host(a, "the array")


__all__ = [
    "MLP", "Sequential", "Dense", "Dropout", "BatchNorm", "LayerNorm", "PReLU", "Residual",
    "Layer", "Parameter", "Perceptron", "TabularModel", "History", "Callback",
    "EarlyStopping", "ModelCheckpoint", "CSVLogger", "TensorBoard", "load", "CheckpointError",
    "callbacks",
    "Standardizer", "one_hot", "train_test_split", "minibatches",
    "available_backends", "get_backend", "to_numpy", "set_num_threads", "get_num_threads",
    "BackendUnavailableError", "NonFiniteLossError", "UnscaledInputWarning",
    "activations", "initializers", "losses", "metrics", "optim", "regularizers", "schedules",
    "clipping", "distributed", "__version__",
    "register_activation", "register_loss", "register_layer", "custom_object_scope",
]
