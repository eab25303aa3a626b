"""History.plot: loss panel (log scale when the loss spans decades), accuracy panel, labels."""

from __future__ import annotations

import pytest

from mlpx.history import History

matplotlib = pytest.importorskip("matplotlib", reason="History.plot needs matplotlib")
matplotlib.use("Agg")
plt = pytest.importorskip("matplotlib.pyplot")


def _history(losses, val_losses=None, val_acc=None) -> History:
    h = History()
    for e, loss in enumerate(losses):
        logs = {"loss": loss}
        if val_losses is not None:
            logs["val_loss"] = val_losses[e]
        if val_acc is not None:
            logs["val_accuracy"] = val_acc[e]
        h.append(e, logs)
    return h


def test_plot_with_accuracy_saves_two_panels(tmp_path):
    h = _history([1.2, 0.1, 0.01], [0.9, 0.2, 0.1], [0.7, 0.9, 0.95])
    png = tmp_path / "curves.png"
    ax = h.plot(png, title="run", val_label="test")
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert ax.get_yscale() == "log"  # 1.2 .. 0.01 spans more than 20x
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["training loss", "test loss"]
    fig_axes = ax.figure.axes
    assert len(fig_axes) == 2
    labels = [t.get_text() for t in fig_axes[1].get_legend().get_texts()]
    assert labels == ["test accuracy (last 95.00%)"]


def test_plot_on_given_axes_stays_linear_for_a_narrow_range():
    fig, ax = plt.subplots()
    h = _history([0.5, 0.4, 0.3])
    assert h.plot(ax=ax) is ax
    assert ax.get_yscale() == "linear" and len(fig.axes) == 1
    assert ax.get_title() == "Training and validation loss"
    assert h.plot(ax=ax, log_scale=True).get_yscale() == "log"
    plt.close(fig)
