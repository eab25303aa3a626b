"""Choices the cpu backend makes by measuring this machine, cached per question.

A choice (which GEMM library, which small-batch inference path and up to how many rows)
depends on the processor, the thread count and the libraries' versions, so it is measured
once for each combination and kept in `<cache dir>/<question>.json` (see mlpx._numba_cache),
one entry per `machine_key`. A cache that cannot be read is measured again; one that cannot be
written only costs the measurement next time.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from typing import Any

from .._compat import cpu_model
from .threads import get_num_threads, usable_cpus

#: choices measured while the machine was busy, by (cache file, key): used by this process,
#: never written to disk
_UNSAVED: dict[tuple[str, str], dict[str, Any]] = {}


def machine_key(*libraries: str) -> str:
    """What a measured choice depends on: processor, threads and the libraries named."""
    return " | ".join([cpu_model(), platform.machine(), f"threads {get_num_threads()}",
                       *libraries])


def cache_file(question: str) -> str:
    from .._numba_cache import cache_root

    return str(cache_root() / f"{question}.json")


def read_all(question: str) -> dict[str, Any]:
    try:
        with open(cache_file(question)) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):  # missing, unreadable or corrupt: measure again
        return {}


def lookup(question: str, key: str) -> dict[str, Any] | None:
    unsaved = _UNSAVED.get((cache_file(question), key))
    if unsaved is not None:
        return unsaved
    entry = read_all(question).get(key)
    return entry if isinstance(entry, dict) else None


def busy() -> bool:
    """Whether other work crowds this machine (a 1-minute load average above twice the CPUs
    this process may use): a choice measured then can be wrong once the machine is quiet
    (a library whose threads stall when a CPU is taken loses every round)."""
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):  # not on every platform
        return False
    return overloaded(load, usable_cpus())


def overloaded(load: float, cpus: int) -> bool:
    """A load average above twice the CPUs: a measurement then times the other work."""
    return load > 2 * cpus


#: the largest slowest-to-fastest ratio of one side's timed rounds a choice may be saved
#: with: far above the few tens of percent a quiet machine shows, the ratio of a side whose
#: threads waited on CPUs other work held (10-100x), which the load average, a minute
#: behind, can miss
SPREAD_MAX = 4.0


#: the largest ratio between two ways of computing the same thing, on the same data, a choice
#: may be saved with: a way 10x slower than the other at some size was not computing then but
#: waiting, e.g. a thread pool's launch on a worker that other work kept off its CPU (every
#: call 16 ms, rounds alike, so the spread misses it)
GAP_MAX = 10.0


def gap(a: dict[Any, float], b: dict[Any, float]) -> float:
    """The largest ratio, either way, of two ways' seconds at the sizes both were timed."""
    ratios = [max(a[k], b[k]) / max(min(a[k], b[k]), 1e-12) for k in a if k in b]
    return round(max(ratios, default=1.0), 2)


def store(question: str, key: str, entry: dict[str, Any]) -> dict[str, Any]:
    """Keep `entry` (stamped with the time) for `key`; returns it. Measured on a busy machine,
    with rounds spread wider than SPREAD_MAX (its "spread", where it has one), or with a gap
    between the ways wider than GAP_MAX (its "gap"), it serves this process only, and the
    next process measures again."""
    entry = {**entry, "measured": datetime.datetime.now().isoformat(timespec="seconds")}
    spread, widest = entry.get("spread"), entry.get("gap")
    if busy() or (isinstance(spread, (int, float)) and spread > SPREAD_MAX) \
            or (isinstance(widest, (int, float)) and widest > GAP_MAX):
        _UNSAVED[cache_file(question), key] = entry
        return entry
    cache = read_all(question)
    cache[key] = entry
    path = cache_file(question)
    try:
        from ..saving.container import write_atomic

        os.makedirs(os.path.dirname(path), exist_ok=True)
        # atomic (a concurrent reader sees the old or the new file), with the umask's mode
        write_atomic(path, json.dumps(cache, indent=1).encode())
    except OSError:
        pass
    return entry
