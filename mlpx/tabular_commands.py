"""Deprecated path of `mlpx.commands.tabular_commands`."""

from ._moved import alias_module

alias_module(__name__, "mlpx.commands.tabular_commands")
