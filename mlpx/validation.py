"""Deprecated path of `mlpx.preconditions`, the argument checks."""

from ._moved import alias_module

alias_module(__name__, "mlpx.preconditions")
