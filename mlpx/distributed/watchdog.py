"""A timer around blocking collectives: a rank that waits too long stops the whole run.

MPI launchers end every rank when one is killed or exits with an error, but not when a rank
hangs, or returns from `fit` early while the others wait for it in an all-reduce. The
watchdog's thread wakes up a few times a second; when the collective in progress has waited
longer than the timeout it calls `on_timeout` with a message saying what was waited for
(the communicator prints it and calls MPI_Abort, which ends every rank).
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections.abc import Callable, Iterator

#: seconds a collective may wait for the other ranks before the run is aborted; long enough
#: for a slow rank's first step (Numba compiles its kernels) or rank 0 writing a checkpoint
DEFAULT_TIMEOUT_S = 60.0
TIMEOUT_VARIABLE = "MLPX_DISTRIBUTED_TIMEOUT"


def check_timeout(value: object, what: str = "timeout") -> float | None:
    """A positive number of seconds, or None (wait for ever)."""
    if value is None:
        return None
    try:
        t = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number of seconds or None, got {value!r}") from None
    if not (t > 0 and math.isfinite(t)):
        raise ValueError(f"{what} must be a positive number of seconds or None, got {value!r}")
    return t


def default_timeout() -> float | None:
    """MLPX_DISTRIBUTED_TIMEOUT (seconds; 0 or 'none' waits for ever), else 60 s."""
    raw = os.environ.get(TIMEOUT_VARIABLE)
    if raw is None or not raw.strip():
        return DEFAULT_TIMEOUT_S
    if raw.strip().lower() in ("0", "none", "inf"):
        return None
    return check_timeout(raw, TIMEOUT_VARIABLE)


class Watchdog:
    """`with dog.waiting("the gradient all-reduce"): ...` around each blocking collective."""

    def __init__(self, timeout: float | None, on_timeout: Callable[[str], None]) -> None:
        self.timeout = timeout
        self.on_timeout = on_timeout
        self.context = ""  # where the run is (epoch, step), for the message
        self._since: float | None = None
        self._what = ""
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def waiting(self, what: str) -> Iterator[None]:
        if self.timeout is None:
            yield
            return
        self._start_thread()
        self._what, self._since = what, time.monotonic()
        try:
            yield
        finally:
            self._since = None

    def _start_thread(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="mlpx-watchdog",
                                                daemon=True)
                self._thread.start()

    def _watch(self) -> None:
        while True:
            timeout = self.timeout
            time.sleep(0.25 if timeout is None else min(0.25, timeout / 4))
            since = self._since
            if timeout is None or since is None:
                continue
            waited = time.monotonic() - since
            if waited > timeout:
                where = f" ({self.context})" if self.context else ""
                self.on_timeout(
                    f"waited {waited:.0f} s in {self._what}{where} for the other ranks (timeout "
                    f"{timeout:g} s): a rank has died, hangs, or left fit early; aborting every "
                    f"rank. Set the limit with fit(distributed=mlpx.distributed.DataParallel("
                    f"timeout=...)) or {TIMEOUT_VARIABLE}")
                return
