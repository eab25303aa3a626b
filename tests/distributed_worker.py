"""One process of the MPI tests (tests/test_distributed_mpi.py), started by mpiexec.

    mpiexec -n N python tests/distributed_worker.py SCENARIO OUT_DIR [options as JSON]

Each rank writes what the test checks into OUT_DIR/rank<r>.npz (weights, buffers, History,
predictions) or OUT_DIR/rank<r>.json (an error message).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

import mlpx
from mlpx import distributed as dist


def data(n: int = 203, d: int = 6, classes: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return X, (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1)


def model(dtype: str = "float64", seed: int = 3, batchnorm: bool = True, outputs: int = 3):
    layers = [mlpx.Dense(16, activation="relu")]
    layers += [mlpx.BatchNorm()] if batchnorm else []
    layers += [mlpx.Dropout(0.3), mlpx.Dense(outputs)]
    return mlpx.Sequential(layers, input_dim=6, seed=seed, dtype=dtype)


FIT = dict(loss="cross_entropy", optimizer="adam", lr=0.01, verbose=0)


def save(out: Path, m, history=None, **extra) -> None:
    arrays = {f"state/{k}": v for k, v in m.state_dict().items()}
    X, _ = data()
    arrays["predict"] = m.predict(X)
    if history is not None:
        arrays["loss"] = np.asarray(history.history["loss"])
    for k, v in extra.items():
        arrays[k] = np.asarray(v)
    np.savez(out / f"rank{dist.rank()}.npz", **arrays)


class Fail(mlpx.Callback):
    """Misbehaves on one rank at the end of an epoch."""

    def __init__(self, how: str, rank: int, epoch: int) -> None:
        self.how, self.rank, self.epoch = how, rank, epoch

    def on_epoch_end(self, epoch, logs=None):
        if dist.rank() != self.rank or epoch != self.epoch:
            return
        if self.how == "raise":
            raise RuntimeError("the disk is full")
        if self.how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.how == "hang":
            time.sleep(120)


def weights(n: int = 203, seed: int = 1):
    """Sample weights of the data (some zero, so some shards weigh nothing)."""
    w = np.random.default_rng(seed).uniform(0.0, 3.0, n)
    w[::7] = 0.0
    return w


def regression_data():
    X, _ = data()
    return X, np.stack([X[:, 0] - X[:, 1] ** 2, 3 * X[:, 2] + 10], axis=1)


def options_fit(kind: str, weighted: bool, stop_at: list | None) -> dict:
    """The fit arguments of the "options" scenario (metrics, sample and class weights,
    validation every second epoch, a batch callback that may stop the run)."""
    kw = dict(optimizer="adam", lr=0.01, epochs=3, validation_split=0.2, validation_freq=2)
    if kind == "classification":
        kw.update(loss="cross_entropy", metrics=["top_2_accuracy", mae_of_classes])
        if weighted:
            kw["class_weight"] = "balanced"
    else:
        kw.update(loss="mse", metrics=["r2", "mae"])
    if weighted:
        kw["sample_weight"] = weights()
    kw["callbacks"] = [BatchSpy(stop_at)]
    return kw


def mae_of_classes(y_true, y_pred):
    """A user's metric (merged across ranks as a mean)."""
    return abs(y_pred.argmax(axis=1) - y_true)


class BatchSpy(mlpx.Callback):
    """Counts the batch hooks; at (epoch, batch) `stop_at` stops the run from rank
    `stop_at[2]` only (every rank must stop after the same step)."""

    def __init__(self, stop_at: list | None) -> None:
        self.stop_at, self.begun, self.ended = stop_at, 0, 0

    def on_train_batch_begin(self, batch, logs=None):
        self.begun += 1

    def on_train_batch_end(self, batch, logs=None):
        self.ended += 1
        assert np.isfinite(logs["loss"])  # this rank's running loss, read on the host
        if self.stop_at and [self.model.epoch_, batch] == self.stop_at[:2] \
                and dist.rank() == self.stop_at[2]:
            self.model.stop_training = True


class CtrlC(mlpx.Callback):
    """Sends Ctrl-C (SIGINT) to this process after batch `batch` of epoch `epoch`, on rank
    `rank` only: every rank must stop after the same later step."""

    def __init__(self, rank: int, epoch: int, batch: int) -> None:
        self.rank, self.epoch, self.batch = rank, epoch, batch

    def on_train_batch_end(self, batch, logs=None):
        if (dist.rank(), self.model.epoch_, batch) == (self.rank, self.epoch, self.batch):
            os.kill(os.getpid(), signal.SIGINT)


def main() -> None:
    scenario, out = sys.argv[1], Path(sys.argv[2])
    opt = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    X, y = data()
    dtype = opt.get("dtype", "float64")
    if scenario == "train":
        m = model(dtype, batchnorm=opt.get("batchnorm", True))
        h = m.fit(X, y, epochs=opt.get("epochs", 3), batch_size=opt["batch_size"],
                  distributed=True, verbose=opt.get("verbose", 0),
                  **{k: v for k, v in FIT.items() if k != "verbose"})
        save(out, m, h, evaluate=m.evaluate(X, y)["loss"])
    elif scenario == "checkpoint":  # the first epochs, saved by rank 0 each epoch
        m = model(dtype)
        cb = mlpx.ModelCheckpoint(str(out / "ckpt-{epoch}.safetensors"))
        m.fit(X, y, epochs=opt["epochs"], batch_size=opt["batch_size"], callbacks=[cb],
              distributed=True, **FIT)
    elif scenario == "resume":
        m = model(dtype)
        h = m.fit(X, y, epochs=opt["epochs"], batch_size=opt["batch_size"],
                  resume_from=opt["resume_from"], distributed=True, **FIT)
        save(out, m, h)
    elif scenario == "options":  # metrics, weights, validation_freq and batch hooks
        kind = opt["kind"]
        X, y = (X, y) if kind == "classification" else regression_data()
        m = model(dtype, batchnorm=kind == "classification",
                  outputs=3 if kind == "classification" else 2)
        kw = options_fit(kind, opt["weighted"], opt.get("stop_at"))
        h = m.fit(X, y, batch_size=opt["batch_size"], distributed=True, verbose=0,
                  resume_from=opt.get("resume_from"), **kw)
        spy = kw["callbacks"][0]
        save(out, m, h)
        (out / f"rank{dist.rank()}.json").write_text(json.dumps({
            "history": h.history, "val_epochs": h.epochs_of("val_loss"),
            "hooks": [spy.begun, spy.ended]}))
    elif scenario == "ctrl_c":  # the options run, interrupted on one rank and saved
        m = model(dtype)
        kw = options_fit("classification", True, None)
        kw["callbacks"].append(CtrlC(opt["rank"], 1, 1))
        try:
            m.fit(X, y, batch_size=opt["batch_size"], distributed=True, verbose=0, **kw)
            step = None
        except KeyboardInterrupt:
            step = m.trainer_.step
        if dist.rank() == 0:
            m.save(out / "mid.safetensors")
        sums = m.trainer_.state_dict()["metric_sums"]
        (out / f"rank{dist.rank()}.json").write_text(json.dumps({
            "step": step, "loss_sum": m.trainer_.loss_sum,
            "sums": {k: [a.tolist() for a in v] for k, v in sums.items()}}))
    elif scenario == "mismatch":
        seed = 3 + (dist.rank() == 1 and opt["what"] == "seed")
        rows = 203 - (dist.rank() == 1 and opt["what"] == "data")
        m = model(dtype, seed=seed)
        try:
            m.fit(X[:rows], y[:rows], epochs=1, batch_size=32, distributed=True, **FIT)
            message = None
        except Exception as e:  # every rank must get here, none may hang
            message = f"{type(e).__name__}: {e}"
        (out / f"rank{dist.rank()}.json").write_text(json.dumps({"error": message}))
    elif scenario == "fail":
        m = model(dtype)
        fail = Fail(opt["how"], opt.get("rank", 1), opt.get("epoch", 1))
        options = dist.DataParallel(timeout=opt.get("timeout_s", 60))
        m.fit(X, y, epochs=50, batch_size=16, callbacks=[fail], distributed=options, **FIT)
        (out / f"rank{dist.rank()}.json").write_text(json.dumps({"finished": True}))
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")


if __name__ == "__main__":
    main()
