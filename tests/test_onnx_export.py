"""ONNX export: ONNX Runtime reproduces model.predict within float32 rounding."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

import mlpx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

A = mlpx.activations
# every built-in declaration (a new one is exported and checked without a test edit), and the
# parametrised ones with other than their defaults
ACTIVATIONS = [c.name for c in A.builtins()] + [A.LeakyReLU(0.2), A.ELU(alpha=0.5)]


def test_every_builtin_declares_its_onnx_form():
    missing = [c.name for c in A.builtins() if A.twin(c(), "onnx") is None]
    assert not missing, f"declare onnx(self, graph, z) for {missing}"


def _run(path, X):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": X})[0]


def _ops(path):
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def _data(n=256, d=7, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(scale=3.0, size=(n, d)).astype(np.float32)  # pre-activations reach +-20
    return X, rng.integers(0, 4, size=n)


def _assert_float32_close(got, want):
    """Within float32 rounding: a few ulps of the output's magnitude."""
    assert got.dtype == want.dtype == np.float32 and got.shape == want.shape
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=4 * np.finfo(np.float32).eps * scale)


@pytest.mark.parametrize("act", ACTIVATIONS, ids=lambda a: a if isinstance(a, str) else repr(a))
def test_every_activation_matches_onnx_runtime(act, tmp_path):
    X, y = _data()
    model = mlpx.Sequential(
        [mlpx.Dense(16, activation=act), mlpx.Dense(16, activation=act), mlpx.Dense(4)],
        input_dim=7, seed=1,
    )
    if A.get(act).differentiable:  # the step function has no gradient: exported untrained
        model.fit(X, y, loss="cross_entropy", optimizer="adam", lr=1e-2, epochs=2,
                  batch_size=64, verbose=0)
    path = model.to_onnx(tmp_path / "m.onnx")
    _assert_float32_close(_run(path, X), model.predict(X))
    # as the output activation too (softmax / log_softmax outputs are the usual case)
    head = mlpx.Sequential([mlpx.Dense(5, activation=act)], input_dim=7, seed=2)
    _assert_float32_close(_run(head.to_onnx(tmp_path / "h.onnx"), X), head.predict(X))


def test_extreme_inputs_stay_finite_and_match(tmp_path):
    X = np.array([[-80.0, -20.0, 0.0, 20.0, 80.0, 1e-3, -1e-3]], dtype=np.float32)
    for act in ("softplus", "silu", "gelu", "elu", "sigmoid", "tanh", "log_softmax"):
        model = mlpx.Sequential([mlpx.Dense(7, activation=act, init="ones")], input_dim=7)
        model.set_weights([np.eye(7, dtype=np.float32), np.zeros(7, np.float32)])
        got = _run(model.to_onnx(tmp_path / f"{act}.onnx"), X)
        assert np.isfinite(got).all(), act
        _assert_float32_close(got, model.predict(X))


def test_norm_dropout_residual_prelu_and_folding(tmp_path):
    X, y = _data(seed=3)
    model = mlpx.Sequential([
        mlpx.Dense(32), mlpx.BatchNorm(),                      # folded into the Gemm
        mlpx.Dense(32, activation="relu"), mlpx.BatchNorm(),   # after relu: scale and shift
        mlpx.Dropout(0.3),
        mlpx.Residual([mlpx.Dense(32, activation="tanh"), mlpx.LayerNorm(), mlpx.Dense(32)]),
        mlpx.PReLU(init=0.1),
        mlpx.Dense(16, use_bias=False, activation="silu"),
        mlpx.Dense(4),
    ], input_dim=7, seed=0)
    model.fit(X, y, loss="cross_entropy", optimizer="adam", lr=1e-2, epochs=3, batch_size=32,
              verbose=0)
    path = model.to_onnx(tmp_path / "m.onnx")
    ops = _ops(path)
    assert "Dropout" not in ops and "BatchNormalization" not in ops
    assert ops.count("Gemm") == 5 and ops.count("MatMul") == 1  # the bias-free layer
    assert ops.count("Mul") >= 1 and "LayerNormalization" in ops and "PRelu" in ops
    assert ops.count("Add") >= 2  # the unfolded BatchNorm's shift and the residual sum
    for rows in (X, X[:1], np.repeat(X, 4, axis=0)):  # the batch dimension is dynamic
        _assert_float32_close(_run(path, rows), model.predict(rows))


@pytest.mark.parametrize("act", ACTIVATIONS, ids=lambda a: a if isinstance(a, str) else repr(a))
def test_float64_models_export_as_double(act, tmp_path):
    X, _ = _data(n=64, seed=4)
    model = mlpx.Sequential([mlpx.Dense(12, activation=act), mlpx.LayerNorm(), mlpx.PReLU(),
                             mlpx.BatchNorm(), mlpx.Dense(4)], input_dim=7, dtype="float64",
                            seed=0)
    got = _run(model.to_onnx(tmp_path / "m.onnx"), X.astype(np.float64))
    assert got.dtype == np.float64
    # GELU's erf runs in float32 (ONNX Runtime has no float64 Erf); the rest in float64
    tol = 1e-6 if act == "gelu" else 1e-9  # LayerNorm amplifies rounding
    np.testing.assert_allclose(got, model.predict(X), rtol=tol, atol=tol)


def test_graph_is_valid_and_described(tmp_path):
    model = mlpx.MLP([3, 4, 2], seed=0)
    path = model.to_onnx(tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert inp.name == "input" and out.name == "output"
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", 3]
    assert proto.producer_name == "mlpx"
    assert mlpx.MLP([3, 4, 2], seed=0).to_onnx(str(tmp_path / "s.onnx")).exists()  # str path


def test_identity_model(tmp_path):
    model = mlpx.Sequential([mlpx.Dropout(0.5)], input_dim=3)
    X = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(_run(model.to_onnx(tmp_path / "i.onnx"), X), X)


def test_errors_leave_existing_files_alone(tmp_path):
    with pytest.raises(RuntimeError, match="not built"):
        mlpx.Sequential([mlpx.Dense(2)]).to_onnx(tmp_path / "x.onnx")
    model = mlpx.MLP([3, 2], seed=0)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        model.to_onnx(tmp_path / "missing" / "m.onnx")
    with pytest.raises(ValueError, match="opset"):
        model.to_onnx(tmp_path / "m.onnx", opset=9)

    class Doubler(mlpx.Layer):
        def forward(self, x, training=False):
            return 2 * x

        def backward(self, dy, need_input_grad=True):
            return 2 * dy

    target = tmp_path / "keep.onnx"
    target.write_bytes(b"previous model")
    odd = mlpx.Sequential([mlpx.Dense(3), Doubler()], input_dim=3)
    with pytest.raises(NotImplementedError, match="Doubler"):
        odd.to_onnx(target)
    assert target.read_bytes() == b"previous model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.onnx"]  # no temporary left


class LeakyNamedReLU(A.ReLU):
    """A subclass of a built-in with a formula of its own (it keeps the parent's name)."""

    def formula(self, ops, z):
        return ops.xp.where(z > 0, z, 0.3 * z)

    def derivative(self, ops, dy, z, y):
        return ops.xp.where(z > 0, dy, 0.3 * dy)


class CappedGradReLU(A.ReLU):
    """Only the derivative differs: inference is the parent's formula, so ONNX's Relu."""

    def derivative(self, ops, dy, z, y):
        return ops.xp.where(z > 0, ops.xp.clip(dy, -1.0, 1.0), 0.0)


class Cube(A.Activation):
    def formula(self, ops, z):
        return z * z * z

    def derivative(self, ops, dy, z, y):
        return dy * 3.0 * z * z

    def onnx(self, graph, z):
        return graph.node("Mul", [z, graph.node("Mul", [z, z])], "cube")


@pytest.mark.parametrize("act", [LeakyNamedReLU(), A.FunctionActivation(np.tanh, np.cos),
                                 type("PlainIdentity", (A.Identity,), {
                                     "formula": lambda self, ops, z: 2.0 * z})()],
                         ids=["subclass", "function-pair", "identity-subclass"])
def test_an_activation_without_its_own_onnx_form_is_refused(act, tmp_path):
    """The parent's ONNX operator never stands in for a formula of another class."""
    model = mlpx.Sequential([mlpx.Dense(8, activation=act), mlpx.BatchNorm(), mlpx.Dense(2)],
                            input_dim=7, seed=0)
    with pytest.raises(NotImplementedError, match=f"cannot express the activation .*"
                                                  f"{type(act).__name__}.*onnx"):
        model.to_onnx(tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


class ClippedDense(mlpx.Dense):
    def infer(self, x):
        return self.ops.xp.clip(super().infer(x), -0.1, 0.1)


class ScaledBatchNorm(mlpx.BatchNorm):
    def infer(self, x):
        return 2.0 * super().infer(x)


@pytest.mark.parametrize("layers", [lambda: [ClippedDense(4), mlpx.Dense(2)],
                                    lambda: [mlpx.Dense(4), ScaledBatchNorm()]],
                         ids=["dense", "folded-batchnorm"])
def test_a_subclass_of_a_builtin_layer_is_refused(layers, tmp_path):
    """Exported as its parent, the subclass would compute something else."""
    layers = layers()
    model = mlpx.Sequential(layers, input_dim=7, seed=0)
    model.build(7)
    odd = next(type(x).__name__ for x in layers if type(x) not in (mlpx.Dense, mlpx.BatchNorm))
    with pytest.raises(NotImplementedError, match=f"layer {odd}.*exact class"):
        model.to_onnx(tmp_path / "m.onnx")


@pytest.mark.parametrize("act", [CappedGradReLU(), Cube()], ids=["derivative-only", "declared"])
def test_an_activation_with_an_exact_onnx_form_is_exported(act, tmp_path):
    X, _ = _data()
    model = mlpx.Sequential([mlpx.Dense(8, activation=act), mlpx.Dense(2)], input_dim=7, seed=0)
    _assert_float32_close(_run(model.to_onnx(tmp_path / "m.onnx"), X), model.predict(X))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_scikit_learn_estimator_exports_its_model(tmp_path):
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_iris

    from mlpx.sklearn import MLPClassifier

    X, y = load_iris(return_X_y=True)
    X = X.astype(np.float32)
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=30, random_state=0).fit(X, y)
    logits = _run(clf.model_.to_onnx(tmp_path / "clf.onnx"), X)
    np.testing.assert_array_equal(clf.classes_[logits.argmax(axis=1)], clf.predict(X))


@pytest.mark.skipif(not hasattr(os, "umask") or os.name != "posix",
                    reason="file modes and the umask are POSIX")
@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_exported_files_follow_the_umask_and_keep_an_existing_mode(tmp_path, umask, mode):
    model = mlpx.MLP([3, 4, 2], seed=0)
    old = os.umask(umask)
    try:
        new = model.to_onnx(tmp_path / "new.onnx")
        kept = tmp_path / "kept.onnx"
        kept.write_bytes(b"old")
        os.chmod(kept, 0o640)
        model.to_onnx(kept)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(new).st_mode) == mode
    assert stat.S_IMODE(os.stat(kept).st_mode) == 0o640
    assert sorted(os.listdir(tmp_path)) == ["kept.onnx", "new.onnx"]  # no temporaries left
    np.testing.assert_allclose(_run(kept, np.ones((1, 3), np.float32)),
                               model.predict(np.ones((1, 3), np.float32)), rtol=1e-6)
