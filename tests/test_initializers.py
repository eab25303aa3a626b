"""Initialisers: distributions and gains match the formulas; seeded; sensible defaults."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

import mlpx
from mlpx import activations, initializers

FAN_IN, FAN_OUT = 400, 600
SHAPE = (FAN_IN, FAN_OUT)  # 240 000 draws: sample std within ~0.3 % of the target


def _draw(name, act):
    return initializers.get(name)(SHAPE, np.random.default_rng(0), act)


GAINS = [  # (activation, the gain table's Xavier gain, Kaiming gain)
    (activations.Identity(), 1.0, 1.0),
    (activations.Tanh(), 1.0, 5.0 / 3.0),
    (activations.Sigmoid(), 4.0, 1.0),  # Glorot & Bengio: the logistic's bound is 4x tanh's
    (activations.ReLU(), math.sqrt(2.0), math.sqrt(2.0)),
    (activations.PReLU(), math.sqrt(2.0), math.sqrt(2.0)),
    (activations.LeakyReLU(0.1), math.sqrt(2.0 / 1.01), math.sqrt(2.0 / 1.01)),
]


@pytest.mark.parametrize("act,xavier,kaiming", GAINS, ids=lambda v: getattr(v, "name", ""))
def test_gain_table(act, xavier, kaiming):
    assert initializers.activation_gain(act) == pytest.approx(xavier)
    assert initializers.kaiming_gain(act) == pytest.approx(kaiming)


@pytest.mark.parametrize("act", [g[0] for g in GAINS], ids=lambda a: a.name)
def test_statistics_match_formulas(act):
    """xavier_*/glorot_* have gain 1 for every activation (Keras' glorot_uniform, PyTorch's
    xavier_uniform_); the *_gain variants apply the per-activation table."""
    gx, gk = initializers.activation_gain(act), initializers.kaiming_gain(act)
    expected = {
        # name: (std for normal, bound for uniform)
        "xavier_uniform": (None, math.sqrt(6.0 / (FAN_IN + FAN_OUT))),
        "xavier_normal": (math.sqrt(2.0 / (FAN_IN + FAN_OUT)), None),
        "glorot_uniform": (None, math.sqrt(6.0 / (FAN_IN + FAN_OUT))),
        "xavier_uniform_gain": (None, gx * math.sqrt(6.0 / (FAN_IN + FAN_OUT))),
        "xavier_normal_gain": (gx * math.sqrt(2.0 / (FAN_IN + FAN_OUT)), None),
        "kaiming_uniform": (None, gk * math.sqrt(3.0 / FAN_IN)),
        "kaiming_normal": (gk / math.sqrt(FAN_IN), None),
        "lecun_uniform": (None, math.sqrt(3.0 / FAN_IN)),
        "uniform_fan_in": (None, 1.0 / math.sqrt(FAN_IN)),
        "lecun_normal": (1.0 / math.sqrt(FAN_IN), None),
    }
    for name, (std, bound) in expected.items():
        w = _draw(name, act)
        assert w.shape == SHAPE
        assert abs(w.mean()) < 0.01 * (std or bound)
        if bound is not None:
            assert np.abs(w).max() <= bound
            assert np.abs(w).max() > 0.999 * bound
            assert w.std() == pytest.approx(bound / math.sqrt(3.0), rel=0.01)
        else:
            assert w.std() == pytest.approx(std, rel=0.01)
            assert np.abs(w).max() > 3 * std  # a Gaussian, not a truncated or uniform draw


def test_xavier_matches_torch_for_every_activation():
    torch = pytest.importorskip("torch")
    for act in ("sigmoid", "tanh", "relu", "identity"):
        rng = np.random.default_rng(0)
        w = initializers.get("xavier_uniform")(SHAPE, rng, activations.get(act))
        t = torch.empty(FAN_OUT, FAN_IN, dtype=torch.float64)
        torch.nn.init.xavier_uniform_(t)  # gain=1 is PyTorch's default
        assert w.std() == pytest.approx(float(t.std()), rel=0.01)


def test_aliases_are_the_same_functions():
    assert initializers.get("glorot_uniform") is initializers.get("xavier_uniform")
    assert initializers.get("glorot_normal_gain") is initializers.get("xavier_normal_gain")
    assert initializers.get("he_normal") is initializers.get("kaiming_normal")


def test_simple_initialisers():
    rng = np.random.default_rng(0)
    assert (initializers.get("zeros")((3, 4), rng, activations.ReLU()) == 0).all()
    assert (initializers.constant(0.7)((3, 4), rng, activations.ReLU()) == 0.7).all()
    w = initializers.normal(std=0.2, mean=1.0)(SHAPE, rng, activations.ReLU())
    assert w.std() == pytest.approx(0.2, rel=0.01) and w.mean() == pytest.approx(1.0, abs=0.01)
    u = initializers.uniform(-0.3, 0.1)(SHAPE, rng, activations.ReLU())
    assert u.min() >= -0.3 and u.max() < 0.1 and u.mean() == pytest.approx(-0.1, abs=0.01)
    with pytest.raises(ValueError, match="std > 0"):
        initializers.normal(std=0.0)
    with pytest.raises(ValueError, match="a < b"):
        initializers.uniform(1.0, 0.0)


@pytest.mark.parametrize("act,default", [
    ("relu", "he_normal"), ("leaky_relu", "he_normal"), ("prelu", "he_normal"),
    ("tanh", "xavier_uniform"), ("sigmoid", "uniform_fan_in"), ("identity", "xavier_uniform"),
    ("gelu", "xavier_uniform"), ("elu", "xavier_uniform"),
])
def test_defaults(act, default):
    assert mlpx.Dense(4, activation=act).init == default
    model = mlpx.Sequential([mlpx.Dense(300, activation=act)], input_dim=500, seed=0)
    W = model.get_weights()[0]
    expected = initializers.get(default)((500, 300), np.random.default_rng(1), activations.get(act))
    assert W.std() == pytest.approx(expected.std(), rel=0.02)
    assert (model.get_weights()[1] == 0).all()  # biases start at zero


def test_seeded_determinism(backend):
    a = mlpx.MLP([5, 7, 3], backend=backend, seed=42).get_weights()
    b = mlpx.MLP([5, 7, 3], backend=backend, seed=42).get_weights()
    c = mlpx.MLP([5, 7, 3], backend=backend, seed=43).get_weights()
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    # the same seed gives the same weights on every backend and dtype (drawn on the host)
    ref = mlpx.MLP([5, 7, 3], backend="cpu", dtype="float64", seed=42).get_weights()
    np.testing.assert_array_equal(a[0], ref[0].astype(np.float32))


def test_custom_callable_initialiser():
    def ones_times_fan_in(shape, rng, act):
        return np.full(shape, 1.0 / shape[0])

    model = mlpx.Sequential([mlpx.Dense(2, init=ones_times_fan_in)], input_dim=4, seed=0)
    np.testing.assert_array_equal(model.get_weights()[0], np.full((4, 2), 0.25, np.float32))


def test_all_zero_initialisation_keeps_hidden_units_identical(backend):
    """The symmetry problem: with all-zero weights every hidden unit gets the same gradient."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 5)).astype(np.float32)
    y = rng.integers(0, 3, size=64)
    model = mlpx.MLP([5, 6, 3], activation="tanh", init="zeros", backend=backend, seed=0)
    model.fit(X, y, loss="cross_entropy", lr=0.5, epochs=5, batch_size=8, verbose=0)
    W1, b1, W2, b2 = model.get_weights()
    # every hidden unit: same incoming weights, same bias, same outgoing weights
    np.testing.assert_array_equal(W1, np.repeat(W1[:, :1], 6, axis=1))
    np.testing.assert_array_equal(b1, np.full(6, b1[0]))
    np.testing.assert_array_equal(W2, np.repeat(W2[:1], 6, axis=0))
    assert np.abs(b2).max() > 0  # training did happen (the output bias moved)
    # with sigmoid the hidden units do move away from zero, yet stay identical to each other
    model = mlpx.MLP([5, 6, 3], activation="sigmoid", init="zeros", backend=backend, seed=0)
    model.fit(X, y, loss="cross_entropy", lr=0.5, epochs=5, batch_size=8, verbose=0)
    W1, b1, W2, _ = model.get_weights()
    assert np.abs(W1).max() > 0 and np.abs(W2).max() > 0
    np.testing.assert_array_equal(W1, np.repeat(W1[:, :1], 6, axis=1))
    np.testing.assert_array_equal(W2, np.repeat(W2[:1], 6, axis=0))


def test_every_initialiser_the_docs_name_exists():
    """README.md and docs/*.md quote init="..." names: each one must resolve."""
    root = Path(__file__).resolve().parent.parent
    pages = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    quoted = {(page.name, name) for page in pages
              for name in re.findall(r'init="([A-Za-z0-9_]+)"', page.read_text())}
    assert quoted  # the pattern still finds the docs' examples
    for page, name in sorted(quoted):
        assert initializers.get(name) is not None, f"{page}: init={name!r}"


@pytest.mark.parametrize("factory", ["normal", "uniform", "constant"])
def test_an_uncalled_factory_says_to_call_it(factory):
    """init=mlpx.initializers.normal (no call) failed at build with 'normal() takes from 0 to
    2 positional arguments but 3 were given'; it is refused where it is given."""
    with pytest.raises(TypeError, match=rf"init=mlpx.initializers.{factory} makes an "
                                        rf"initialiser: call it, e.g. init=mlpx.initializers."
                                        rf"{factory}\("):
        mlpx.Dense(3, init=getattr(initializers, factory))
    assert initializers.get(initializers.normal(0.5)) is not None  # what it makes is fine
