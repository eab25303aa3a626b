"""Precision policies: dtype="mixed_bfloat16" keeps float32 variables; float32 is unchanged."""

from __future__ import annotations

import numpy as np
import pytest

import mlpx
from mlpx.backends import get_backend
from mlpx.precision import POLICIES, get_policy


def _data(n=96, d=12, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    return X, rng.integers(0, classes, n)


def _trained(dtype, backend="cpu"):
    X, y = _data()
    model = mlpx.MLP([12, 16, 4], dtype=dtype, seed=3, backend=backend)
    model.fit(X, y, loss="cross_entropy", optimizer="adam", lr=0.01, epochs=2,
              batch_size=32, verbose=0)
    return model, X


def test_mixed_policy_keeps_float32_variables():
    model, _ = _trained("mixed_bfloat16")
    assert model.dtype == "float32" and model.compute_dtype == "bfloat16"
    assert model.policy.name == "mixed_bfloat16"
    for p in model.parameters():
        assert p.data.dtype == np.float32 and p.grad.dtype == np.float32
    for slots in model.optimizer_.state:
        assert all(v.dtype == np.float32 for v in slots.values() if v is not None)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_plain_policies_compute_in_their_dtype(dtype):
    model = mlpx.MLP([3, 2], dtype=dtype)
    assert model.dtype == dtype and model.compute_dtype == dtype
    # no wrapper: the very backend object, so the float code path is the one it always was
    assert model.ops is get_backend("cpu")


def test_float32_results_are_bitwise_those_of_the_plain_backend():
    # every spelling of float32 trains to the same bits, the mixed policy does not
    a, X = _trained("float32")
    b, _ = _trained(np.float32)
    c, _ = _trained(get_policy("float32"))
    mixed, _ = _trained("mixed_bfloat16")
    for other in (b, c):
        for w, v in zip(a.get_weights(), other.get_weights(), strict=True):
            assert w.tobytes() == v.tobytes()
    assert not np.array_equal(a.predict(X), mixed.predict(X))
    assert "precision" not in a.get_config()


def test_unknown_policy_lists_the_valid_ones():
    with pytest.raises(ValueError, match="mixed_bfloat16") as err:
        mlpx.MLP([3, 2], dtype="bfloat16")
    for name in POLICIES:
        assert repr(name) in str(err.value)
    with pytest.raises(ValueError, match="float16"):
        mlpx.Sequential([mlpx.Dense(2)], input_dim=3, dtype=np.float16)


def test_mixed_policy_asks_the_backend_whether_it_can_run_it():
    """A backend that cannot run bfloat16 products (the cuda backend on a GPU older than
    compute capability 8.0) refuses the policy with its own reason, before any product."""
    from mlpx.backends.base import Backend
    from mlpx.backends.bfloat16 import MixedBFloat16Ops
    from mlpx.errors import BackendUnavailableError

    class OldGPU(Backend):
        def check_bfloat16(self):
            raise BackendUnavailableError("no bfloat16 tensor cores on GPU 0")

    with pytest.raises(BackendUnavailableError, match="no bfloat16 tensor cores"):
        MixedBFloat16Ops(OldGPU())
    assert MixedBFloat16Ops(mlpx.get_backend("cpu")).compute_dtype == "bfloat16"


def test_mixed_checkpoint_records_the_policy_and_loads_as_float32_and_back(tmp_path):
    model, X = _trained("mixed_bfloat16")
    path = model.save(tmp_path / "mixed.safetensors")
    again = mlpx.load(path)
    assert again.policy.name == "mixed_bfloat16"
    np.testing.assert_array_equal(again.predict(X), model.predict(X))
    plain = mlpx.load(path, dtype="float32")
    assert plain.compute_dtype == "float32"
    for w, v in zip(plain.get_weights(), model.get_weights(), strict=True):
        assert w.tobytes() == v.tobytes()
    back = mlpx.load(plain.save(tmp_path / "plain.safetensors"), dtype="mixed_bfloat16")
    np.testing.assert_array_equal(back.predict(X), model.predict(X))
    with pytest.raises(ValueError, match="float32 weights"):
        mlpx.load(path, dtype="float64")


def test_resume_under_the_mixed_policy_continues_the_run(tmp_path):
    X, y = _data()
    kw = dict(loss="cross_entropy", optimizer="adam", lr=0.01, batch_size=32, verbose=0)
    whole = mlpx.MLP([12, 16, 4], dtype="mixed_bfloat16", seed=3)
    whole.fit(X, y, epochs=4, **kw)
    half = mlpx.MLP([12, 16, 4], dtype="mixed_bfloat16", seed=3)
    half.fit(X, y, epochs=2, **kw)
    path = half.save(tmp_path / "half.safetensors")
    resumed = mlpx.load(path)
    resumed.fit(X, y, epochs=4, resume_from=path, **kw)
    for w, v in zip(resumed.get_weights(), whole.get_weights(), strict=True):
        np.testing.assert_array_equal(w, v)


class _BlowUpAfter(mlpx.callbacks.Callback):
    """Sets a diverging learning rate at the end of epoch `epoch` (0-based): 1e38, so that the
    next step overflows whichever summation order each product's route takes (with 1e30 a run
    could stay finite: dead ReLUs and bias-only logits of about 1e30)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            self.model.optimizer_.lr = 1e38


def _deep(seed=3):
    return mlpx.MLP([12, 24, 16, 4], dtype="mixed_bfloat16", seed=seed)


def test_resume_with_bfloat16_saved_activations_gives_the_uninterrupted_weights(tmp_path):
    X, y = _data()
    kw = dict(loss="cross_entropy", optimizer="adam", lr=0.01, batch_size=32, verbose=0)
    whole = _deep()
    whole.fit(X, y, epochs=5, **kw)
    assert whole._chained is not None  # hidden outputs were kept as bfloat16 bits
    half = _deep()
    half.fit(X, y, epochs=2, **kw)
    path = half.save(tmp_path / "half.safetensors")
    resumed = mlpx.load(path)
    resumed.fit(X, y, epochs=5, resume_from=path, **kw)
    assert resumed._chained is not None
    for w, v in zip(resumed.get_weights(), whole.get_weights(), strict=True):
        assert w.tobytes() == v.tobytes()


def test_a_diverging_mixed_run_rolls_back_to_its_last_finite_epoch():
    X, y = _data()
    kw = dict(loss="cross_entropy", optimizer="adam", lr=0.01, batch_size=32, verbose=0)
    good = _deep()
    good.fit(X, y, epochs=2, **kw)
    model = _deep()
    with np.errstate(all="ignore"), pytest.raises(mlpx.NonFiniteLossError, match="epoch 3"):
        model.fit(X, y, epochs=4, callbacks=[_BlowUpAfter(1)], **kw)
    assert model._chained is not None
    for w, v in zip(model.get_weights(), good.get_weights(), strict=True):
        assert w.tobytes() == v.tobytes()
    np.testing.assert_array_equal(model.predict(X), good.predict(X))


def test_moving_backends_keeps_the_policy():
    model, X = _trained("mixed_bfloat16")
    before = model.predict(X)
    model.to("reference")
    assert model.backend == "reference" and model.compute_dtype == "bfloat16"
    np.testing.assert_allclose(model.predict(X), before, rtol=1e-5, atol=1e-5)


def test_divergence_under_the_mixed_policy_rolls_back():
    model, X = _trained("mixed_bfloat16")
    _, y = _data()
    weights = [w.copy() for w in model.get_weights()]
    pred = model.predict(X)
    model.optimizer_.lr = 1e30
    with np.errstate(all="ignore"), pytest.raises(mlpx.NonFiniteLossError, match="epoch"):
        model.fit(X, y, epochs=3, batch_size=32, verbose=0)
    for w, v in zip(model.get_weights(), weights, strict=True):
        np.testing.assert_array_equal(w, v)
    np.testing.assert_array_equal(model.predict(X), pred)
    model.optimizer_.lr = 0.01
    hist = model.fit(X, y, epochs=2, batch_size=32, verbose=0)
    assert np.isfinite(hist.loss).all()
