"""Deprecated path of `mlpx.commands.bench_worker` (`python -m mlpx.bench_worker` still runs it)."""

import runpy

from ._moved import alias_module

if __name__ == "__main__":
    runpy.run_module("mlpx.commands.bench_worker", run_name="__main__", alter_sys=True)
else:
    alias_module(__name__, "mlpx.commands.bench_worker")
