"""Test scores under dtype="mixed_bfloat16" against float32 on the real data sets the project
uses (the demo's digits; iris, breast cancer and diabetes from its tests), seeds 0-7.

    python benchmarks/bf16_datasets.py [--seeds 8] [--data iris,breast_cancer,diabetes]

Each data set is split once (seed 0, a quarter held out, stratified for classes) and
standardised on its training part; each seed initialises and shuffles differently. Prints
each seed's score (accuracy in %, or for diabetes the test R^2 in %) and the mean gap in
points (mixed minus float32). The digits run is benchmarks/bf16_digits.py.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

import mlpx
from mlpx.data import Standardizer, train_test_split

# name -> (loader, hidden widths, loss, batch, epochs)
RECIPES: dict[str, tuple[str, list[int], str, int, int]] = {
    "iris": ("load_iris", [32, 16], "cross_entropy", 16, 100),
    "breast_cancer": ("load_breast_cancer", [64, 32], "cross_entropy", 32, 50),
    "diabetes": ("load_diabetes", [8], "mse", 32, 200),
}


def split(name: str) -> tuple[Any, ...]:
    from sklearn import datasets

    X, y = getattr(datasets, RECIPES[name][0])(return_X_y=True)
    classes = RECIPES[name][2] == "cross_entropy"
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, random_state=0,
                                              stratify=y if classes else None)
    scaler = Standardizer().fit(X_tr)
    X_tr, X_te = (scaler.transform(a).astype(np.float32) for a in (X_tr, X_te))
    if not classes:  # the target standardised too: one learning rate suits it
        mu, sd = y_tr.mean(), y_tr.std()
        y_tr, y_te = (((a - mu) / sd).astype(np.float32)[:, None] for a in (y_tr, y_te))
    return X_tr, X_te, y_tr, y_te


def score(name: str, dtype: str, seed: int, data: tuple[Any, ...]) -> float:
    """Test accuracy (classes) or R^2 (diabetes), in %."""
    _, hidden, loss, batch, epochs = RECIPES[name]
    X_tr, X_te, y_tr, y_te = data
    out = len(np.unique(y_tr)) if loss == "cross_entropy" else 1
    model = mlpx.MLP([X_tr.shape[1], *hidden, out], seed=seed, dtype=dtype)
    model.fit(X_tr, y_tr, loss=loss, optimizer="adam", lr=1e-3, epochs=epochs,
              batch_size=batch, verbose=0)
    if loss == "cross_entropy":
        return 100 * model.evaluate(X_te, y_te)["accuracy"]
    pred = model.predict(X_te)
    return 100 * (1 - float(np.sum((pred - y_te) ** 2) / np.sum((y_te - y_te.mean()) ** 2)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--data", default=",".join(RECIPES))
    args = p.parse_args()
    for name in args.data.split(","):
        data = split(name)
        means = {}
        for dtype in ("float32", "mixed_bfloat16"):
            scores = [score(name, dtype, seed, data) for seed in range(args.seeds)]
            means[dtype] = float(np.mean(scores))
            print(f"{name} {dtype:>15}: {' '.join(f'{s:.2f}' for s in scores)}  "
                  f"mean {means[dtype]:.2f}", flush=True)
        print(f"{name} mixed_bfloat16 - float32: "
              f"{means['mixed_bfloat16'] - means['float32']:+.2f} points", flush=True)


if __name__ == "__main__":
    main()
