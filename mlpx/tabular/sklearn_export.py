"""`TabularModel.to_sklearn()`: a model trained by `mlpx train` as a scikit-learn estimator,
frozen (`sklearn.frozen.FrozenEstimator`: `fit` does nothing, the network was trained by
`mlpx train`), so that it can be a step of a `Pipeline`, be scored with `score` or
`sklearn.metrics`, and be given to tools that take a fitted estimator."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.frozen import FrozenEstimator


class _Prefit(BaseEstimator):
    def __init__(self, model: Any = None) -> None:
        self.model = model

    def __sklearn_is_fitted__(self) -> bool:
        return self.model is not None

    def fit(self, X: Any, y: Any = None) -> _Prefit:
        return self  # trained by mlpx train: nothing to fit

    def predict(self, X: Any) -> np.ndarray:
        return self.model.predict(X)

    @property
    def feature_names_in_(self) -> np.ndarray:
        return np.asarray(self.model.feature_names_in_, dtype=object)


class TabularClassifier(ClassifierMixin, _Prefit):
    """A classifier trained by `mlpx train` (labels from `predict`, `score` = accuracy)."""

    @property
    def classes_(self) -> np.ndarray:
        return np.asarray(self.model.classes_)

    def predict_proba(self, X: Any) -> np.ndarray:
        return self.model.predict_proba(X)


class TabularRegressor(RegressorMixin, _Prefit):
    """A regressor trained by `mlpx train` (values from `predict`, `score` = R²)."""


def frozen_estimator(model: Any) -> FrozenEstimator:
    cls = TabularClassifier if model.task == "classification" else TabularRegressor
    return FrozenEstimator(cls(model))
