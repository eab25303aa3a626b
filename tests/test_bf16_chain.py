"""mixed_bfloat16 Dense stacks keeping their saved activations in bfloat16
(mlpx.layers.bf16_chain) and the Numba kernels that read and write the bits."""

from __future__ import annotations

import numpy as np
import pytest

import mlpx
from mlpx.backends import _bf16_gemm
from mlpx.backends.bfloat16 import from_bfloat16_bits, round_to_bfloat16, to_bfloat16_bits
from mlpx.layers import bf16_chain


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
], ids=["relu", "leaky_relu", "no_bias", "identity", "sigmoid_output"])
def test_training_matches_the_float32_saving_path_bit_for_bit(case, monkeypatch):
    chained = _train(True, monkeypatch, **case)
    assert chained._chained is not None
    plain = _train(False, monkeypatch, **case)
    assert plain._chained is None
    for a, b in zip(chained.get_weights(), plain.get_weights(), strict=True):
        np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))


def test_native_library_path_matches_too(monkeypatch):
    if not _bf16_gemm.agrees_with_contract("mkl"):
        pytest.skip("MKL's cblas_gemm_bf16bf16f32 is not available here (the mkl extra)")
    monkeypatch.setitem(_bf16_gemm._state, "choice", "mkl")
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


@pytest.mark.parametrize("layers", [
    [mlpx.Dense(8, activation="tanh"), mlpx.Dense(2)],
    [mlpx.Dense(8, activation="relu"), mlpx.Dropout(0.1), mlpx.Dense(2)],
    [mlpx.Dense(8, activation="prelu"), mlpx.Dense(2)],
], ids=["tanh", "dropout", "prelu"])
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
