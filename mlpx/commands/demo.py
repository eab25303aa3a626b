"""`mlpx demo`: train an MLP on scikit-learn's digits data set and plot the loss curves.

It shows the habit of three splits: training rows, a validation split watched during
training (the curves), and a test split scored once at the end."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .outdir import check_out_dir


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits data set (8x8 images, 10 classes): X, y."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError(
            "the digits data set ships with scikit-learn: pip install scikit-learn "
            '(or pip install ".[demo]" in a clone of mlpx)'
        ) from None
    return load_digits(return_X_y=True)


def load_digits_split(
    seed: int = 0, test_size: float = 0.25
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits standardised on the training split: X_train, X_test (float32), y_train,
    y_test."""
    from ..data import Standardizer, train_test_split

    X, y = _digits()
    X_tr, X_te, y_tr, y_te = train_test_split(
        X, y, test_size=test_size, random_state=seed, stratify=y
    )
    scaler = Standardizer().fit(X_tr)
    return (
        scaler.transform(X_tr).astype(np.float32), scaler.transform(X_te).astype(np.float32),
        y_tr, y_te,
    )


def load_digits_three_way(
    seed: int = 0, test_size: float = 0.25, validation_size: float = 0.2
) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Digits split three ways, stratified: ((X_train, y_train), (X_val, y_val), (X_test,
    y_test)). The validation rows come out of the training part (`validation_size` of it)
    and steer training; the test rows are looked at once, at the end. The standardisation
    is fitted on the training rows alone, so neither held-out part leaks into training."""
    from ..data import Standardizer, train_test_split

    X, y = _digits()
    X_rest, X_te, y_rest, y_te = train_test_split(
        X, y, test_size=test_size, random_state=seed, stratify=y
    )
    X_tr, X_val, y_tr, y_val = train_test_split(
        X_rest, y_rest, test_size=validation_size, random_state=seed, stratify=y_rest
    )
    scaler = Standardizer().fit(X_tr)

    def scaled(a: np.ndarray) -> np.ndarray:
        return scaler.transform(a).astype(np.float32)

    return (scaled(X_tr), y_tr), (scaled(X_val), y_val), (scaled(X_te), y_te)


def run_demo(
    out_dir: str | Path = "demo_output",
    backend: str = "auto",
    epochs: int = 30,
    seed: int = 0,
    verbose: int = 1,
) -> dict:
    from .. import MLP

    out = check_out_dir(out_dir)  # before training, not after
    (X_tr, y_tr), (X_val, y_val), (X_te, y_te) = load_digits_three_way(seed)
    model = MLP([64, 128, 64, 10], activation="relu", backend=backend, seed=seed)
    print(f"mlpx demo: digits, {len(X_tr)} train / {len(X_val)} validation / {len(X_te)} "
          f"test, backend={model.backend!r}")
    model.summary()
    # the validation split is what one watches (and tunes on) while training ...
    hist = model.fit(
        X_tr, y_tr, loss="cross_entropy", optimizer="sgd", lr=0.05, epochs=epochs,
        batch_size=32, validation_data=(X_val, y_val), verbose=verbose,
    )
    # ... the test split is scored once, at the end, by the model as trained
    result = model.evaluate(X_te, y_te)
    out.mkdir(parents=True, exist_ok=True)
    png = out / "loss_curves.png"
    hist.plot(
        png, title="mlpx on digits: MLP 64-128-64-10, SGD lr 0.05, batch 32",
        val_label="validation",
    )
    print(f"validation accuracy after the last epoch: {hist.history['val_accuracy'][-1]:.4f}")
    print(f"test accuracy (scored once): {result['accuracy']:.4f}  "
          f"(test loss {result['loss']:.4f})")
    print(f"loss curves written to {png}")
    return {"accuracy": result["accuracy"], "loss": result["loss"],
            "val_accuracy": hist.history["val_accuracy"][-1], "plot": str(png)}
