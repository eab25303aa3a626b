"""Deprecated path of `mlpx.commands.bench_profile`."""

from ._moved import alias_module

alias_module(__name__, "mlpx.commands.bench_profile")
