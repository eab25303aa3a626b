"""A readers-writer lock guarding one model's state.

Inference (`predict`, `predict_proba`, `evaluate`) reads; a training step and anything that
replaces state (`set_weights`, `load_state_dict`) writes. Any number of readers run at once;
a writer waits for them to finish and blocks new readers while it waits (writers first, so a
stream of predictions cannot stall training). The writing thread may read its own state, and
may take the write lock again (re-entrant), so hooks called inside a step can use the model.
"""

from __future__ import annotations

import threading


class StateLock:
    """Many readers or one writer (see the module docstring)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer: int | None = None
        self._depth = 0
        self._writers_waiting = 0
        self._writing = _Writing(self)  # stateless: one per lock, none allocated per step

    def acquire_read(self) -> bool:
        """Wait until no writer holds or waits; False (nothing to release) in the writer."""
        me = threading.get_ident()
        with self._cond:
            if self._writer == me:
                return False
            while self._writer is not None or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
            return True

    def release_read(self) -> None:
        with self._cond:
            self._readers -= 1
            if not self._readers:
                self._cond.notify_all()

    def acquire_write(self) -> None:
        me = threading.get_ident()
        with self._cond:
            if self._writer == me:
                self._depth += 1
                return
            self._writers_waiting += 1
            while self._writer is not None or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer, self._depth = me, 1

    def release_write(self) -> None:
        with self._cond:
            self._depth -= 1
            if not self._depth:
                self._writer = None
                self._cond.notify_all()

    def reading(self) -> _Reading:
        return _Reading(self)

    def writing(self) -> _Writing:
        return self._writing


class _Reading:
    __slots__ = ("_lock", "_held")

    def __init__(self, lock: StateLock) -> None:
        self._lock = lock
        self._held = False

    def __enter__(self) -> None:
        self._held = self._lock.acquire_read()

    def __exit__(self, *exc: object) -> None:
        if self._held:
            self._lock.release_read()


class _Writing:
    __slots__ = ("_lock",)

    def __init__(self, lock: StateLock) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        self._lock.acquire_write()

    def __exit__(self, *exc: object) -> None:
        self._lock.release_write()
