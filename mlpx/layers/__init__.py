"""Layers: Dense, Dropout, BatchNorm, LayerNorm, PReLU, Residual and the base classes."""

from .base import Layer, Parameter
from .dense import Dense
from .dropout import Dropout
from .norm import BatchNorm, LayerNorm
from .prelu import PReLU
from .registry import layer_from_spec, layer_spec, register_layer, registered_layers
from .residual import Residual

__all__ = [
    "Layer", "Parameter", "Dense", "Dropout", "BatchNorm", "LayerNorm", "PReLU", "Residual",
    "register_layer", "registered_layers", "layer_spec", "layer_from_spec",
]
