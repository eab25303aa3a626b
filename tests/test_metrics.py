"""mlpx.metrics against scikit-learn's metrics, batch by batch with and without weights."""

from __future__ import annotations

import numpy as np
import pytest

import mlpx
from mlpx import losses, metrics

sk = pytest.importorskip("sklearn.metrics")


def _run(ops, metric, out, target, w=None, batch=7):
    """The metric accumulated over batches of `batch` rows."""
    state = None
    for s in range(0, out.shape[0], batch):
        wb = None if w is None else ops.asarray(w[s:s + batch])
        state = metric.update(ops, state, ops.asarray(out[s:s + batch]),
                              ops.asarray(target[s:s + batch]), wb)
    return metric.result(ops, state)


@pytest.mark.parametrize("weighted", [False, True])
def test_classification_metrics_match_scikit_learn(ops, weighted):
    rng = np.random.default_rng(0)
    out, y = rng.normal(size=(50, 6)), rng.integers(0, 6, size=50)
    w = rng.random(50) if weighted else None
    acc = metrics.get("accuracy")
    acc.check(losses.get("cross_entropy"), 6)
    assert _run(ops, acc, out, y, w) == pytest.approx(
        sk.accuracy_score(y, out.argmax(axis=1), sample_weight=w), rel=1e-12)
    for k in (1, 3, 5):
        top = metrics.get(f"top_{k}_accuracy")
        assert top.name == f"top_{k}_accuracy"
        assert _run(ops, top, out, y, w) == pytest.approx(
            sk.top_k_accuracy_score(y, out, k=k, labels=np.arange(6), sample_weight=w),
            rel=1e-12)
    onehot = np.eye(6)[y]  # one-hot targets give the same accuracy
    assert _run(ops, acc, out, onehot, w) == pytest.approx(_run(ops, acc, out, y, w))


def test_binary_and_multilabel_accuracy(ops):
    rng = np.random.default_rng(1)
    out, t = rng.normal(size=(30, 3)), (rng.random((30, 3)) < 0.5).astype(float)
    acc = metrics.get("binary_accuracy")
    acc.check(losses.get("bce"), 3)
    assert _run(ops, acc, out, t) == pytest.approx(((out > 0) == (t > 0.5)).mean())


@pytest.mark.parametrize("weighted", [False, True])
def test_regression_metrics_match_scikit_learn(ops, weighted):
    rng = np.random.default_rng(2)
    t = rng.normal(size=(40, 2)) * [1.0, 5.0] + [1e6, -3.0]  # a large offset on one output
    out = t + rng.normal(size=t.shape)
    w = rng.random(40) if weighted else None
    assert _run(ops, metrics.get("mae"), out, t, w) == pytest.approx(
        sk.mean_absolute_error(t, out, sample_weight=w), rel=1e-12)
    assert _run(ops, metrics.get("mean_squared_error"), out, t, w) == pytest.approx(
        sk.mean_squared_error(t, out, sample_weight=w), rel=1e-12)
    assert _run(ops, metrics.get("r2"), out, t, w) == pytest.approx(
        sk.r2_score(t, out, sample_weight=w), rel=1e-9)


def test_r2_of_a_constant_target_follows_scikit_learn(ops):
    t = np.full((6, 1), 2.0)
    assert _run(ops, metrics.get("r2"), t.copy(), t) == 1.0
    assert _run(ops, metrics.get("r2"), t + 1, t) == 0.0


def test_function_metrics_per_sample_or_per_batch(ops):
    rng = np.random.default_rng(3)
    out, t = rng.normal(size=(20, 2)), rng.normal(size=(20, 2))
    w = rng.random(20)

    def max_error(y_true, y_pred):  # per sample
        return abs(y_pred - y_true).max(axis=1)

    def mean_bias(y_true, y_pred):  # one value for the batch
        return (y_pred - y_true).mean()

    per = metrics.get(max_error)
    assert per.name == "max_error"
    assert _run(ops, per, out, t, w) == pytest.approx(
        np.average(np.abs(out - t).max(axis=1), weights=w))
    assert _run(ops, metrics.get(mean_bias), out, t, batch=5) == pytest.approx((out - t).mean())
    with pytest.raises(ValueError, match="give it one"):
        metrics.get(lambda a, b: a)


def test_bad_metrics_are_refused_before_training():
    rng = np.random.default_rng(4)
    X, y = rng.normal(size=(10, 3)), rng.integers(0, 2, size=10)
    model = mlpx.MLP([3, 2], seed=0)
    with pytest.raises(ValueError, match="unknown metric 'f1'"):
        model.fit(X, y, loss="cross_entropy", metrics=["f1"], verbose=0)
    with pytest.raises(ValueError, match="regression loss"):
        model.fit(X, np.eye(2)[y], loss="mse", metrics=["accuracy"], verbose=0)
    with pytest.raises(ValueError, match="'mae' compares outputs"):
        model.fit(X, y, loss="cross_entropy", metrics=["mae"], verbose=0)
    with pytest.raises(ValueError, match="used twice"):
        model.fit(X, y, loss="cross_entropy", metrics=["top5", "top_k_accuracy"], verbose=0)
    assert model.history_ is None


def test_a_metric_class_means_what_its_name_means():
    """metrics=[mlpx.metrics.R2Score] (no call) is taken as metrics=["r2"], not called as a
    function fn(y_true, y_pred) with a baffling TypeError."""
    assert type(mlpx.metrics.get(mlpx.metrics.R2Score)) is type(mlpx.metrics.get("r2"))
    rng = np.random.default_rng(4)
    X, y = rng.normal(size=(10, 3)), rng.integers(0, 6, size=10)
    model = mlpx.MLP([3, 6], seed=0)
    hist = model.fit(X, y, loss="cross_entropy", metrics=[mlpx.metrics.TopKAccuracy],
                     verbose=0)
    assert "top_5_accuracy" in hist.history


def test_fit_records_metrics_for_training_and_validation(backend):
    rng = np.random.default_rng(5)
    X, y = rng.normal(size=(60, 4)), rng.integers(0, 8, size=60)
    model = mlpx.MLP([4, 8, 8], backend=backend, dtype="float64", seed=0)
    h = model.fit(X[:40], y[:40], loss="cross_entropy", lr=1e-12, epochs=2, batch_size=16,
                  verbose=0, metrics=["top_k_accuracy"], validation_data=(X[40:], y[40:]))
    assert list(h.history) == ["loss", "accuracy", "top_5_accuracy", "val_loss",
                               "val_accuracy", "val_top_5_accuracy", "lr", "grad_norm"]
    train = model.evaluate(X[:40], y[:40])  # the compiled metrics, on the unchanged model
    val = model.evaluate(X[40:], y[40:])
    assert set(train) == {"loss", "accuracy", "top_5_accuracy"}
    for key in ("accuracy", "top_5_accuracy"):
        assert h.history[key][-1] == pytest.approx(train[key], rel=1e-12)
        assert h.history[f"val_{key}"][-1] == pytest.approx(val[key], rel=1e-12)


def test_training_accuracy_is_recorded_for_classification_losses_only():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(30, 3))
    clf = mlpx.MLP([3, 2], seed=0)
    assert "accuracy" in clf.fit(X, rng.integers(0, 2, 30), loss="cross_entropy", verbose=0)
    multi = mlpx.MLP([3, 2], seed=0)
    h = multi.fit(X, (rng.random((30, 2)) < 0.5).astype(float), loss="bce", verbose=0)
    assert 0.0 <= h.accuracy[0] <= 1.0
    reg = mlpx.MLP([3, 1], seed=0)
    h = reg.fit(X, rng.normal(size=30), loss="mse", metrics=["mae", "r2"], verbose=0)
    assert "accuracy" not in h and {"mae", "r2"} <= set(h.history)


def test_compiled_metrics_carry_over_to_fit_and_evaluate():
    rng = np.random.default_rng(7)
    X, y = rng.normal(size=(20, 3)), rng.normal(size=20)
    model = mlpx.MLP([3, 1], seed=0).compile(loss="mse", optimizer="adam", metrics=["mae"])
    assert "mae" in model.fit(X, y, verbose=0)
    assert set(model.evaluate(X, y)) == {"loss", "mae"}
    assert set(model.evaluate(X, y, metrics=["r2"])) == {"loss", "r2"}


def _state(ops, metric, out, target, w=None, batch=7):
    state = None
    for s in range(0, out.shape[0], batch):
        wb = None if w is None else ops.asarray(w[s:s + batch])
        state = metric.update(ops, state, ops.asarray(out[s:s + batch]),
                              ops.asarray(target[s:s + batch]), wb)
    return state


def _builtins():
    rng = np.random.default_rng(5)
    out, labels = rng.normal(size=(45, 4)), rng.integers(0, 4, size=45)
    t = rng.normal(size=(45, 4)) * 3 + [1e5, 0.0, -2.0, 7.0]
    classify, regress = losses.get("cross_entropy"), losses.get("mse")
    cases = []
    for name, loss, target in [("accuracy", classify, labels), ("top_2_accuracy", classify,
                                                                  labels),
                               ("mae", regress, t), ("mse", regress, t), ("r2", regress, t)]:
        metric = metrics.builtin(name)
        metric.check(loss, 4)
        cases.append((metric, out if loss is classify else t + rng.normal(size=t.shape),
                      target))
    return cases


@pytest.mark.parametrize("weighted", [False, True])
def test_merged_states_of_disjoint_rows_give_the_result_of_all_rows(ops, weighted):
    """What a data-parallel fit does with each process's sums: merge(a, b) of two row sets
    is the state of both (in rank order, an empty part included)."""
    w = np.random.default_rng(6).random(45) if weighted else None
    for metric, out, target in _builtins():
        whole = metric.result(ops, _state(ops, metric, out, target, w))
        parts = [(0, 13), (13, 13), (13, 45)]
        merged = None
        for a, b in parts:
            part = None if a == b else _state(ops, metric, out[a:b], target[a:b],
                                               None if w is None else w[a:b])
            merged = metric.merge(ops, merged, part)
        assert metric.result(ops, merged) == pytest.approx(whole, rel=1e-12), metric.name
        assert metrics.mergeable(metric)


def test_state_spec_declares_the_state_update_builds(ops):
    """The declaration a checkpoint's metric sums are checked against is the real state."""
    for metric, out, target in _builtins():
        host = metrics.state_to_host(ops, _state(ops, metric, out, target))
        spec = metric.state_spec(4)
        assert [a.shape for a in host] == [shape for shape, _ in spec], metric.name
        assert all(a.dtype == np.float64 for a in host)
        assert all((a >= 0).all() for a, (_, nonneg) in zip(host, spec, strict=True) if nonneg)
        again = metrics.state_to_device(ops, host)
        assert metric.result(ops, again) == metric.result(ops, _state(ops, metric, out, target))


def test_builtin_names_are_the_history_keys_of_mlpx_metrics():
    assert type(metrics.builtin("r2")) is metrics.R2Score
    assert metrics.builtin("top_3_accuracy").k == 3
    for key in ("acc", "top_k_accuracy", "top_0_accuracy", "top_03_accuracy", "val_mae",
                "my_metric"):
        assert metrics.builtin(key) is None, key


def test_a_custom_metric_without_merge_is_not_mergeable():
    class Median(metrics.Metric):
        name = "median"

    assert not metrics.mergeable(Median())
    with pytest.raises(NotImplementedError, match="merge"):
        Median().merge(None, None, None)
    assert Median().state_spec(3) is None
    assert metrics.mergeable(metrics.FunctionMetric(lambda t, o: t, name="f"))


def test_top_k_accuracy_with_k_covering_every_class_is_refused():
    # with 4 classes top_5_accuracy (the default k) would be 1.0 whatever the model does
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, 3)), rng.integers(0, 4, size=30)
    model = mlpx.MLP([3, 8, 4], seed=0)
    for spec in ("top_k_accuracy", "top_4_accuracy", metrics.TopKAccuracy(k=7)):
        with pytest.raises(ValueError, match="4 classes is always 1.0.*top_3_accuracy"):
            model.fit(X, y, loss="cross_entropy", epochs=1, metrics=[spec], verbose=0)
        with pytest.raises(ValueError, match="always 1.0"):
            model.evaluate(X, y, loss="cross_entropy", metrics=[spec])
    hist = model.fit(X, y, loss="cross_entropy", epochs=1, metrics=["top_3_accuracy"],
                     verbose=0)
    assert "top_3_accuracy" in hist.history  # k below the class count: fine
    unbuilt = mlpx.Sequential([mlpx.Dense(8), mlpx.Dense(4)])
    unbuilt.compile(loss="cross_entropy", metrics=["top_k_accuracy"])  # width not known yet
    with pytest.raises(ValueError, match="always 1.0"):
        unbuilt.fit(X, y, epochs=1, verbose=0)


def _spread(y_true, y_pred):
    return np.abs(y_true - y_pred).max(axis=1)


def test_metrics_of_fit_survive_save_and_load(tmp_path):
    rng = np.random.default_rng(6)
    X, y = rng.normal(size=(40, 3)), rng.normal(size=(40, 2))
    model = mlpx.MLP([3, 8, 2], dtype="float64", seed=0)
    model.fit(X, y, loss="mse", epochs=2, verbose=0, metrics=["r2", "mae", _spread])
    before = model.evaluate(X, y)
    assert set(before) == {"loss", "r2", "mae", "_spread"}
    model.save(tmp_path / "m.safetensors")

    with pytest.warns(UserWarning, match="custom metric '_spread'.*custom_objects"):
        plain = mlpx.load(tmp_path / "m.safetensors")
    after = plain.evaluate(X, y)
    assert set(after) == {"loss", "r2", "mae"}
    for key in after:
        assert after[key] == pytest.approx(before[key], rel=1e-12)
    full = mlpx.load(tmp_path / "m.safetensors", custom_objects={"_spread": _spread})
    assert full.evaluate(X, y) == pytest.approx(before, rel=1e-12)


def test_a_custom_metric_named_like_a_builtin_does_not_come_back_as_the_builtin(tmp_path):
    rng = np.random.default_rng(7)
    X, y = rng.normal(size=(30, 3)), rng.normal(size=(30, 1))

    def r2(y_true, y_pred):  # not scikit-learn's r2
        return (y_true - y_pred)[:, 0] * 0.0

    model = mlpx.MLP([3, 4, 1], dtype="float64", seed=0)
    model.fit(X, y, loss="mse", epochs=1, verbose=0, metrics=[r2])
    model.save(tmp_path / "m.safetensors")
    with pytest.warns(UserWarning, match="custom metric 'r2'"):
        loaded = mlpx.load(tmp_path / "m.safetensors")
    assert "r2" not in loaded.evaluate(X, y)


def test_a_resumed_run_records_the_saved_runs_metrics(tmp_path):
    rng = np.random.default_rng(8)
    X, y = rng.normal(size=(40, 3)), rng.normal(size=(40, 1))
    model = mlpx.MLP([3, 4, 1], dtype="float64", seed=0)
    model.fit(X, y, loss="mse", epochs=2, verbose=0, metrics=["r2", "mae"])
    path = model.save(tmp_path / "run.safetensors")
    resumed = mlpx.MLP([3, 4, 1], dtype="float64", seed=0)
    hist = resumed.fit(X, y, epochs=3, verbose=0, resume_from=path)
    assert len(hist.history["r2"]) == len(hist.history["mae"]) == 3
    assert set(resumed.evaluate(X, y)) == {"loss", "r2", "mae"}
