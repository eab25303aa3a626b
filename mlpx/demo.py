"""`mlpx demo`: train an MLP on scikit-learn's digits data set and plot the loss curves."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def load_digits_split(
    seed: int = 0, test_size: float = 0.25
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits (8x8 images, 10 classes) standardised on the training split:
    X_train, X_test (float32), y_train, y_test."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError(
            'the digits data set ships with scikit-learn: pip install "mlpx[demo]"'
        ) from None
    from .data import Standardizer, train_test_split

    X, y = load_digits(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(
        X, y, test_size=test_size, random_state=seed, stratify=y
    )
    scaler = Standardizer().fit(X_tr)
    return (
        scaler.transform(X_tr).astype(np.float32), scaler.transform(X_te).astype(np.float32),
        y_tr, y_te,
    )


def check_out_dir(out_dir: str | Path) -> Path:
    """Check before any work that `out_dir` is, or can be created as, a writable directory."""
    out = Path(out_dir)
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        where = "it is" if existing == out else f"{str(existing)!r} is"
        raise NotADirectoryError(f"cannot write the demo's output to {str(out)!r}: {where} a "
                                 "file, not a directory; choose another --out")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write the demo's output to {str(out)!r}: no permission "
                              f"to create files in {str(existing)!r}")
    return out


def run_demo(
    out_dir: str | Path = "demo_output",
    backend: str = "auto",
    epochs: int = 30,
    seed: int = 0,
    verbose: int = 1,
) -> dict:
    from . import MLP

    out = check_out_dir(out_dir)  # before training, not after
    X_tr, X_te, y_tr, y_te = load_digits_split(seed)
    model = MLP([64, 128, 64, 10], activation="relu", backend=backend, seed=seed)
    print(f"mlpx demo: digits, {len(X_tr)} train / {len(X_te)} test, backend={model.backend!r}")
    model.summary()
    hist = model.fit(
        X_tr, y_tr, loss="cross_entropy", optimizer="sgd", lr=0.05, epochs=epochs,
        batch_size=32, validation_data=(X_te, y_te), verbose=verbose,
    )
    result = model.evaluate(X_te, y_te)
    out.mkdir(parents=True, exist_ok=True)
    png = out / "loss_curves.png"
    hist.plot(
        png, title="mlpx on digits: MLP 64-128-64-10, SGD lr 0.05, batch 32", val_label="test"
    )
    print(f"test accuracy: {result['accuracy']:.4f}  (test loss {result['loss']:.4f})")
    print(f"loss curves written to {png}")
    return {"accuracy": result["accuracy"], "loss": result["loss"], "plot": str(png)}
