"""Deprecated path of `mlpx.commands.check`."""

from ._moved import alias_module

alias_module(__name__, "mlpx.commands.check")
