"""scikit-learn's own estimator checks on mlpx.sklearn's estimators."""

from __future__ import annotations

import pytest

pytest.importorskip("sklearn")

from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from mlpx.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

# small networks keep the ~100 fits of the checks fast; defaults otherwise
ESTIMATORS = [
    MLPClassifier(hidden_layer_sizes=(32,), max_iter=100, random_state=0),
    MLPRegressor(hidden_layer_sizes=(32,), max_iter=100, random_state=0),
    # the other solvers and early stopping go through the same checks
    MLPClassifier(hidden_layer_sizes=(16,), solver="lbfgs", max_iter=100, random_state=0),
    MLPRegressor(hidden_layer_sizes=(16,), solver="sgd", learning_rate="adaptive",
                 early_stopping=True, validation_fraction=0.3, max_iter=100, random_state=0),
]


def expected_failed_checks(estimator) -> dict[str, str]:
    """Checks known to fail, with the reason. The default configurations pass every check;
    the checks that need `sample_weight` are not run (`fit` has no sample_weight yet)."""
    if estimator.early_stopping:
        return {
            "check_fit_score_takes_y": "partial_fit refuses early_stopping=True with a "
            "ValueError, as scikit-learn's own MLP does (one epoch has nothing to stop)",
        }
    return {}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failed_checks)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)
