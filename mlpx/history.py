"""Training history: per-epoch lists, Keras-style (`history.history["loss"]`).

A key recorded on some epochs only (validation keys with `validation_freq`) has a shorter
list, as in Keras; `epochs_of(key)` gives the epochs its values belong to.
`history_to_dict` / `history_from_dict` convert a History to and from JSON-able dicts (how
checkpoints store it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class History:
    """Per-epoch records of a `fit` run. `h.loss`, `h["val_loss"]`, `h.history` all work."""

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []
        self._epochs_of: dict[str, list[int]] = {}

    def append(self, epoch: int, logs: dict[str, float]) -> None:
        self.epoch.append(epoch)
        for k, v in logs.items():
            self.history.setdefault(k, []).append(float(v))
            self._epochs_of.setdefault(k, []).append(epoch)

    def epochs_of(self, key: str) -> list[int]:
        """The epochs (0-based, as `epoch`) at which `key` was recorded."""
        if key not in self.history:
            raise KeyError(f"History has no {key!r}; recorded: {', '.join(self.history)}")
        return list(self._epochs_of.get(key, self.epoch[: len(self.history[key])]))

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

    def plot(
        self,
        path: str | Path | None = None,
        ax: Any = None,
        title: str | None = None,
        val_label: str = "validation",
        log_scale: bool | None = None,
    ) -> Any:
        """Training against validation loss per epoch (matplotlib); saves a PNG to `path`.

        Without `ax`, a run that recorded an accuracy gets a second panel with it. The loss
        axis is logarithmic when the loss spans more than a factor of 20 (`log_scale=None`),
        so the late epochs stay readable. `val_label` names the held-out data ("test" when the
        validation data are a test split). Returns the loss axes.
        """
        try:
            import matplotlib

            if ax is None and path is not None:
                matplotlib.use("Agg", force=False)
            import matplotlib.pyplot as plt
        except ImportError:
            raise ImportError(
                'History.plot needs matplotlib: pip install "mlpx[plot]"'
            ) from None
        epochs = [e + 1 for e in self.epoch]
        acc_keys = [k for k in ("accuracy", "val_accuracy") if k in self.history]
        fig = acc_ax = None
        if ax is None:
            if acc_keys:
                fig, (ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
            else:
                fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        marker = "." if len(epochs) <= 50 else None
        # training in C0 and held-out data in C1 on both panels
        curves = [(k, lbl, c) for k, lbl, c in (("loss", "training", "C0"),
                                                 ("val_loss", val_label, "C1"))
                  if k in self.history]
        for key, label, color in curves:
            ax.plot([e + 1 for e in self.epochs_of(key)], self.history[key], marker=marker,
                    color=color, label=f"{label} loss")
        values = [v for k, _, _ in curves for v in self.history[k]]
        if log_scale is None:
            positive = [v for v in values if v > 0]
            log_scale = len(positive) == len(values) > 0 and max(values) > 20 * min(values)
        if log_scale:
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss (log scale)" if log_scale else "loss")
        if acc_ax is not None:
            fig.suptitle(title or "Training and validation")
            ax.set_title("Loss")
        else:
            ax.set_title(title or "Training and validation loss")
        ax.grid(True, which="both" if log_scale else "major", alpha=0.3)
        if curves:
            ax.legend()
        if acc_ax is not None:
            for key in acc_keys:
                label, color = ("training", "C0") if key == "accuracy" else (val_label, "C1")
                acc = self.history[key]
                acc_ax.plot([e + 1 for e in self.epochs_of(key)], acc, marker=marker, color=color,
                            label=f"{label} accuracy (last {acc[-1]:.2%})")
            acc_ax.set_xlabel("epoch")
            acc_ax.set_ylabel("accuracy")
            acc_ax.set_title("Accuracy")
            acc_ax.grid(True, alpha=0.3)
            acc_ax.legend(loc="lower right")
        if path is not None and fig is not None:
            fig.tight_layout()
            fig.savefig(path)
            plt.close(fig)
        return ax


# ------------------------------------------------------------------------------- as JSON
def history_to_dict(history: History | None) -> dict | None:
    """The history as a JSON-able dict (how checkpoints store it); None stays None."""
    if history is None:
        return None
    out = {"epoch": [int(e) for e in history.epoch],
           "history": {k: [float(v) for v in vs] for k, vs in history.history.items()}}
    # keys recorded on some epochs only (validation_freq): the epochs they belong to
    partial = {k: [int(e) for e in history.epochs_of(k)] for k, vs in history.history.items()
               if len(vs) != len(history.epoch)}
    if partial:
        out["epochs_of"] = partial
    return out


def history_from_dict(data: dict | None) -> History | None:
    """The inverse of `history_to_dict`."""
    if data is None:
        return None
    h = History()
    partial = data.get("epochs_of") or {}
    position = {k: {int(e): j for j, e in enumerate(es)} for k, es in partial.items()}
    for i, e in enumerate(data["epoch"]):
        logs = {}
        for k, v in data["history"].items():
            j = position[k].get(int(e)) if k in position else i
            if j is not None and j < len(v):
                logs[k] = v[j]
        h.append(int(e), logs)
    return h
