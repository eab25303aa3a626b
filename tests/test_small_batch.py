"""predict on a few rows runs a Dense chain as one compiled call (mlpx.backends.small_batch):
the same outputs as the layers' path within the GEMM tolerance, the same errors, thread-safe,
with a cut-off measured once per machine and layer sizes."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
from _helpers import with_statistics

import mlpx
from mlpx.backends import small_batch, small_batch_kernels
from mlpx.layers import BatchNorm, Dense, Dropout, LayerNorm, PReLU, Residual


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MLPX_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("MLPX_SMALL_BATCH", "64")  # the chain up to 64 rows, unmeasured


def _layers_path(model, x):
    return model.ops.to_numpy(model._predict(x, 4096))


def _x(rows, cols, dtype=np.float32, seed=1):
    return np.random.default_rng(seed).standard_normal((rows, cols)).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("act", ["relu", "tanh", "sigmoid", "gelu", "leaky_relu", "elu",
                                 "silu", "softplus", "identity"])
def test_chain_matches_the_layers_path(act, dtype):
    model = mlpx.Sequential([Dense(37, activation=act), Dropout(0.2),
                             Dense(19, activation=act, use_bias=False), Dense(5)],
                            input_dim=300, dtype=np.dtype(dtype).name, seed=0)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for rows in (1, 3, 16, 64):
        x = _x(rows, 300, dtype)
        got = model.predict(x)
        assert model._small_batch[1] is not None and got.dtype == dtype
        np.testing.assert_allclose(got, _layers_path(model, x), rtol=tol, atol=tol)


def _blocks(k):
    """The documented input blocks of a layer with k inputs: the largest power of two up to
    k // 256 (1 to 8) of them, equal shares rounded up to a multiple of 4."""
    n = 1
    while n < 8 and 2 * n * 256 <= k:
        n *= 2
    share = math.ceil(k / n)
    step = math.ceil(share / 4) * 4
    return [(min(k, p * step), min(k, p * step + step)) for p in range(n)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_in", [1, 3, 4, 7, 13, 64, 511, 512, 783, 1030, 2049, 4100])
def test_chain_sums_each_block_in_input_order_then_the_blocks(n_in, dtype):
    """The documented summation order, bit for bit: each output adds x[i] * w[i, j] one by
    one to a running sum in the dtype within each block of inputs, then the block sums are
    added in block order; every width (also those that leave a remainder after the unrolled
    rows) and row count."""
    model = mlpx.Sequential([Dense(9, activation="identity")], input_dim=n_in,
                            dtype=np.dtype(dtype).name, seed=3)
    w, b = model.layers[0].W.data, model.layers[0].b.data
    assert len(_blocks(n_in)) == small_batch_kernels.blocks(n_in)
    for rows in (1, 2, 5):
        x = _x(rows, n_in, dtype, seed=rows)
        want = None
        for i0, i1 in _blocks(n_in):
            block = np.zeros((rows, 9), dtype)
            for i in range(i0, i1):
                block = (block + x[:, i:i + 1] * w[i]).astype(dtype)
            want = block if want is None else (want + block).astype(dtype)
        want = (want.astype(np.float64) + b).astype(dtype)
        got = model.predict(x)
        assert model._small_batch[1] is not None
        np.testing.assert_array_equal(got, want)


def test_chain_serves_only_up_to_its_cutoff_and_writes_new_arrays(monkeypatch):
    model = mlpx.MLP([50, 40, 3], seed=0)
    calls = []
    real = small_batch.Chain.__call__
    monkeypatch.setattr(small_batch.Chain, "__call__",
                        lambda self, x: calls.append(x.shape[0]) or real(self, x))
    a = model.predict(_x(2, 50))
    b = model.predict(_x(2, 50))
    assert a is not b and calls == [2, 2]
    model.predict(_x(65, 50))
    model.predict(_x(8, 50), batch_size=4)  # a smaller batch_size than the rows: as asked
    assert calls == [2, 2]
    model.predict(_x(8, 50).T.copy().T)  # not C-contiguous: validated, copied, then chained
    model.predict(_x(7, 50, np.float64))  # another dtype, or a list: likewise
    model.predict(_x(6, 50).tolist())
    assert calls == [2, 2, 8, 7, 6]


def test_mlpx_small_batch_zero_turns_the_chain_off(monkeypatch):
    monkeypatch.setenv("MLPX_SMALL_BATCH", "0")
    model = mlpx.MLP([50, 40, 3], seed=0)
    model.predict(_x(1, 50))
    assert not model._small_batch[1].reach


def test_bad_mlpx_small_batch_says_what_it_takes(monkeypatch):
    monkeypatch.setenv("MLPX_SMALL_BATCH", "few")
    with pytest.raises(ValueError, match="MLPX_SMALL_BATCH='few'.*row count"):
        mlpx.MLP([5, 3], seed=0).predict(_x(1, 5))


def test_the_cutoff_is_measured_once_per_machine_and_sizes(monkeypatch):
    monkeypatch.delenv("MLPX_SMALL_BATCH")
    measured = []

    def fake(chain, layers_path):
        measured.append(tuple(chain.sizes))
        return {"served": [[2, 4]], "chain_s": {}, "layers_s": {}}

    monkeypatch.setattr(small_batch, "_measure", fake)
    for _ in range(2):
        model = mlpx.MLP([30, 20, 3], seed=0)
        model.predict(_x(1, 30))
        assert model._small_batch[1].reach == small_batch.Reach(((2, 4),))
    mlpx.MLP([30, 21, 3], seed=0).predict(_x(1, 30))
    assert measured == [(30, 20, 3), (30, 21, 3)]


def test_the_measurement_compares_both_paths_and_stops_at_the_crossing():
    model = mlpx.MLP([30, 20, 3], seed=0)
    chain = small_batch.chain_of(model)
    entry = small_batch._measure(chain, lambda x: _layers_path(model, x))
    reach = small_batch.Reach.from_json(entry["served"])
    assert reach is not None and reach.largest in (0,) + small_batch.PROBE_ROWS
    assert set(entry["chain_s"]) == set(entry["layers_s"])
    assert all(t > 0 for t in entry["chain_s"].values()) and entry["spread"] >= 1


def test_non_finite_rows_get_the_general_error():
    model = mlpx.MLP([6, 4, 2], seed=0)
    x = _x(2, 6)
    x[1, 2] = np.inf
    with pytest.raises(ValueError, match="1 NaN or infinite"):
        model.predict(x)
    with pytest.raises(ValueError, match="has 5 features"):
        model.predict(_x(1, 5))


@pytest.mark.parametrize("layers", [
    [Dense(8, activation="relu"), Dense(2, activation="log_softmax")],
    [Dense(6, activation="relu"), Residual([Dense(6, activation="relu")]), Dense(2)],
])
def test_other_models_take_the_layers_path(layers):
    model = mlpx.Sequential(layers, input_dim=6, seed=0)
    x = _x(3, 6)
    got = model.predict(x)
    assert model._small_batch[1] is None
    np.testing.assert_array_equal(got, _layers_path(model, x))


def test_new_weights_are_used_at_once():
    model = mlpx.MLP([6, 4, 2], seed=0)
    x = _x(1, 6)
    before = model.predict(x)
    model.set_weights([w * 2 for w in model.get_weights()])
    after = model.predict(x)
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, _layers_path(model, x), rtol=1e-5, atol=1e-6)


def test_threads_predicting_at_once_get_what_serial_calls_get():
    model = mlpx.MLP([40, 64, 64, 3], seed=0)
    xs = [_x(1 + i % 5, 40, seed=i) for i in range(16)]
    want = [model.predict(x) for x in xs]
    wrong = []

    def work(i):
        for _ in range(200):
            j = (i * 7 + _) % len(xs)
            if not np.array_equal(model.predict(xs[j]), want[j]):
                wrong.append(j)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not wrong


def test_predict_proba_and_sklearn_predict_use_it():
    sk = pytest.importorskip("mlpx.sklearn")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 10)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)
    with pytest.warns(Warning):  # few iterations: not converged
        est = sk.MLPClassifier(hidden_layer_sizes=(16,), max_iter=5, random_state=0).fit(X, y)
    few = est.predict_proba(X[:3])
    np.testing.assert_allclose(few, est.predict_proba(X)[:3], rtol=1e-5, atol=1e-6)
    assert est.predict(X[:3]).tolist() == est.predict(X)[:3].tolist()
    assert est.predict_proba(X[:3].astype(np.float64)).shape == (3, 3)
    bad = X[:2].copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        est.predict(bad)
    model = est.model_
    np.testing.assert_allclose(model.predict_proba(X[:2]).sum(axis=1), 1.0, rtol=1e-6)


def test_a_choice_measured_on_a_busy_machine_is_not_kept_on_disk(monkeypatch, tmp_path):
    from mlpx.backends import measured

    monkeypatch.setenv("MLPX_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(measured, "busy", lambda: True)
    entry = measured.store("q", "k", {"max_rows": 64})
    assert measured.lookup("q", "k") == entry  # this process uses it
    assert measured.read_all("q") == {}  # the next one measures again
    monkeypatch.setattr(measured, "busy", lambda: False)
    measured.store("q", "k2", {"max_rows": 2})
    assert measured.read_all("q")["k2"]["max_rows"] == 2
    assert measured.overloaded(4.5, 2) and not measured.overloaded(3.9, 2)


def test_a_choice_measured_with_wildly_spread_rounds_is_not_kept_on_disk(monkeypatch,
                                                                          tmp_path):
    from mlpx.backends import measured

    monkeypatch.setenv("MLPX_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(measured, "busy", lambda: False)  # the load average missed it
    entry = measured.store("q", "k", {"max_rows": 0, "spread": measured.SPREAD_MAX * 3})
    assert measured.lookup("q", "k") == entry and measured.read_all("q") == {}
    measured.store("q", "k2", {"max_rows": 8, "spread": 1.3})
    assert measured.read_all("q")["k2"]["max_rows"] == 8


def test_a_choice_with_one_way_ten_times_slower_is_not_kept_on_disk(monkeypatch, tmp_path):
    """Every call of one way 16 ms, its rounds alike: a pool launch waiting on a worker that
    other work kept off its CPU, not what the way costs; the next process measures again."""
    from mlpx.backends import measured

    monkeypatch.setenv("MLPX_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(measured, "busy", lambda: False)
    assert measured.gap({1: 16e-3, 2: 16e-3}, {1: 2e-4, 2: 4e-4}) == 80.0
    assert measured.gap({1: 1e-4}, {1: 3e-4, 2: 1.0}) == 3.0  # only sizes both timed
    entry = measured.store("q", "k", {"served": [], "spread": 1.2, "gap": 80.0})
    assert measured.lookup("q", "k") == entry and measured.read_all("q") == {}
    measured.store("q", "k2", {"served": [[1, 8]], "spread": 1.2, "gap": 3.0})
    assert measured.read_all("q")["k2"]["served"] == [[1, 8]]


def test_the_measurements_report_their_gap(monkeypatch):
    import time

    def slow(x):
        end = time.perf_counter() + 2e-4
        while time.perf_counter() < end:
            pass

    from mlpx.backends import measured

    model = mlpx.MLP([30, 20, 3], seed=0)
    entry = small_batch._measure(small_batch.chain_of(model), slow)
    assert entry["gap"] == measured.gap(entry["chain_s"], entry["layers_s"]) > 1


def test_the_spread_is_the_widest_ratio_of_one_sides_rounds(monkeypatch):
    import time

    calls = []

    def candidate(x):  # its first timed round 10x slower than the others
        calls.append(1)
        end = time.perf_counter() + (1e-4 if len(calls) <= 102 else 1e-5)
        while time.perf_counter() < end:
            pass

    won, _, _, spread = small_batch.alternated_wins(
        candidate, lambda x: None, (1,), 4, np.float32, rounds=4)
    assert won == [] and spread > 3


@pytest.mark.parametrize("change", ["activation", "layer"])
def test_a_layer_or_activation_swapped_after_a_prediction_is_used(change):
    X = np.random.default_rng(0).standard_normal((70, 8)).astype(np.float32)
    model = mlpx.MLP([8, 16, 3], seed=0)
    model.predict(X[:1])  # builds the compiled chain for one row
    if change == "activation":
        model.layers[0].activation = mlpx.activations.get("tanh")
    else:
        model.layers[0] = mlpx.Dense(16, activation="tanh")
        model.layers[0].build(8, model.ops, model.dtype, np.random.default_rng(1))
    np.testing.assert_allclose(model.predict(X[:1]), model.predict(X)[:1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layers", [
    [Dense(32, activation="relu"), Dense(16, activation="tanh"), Dense(3)],
    [Dense(8), BatchNorm(), Dense(2)],
    [Dense(8), mlpx.layers.LayerNorm(), Dropout(0.3), Dense(2, activation="softmax")],
    [Dense(8, activation="prelu"), PReLU(), Dense(2)],
])
def test_rows_above_the_cutoff_skip_the_general_path_with_the_same_bits(layers, monkeypatch):
    monkeypatch.setenv("MLPX_SMALL_BATCH", "2")
    model = mlpx.Sequential(layers, input_dim=20, seed=0)
    model.predict(_x(1, 20))
    general = []
    monkeypatch.setattr(model, "_check_X", lambda X, *a: general.append(1) or X)
    for rows in (1, 3, 16, 64):
        x = _x(rows, 20, seed=rows)
        got = model.predict(x)
        assert got is not x and got.dtype == np.float32 and got.flags.writeable
        if rows > 2 or model._small_batch[1] is None:  # the layers' own path: to the bit
            np.testing.assert_array_equal(got, _layers_path(model, x))
    assert not general  # no conversion, no checks beyond the rows' width and values
    model.predict(_x(65, 20))
    assert general == [1]


def test_only_dropout_layers_return_a_new_array_not_the_input():
    model = mlpx.Sequential([Dropout(0.5)], input_dim=4, seed=0)
    x = _x(3, 4)
    got = model.predict(x)
    assert got is not x
    np.testing.assert_array_equal(got, x)


@pytest.mark.parametrize("small_batch", ["1", "0"])
def test_non_finite_rows_above_the_cutoff_get_the_general_error(small_batch, monkeypatch):
    monkeypatch.setenv("MLPX_SMALL_BATCH", small_batch)
    for layers in ([Dense(4), Dense(2)], [Dense(4), BatchNorm(), Dense(2)]):
        model = mlpx.Sequential(layers, input_dim=6, seed=0)
        x = _x(8, 6)
        x[5, 1] = np.nan
        with pytest.raises(ValueError, match="1 NaN or infinite"):
            model.predict(x)


def test_sklearn_estimators_skip_validate_data_above_the_cutoff(monkeypatch):
    sk = pytest.importorskip("mlpx.sklearn")
    monkeypatch.setenv("MLPX_SMALL_BATCH", "1")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((80, 10)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)
    with pytest.warns(Warning):  # few iterations: not converged
        clf = sk.MLPClassifier(hidden_layer_sizes=(16,), max_iter=3, random_state=0).fit(X, y)
        reg = sk.MLPRegressor(hidden_layer_sizes=(16,), max_iter=3, random_state=0).fit(
            X, X[:, 0])
    want = clf.predict_proba(X)[:40], clf.predict(X)[:40], reg.predict(X)[:40]
    validated = []
    real = sk._BaseMLP._validate_X
    monkeypatch.setattr(sk._BaseMLP, "_validate_X",
                        lambda self, X, reset: validated.append(1) or real(self, X, reset))
    got = clf.predict_proba(X[:40]), clf.predict(X[:40]), reg.predict(X[:40])
    assert not validated
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)
    assert got[1].tolist() == want[1].tolist()
    np.testing.assert_allclose(got[2], want[2], rtol=1e-5, atol=1e-6)


def test_a_reach_covers_the_sizes_up_to_each_probe_it_won():
    probes = small_batch.PROBE_ROWS
    reach = small_batch.Reach.of_probes([2, 4, 8, 32], probes)
    assert reach.spans == ((2, 8), (17, 32)) and str(reach) == "2-8, 17-32"
    assert [r for r in range(1, 70) if r in reach] == [*range(2, 9), *range(17, 33)]
    assert reach.largest == 32 and small_batch.Reach.of_probes([1], probes).spans == ((1, 1),)
    assert not small_batch.Reach.of_probes([], probes) and small_batch.Reach().largest == 0
    assert small_batch.Reach.up_to(5).spans == ((1, 5),) and not small_batch.Reach.up_to(0)
    assert small_batch.Reach.from_json(reach.to_json()) == reach


@pytest.mark.parametrize("stored", [None, 4, [[1]], [[1, "2"]], {"a": 1}, [[1, 2.0]]])
def test_a_stored_reach_of_another_shape_is_measured_again(stored):
    assert small_batch.Reach.from_json(stored) is None


def test_mlpx_info_lists_the_sizes_each_model_is_served_at(monkeypatch):
    from mlpx.backends import cpu_choices, measured

    monkeypatch.delenv("MLPX_SMALL_BATCH")
    assert "none yet" in cpu_choices._small_batch_line()
    key = measured.machine_key("method 10", "sizes 784-512-10")
    measured.store(small_batch.QUESTION, key, {"served": [[2, 64]]})
    measured.store(small_batch.QUESTION, measured.machine_key("sizes 9-3"), {"max_rows": 4})
    line = cpu_choices._small_batch_line()
    assert "784-512-10: 2-64" in line and "9-3" not in line  # an older method's entry: none
    monkeypatch.setenv("MLPX_SMALL_BATCH", "16")
    assert "up to 16 rows (MLPX_SMALL_BATCH)" in cpu_choices._small_batch_line()


def test_slow_calls_are_timed_in_fewer_rounds(monkeypatch):
    calls = {"candidate": 0, "incumbent": 0}

    def way(name, seconds):
        def call(x):
            calls[name] += 1
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                pass
        return call

    monkeypatch.setattr(small_batch, "SLOW_CALL_S", 1e-3)
    small_batch.alternated_wins(way("candidate", 2e-3), way("incumbent", 2e-3), (1,), 4,
                                np.float32, rounds=7)
    # warm-up 1 + 3 rounds x (1 untimed + 3 timed); the incumbent 3 more to size the calls
    assert calls == {"candidate": 13, "incumbent": 16}


_OP_MODELS = {
    "batchnorm": lambda: [Dense(40, activation="relu"), BatchNorm(), Dense(5)],
    "layernorm": lambda: [Dense(40, activation="tanh"), LayerNorm(), Dropout(0.2), Dense(5)],
    "prelu-dense": lambda: [Dense(40, activation="prelu"), Dense(30, activation="prelu",
                                                                 use_bias=False), Dense(5)],
    "prelu-layer": lambda: [Dense(40), BatchNorm(), PReLU(), Dense(5)],
    "on-the-input": lambda: [BatchNorm(), LayerNorm(), Dense(40, activation="relu"), Dense(5)],
    "softmax": lambda: [Dense(40, activation="relu"), Dense(5, activation="softmax")],
    "softmax-then-norm": lambda: [Dense(40, activation="softmax", use_bias=False), LayerNorm(),
                                  Dense(5, activation="softmax")],
    "everywhere": lambda: [BatchNorm(), Dense(600, activation="relu"), LayerNorm(),
                           Dense(30, activation="prelu"), BatchNorm(), PReLU(), Dense(5),
                           LayerNorm()],
}


# every model in float32; in float64 the two that hold every op kind (each structure is a
# compilation of its own, seconds on a cold cache)
_OP_CASES = [(name, np.float32) for name in sorted(_OP_MODELS)] + [
    ("everywhere", np.float64), ("softmax-then-norm", np.float64)]


@pytest.mark.parametrize(("name", "dtype"), _OP_CASES)
def test_norm_and_prelu_layers_run_inside_the_chain(name, dtype):
    """BatchNorm, LayerNorm and PReLU (layer or activation) run between the chain's Dense
    layers: the layers' path's outputs within the GEMM tolerance."""
    model = with_statistics(mlpx.Sequential(_OP_MODELS[name](), input_dim=300,
                                             dtype=np.dtype(dtype).name, seed=0))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for rows in (1, 3, 16, 64):
        x = _x(rows, 300, dtype, seed=rows)
        got = model.predict(x)
        assert model._small_batch[1] is not None and got.dtype == dtype
        np.testing.assert_allclose(got, _layers_path(model, x), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_chains_ops_are_the_layers_own_bits(dtype):
    """Each op in the chain computes what its layer's `infer` computes from the same input,
    to the bit: the chain equals Dense-only chains with the layers' own ops between them."""
    layers = [BatchNorm(), Dense(37, activation="relu"), LayerNorm(), Dense(23, activation="prelu"),
              BatchNorm(), PReLU(), Dense(4)]
    model = with_statistics(mlpx.Sequential(layers, input_dim=513,
                                             dtype=np.dtype(dtype).name, seed=0))
    x = _x(5, 513, dtype)
    got = model.predict(x)
    assert model._small_batch[1] is not None
    want = x
    for layer in model.layers:
        if isinstance(layer, Dense):  # the Dense chain of that layer alone
            one = mlpx.Sequential([Dense(layer.units, use_bias=layer.b is not None,
                                         activation="identity" if layer.slopes is not None
                                         else layer.activation)],
                                  input_dim=want.shape[1], dtype=np.dtype(dtype).name)
            one.layers[0].W.data[...] = layer.W.data
            if layer.b is not None:
                one.layers[0].b.data[...] = layer.b.data
            want = one.predict(np.ascontiguousarray(want))
            assert one._small_batch[1] is not None
            if layer.slopes is not None:
                want = model.ops.to_numpy(layer.ops.bias_act(
                    want, None, layer.activation, out=np.empty_like(want),
                    slopes=layer.slopes.data))
        else:
            want = layer.infer(want)
    np.testing.assert_array_equal(got, want)


def test_swapped_norm_statistics_and_parameters_are_used_at_once():
    model = mlpx.Sequential([Dense(8, activation="relu"), BatchNorm(), LayerNorm(), PReLU(),
                             Dense(2)], input_dim=6, seed=0)
    x = _x(2, 6)
    before = model.predict(x)
    with_statistics(model, seed=9)
    bn = model.layers[1]
    bn.running_var = bn.running_var * 4  # a new array, as a checkpoint's buffers
    after = model.predict(x)
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, _layers_path(model, x), rtol=1e-5, atol=1e-6)


def test_a_norm_array_of_another_dtype_takes_the_layers_path():
    """A running statistic of another dtype (assigned by hand) cannot enter the compiled
    chain: the layers' path serves, correctly."""
    model = with_statistics(mlpx.Sequential([Dense(8, activation="relu"), BatchNorm(),
                                              Dense(2)], input_dim=6, seed=0))
    bn = model.layers[1]
    bn.running_mean = bn.running_mean.astype(np.float64)
    x = _x(3, 6)
    np.testing.assert_array_equal(model.predict(x), _layers_path(model, x))


def test_the_cutoff_is_measured_apart_for_a_chain_with_ops():
    plain = small_batch.chain_of(mlpx.MLP([6, 8, 2], seed=0))
    normed = small_batch.chain_of(mlpx.Sequential([Dense(8), LayerNorm(), Dense(2)],
                                                  input_dim=6, seed=0))
    assert plain.label == "sizes 6-8-2"
    assert normed.label == "sizes 6-8-2 ops 1:LayerNorm"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_softmax_the_chain_cannot_compute_goes_to_the_layers_path(dtype):
    """Logits that overflow to infinity: the chain's softmax refuses them (nothing
    trustworthy written) and the layers' path computes what it always did."""
    model = mlpx.Sequential([Dense(8, activation="relu"), Dense(3, activation="softmax")],
                            input_dim=6, dtype=np.dtype(dtype).name, seed=0)
    model.layers[1].W.data[...] = np.finfo(dtype).max
    x = np.abs(_x(2, 6, dtype)) + 1
    with np.errstate(all="ignore"):  # the layers' path overflows, as it always did
        got = model.predict(x)
        want = _layers_path(model, x)
    assert model._small_batch[1] is not None and not np.isfinite(got).all()
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("act", ["relu", "tanh", "sigmoid", "gelu", "leaky_relu", "elu",
                                 "silu", "softplus", "identity"])
def test_the_chains_activation_is_the_cpu_backends_bit_for_bit(act, dtype):
    """The chain's activation of a layer's pre-activation is the cpu backend's kernel's
    (vectorised rows for float32 tanh, sigmoid, ELU and SiLU; one value at a time else)."""
    model = mlpx.Sequential([Dense(700, activation=act)], input_dim=33,
                            dtype=np.dtype(dtype).name, seed=2)
    linear = mlpx.Sequential([Dense(700, activation="identity")], input_dim=33,
                             dtype=np.dtype(dtype).name, seed=2)
    linear.set_weights(model.get_weights())
    x = _x(3, 33, dtype) * 3
    z = linear.predict(x)
    want = np.empty_like(z)
    model.ops.bias_act(z, None, model.layers[0].activation, out=want)
    got = model.predict(x)
    assert model._small_batch[1] is not None and linear._small_batch[1] is not None
    np.testing.assert_array_equal(got, want)
