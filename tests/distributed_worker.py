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


def model(dtype: str = "float64", seed: int = 3, batchnorm: bool = True):
    layers = [mlpx.Dense(16, activation="relu")]
    layers += [mlpx.BatchNorm()] if batchnorm else []
    layers += [mlpx.Dropout(0.3), mlpx.Dense(3)]
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
