"""Layers: Dense and the Layer/Parameter base classes."""

from .base import Layer, Parameter
from .dense import Dense

__all__ = ["Layer", "Parameter", "Dense"]
