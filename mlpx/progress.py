"""fit's progress display for verbose=1: one tqdm bar per epoch, left on screen when the
epoch ends, so the terminal keeps one line per epoch (as Keras does) instead of one bar
redrawn across the whole run."""

from __future__ import annotations

from typing import Any


class EpochProgress:
    """The bar interface the training loop uses (set_description at each epoch's start,
    update per step, set_postfix with the epoch's logs, close); a new bar per epoch."""

    def __init__(self, left: int, steps: int, enabled: bool) -> None:
        # a resumed run starts inside an epoch: its first bar begins at the steps done
        self._first_done = (-left) % steps if steps else 0
        self._steps = steps
        self._enabled = enabled
        self._bar: Any = None

    def set_description(self, desc: str) -> None:
        """Start the bar of a new epoch (the previous one stays on screen)."""
        self.close()
        if not self._enabled:
            return
        from tqdm.auto import tqdm  # imported on first use: `import mlpx` stays light

        self._bar = tqdm(total=self._steps, initial=self._first_done, desc=desc,
                         unit="batch", dynamic_ncols=True, leave=True, mininterval=0.2)
        self._first_done = 0

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def set_postfix(self, values: dict[str, str]) -> None:
        if self._bar is not None:
            self._bar.set_postfix(values)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
