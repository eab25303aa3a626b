"""Peer programs of `mlpx bench`: the same training run written in other frameworks.

Each peer is one standalone script in this folder (it imports its framework and NumPy, never
mlpx), run by `mlpx bench --peers ...` as a file in a process of its own, and also runnable
by hand: `python -m mlpx.peers.torch_mlp --help`. Every peer follows the rules of mlpx's own
measurement (`mlpx.commands.bench_worker`) and prints one JSON line.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

_HERE = Path(__file__).resolve().parent

# name -> (the module the framework is imported as, script, what the peer runs)
PEERS: dict[str, tuple[str, str, str]] = {
    "torch": ("torch", "torch_mlp.py", "PyTorch eager"),
    "jax": ("jax", "jax_mlp.py", "JAX jit (whole step)"),
}

# a peer script exits with this status when the framework cannot reach the asked device
EXIT_UNAVAILABLE = 3


def script_path(name: str) -> Path:
    """The file of peer `name` (a KeyError names the known peers)."""
    if name not in PEERS:
        raise KeyError(f"unknown peer {name!r}; known peers: {', '.join(PEERS)}")
    return _HERE / PEERS[name][1]


def installed(name: str) -> bool:
    """Whether peer `name`'s framework can be imported here (checked without importing)."""
    return importlib.util.find_spec(PEERS[name][0]) is not None


def describe(name: str) -> str:
    return PEERS[name][2]
