"""`mlpx demo` teaches three splits: it validates on rows kept out of training and scores
the test rows once, at the end."""

from __future__ import annotations

import re

import pytest

from mlpx.commands.cli import main

pytest.importorskip("sklearn", reason="the demo's digits data ship with scikit-learn")
pytest.importorskip("matplotlib", reason="the demo draws its curves with matplotlib")


def test_demo_validates_on_its_own_split_and_scores_the_test_set_once(tmp_path, capsys):
    assert main(["demo", "--backend", "cpu", "--epochs", "20", "--out", str(tmp_path),
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    sizes = re.search(r"(\d+) train / (\d+) validation / (\d+) test", out)
    assert sizes is not None, out
    train, val, test = map(int, sizes.groups())
    assert train + val + test == 1797 and val > 0 and test > 0
    val_acc = float(re.search(r"validation accuracy after the last epoch: ([\d.]+)", out)[1])
    test_acc = float(re.search(r"test accuracy \(scored once\): ([\d.]+)", out)[1])
    assert val_acc > 0.9 and test_acc > 0.9
    assert (tmp_path / "loss_curves.png").stat().st_size > 1000
