"""User-defined parts while a saved model is rebuilt: `mlpx.load(path, custom_objects=...)`.

`custom_object_scope({"square": Square})` makes the given classes (or functions) visible to
every name lookup made inside it (`mlpx.registry.Registry.lookup`: activations, losses,
optimisers, regularisers, initialisers, metrics, layers), first before the built-ins and the
registered parts; Keras' `custom_objects` works the same way. The scope is a context
variable, so loads in other threads do not see it.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping
from typing import Any

_SCOPE: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "mlpx_custom_objects", default=None
)


@contextlib.contextmanager
def custom_object_scope(objects: Mapping[str, Any] | None) -> Iterator[None]:
    """Within the block, look names up in `objects` first ({saved name or class name: obj})."""
    if objects is not None and not isinstance(objects, Mapping):
        raise TypeError(
            f"custom_objects must be a dict such as {{'square': Square}}, got "
            f"{type(objects).__name__}"
        )
    merged = {**(_SCOPE.get() or {}), **(objects or {})}
    token = _SCOPE.set(merged)
    try:
        yield
    finally:
        _SCOPE.reset(token)


def find(name: Any, kind: type | None = None) -> Any:
    """The object registered in the current scope under `name` (its key, or its `name` or
    class name), or None. `kind` limits the match to subclasses (or instances) of it."""
    if not isinstance(name, str):
        return None
    for key, obj in (_SCOPE.get() or {}).items():
        if key == name or getattr(obj, "name", None) == name or getattr(
                obj, "__name__", None) == name:
            if kind is None or _is_kind(obj, kind):
                return obj
    return None


def _is_kind(obj: Any, kind: type) -> bool:
    if isinstance(obj, type):
        return issubclass(obj, kind)
    # instances, factories and (forward, derivative) pairs: the caller checks what it gets
    return isinstance(obj, (kind, tuple, list)) or callable(obj)
