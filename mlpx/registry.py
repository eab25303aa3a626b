"""Names of parts: one rule for every kind (activations, losses, optimisers, metrics,
initialisers, regularisers, layers).

Each kind keeps one `Registry`: its built-in entries (declared by mlpx, never replaced), the
entries users register (`mlpx.register_activation`, `register_loss`, `register_layer`, ...)
and aliases. A name is looked up in the same order for every kind: the `custom_objects` of
the load in progress (`mlpx.custom_object_scope`), then the built-ins, then the registered
entries.

Saving follows one rule too: a part is written under a name only if that name, looked up
on load, gives back the very same part (`name_for_saving`). A part whose name means
something else (a subclass of a built-in that kept its parent's name, a function that
happens to be called `relu`) is refused when the model is saved, with the fix; a name
that means nothing yet is written, and the load then needs the part registered or given
in `custom_objects` (else a `CheckpointError` naming it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class UnsaveablePartError(ValueError):
    """A part cannot be recorded by a name that brings it back on load."""


#: every registry, for `check_saved_names`
_REGISTRIES: list[Registry] = []


class Registry:
    """The names of one kind of part.

    `base` is the kind's base class (None for plain functions such as initialisers);
    `register_hint` is how a user registers one (named in error messages); `fold_case`
    makes names case-insensitive (everything but layer class names)."""

    def __init__(self, kind: str, base: type | None, register_hint: str,
                 fold_case: bool = True):
        self.kind = kind
        self.base = base
        self.register_hint = register_hint
        self.fold_case = fold_case
        self._builtins: dict[str, Any] = {}
        self._registered: dict[str, Any] = {}
        self._aliases: dict[str, str] = {}
        #: the kind's `name_for_saving(part)`, set by the module that declares the kind
        self.saver: Callable[[Any], str] | None = None
        _REGISTRIES.append(self)

    # ------------------------------------------------------------------ declaring names
    def key(self, name: Any) -> str:
        """`name` as the registry stores it (a TypeError when it is no usable name)."""
        if not isinstance(name, str) or not name.strip():
            raise TypeError(f"a {self.kind} name is a non-empty string, got {name!r}")
        key = name.strip()
        return key.lower() if self.fold_case else key

    def add_builtin(self, name: str, entry: Any) -> Any:
        key = self.key(name)
        if key in self._builtins:
            raise RuntimeError(f"duplicate built-in {self.kind} {key!r}")
        self._builtins[key] = entry
        return entry

    def add_aliases(self, aliases: dict[str, str]) -> None:
        for alias, target in aliases.items():
            self._aliases[self.key(alias)] = self.key(target)

    def free_key(self, name: Any) -> str:
        """`name`'s key when users may register it (a ValueError for a built-in name)."""
        key = self.key(name)
        if key in self._builtins or key in self._aliases:
            raise ValueError(f"{name!r} is a built-in {self.kind} name; choose another name")
        return key

    def register(self, name: str, entry: Any) -> str:
        """Register `entry` under `name` (replacing an earlier registration); built-in names
        and aliases are refused. Returns the stored key."""
        key = self.free_key(name)
        self._registered[key] = entry
        return key

    def unregister(self, name: str) -> None:
        """Forget a registered entry (built-ins stay)."""
        self._registered.pop(self.key(name), None)

    # ------------------------------------------------------------------------- lookups
    def lookup(self, name: Any) -> Any:
        """The entry `name` means now: the load's custom_objects, then the built-ins (by
        name or alias), then the registered entries; None when it means nothing."""
        from .custom_objects import find

        if not isinstance(name, str) or not name.strip():
            return None
        found = find(name, self.base) if self.base is not None else find(name)
        if found is not None:
            return found
        key = self.key(name)
        key = self._aliases.get(key, key)
        if key in self._builtins:
            return self._builtins[key]
        return self._registered.get(key)

    def lookup_class(self, name: Any) -> type | None:
        """The class `name` means (a subclass of `base`; an object given in custom_objects
        stands for its class), or None."""
        entry = self.lookup(name)
        if self.base is not None and isinstance(entry, self.base):
            entry = type(entry)
        ok = isinstance(entry, type) and (self.base is None or issubclass(entry, self.base))
        return entry if ok else None

    def builtin(self, name: str) -> Any:
        """The built-in entry under `name` exactly (no alias, no custom_objects), or None."""
        return self._builtins.get(name) if isinstance(name, str) else None

    def builtins(self) -> dict[str, Any]:
        return dict(self._builtins)

    def names(self) -> list[str]:
        """The valid names: built-ins and registered entries (aliases left out)."""
        return sorted({*self._builtins, *self._registered})

    # -------------------------------------------------------------------------- saving
    def name_for_saving(self, part: Any, name: str | None,
                        same: Callable[[Any, Any], bool] | None = None) -> str:
        """`name` when, looked up on load, it gives back `part` itself (or gives nothing, and
        the load must then be given the part); else an UnsaveablePartError with the fix.

        `name` None means the part has no name (a lambda, an anonymous function pair).
        `same(part, entry)` says whether an entry builds `part`; by default: the entry is
        part's class, or an object of the same class."""
        label = _describe(part)
        if name is None:
            raise UnsaveablePartError(
                f"{self.kind} {label} has no name, so a saved model could not bring it back; "
                f"register it under a name of its own ({self.register_hint}('my_{self.kind}', "
                "...)) and use that name, or give it a name and pass the part to "
                "mlpx.load(path, custom_objects={'my_" + self.kind + "': ...})"
            )
        entry = self.lookup(name)
        if entry is None or (same or same_class)(part, entry):
            return name
        raise UnsaveablePartError(
            f"{self.kind} {label} would be saved as {name!r}, but {name!r} means "
            f"{_describe(entry)} when the model is loaded, so it would come back as another "
            f"{self.kind}; register it under a unique name ({self.register_hint}"
            f"('my_{self.kind}')) so the saved model records that name, or give it a unique "
            f"name and pass it to mlpx.load(path, custom_objects={{'my_{self.kind}': ...}})"
        )


def check_saved_names(parts: Any) -> None:
    """Raise UnsaveablePartError unless every part (activations, losses, optimisers, ...;
    None is skipped) is recorded under a name that brings it back on load."""
    for part in parts:
        for registry in _REGISTRIES:
            if (part is not None and registry.saver is not None and registry.base is not None
                    and isinstance(part, registry.base)):
                registry.saver(part)
                break


def same_class(part: Any, entry: Any) -> bool:
    """The rule of class-declared parts: the entry is the part's own class (not a parent),
    or an object of exactly that class."""
    if isinstance(entry, type):
        return type(part) is entry
    return type(part) is type(entry)


def _describe(obj: Any) -> str:
    if isinstance(obj, type):
        return f"class {obj.__module__}.{obj.__qualname__}"
    if isinstance(obj, (tuple, list)):
        return "(" + ", ".join(_describe(o) for o in obj) + ")"
    if callable(obj) and hasattr(obj, "__qualname__"):
        return f"{obj.__module__}.{obj.__qualname__}"
    return f"{obj!r} ({type(obj).__module__}.{type(obj).__qualname__})"
