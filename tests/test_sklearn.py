"""mlpx.sklearn's estimators in scikit-learn workflows, against scikit-learn's own MLP."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn import datasets  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import ConvergenceWarning, NotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.model_selection import train_test_split as sk_split  # noqa: E402
from sklearn.neural_network import MLPClassifier as SkMLPClassifier  # noqa: E402
from sklearn.neural_network import MLPRegressor as SkMLPRegressor  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

import mlpx  # noqa: E402
from mlpx.sklearn import MLPClassifier, MLPRegressor  # noqa: E402


@pytest.fixture(autouse=True)
def _quiet_convergence():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _iris():
    X, y = datasets.load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def test_predict_returns_labels_and_probabilities():
    X, y = _iris()
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=300, random_state=0).fit(X, names)
    assert list(clf.classes_) == ["setosa", "versicolor", "virginica"]
    pred = clf.predict(X)
    assert pred.dtype == names.dtype and set(pred) <= set(names)
    assert clf.score(X, names) > 0.9
    proba = clf.predict_proba(X)
    assert proba.shape == (150, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], pred)
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(X)), proba, rtol=1e-12)
    assert clf.n_features_in_ == 4 and clf.n_outputs_ == 3 and clf.out_activation_ == "softmax"
    assert [w.shape for w in clf.coefs_] == [(4, 16), (16, 3)]
    assert [b.shape for b in clf.intercepts_] == [(16,), (3,)]
    assert len(clf.loss_curve_) == clf.n_iter_ and clf.best_loss_ == min(clf.loss_curve_)
    assert isinstance(clf.model_, mlpx.Sequential)


def test_binary_and_multilabel_targets():
    X, y = datasets.load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=50, random_state=0).fit(X, y)
    assert clf.out_activation_ == "logistic" and clf.n_outputs_ == 1  # one logistic unit
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert clf.score(X, y) > 0.95
    Y = np.stack([y, 1 - y, (X[:, 0] > 0).astype(int)], axis=1)  # multi-label indicators
    ml = MLPClassifier(hidden_layer_sizes=(16,), max_iter=200, random_state=0).fit(X, Y)
    assert ml.predict(X).shape == Y.shape and ml.predict_proba(X).shape == Y.shape
    assert ml.score(X, Y) > 0.8  # subset accuracy


def test_pandas_dataframe_and_string_categories():
    pd = pytest.importorskip("pandas")
    X, y = _iris()
    df = pd.DataFrame(X, columns=["sepal_l", "sepal_w", "petal_l", "petal_w"])
    labels = pd.Series(pd.Categorical(np.array(["a", "b", "c"])[y]))
    clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=200, random_state=0).fit(df, labels)
    assert list(clf.feature_names_in_) == list(df.columns)
    assert set(clf.predict(df)) == {"a", "b", "c"}
    with pytest.raises(ValueError, match="feature names"):
        clf.predict(df[["petal_w", "petal_l", "sepal_w", "sepal_l"]])
    reg = MLPRegressor(hidden_layer_sizes=(8,), max_iter=20, random_state=0)
    reg.fit(df, pd.Series(X[:, 0]))
    assert reg.predict(df).shape == (150,)


def test_pipeline_gridsearch_and_cross_validation():
    X, y = datasets.load_iris(return_X_y=True)
    pipe = make_pipeline(StandardScaler(), MLPClassifier(learning_rate_init=0.01, max_iter=200,
                                                         random_state=0))
    grid = GridSearchCV(pipe, {"mlpclassifier__hidden_layer_sizes": [(8,), (32,)],
                               "mlpclassifier__alpha": [1e-4, 1e-2]}, cv=3)
    grid.fit(X, y)
    assert grid.best_score_ > 0.9
    assert grid.best_estimator_.predict(X).shape == (150,)
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.9


def test_clone_get_params_and_random_state():
    clf = MLPClassifier(hidden_layer_sizes=(7, 5), backend="cpu", dtype="float64",
                        random_state=3)
    params = clf.get_params()
    assert params["hidden_layer_sizes"] == (7, 5) and params["dtype"] == "float64"
    assert params["backend"] == "cpu"
    twin = clone(clf)
    assert twin.get_params() == params and not hasattr(twin, "model_")
    X, y = _iris()
    a = clone(clf).fit(X, y)
    b = clone(clf).fit(X, y)
    for u, v in zip(a.coefs_, b.coefs_, strict=True):  # an int random_state repeats
        np.testing.assert_array_equal(u, v)
    c = clone(clf).set_params(random_state=None).fit(X, y)
    d = clone(clf).set_params(random_state=None).fit(X, y)
    assert not np.array_equal(c.coefs_[0], d.coefs_[0])  # None draws afresh
    rs = np.random.RandomState(3)
    e = clone(clf).set_params(random_state=rs).fit(X, y)
    f = clone(clf).set_params(random_state=rs).fit(X, y)  # the same generator, advanced
    assert not np.array_equal(e.coefs_[0], f.coefs_[0])
    g = clone(clf).set_params(random_state=np.random.RandomState(3)).fit(X, y)
    np.testing.assert_array_equal(e.coefs_[0], g.coefs_[0])
    assert a.model_.dtype == np.float64


@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
def test_the_model_computes_in_the_inputs_float_dtype(Estimator):
    X, y = _iris()
    kw = {"hidden_layer_sizes": (4,), "max_iter": 3, "random_state": 0}
    for given, expected in [(np.float64, np.float64), (np.float32, np.float32),
                            (np.int64, np.float64)]:
        est = Estimator(**kw).fit(X.astype(given), y)
        assert est.model_.dtype == expected and est.coefs_[0].dtype == expected
    assert Estimator(dtype="float32", **kw).fit(X, y).model_.dtype == np.float32
    pickled = pickle.loads(pickle.dumps(Estimator(**kw).fit(X, y)))
    assert pickled.model_.dtype == np.float64


def test_errors_are_scikit_learn_style():
    X, y = _iris()
    with pytest.raises(NotFittedError):
        MLPClassifier().predict(X)
    with pytest.raises(NotFittedError):
        MLPRegressor().predict(X)
    clf = MLPClassifier(hidden_layer_sizes=(4,), max_iter=5, random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="X has 3 features, but MLPClassifier is expecting 4"):
        clf.predict(X[:, :3])
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        MLPClassifier(hidden_layer_sizes=(0,)).fit(X, y)
    with pytest.raises(ValueError, match="solver must be one of"):
        MLPClassifier(solver="newton").fit(X, y)
    with pytest.raises(ValueError, match="activation must be") as refused:
        MLPClassifier(activation="softmax").fit(X, y)
    # the names offered are the declarations' (a new built-in is offered without an edit)
    for name in mlpx.activations.hidden_builtins():
        assert repr("logistic" if name == "sigmoid" else name) in str(refused.value), name
    with pytest.raises(ValueError, match="Unknown label type"):
        MLPClassifier().fit(X, X[:, 0] + 0.5)
    with pytest.raises(ValueError, match="dtype must be"):
        MLPRegressor(dtype="float16").fit(X, y)
    with pytest.raises(ValueError, match="NaN"):
        MLPRegressor().fit(np.where(X > 2, np.nan, X), y)
    with pytest.raises(ValueError, match="squared_error"):
        MLPRegressor(loss="poisson").fit(X, y)
    assert not hasattr(MLPClassifier(solver="lbfgs"), "partial_fit")
    assert hasattr(MLPClassifier(solver="sgd"), "partial_fit")


def test_partial_fit_keeps_the_optimizer_and_its_state():
    X, y = _iris()
    clf = MLPClassifier(hidden_layer_sizes=(16,), batch_size=50, learning_rate_init=0.01,
                        random_state=0)
    with pytest.raises(ValueError, match="classes must be passed"):
        clone(clf).partial_fit(X, y)
    clf.partial_fit(X[:75], y[:75], classes=[0, 1, 2])
    opt = clf.model_.optimizer_
    assert opt.step_count == 2  # 75 samples in batches of 50
    moments = [s["exp_avg"].copy() for s in opt.state]
    clf.partial_fit(X[75:], y[75:])
    assert clf.model_.optimizer_ is opt and opt.step_count == 4  # continued, not restarted
    assert not np.allclose(moments[0], opt.state[0]["exp_avg"])
    assert len(clf.loss_curve_) == 2 and clf.n_iter_ == 1 and clf.t_ == 150
    for _ in range(40):
        clf.partial_fit(X, y)
    assert clf.score(X, y) > 0.9
    with pytest.raises(ValueError, match="not in `self.classes_`"):
        clf.partial_fit(X[:3], ["x", "y", "z"])
    reg = MLPRegressor(hidden_layer_sizes=(8,), random_state=0)
    reg.partial_fit(X, X[:, 0])
    reg.partial_fit(X, X[:, 0])
    assert reg.model_.optimizer_.step_count == 2 and len(reg.loss_curve_) == 2


def test_warm_start_continues_from_the_weights():
    X, y = _iris()
    clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=5, warm_start=True, random_state=0)
    clf.fit(X, y)
    first = clf.loss_curve_[-1]
    W = clf.coefs_[0]
    clf.fit(X, y)
    assert len(clf.loss_curve_) == 10 and clf.loss_curve_[-1] < first
    assert not np.array_equal(W, clf.coefs_[0])
    cold = clone(clf).set_params(warm_start=False).fit(X, y)
    assert len(cold.loss_curve_) == 5
    with pytest.raises(ValueError, match="same classes"):
        clf.fit(X[:100], y[:100])


def test_early_stopping_records_validation_scores_and_restores_the_best():
    X, y = datasets.load_digits(return_X_y=True)
    X = X / 16.0
    clf = MLPClassifier(hidden_layer_sizes=(32,), early_stopping=True, n_iter_no_change=3,
                        max_iter=200, random_state=0).fit(X, y)
    assert clf.n_iter_ < 200  # stopped early
    assert len(clf.validation_scores_) == clf.n_iter_
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    assert clf.best_loss_ is None
    assert 0.9 < clf.best_validation_score_ <= 1.0
    assert clf.score(X, y) > 0.9  # the restored (best) weights


def test_pickle_roundtrip_keeps_predictions_and_optimizer_state():
    X, y = _iris()
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=20, random_state=0).fit(X, y)
    back = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))
    assert back.model_.optimizer_.step_count == clf.model_.optimizer_.step_count
    back.partial_fit(X, y)  # trains on after loading
    assert back.model_.optimizer_.step_count == clf.model_.optimizer_.step_count + 1


@pytest.mark.parametrize("solver", ["sgd", "adam", "lbfgs"])
def test_objective_is_scikit_learns(solver):
    """Same initial weights, full-batch steps: the weights follow scikit-learn's MLP (float64),
    so the loss scale (half squared error), the L2 term alpha/(2n) and the SGD learning rate
    mean what they mean in scikit-learn."""
    X, y = datasets.make_regression(n_samples=60, n_features=5, noise=5.0, random_state=0)
    X = StandardScaler().fit_transform(X)
    y = y / y.std()
    kw = dict(hidden_layer_sizes=(6,), activation="tanh", alpha=0.5, batch_size=60,
              learning_rate_init=0.05, momentum=0.0, shuffle=False, tol=0.0, random_state=0)
    if solver == "lbfgs":
        kw.update(max_iter=15)
    ref = SkMLPRegressor(solver=solver, **kw).fit(X, y)
    ours = MLPRegressor(solver=solver, dtype="float64", **kw)
    ours.set_params(max_iter=1).fit(X, y)
    # start from scikit-learn's initial weights (its model after 0 steps)
    ref0 = clone(ref).set_params(max_iter=1, warm_start=True)
    ref0.fit(X, y)  # builds the attributes; its weights are replaced next
    W0 = [np.random.default_rng(1).uniform(-0.5, 0.5, w.shape) for w in ref0.coefs_]
    b0 = [np.random.default_rng(2).uniform(-0.5, 0.5, b.shape) for b in ref0.intercepts_]
    ref0.coefs_, ref0.intercepts_ = [w.copy() for w in W0], [b.copy() for b in b0]
    ours.model_.set_weights([a for pair in zip(W0, b0, strict=True) for a in pair])
    ref0.set_params(max_iter=10).fit(X, y)
    ours.set_params(max_iter=10, warm_start=True).fit(X, y)
    # Adam differs only in where epsilon enters (PyTorch's form against scikit-learn's)
    tol = dict(rtol=1e-6, atol=1e-8) if solver != "adam" else dict(rtol=0, atol=1e-4)
    for a, b in zip(ours.coefs_ + ours.intercepts_, ref0.coefs_ + ref0.intercepts_,
                    strict=True):
        np.testing.assert_allclose(a, b, **tol)
    # the recorded loss adds the L2 term of the epoch's end weights (scikit-learn: of each
    # batch's starting weights), hence the looser bound
    np.testing.assert_allclose(ours.loss_, ref0.loss_, rtol=1e-3 if solver != "adam" else 1e-2)
    if solver != "lbfgs":
        np.testing.assert_allclose(ours.loss_curve_[-10:], ref0.loss_curve_[-10:], rtol=1e-2)


def _scores(est_pair, X, y, seeds=(0, 1, 2)):
    out = []
    for est in est_pair:
        s = []
        for seed in seeds:
            X_tr, X_te, y_tr, y_te = sk_split(X, y, test_size=0.25, random_state=seed)
            pipe = make_pipeline(StandardScaler(), clone(est).set_params(random_state=seed))
            s.append(pipe.fit(X_tr, y_tr).score(X_te, y_te))
        out.append(float(np.mean(s)))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", ["iris", "breast_cancer", "wine", "digits"])
def test_classification_scores_match_scikit_learns_mlp(name):
    X, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    if name == "digits":
        X, y = X[::2], y[::2]  # half the data keeps the test quick
    kw = dict(hidden_layer_sizes=(64,), max_iter=200)
    ours, theirs = _scores([MLPClassifier(**kw), SkMLPClassifier(**kw)], X, y)
    assert ours >= theirs - 0.03, (ours, theirs)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["diabetes", "make_regression"])
def test_regression_scores_match_scikit_learns_mlp(name):
    if name == "diabetes":
        X, y = datasets.load_diabetes(return_X_y=True)
        kw = dict(hidden_layer_sizes=(32,), max_iter=300, learning_rate_init=0.01)
    else:
        X, y = datasets.make_regression(n_samples=600, n_features=8, noise=10.0,
                                        random_state=0)
        kw = dict(hidden_layer_sizes=(64,), max_iter=300, learning_rate_init=0.01)
    ours, theirs = _scores([MLPRegressor(**kw), SkMLPRegressor(**kw)], X, y)
    assert ours >= theirs - 0.05, (ours, theirs)


def test_sample_weight_counts_like_repeated_samples_and_reaches_early_stopping():
    X, y = datasets.make_classification(n_samples=60, n_features=5, random_state=0)
    w = np.random.default_rng(0).integers(0, 3, size=60)
    rep = np.repeat(np.arange(60), w)
    kw = dict(hidden_layer_sizes=(8,), solver="lbfgs", max_iter=50, random_state=0,
              dtype="float64")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        weighted = MLPClassifier(**kw).fit(X, y, sample_weight=w)
        repeated = MLPClassifier(**kw).fit(X[rep], y[rep])
    np.testing.assert_allclose(weighted.predict_proba(X), repeated.predict_proba(X),
                               rtol=1e-6, atol=1e-9)
    # a heavy weight on one class moves the decision towards it
    heavy = np.where(y == 1, 20.0, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        plain = MLPClassifier(hidden_layer_sizes=(4,), max_iter=30, random_state=0).fit(X, y)
        tilted = MLPClassifier(hidden_layer_sizes=(4,), max_iter=30, random_state=0).fit(
            X, y, sample_weight=heavy)
    assert tilted.predict_proba(X)[:, 1].mean() > plain.predict_proba(X)[:, 1].mean()
    reg = MLPRegressor(hidden_layer_sizes=(8,), early_stopping=True, max_iter=20,
                       random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reg.fit(X, X[:, 0] * 2.0, sample_weight=w + 0.5)
    assert len(reg.validation_scores_) == reg.n_iter_
    with pytest.raises(ValueError, match="weight.*zero"):
        MLPRegressor().fit(X, X[:, 0], sample_weight=np.zeros(60))


def _same_start(ours, ref, X, y):
    """Both estimators fitted once (max_iter=1), then given the same weights."""
    ours.set_params(max_iter=1).fit(X, y)
    ref.set_params(max_iter=1).fit(X, y)
    W0 = [np.random.default_rng(1).uniform(-0.5, 0.5, w.shape) for w in ref.coefs_]
    b0 = [np.random.default_rng(2).uniform(-0.5, 0.5, b.shape) for b in ref.intercepts_]
    ref.coefs_, ref.intercepts_ = [w.copy() for w in W0], [b.copy() for b in b0]
    ours.model_.set_weights([a for pair in zip(W0, b0, strict=True) for a in pair])


@pytest.mark.parametrize("solver", ["sgd", "lbfgs"])
@pytest.mark.parametrize("change", [
    {"alpha": 5.0}, {"alpha": 0.0}, {"activation": "relu"}, {"learning_rate_init": 0.01},
    {"momentum": 0.5}, {"batch_size": 20}, {"alpha": 3.0, "batch_size": 30},
], ids=lambda c: ",".join(c))
def test_warm_start_applies_every_changed_parameter_as_scikit_learn_does(solver, change):
    """set_params between two warm fits: the second fit trains with the new values, as
    scikit-learn's MLP does (same weights, same steps, same result)."""
    X, y = datasets.make_regression(n_samples=60, n_features=5, noise=5.0, random_state=0)
    X = StandardScaler().fit_transform(X)
    y = y / y.std()
    kw = dict(hidden_layer_sizes=(6,), activation="tanh", alpha=0.5, batch_size=60,
              learning_rate_init=0.05, momentum=0.0, shuffle=False, tol=0.0, random_state=0,
              warm_start=True, solver=solver)
    ours, ref = MLPRegressor(dtype="float64", **kw), SkMLPRegressor(**kw)
    _same_start(ours, ref, X, y)
    for est in (ours, ref):
        est.set_params(max_iter=8, **change).fit(X, y)
    for a, b in zip(ours.coefs_ + ours.intercepts_, ref.coefs_ + ref.intercepts_, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)


def test_warm_start_applies_backend_dtype_and_refuses_new_layer_sizes():
    X, y = _iris()
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, warm_start=True, random_state=0)
    clf.fit(X, y)
    steps = clf.model_.optimizer_.step_count
    W = clf.coefs_[0]
    clf.set_params(dtype="float64", max_iter=1).fit(X, y)
    assert clf.model_.dtype == np.float64 and clf.coefs_[0].dtype == np.float64
    assert clf.model_.optimizer_.step_count == 1  # a new optimiser per fit, as before
    assert steps == 3 and not np.array_equal(W, clf.coefs_[0])
    with pytest.raises(ValueError, match=r"hidden_layer_sizes changed from \(8,\) to "
                                         r"\(4,\).*warm_start=False"):
        clf.set_params(hidden_layer_sizes=(4,)).fit(X, y)


def test_warm_start_may_switch_early_stopping_and_solver():
    X, y = _iris()
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=4, warm_start=True, random_state=0,
                        solver="lbfgs").fit(X, y)
    clf.set_params(solver="adam").fit(X, y)
    assert len(clf.loss_curve_) == 4
    clf.set_params(early_stopping=True).fit(X, y)
    assert len(clf.validation_scores_) == clf.n_iter_ and clf.best_loss_ is None
    clf.set_params(early_stopping=False).fit(X, y)
    assert clf.validation_scores_ is None and np.isfinite(clf.best_loss_)


@pytest.mark.parametrize("shuffle", [True, False])
def test_partial_fit_after_a_pickle_round_trip_is_unchanged(shuffle):
    X, y = _iris()
    clf = MLPClassifier(hidden_layer_sizes=(8,), batch_size=16, random_state=0,
                        shuffle=shuffle)
    for _ in range(3):
        clf.partial_fit(X, y, classes=[0, 1, 2])
    back = pickle.loads(pickle.dumps(clf))
    for est in (clf, back):
        for _ in range(2):
            est.partial_fit(X, y)
    for a, b in zip(clf.coefs_ + clf.intercepts_, back.coefs_ + back.intercepts_, strict=True):
        np.testing.assert_array_equal(a, b)
    assert back.loss_curve_ == clf.loss_curve_


@pytest.mark.parametrize("labels", [["b", "a", "c"], [3, 1], ["no", "yes"], [0, 1, 2, 3]])
def test_predict_is_the_label_binarizers_inverse_of_the_probabilities(labels):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((90, 5)).astype(np.float32)
    y = np.array(labels, dtype=object if isinstance(labels[0], str) else None)[
        np.argmax(X[:, : len(labels)], axis=1) % len(labels)]
    est = MLPClassifier(hidden_layer_sizes=(8,), max_iter=20, random_state=0).fit(X, y)
    p = est._probabilities(X)
    want = est._label_binarizer.inverse_transform(p)
    got = est.predict(X)
    assert got.dtype == want.dtype and got.tolist() == want.tolist()
    assert set(got.tolist()) <= set(labels)
