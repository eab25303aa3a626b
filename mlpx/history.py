"""Training history: per-epoch lists, Keras-style (`history.history["loss"]`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class History:
    """Per-epoch records of a `fit` run. `h.loss`, `h["val_loss"]`, `h.history` all work."""

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []

    def append(self, epoch: int, logs: dict[str, float]) -> None:
        self.epoch.append(epoch)
        for k, v in logs.items():
            self.history.setdefault(k, []).append(float(v))

    def __getitem__(self, key: str) -> list[float]:
        return self.history[key]

    def __getattr__(self, key: str) -> list[float]:
        if key.startswith("_") or key in ("history", "epoch"):
            raise AttributeError(key)
        try:
            return self.history[key]
        except KeyError:
            raise AttributeError(
                f"History has no {key!r}; recorded: {', '.join(self.history) or 'nothing'}"
            ) from None

    def __contains__(self, key: str) -> bool:
        return key in self.history

    def __len__(self) -> int:
        return len(self.epoch)

    def __repr__(self) -> str:
        return f"History(epochs={len(self)}, keys={list(self.history)})"

    def plot(self, path: str | Path | None = None, ax: Any = None, title: str | None = None):
        """Training against validation loss per epoch (matplotlib); saves a PNG to `path`."""
        try:
            import matplotlib

            if ax is None and path is not None:
                matplotlib.use("Agg", force=False)
            import matplotlib.pyplot as plt
        except ImportError:
            raise ImportError(
                'History.plot needs matplotlib: pip install "mlpx[plot]"'
            ) from None
        fig = None
        if ax is None:
            fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        epochs = [e + 1 for e in self.epoch]
        ax.plot(epochs, self.history.get("loss", []), label="training loss")
        if "val_loss" in self.history:
            ax.plot(epochs, self.history["val_loss"], label="validation loss")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.set_title(title or "Training and validation loss")
        ax.grid(True, alpha=0.3)
        ax.legend()
        if path is not None and fig is not None:
            fig.tight_layout()
            fig.savefig(path)
            plt.close(fig)
        return ax
