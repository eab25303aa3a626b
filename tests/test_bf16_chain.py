"""mixed_bfloat16 Dense stacks keeping their saved activations in bfloat16
(mlpx.layers.bf16_chain) and the Numba kernels that read and write the bits."""

from __future__ import annotations

import numpy as np
import pytest

import mlpx
from mlpx.backends import _bf16_gemm
from mlpx.backends.bfloat16 import from_bfloat16_bits, round_to_bfloat16, to_bfloat16_bits
from mlpx.layers import bf16_chain

#: hidden activations whose derivative reads bfloat16 y (sigmoid, tanh, ELU) or z (the rest)
ROUNDED = ["sigmoid", "tanh", "elu", "gelu", "silu", "softplus"]


def _f32(bits):
    return np.array(bits, dtype=np.uint32).view(np.float32)


@pytest.fixture
def kernels():
    from mlpx.backends import numba_bfloat16

    return numba_bfloat16


def _special_values():
    rng = np.random.default_rng(0)
    return np.concatenate([
        rng.integers(0, 2**32, 4096, dtype=np.uint64).astype(np.uint32).view(np.float32),
        rng.standard_normal(4096).astype(np.float32),
        _f32([0, 0x80000000, 1, 0x00008000, 0x00018000, 0x7F7F8000, 0x7F7FFFFF, 0x7F800000,
              0xFF800000, 0x7FFFFFFF, 0xFFFFFFFF, 0x7F800001, 0x3F808000, 0x3F818000]),
    ]).reshape(-1, 2)


def test_kernel_rounding_is_the_contracts_bit_for_bit(kernels):
    x = _special_values()
    rounded = np.empty_like(x)
    kernels.round_into(x, rounded)
    want = round_to_bfloat16(x)
    np.testing.assert_array_equal(rounded.view(np.uint32), want.view(np.uint32))
    bits = to_bfloat16_bits(x)
    expanded = np.empty(x.shape, np.float32)
    kernels.expand_bits(bits, expanded)
    np.testing.assert_array_equal(expanded.view(np.uint32), from_bfloat16_bits(bits).view(
        np.uint32).reshape(x.shape))


def test_bias_act_writes_the_rounded_output_bits(kernels):
    rng = np.random.default_rng(1)
    z = rng.standard_normal((5, 7)).astype(np.float32)
    b = rng.standard_normal(7).astype(np.float32)
    bits = np.empty(z.shape, np.uint16)
    kernels.bias_act_bits(z, b, mlpx.activations.ReLU.code, 0.0, bits)
    np.testing.assert_array_equal(bits, to_bfloat16_bits(np.maximum(z + b, 0)))


def test_backward_kernel_sums_the_unrounded_delta_and_leaves_it_rounded(kernels):
    rng = np.random.default_rng(2)
    y = np.maximum(rng.standard_normal((64, 9)), 0).astype(np.float32)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    want = np.where(y > 0, dy, 0).astype(np.float32)
    bgrad = np.empty(9, np.float32)
    kernels.sign_backward_bits_(dy, to_bfloat16_bits(y), mlpx.activations.ReLU.code, 0.0,
                                bgrad, True)
    np.testing.assert_array_equal(bgrad, want.sum(axis=0))
    np.testing.assert_array_equal(dy, round_to_bfloat16(want))


@pytest.mark.parametrize("name", ["relu", None])
def test_relu_and_identity_loops_keep_the_generic_formulas_bits(kernels, name):
    """ReLU and the identity run loops of their own: the same bits as f(float32(z + b))
    rounded, NaN, infinities, signed zeros, subnormals and ties included."""
    act = mlpx.activations.get(name)
    z = _special_values()[:4102].reshape(-1, 4)
    b = np.array([0.0, -0.0, 1.5, -np.inf], np.float32)
    with np.errstate(all="ignore"):
        v = (z + b).astype(np.float32)
        want_y = np.where(v > 0, v, np.float32(0)) if name == "relu" else v
    bits = np.empty(z.shape, np.uint16)
    kernels.bias_act_bits(z, b, act.code, 0.0, bits)
    np.testing.assert_array_equal(bits, to_bfloat16_bits(want_y))
    # backward: rows of 6 (NumPy sums that few in order, as the kernel does)
    y = from_bfloat16_bits(bits).reshape(z.shape)[:6]
    dy = z[6:12][:, ::-1].copy()
    want = np.where(y > 0, dy, np.float32(0)) if name == "relu" else dy.copy()
    bgrad = np.empty(4, np.float32)
    got = dy.copy()
    kernels.sign_backward_bits_(got, bits[:6].copy(), act.code, 0.0, bgrad, True)
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(bgrad, want.sum(axis=0, dtype=np.float32))
    np.testing.assert_array_equal(got.view(np.uint32), round_to_bfloat16(want).view(np.uint32))


def _grid():
    """float32 pre-activations over the range that matters, and special values."""
    rng = np.random.default_rng(3)
    return np.concatenate([rng.standard_normal(4000) * 4, np.linspace(-30, 30, 4000),
                           [0.0, -0.0, 1e-30, -1e-30, 88.0, -88.0, 0.5, -0.5]]).astype(np.float32)


def _f64(name):
    """f in float64 from the reference declaration (mlpx.activations)."""
    act = mlpx.activations.get(name)
    ops = mlpx.backends.get_backend("reference")
    return lambda z: np.asarray(act.formula(ops, z), np.float64), act


@pytest.mark.parametrize("name", ROUNDED)
def test_bias_act_z_bits_writes_the_rounded_z_and_y(kernels, name):
    f, act = _f64(name)
    z = _grid().reshape(-1, 8)
    b = np.random.default_rng(4).standard_normal(8).astype(np.float32)
    zbits, ybits = np.empty(z.shape, np.uint16), np.empty(z.shape, np.uint16)
    kernels.bias_act_z_bits(z, b, act.code, float(act.alpha or 0.0), True, zbits, ybits)
    v = (z + b).astype(np.float32)  # as the float32 path stores z + b
    np.testing.assert_array_equal(zbits, to_bfloat16_bits(v))
    # f in float64, rounded to float32 then bfloat16: the float32 path's y, rounded
    want = to_bfloat16_bits(f(v.astype(np.float64)).astype(np.float32))
    np.testing.assert_array_equal(ybits, want)
    kernels.bias_act_z_bits(z, b, act.code, float(act.alpha or 0.0), False, zbits, ybits)
    np.testing.assert_array_equal(zbits, to_bfloat16_bits(z))


@pytest.mark.parametrize("name", ROUNDED)
def test_derivative_kernel_reads_the_bits_against_float64(kernels, name):
    f, act = _f64(name)
    ops = mlpx.backends.get_backend("reference")
    z = _grid().reshape(-1, 8)
    zbits = to_bfloat16_bits(z)
    ybits = to_bfloat16_bits(f(z.astype(np.float64)).astype(np.float32))
    dy = np.random.default_rng(5).standard_normal(z.shape).astype(np.float32)
    # float64 reference on the very values the kernel reads: z and y rounded to bfloat16
    zr = from_bfloat16_bits(zbits).astype(np.float64)
    yr = from_bfloat16_bits(ybits).astype(np.float64)
    want = np.asarray(act.derivative(ops, dy.astype(np.float64), zr, yr), np.float64)
    got, bgrad = dy.copy(), np.empty(8, np.float32)
    from_y = name in ("sigmoid", "tanh", "elu")
    kernels.act_backward_bits_(got, ybits if from_y else zbits, ybits, act.code,
                               float(act.alpha or 0.0), bgrad, True)
    # the kernel leaves delta rounded: within one bfloat16 rounding of the exact value
    assert np.all(np.abs(got - want) <= 2.0**-8 * np.abs(want) + 1e-37)
    np.testing.assert_array_equal(got, round_to_bfloat16(want.astype(np.float32)))
    # the bias gradient sums the unrounded float32 delta
    np.testing.assert_allclose(bgrad, want.sum(axis=0), rtol=0, atol=len(z) * 2.0**-23
                               * np.abs(want).sum(axis=0).max())


def test_backward_kernel_reads_the_sign_like_z_gt_0(kernels):
    z = np.array([[1.0, -1.0, 0.0, -0.0, np.inf, -np.inf, np.nan]], np.float32)
    leaky = mlpx.activations.LeakyReLU(0.5)
    y = np.where(z > 0, z, 0.5 * z).astype(np.float32)
    dy = np.full(z.shape, 2.0, np.float32)
    kernels.sign_backward_bits_(dy, to_bfloat16_bits(y), leaky.code, 0.5, np.empty(1), False)
    np.testing.assert_array_equal(dy, np.where(z > 0, 2.0, 1.0))


def _train(enabled, monkeypatch, activation="relu", use_bias=True, loss="cross_entropy",
           last=None, sizes=(20, 24, 16, 3)):
    monkeypatch.setattr(bf16_chain, "ENABLED", enabled)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((90, sizes[0])).astype(np.float32)  # a last batch of 26
    y = rng.integers(0, sizes[-1], 90)
    layers = [mlpx.Dense(u, activation=activation, use_bias=use_bias) for u in sizes[1:-1]]
    layers.append(mlpx.Dense(sizes[-1], activation=last))
    model = mlpx.Sequential(layers, input_dim=sizes[0], dtype="mixed_bfloat16", seed=0)
    target = y if loss == "cross_entropy" else (y == 1).astype(np.float32)[:, None]
    model.fit(X, target, loss=loss, optimizer="adam", lr=1e-2, epochs=2, batch_size=32,
              verbose=0)
    return model


@pytest.mark.parametrize("case", [
    {}, {"activation": "leaky_relu"}, {"use_bias": False}, {"activation": None},
    {"loss": "mse", "last": "sigmoid", "sizes": (20, 24, 1)},
    *({"activation": a} for a in ROUNDED),
    {"activation": "gelu", "use_bias": False}, {"activation": "tanh", "use_bias": False},
], ids=["relu", "leaky_relu", "no_bias", "identity", "sigmoid_output", *ROUNDED,
        "gelu_no_bias", "tanh_no_bias"])
def test_training_matches_the_float32_saving_path_bit_for_bit(case, monkeypatch):
    chained = _train(True, monkeypatch, **case)
    assert chained._chained is not None
    plain = _train(False, monkeypatch, **case)
    assert plain._chained is None
    for a, b in zip(chained.get_weights(), plain.get_weights(), strict=True):
        np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))


@pytest.mark.parametrize("library", ["mkl", "onednn", "rows"])
def test_native_library_path_matches_too(monkeypatch, library, request):
    request.addfinalizer(_bf16_gemm.forget)  # no route of this test's outlives it
    if library != "rows" and not _bf16_gemm.agrees_with_contract(library):
        pytest.skip(f"{library}'s bfloat16 GEMM is not installed or does not run here")
    monkeypatch.setitem(_bf16_gemm._state, "choice", library)
    if library == "rows":  # every product of up to ROWS_MAX rows, the others emulated
        monkeypatch.setitem(_bf16_gemm._state, "choice", "measured")
        monkeypatch.setenv("MLPX_GEMM_MEASURE", "0")
        monkeypatch.setattr(_bf16_gemm, "ROWS_MAX", 32)
        _bf16_gemm.forget()
    chained = _train(True, monkeypatch)
    plain = _train(False, monkeypatch)
    for a, b in zip(chained.get_weights(), plain.get_weights(), strict=True):
        np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))


def test_hidden_outputs_are_kept_as_bfloat16_bits(monkeypatch):
    model = _train(True, monkeypatch)
    chain = model._chained
    kept = list(chain._bits.values())
    assert [a.dtype for a in kept] == [np.uint16, np.uint16]
    assert [a.size for a in kept] == [32 * 24, 32 * 16]  # one per hidden layer, batch 32
    # no hidden layer keeps a float32 batch-sized array of its own
    for layer in model.layers[:-1]:
        assert layer._z is None and not layer._ws


@pytest.mark.parametrize("activation", ROUNDED + ["relu"])
def test_saved_activations_take_half_the_memory(activation, monkeypatch):
    """The bytes a hidden layer keeps for the backward pass: bfloat16 bits (y, and z where
    f' reads z) against the float32 path's z and y arrays (one array when y overwrites z)."""
    x = np.ones((64, 20), np.float32)  # more rows than training's batches: arrays grow
    chained = _train(True, monkeypatch, activation=activation)
    chained.forward(x, training=True)
    kept16 = sum(a.nbytes for a in [*chained._chained._bits.values(),
                                    *chained._chained._zbits.values()])
    plain = _train(False, monkeypatch, activation=activation)
    plain.forward(x, training=True)
    kept32 = 0
    for layer in plain.layers[:-1]:
        kept32 += sum({id(a): a.nbytes for a in (layer._z, layer._y)}.values())
    assert kept16 * 2 == kept32
    assert len(chained._chained._zbits) == (2 if activation in ("gelu", "silu", "softplus")
                                            else 0)


@pytest.mark.parametrize("layers", [
    [mlpx.Dense(8, activation=mlpx.activations.FunctionActivation(
        lambda z: z * z, lambda z: 2.0 * z, name="square")), mlpx.Dense(2)],
    [mlpx.Dense(8, activation="relu"), mlpx.Dropout(0.1), mlpx.Dense(2)],
    [mlpx.Dense(8, activation="prelu"), mlpx.Dense(2)],
    [mlpx.Dense(8, activation="softmax"), mlpx.Dense(2)],
], ids=["user_activation", "dropout", "prelu", "softmax"])
def test_other_stacks_keep_float32_activations(layers):
    model = mlpx.Sequential(layers, input_dim=4, dtype="mixed_bfloat16", seed=0)
    model.forward(np.ones((3, 4), np.float32))
    assert model._chained is None


def test_float32_and_reference_backend_do_not_use_it():
    x = np.ones((3, 4), np.float32)
    for kw in ({"dtype": "float32"}, {"dtype": "mixed_bfloat16", "backend": "reference"}):
        model = mlpx.MLP([4, 8, 2], seed=0, **kw)
        model.forward(x)
        assert model._chained is None


def _reference_step(model, x, g, name, round_derivative=True):
    """Output and gradients of a one-hidden-layer stack in float64, with the policy's
    roundings: every product's operands rounded to bfloat16, z and y stored as float32, the
    derivative at the bfloat16 z and y (when `round_derivative`)."""
    ops = mlpx.backends.get_backend("reference")
    act = mlpx.activations.get(name)
    W1, b1, W2, b2 = model.get_weights()

    def r(a):
        return round_to_bfloat16(np.asarray(a, np.float32)).astype(np.float64)

    def f32(a):
        return np.asarray(a, np.float32).astype(np.float64)

    z1 = f32(f32(r(x) @ r(W1)) + b1)
    y1 = f32(act.formula(ops, z1))
    out = f32(f32(r(y1) @ r(W2)) + b2)
    dy1 = f32(r(g) @ r(W2).T)
    zd, yd = (r(z1), r(y1)) if round_derivative else (z1, y1)
    d1 = np.asarray(act.derivative(ops, dy1, zd, yd), np.float64)
    return out, [r(x).T @ r(d1), d1.sum(0), r(y1).T @ r(g), g.astype(np.float64).sum(0)]


@pytest.mark.parametrize("name", ROUNDED)
def test_forward_and_backward_against_a_float64_reference(name):
    rng = np.random.default_rng(0)
    model = mlpx.Sequential([mlpx.Dense(48, activation=name), mlpx.Dense(5)], input_dim=32,
                            dtype="mixed_bfloat16", seed=1)
    x = rng.standard_normal((64, 32)).astype(np.float32)
    g = rng.standard_normal((64, 5)).astype(np.float32)
    out = model.forward(x, training=True).copy()
    assert model._chained is not None
    model.backward(g)
    got = [out] + [p.grad.copy() for p in model.parameters()]
    # float32 sums against float64 ones: mlpx check's float32 bound, K * eps32, K = 64
    tol = 64 * 2.0**-23

    def worst(want):
        return max(np.abs(a - b).max() / np.abs(b).max() for a, b in zip(got, want,
                                                                        strict=True))

    out_ref, grads_ref = _reference_step(model, x, g, name)
    assert worst([out_ref, *grads_ref]) <= tol
    # the bound tells the roundings apart: a derivative at float32 z and y is ~1e-3 away
    out_ref, grads_ref = _reference_step(model, x, g, name, round_derivative=False)
    assert worst([out_ref, *grads_ref]) > 10 * tol
