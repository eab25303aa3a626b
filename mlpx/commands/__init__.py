"""The command-line tools: `mlpx train`, `predict`, `demo`, `info`, `bench`, `check`.

The parser and its argument types live in `cli` and `arguments`; each subcommand's work in a
module of its own, imported when it runs. The library never imports this package.
"""
