"""Rosenblatt's perceptron: a single threshold unit trained by the perceptron rule.

    y_hat = step(x . w + b)          (step(0) = 1)
    w <- w + lr (t - y_hat) x,  b <- b + lr (t - y_hat)     (one sample at a time)

It converges whenever the two classes are linearly separable and never on XOR, which is
why hidden layers (and backpropagation) exist.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .preconditions import check_features, check_positive_int, check_same_length


class Perceptron:
    def __init__(self, lr: float = 1.0, max_epochs: int = 100, shuffle: bool = True,
                 seed: int | None = 0):
        from .optim import check_lr

        self.lr = check_lr(lr)  # a positive finite number, with the usual error otherwise
        self.max_epochs = check_positive_int(max_epochs, "max_epochs")
        self.shuffle = shuffle
        self.seed = seed
        self.w_: np.ndarray | None = None
        self.b_: float = 0.0
        self.errors_: list[int] = []
        self.converged_ = False

    def fit(self, X: Any, y: Any) -> Perceptron:
        """Train on 0/1 (or -1/+1) labels until an epoch makes no mistake or max_epochs."""
        X = np.asarray(check_features(X, None), dtype=np.float64)
        y = np.asarray(y).ravel()
        check_same_length(X, y)
        classes = np.unique(y)
        if classes.size > 2 or not set(classes.tolist()) <= {0, 1, -1}:
            raise ValueError(f"Perceptron needs binary labels 0/1 or -1/+1, got {classes}")
        self._negative = -1 if -1 in classes else 0
        t = (y > 0).astype(np.float64)
        rng = np.random.default_rng(self.seed)
        self.w_ = np.zeros(X.shape[1])
        self.b_ = 0.0
        self.errors_ = []
        self.converged_ = False
        for _ in range(self.max_epochs):
            order = rng.permutation(len(X)) if self.shuffle else np.arange(len(X))
            mistakes = 0
            for i in order:
                pred = 1.0 if X[i] @ self.w_ + self.b_ >= 0 else 0.0
                err = t[i] - pred
                if err:
                    self.w_ += self.lr * err * X[i]
                    self.b_ += self.lr * err
                    mistakes += 1
            self.errors_.append(mistakes)
            if mistakes == 0:
                self.converged_ = True
                break
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        if self.w_ is None:
            raise RuntimeError("Perceptron is not fitted; call fit(X, y) first")
        X = np.asarray(check_features(X, self.w_.size), dtype=np.float64)
        return X @ self.w_ + self.b_

    def predict(self, X: Any) -> np.ndarray:
        """Labels in the convention of the training labels (0/1 or -1/+1)."""
        return np.where(self.decision_function(X) >= 0, 1, self._negative)

    def score(self, X: Any, y: Any) -> float:
        return float(np.mean(self.predict(X) == np.asarray(y).ravel()))
