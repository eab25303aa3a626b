"""Layer registry: rebuild layers from their `get_config()` (checkpoints store only JSON).

A layer's spec is `{"class": name, "config": layer.get_config()}`. Every layer class registers
itself where it is defined (mlpx's own with `@builtin_layer`, whose names cannot be taken):

    @mlpx.register_layer                 # under its class name
    class Scale(mlpx.Layer): ...

    @mlpx.register_layer("my_scale")     # or under a chosen name

The class needs a constructor that accepts its `get_config()` as keyword arguments, or a
`from_config` classmethod. This module imports no layer module: the layers import it.
"""

from __future__ import annotations

from typing import Any

from ..registry import Registry
from .base import Layer

#: every layer class name: mlpx's own layers (declared where they are defined, with
#: `builtin_layer`) and the user's (`register_layer`); case-sensitive class names
NAMES = Registry("layer", Layer, "@mlpx.register_layer", fold_case=False)


def builtin_layer(cls: type[Layer]) -> type[Layer]:
    """Declare one of mlpx's own layer classes under its class name (never replaced)."""
    NAMES.add_builtin(cls.__name__, cls)
    cls._registered_name = cls.__name__
    return cls


def register_layer(cls: type[Layer] | str | None = None, *, name: str | None = None) -> Any:
    """Register a Layer subclass under `name` (default: its class name). Usable as
    `@register_layer`, `@register_layer("name")` or `register_layer(cls)`."""
    if isinstance(cls, str):
        cls, name = None, cls
    if cls is None:
        return lambda c: register_layer(c, name=name)
    if not (isinstance(cls, type) and issubclass(cls, Layer)):
        raise TypeError(f"register_layer takes a Layer subclass, got {cls!r}")
    key = NAMES.register(name or cls.__name__, cls)
    cls._registered_name = key
    return cls


def registered_layers() -> list[str]:
    return NAMES.names()


def layer_spec(layer: Layer) -> dict[str, Any]:
    """{"class": registered name, "config": get_config()} for a registered layer: its name
    brings back its very class on load."""
    cls = type(layer)
    key = cls.__dict__.get("_registered_name")
    if key is None or NAMES.lookup(key) is not cls:
        raise TypeError(
            f"layer class {cls.__name__} is not registered, so a checkpoint could not rebuild "
            "it; decorate the class with @mlpx.register_layer"
        )
    return {"class": key, "config": layer.get_config()}


def layer_from_spec(spec: dict[str, Any]) -> Layer:
    """A new (unbuilt) layer from `layer_spec(...)` output; the load's `custom_objects`
    are looked up first, then the registry."""
    if not isinstance(spec, dict) or "class" not in spec:
        raise ValueError(f"a layer spec is a dict with 'class' and 'config', got {spec!r}")
    name = spec["class"]
    cls = NAMES.lookup_class(name)
    if cls is None:
        raise ValueError(
            f"unknown layer class {name!r}: it is not registered (registered: "
            f"{', '.join(registered_layers())}); define it and decorate it "
            f"with @mlpx.register_layer before loading, or pass "
            f"mlpx.load(path, custom_objects={{{name!r}: {name}}})"
        )
    cfg = dict(spec.get("config") or {})
    from_config = getattr(cls, "from_config", None)
    if from_config is not None:
        return from_config(cfg)
    return cls(**cfg)
