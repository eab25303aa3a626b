"""Deprecated path of `mlpx.commands.demo`."""

from ._moved import alias_module

alias_module(__name__, "mlpx.commands.demo")
