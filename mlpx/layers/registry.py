"""Layer registry: rebuild layers from their `get_config()` (checkpoints store only JSON).

A layer's spec is `{"class": "Dense", "config": layer.get_config()}`. Every built-in layer is
registered; register your own with `@mlpx.layers.register_layer` (the class needs a
constructor that accepts its `get_config()` as keyword arguments, or a `from_config`
classmethod).
"""

from __future__ import annotations

from typing import Any

from .. import activations as A
from .. import initializers as I
from .base import Layer

_REGISTRY: dict[str, type[Layer]] = {}


def register_layer(cls: type[Layer]) -> type[Layer]:
    """Register a Layer subclass under its class name (usable as a decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, Layer)):
        raise TypeError(f"register_layer takes a Layer subclass, got {cls!r}")
    _REGISTRY[cls.__name__] = cls
    return cls


def registered_layers() -> list[str]:
    return sorted(_REGISTRY)


def layer_spec(layer: Layer) -> dict[str, Any]:
    """{"class": name, "config": get_config()} for a registered layer."""
    name = type(layer).__name__
    if _REGISTRY.get(name) is not type(layer):
        raise TypeError(
            f"layer class {name} is not registered, so a checkpoint could not rebuild it; "
            "decorate the class with @mlpx.layers.register_layer"
        )
    return {"class": name, "config": layer.get_config()}


def _dense_from_config(cls: type[Layer], cfg: dict[str, Any]) -> Layer:
    cfg = dict(cfg)
    act = cfg.pop("activation", None)
    if isinstance(act, dict):
        act = A.from_config(act)
    init = cfg.pop("init", None)
    try:
        I.get(init)
    except (ValueError, TypeError):
        init = None  # a custom callable: the checkpoint's weights replace the initial ones
    return cls(activation=act, init=init, **cfg)


def layer_from_spec(spec: dict[str, Any]) -> Layer:
    """A new (unbuilt) layer from `layer_spec(...)` output."""
    if not isinstance(spec, dict) or "class" not in spec:
        raise ValueError(f"a layer spec is a dict with 'class' and 'config', got {spec!r}")
    name = spec["class"]
    cls = _REGISTRY.get(name)
    if cls is None:
        raise ValueError(
            f"unknown layer class {name!r}; registered: {', '.join(registered_layers())}. "
            "Import the module that defines it and decorate it with "
            "@mlpx.layers.register_layer before loading"
        )
    cfg = dict(spec.get("config") or {})
    from_config = getattr(cls, "from_config", None)
    if from_config is not None:
        return from_config(cfg)
    if name == "Dense" or "activation" in cfg and isinstance(cfg["activation"], dict):
        return _dense_from_config(cls, cfg)
    return cls(**cfg)


def _register_builtins() -> None:
    from .dense import Dense
    from .dropout import Dropout
    from .norm import BatchNorm, LayerNorm
    from .prelu import PReLU
    from .residual import Residual

    for cls in (Dense, Dropout, BatchNorm, LayerNorm, PReLU, Residual):
        register_layer(cls)


_register_builtins()
