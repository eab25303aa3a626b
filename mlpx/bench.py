"""Deprecated path of `mlpx.commands.bench`."""

from ._moved import alias_module

alias_module(__name__, "mlpx.commands.bench")
