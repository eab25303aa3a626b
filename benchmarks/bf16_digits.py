"""Digits test accuracy under dtype="mixed_bfloat16" against float32, seeds 0-7.

    python benchmarks/bf16_digits.py [--seeds 8]

The demo's split and recipe (64-128-64-10, ReLU, Adam lr 1e-3, batch 32, 30 epochs); prints
each seed's accuracy and the mean gap in points (mixed minus float32).
"""

from __future__ import annotations

import argparse

import numpy as np

import mlpx
from mlpx.commands.demo import load_digits_split


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seeds", type=int, default=8)
    args = p.parse_args()
    X_tr, X_te, y_tr, y_te = load_digits_split(seed=0)
    means = {}
    for dtype in ("float32", "mixed_bfloat16"):
        accs = []
        for seed in range(args.seeds):
            model = mlpx.MLP([64, 128, 64, 10], seed=seed, dtype=dtype)
            model.fit(X_tr, y_tr, loss="cross_entropy", optimizer="adam", lr=1e-3, epochs=30,
                      batch_size=32, verbose=0)
            accs.append(model.evaluate(X_te, y_te)["accuracy"])
        means[dtype] = float(np.mean(accs))
        print(f"{dtype:>15}: {' '.join(f'{a:.4f}' for a in accs)}  mean {means[dtype]:.4f}")
    gap = 100 * (means["mixed_bfloat16"] - means["float32"])
    print(f"mixed_bfloat16 - float32: {gap:+.2f} points")


if __name__ == "__main__":
    main()
