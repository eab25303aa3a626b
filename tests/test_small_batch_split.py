"""The small-batch chain shared between threads (mlpx.backends.small_batch_split): the serial
chain's bits on any thread count, safe with several Python threads predicting at once, and
chosen only where measured faster (or forced by MLPX_SMALL_BATCH_SPLIT)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from _helpers import with_statistics

import mlpx
from mlpx.backends import small_batch, small_batch_kernels, small_batch_split
from mlpx.backends import small_batch_split_kernels as split_kernels
from mlpx.layers import BatchNorm, Dense, Dropout, LayerNorm, PReLU


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MLPX_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("MLPX_SMALL_BATCH", "64")  # the chain up to 64 rows, unmeasured
    monkeypatch.delenv("MLPX_SMALL_BATCH_SPLIT", raising=False)


def _x(rows, cols, dtype=np.float32, seed=1):
    return np.random.default_rng(seed).standard_normal((rows, cols)).astype(dtype)


IN = 600  # two blocks of inputs (small_batch_kernels.blocks), 2.6 MB of first-layer weights


def _model(dtype="float32"):
    """Inputs of 2 blocks into a layer worth threads, 1100 inputs (4 blocks) into a layer
    too small for threads, and a narrow top."""
    return mlpx.Sequential([Dense(1100, activation="tanh"), Dropout(0.1),
                            Dense(29, activation="relu", use_bias=False), Dense(5)],
                           input_dim=IN, dtype=dtype, seed=0)


def _narrow_model():
    return mlpx.Sequential([Dense(100, activation="tanh"), Dense(5)], input_dim=60, seed=0)


def _chain_args(chain, rows):
    ws = tuple(d.W.data for d in chain.layers)
    bs = tuple(d.b.data if d.b is not None else z
               for d, z in zip(chain.layers, chain._no_bias, strict=True))
    outs = tuple(np.full((rows, n), np.nan, chain.dtype) for n in chain.sizes[1:])
    sums = tuple(np.full((small_batch_kernels.blocks(k), rows, n), np.nan, chain.dtype)
                 for k, n in zip(chain.sizes[:-1], chain.sizes[1:], strict=True))
    return ws, bs, outs, sums


def test_the_model_has_layers_of_several_blocks_threaded_and_not():
    blocks = [small_batch_kernels.blocks(k) for k in (IN, 1100, 29)]
    assert blocks == [2, 4, 1]
    assert IN * 1100 * 4 >= split_kernels.THREAD_MIN_BYTES > 1100 * 29 * 8


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("threads", [1, 2])
def test_any_thread_count_gives_the_serial_chains_bits(dtype, threads):
    import numba

    chain = small_batch.chain_of(_model(dtype))
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    for rows in (1, 4, 17, 64):
        x = _x(rows, IN, dtype, seed=rows)
        ws, bs, serial, sums = _chain_args(chain, rows)
        _, _, split, sums2 = _chain_args(chain, rows)
        assert small_batch_kernels.dense_chain(x, ws, bs, chain.has_bias, chain.codes,
                                               chain.alphas, serial, sums, None)
        assert split_kernels.dense_chain_split(x, ws, bs, chain.has_bias, chain.codes,
                                               chain.alphas, split, sums2, None)
        for a, b in zip(serial, split, strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("threads", [1, 2])
def test_the_ops_between_layers_give_the_serial_chains_bits(threads):
    """BatchNorm, LayerNorm and PReLU between (and before) the threaded chain's layers run
    in the calling thread: the serial chain's bits."""
    import numba

    model = mlpx.Sequential([LayerNorm(), Dense(1100, activation="prelu"), BatchNorm(),
                             Dropout(0.1), Dense(29, activation="relu"), PReLU(), Dense(5)],
                            input_dim=IN, seed=0)
    chain = small_batch.chain_of(with_statistics(model, seed=4))
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    for rows in (1, 4, 17):
        x = _x(rows, IN, seed=rows)
        serial = chain._compute(x, False).copy()
        np.testing.assert_array_equal(chain._compute(x, True), serial)


def test_block_sums_are_added_in_block_order():
    """The documented order, bit for bit: each block's products one by one in input order,
    then the block sums added in block order (IN = 600 inputs: blocks [0, 300), [300, 600))."""
    chain = small_batch.chain_of(_model())
    layer = chain.layers[0]
    w, b = layer.W.data, layer.b.data
    x = _x(3, IN, seed=9)
    halves = []
    for i0, i1 in ((0, 300), (300, IN)):
        acc = np.zeros((3, w.shape[1]), np.float32)
        for i in range(i0, i1):
            acc = (acc + x[:, i:i + 1] * w[i]).astype(np.float32)
        halves.append(acc)
    z = ((halves[0] + halves[1]).astype(np.float64) + b).astype(np.float32)
    want = np.tanh(z.astype(np.float64)).astype(np.float32)
    ws, bs, outs, sums = _chain_args(chain, 3)
    assert split_kernels.dense_chain_split(x, ws, bs, chain.has_bias, chain.codes,
                                           chain.alphas, outs, sums, None)
    np.testing.assert_array_equal(outs[0], want)


def test_non_finite_rows_are_refused_as_by_the_serial_chain():
    chain = small_batch.chain_of(_model())
    x = _x(3, IN)
    x[2, 7] = np.inf
    ws, bs, outs, sums = _chain_args(chain, 3)
    assert not split_kernels.dense_chain_split(x, ws, bs, chain.has_bias, chain.codes,
                                               chain.alphas, outs, sums, None)


def test_forced_split_serves_predict_with_the_same_bits(monkeypatch):
    model = _model()
    xs = [_x(r, IN, seed=r) for r in (1, 3, 16, 64)]
    monkeypatch.setenv("MLPX_SMALL_BATCH_SPLIT", "0")
    want = [model.predict(x) for x in xs]
    assert not model._small_batch[1].split_reach
    monkeypatch.setenv("MLPX_SMALL_BATCH_SPLIT", "16")
    model = _model()
    runs = []
    real = small_batch_split.run
    monkeypatch.setattr(small_batch_split, "run",
                        lambda x, *a: runs.append(x.shape[0]) or real(x, *a))
    got = [model.predict(x) for x in xs]
    assert model._small_batch[1].split_reach.largest == 16 and runs == [1, 3, 16]  # 64: serial
    for a, b in zip(want, got, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_busy_split_chain_sends_other_threads_to_the_serial_one(monkeypatch):
    monkeypatch.setenv("MLPX_SMALL_BATCH_SPLIT", "64")
    model = _model()
    x = _x(2, IN)
    want = model.predict(x)
    with small_batch_split._busy:  # as if another thread were inside the split chain
        assert small_batch_split.run(x, (), (), (), (), (), (), (), (), 2) is None
        np.testing.assert_array_equal(model.predict(x), want)


def test_threads_predicting_at_once_get_what_serial_calls_get(monkeypatch):
    monkeypatch.setenv("MLPX_SMALL_BATCH_SPLIT", "64")
    model = _model()
    xs = [_x(r, IN, seed=r) for r in (1, 2, 5, 8, 33, 64)]
    want = [model.predict(x) for x in xs]
    errors, barrier = [], threading.Barrier(4)

    def work(seed):
        try:
            barrier.wait()
            order = np.random.default_rng(seed).permutation(len(xs))
            for _ in range(30):
                for i in order:
                    np.testing.assert_array_equal(model.predict(xs[i]), want[i])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_only_wide_layers_and_several_threads_are_worth_measuring():
    assert small_batch_split.worth_measuring([784, 1024, 1024, 10], 4, 2)
    assert not small_batch_split.worth_measuring([784, 256, 128, 10], 4, 2)  # 0.8 MB
    assert small_batch_split.worth_measuring([784, 256, 128, 10], 8, 2)  # float64: 1.6 MB
    assert not small_batch_split.worth_measuring([784, 1024, 1024, 10], 4, 1)
    # 4.8 MB of weights, but their 300 inputs make one block (the top's 160 kB: too small)
    assert not small_batch_split.worth_measuring([300, 4000, 10], 4, 2)


def _timed(seconds_per_row):
    """A stand-in path whose call takes `seconds_per_row(rows)`."""
    def path(x):
        end = time.perf_counter() + seconds_per_row(x.shape[0])
        while time.perf_counter() < end:
            pass
    return path


def _served(entry):
    return small_batch.Reach.from_json(entry["served"])


def test_the_measurement_keeps_the_split_only_where_it_won():
    serial = _timed(lambda rows: 40e-6)
    split = _timed(lambda rows: 20e-6 if rows <= 4 else 60e-6)
    got = small_batch_split._measure(serial, split, 8, np.dtype(np.float32), 64,
                                     small_batch.PROBE_ROWS)
    # two losses in a row (8, 16 rows) end the measurement
    assert _served(got).spans == ((1, 4),) and set(got["split_s"]) == {1, 2, 4, 8, 16}
    slower = _timed(lambda rows: 50e-6)
    got = small_batch_split._measure(serial, slower, 8, np.dtype(np.float32), 64,
                                     small_batch.PROBE_ROWS)
    assert not _served(got) and set(got["split_s"]) == {1, 2}
    got = small_batch_split._measure(serial, split, 8, np.dtype(np.float32), 2,
                                     small_batch.PROBE_ROWS)  # never past the cut-off
    assert _served(got).spans == ((1, 2),) and set(got["split_s"]) == {1, 2}


def test_a_loss_at_one_row_does_not_hide_the_wins_above_it():
    """The threaded chain ties at 1 row (its launch costs what the second core saves) and
    wins from 2 rows on: it serves 2 rows and up, and 1 row stays serial."""
    serial = _timed(lambda rows: 40e-6 * rows)
    split = _timed(lambda rows: 45e-6 if rows == 1 else 25e-6 * rows)
    got = small_batch_split._measure(serial, split, 8, np.dtype(np.float32), 16,
                                     small_batch.PROBE_ROWS)
    reach = _served(got)
    assert reach.spans == ((2, 16),) and 1 not in reach and 2 in reach and 11 in reach


def test_the_choice_is_measured_once_per_machine_and_sizes(monkeypatch):
    measured = []
    monkeypatch.setattr(small_batch_split, "parts", lambda: 2)
    monkeypatch.setattr(small_batch_split, "_measure",
                        lambda *a: measured.append(a[3]) or {"served": [[1, 8]]})
    monkeypatch.setattr("mlpx.backends.measured.busy", lambda: False)
    for _ in range(2):
        model = _model()
        model.predict(_x(1, IN))
        assert model._small_batch[1].split_reach.largest == 8
    assert measured == [np.dtype(np.float32)]  # measured once, then read back
    model = _model("float64")
    model.predict(_x(1, IN, np.float64))
    assert len(measured) == 2


def test_one_thread_or_narrow_layers_are_never_split(monkeypatch):
    monkeypatch.setattr(small_batch_split, "_measure", lambda *a: pytest.fail("measured"))
    model = _narrow_model()  # every weight matrix far below MIN_BYTES
    model.predict(_x(1, 60))
    assert not model._small_batch[1].split_reach
    monkeypatch.setattr(small_batch_split, "MIN_BYTES", 1)  # wide enough, but one block
    model = _narrow_model()
    model.predict(_x(1, 60))
    assert not model._small_batch[1].split_reach
    monkeypatch.setattr(small_batch_split, "parts", lambda: 1)
    model = _model()
    model.predict(_x(1, IN))
    assert not model._small_batch[1].split_reach


def test_bad_mlpx_small_batch_split_says_what_it_takes(monkeypatch):
    monkeypatch.setenv("MLPX_SMALL_BATCH_SPLIT", "two")
    with pytest.raises(ValueError, match="MLPX_SMALL_BATCH_SPLIT='two' is not a row count"):
        _model().predict(_x(1, IN))


def test_the_guard_gives_up_after_strikes_in_a_row():
    guard = small_batch_split.Guard({1: 10e-6, 4: 20e-6})
    assert guard.limit(1) == 20e-6 and guard.limit(3) == 40e-6 and guard.limit(9) is None
    t = 100.0
    assert guard.keep(1, 50e-6, t) and guard.keep(1, 50e-6, t + 0.1)
    assert guard.keep(2, 30e-6, t + 0.2)  # within the limit: the strikes start again
    assert guard.keep(1, 50e-6, t + 1) and guard.keep(1, 50e-6, t + 1.2)
    assert guard.keep(4, 1.0, t + 1.3)  # three strikes, but slow for 0.3 s only
    assert not guard.keep(4, 1e-3, t + 1.6)  # slow for 0.6 s: given up
    assert guard.keep(9, 1.0)  # beyond the measured sizes: not guarded


def test_the_guard_rides_out_the_spin_after_a_large_batch():
    """Right after a GEMM, OpenBLAS's threads spin ~0.1 s and each launch waits ms for a CPU:
    many slow calls in 0.1 s keep the threaded chain."""
    guard = small_batch_split.Guard({1: 100e-6})
    t = 0.0
    for _ in range(50):
        t += 2e-3
        assert guard.keep(1, 2e-3, t)
    assert guard.keep(1, 100e-6, t + 1e-4)


def test_a_split_chain_far_slower_than_measured_turns_serial(monkeypatch):
    monkeypatch.setattr(small_batch_split, "parts", lambda: 2)
    monkeypatch.setattr(small_batch_split.Guard, "SUSTAINED", 0.0)  # strikes alone decide
    monkeypatch.setattr(small_batch_split, "_measure",  # a serial chain measured at 1 ns
                        lambda *a: {"served": [[1, 4]],
                                    "serial_s": {1: 1e-9, 2: 1e-9, 4: 1e-9}})
    model = _model()
    x = _x(2, IN)
    want = small_batch.chain_of(model)._compute(x, False)
    runs = []
    real = small_batch_split.run
    monkeypatch.setattr(small_batch_split, "run",
                        lambda x, *a: runs.append(x.shape[0]) or real(x, *a))
    for _ in range(5):
        np.testing.assert_array_equal(model.predict(x), want)
    assert runs == [2, 2, 2] and not model._small_batch[1].split_reach


def test_a_forked_child_runs_the_serial_chain(monkeypatch):
    monkeypatch.setenv("MLPX_SMALL_BATCH_SPLIT", "64")
    model = _model()
    x = _x(3, IN)
    want = model.predict(x)
    monkeypatch.setitem(small_batch_split._state, "forked", False)
    small_batch_split._forked()  # what the fork hook does in the child
    assert small_batch_split.run(x, (), (), (), (), (), (), (), (), 2) is None
    np.testing.assert_array_equal(model.predict(x), want)


def test_the_threaded_choice_comes_first_and_the_cutoff_measures_that_chain(monkeypatch):
    """A model whose serial chain loses to the GEMM path but whose threaded chain wins
    still gets the chain: the cut-off is measured on the chain as configured."""
    monkeypatch.delenv("MLPX_SMALL_BATCH")
    monkeypatch.setattr(small_batch_split, "parts", lambda: 2)
    monkeypatch.setattr("mlpx.backends.measured.busy", lambda: False)
    order = []
    monkeypatch.setattr(small_batch_split, "_measure", lambda serial, split, width, dtype,
                        max_rows, probe: order.append(("split", max_rows)) or {
                            "served": [[2, 4]], "serial_s": {1: 1.0}})

    def cutoff(chain, layers_path):
        order.append(("cutoff", str(chain.split_reach)))
        return {"served": [[1, 8]]}

    monkeypatch.setattr(small_batch, "_measure", cutoff)
    model = _model()
    model.predict(_x(1, IN))
    chain = model._small_batch[1]
    assert order == [("split", small_batch.PROBE_ROWS[-1]), ("cutoff", "2-4")]
    assert (str(chain.reach), str(chain.split_reach)) == ("1-8", "2-4")
    model = _model()  # read back, not measured again
    model.predict(_x(1, IN))
    assert len(order) == 2 and model._small_batch[1].reach.largest == 8


def test_a_forced_cutoff_of_zero_measures_nothing(monkeypatch):
    monkeypatch.setenv("MLPX_SMALL_BATCH", "0")
    monkeypatch.setattr(small_batch_split, "parts", lambda: 2)
    monkeypatch.setattr(small_batch_split, "_measure", lambda *a: pytest.fail("measured"))
    model = _model()
    model.predict(_x(1, IN))
    assert not model._small_batch[1].reach


def test_a_new_thread_count_rebuilds_the_chain(monkeypatch):
    """set_num_threads(1) after a prediction: the threaded chain is not used on one thread
    (it was measured and configured for the old count)."""
    from mlpx.backends import threads

    monkeypatch.setenv("MLPX_SMALL_BATCH_SPLIT", "64")
    requested = threads._requested  # what set_num_threads leaves behind, restored below
    mlpx.set_num_threads(2)
    try:
        model = _model()
        x = _x(1, IN)
        want = model.predict(x)
        assert model._small_batch[1].parts == min(2, small_batch_split.parts())
        mlpx.set_num_threads(1)
        monkeypatch.setattr(small_batch_split, "worth_measuring", lambda *a: False)
        monkeypatch.delenv("MLPX_SMALL_BATCH_SPLIT")
        np.testing.assert_array_equal(model.predict(x), want)  # the same bits, one thread
        chain = model._small_batch[1]
        assert chain.parts == 1 and not chain.split_reach
    finally:
        threads._requested = requested
        threads.apply(force=True)


def test_the_cutoff_times_the_serial_chain_scaled_by_the_threaded_ratio(monkeypatch):
    """The threaded chain is never timed right after the GEMM path (whose spinning threads
    would make it wait): the serial chain is, scaled where the threaded one serves."""
    chain = small_batch.chain_of(_model())
    runs = []
    serial = _timed(lambda rows: 60e-6)
    monkeypatch.setattr(chain, "_compute", lambda x, split: runs.append(split) or serial(x))
    chain.split_ratio = {1: 0.5}  # the threaded chain serves 1 row, at half the time
    entry = small_batch._measure(chain, _timed(lambda rows: 40e-6))
    reach = small_batch.Reach.from_json(entry["served"])
    assert runs and not any(runs)
    assert reach.spans == ((1, 1),) and set(entry["chain_s"]) == {1, 2, 4}
    assert entry["chain_s"][1] < entry["layers_s"][1] < entry["chain_s"][2]


def test_the_threaded_ratio_comes_from_the_split_measurement(monkeypatch):
    monkeypatch.setattr(small_batch_split, "parts", lambda: 2)
    monkeypatch.setattr(small_batch_split, "_measure", lambda *a: {
        "served": [[2, 4]], "serial_s": {1: 1e-4, 2: 2e-4, 4: 4e-4, 8: 8e-4},
        "split_s": {1: 2e-4, 2: 1e-4, 4: 3e-4, 8: 9e-4}})
    chain = small_batch.chain_of(_model())
    chain.choose_split(64)
    assert chain.split_ratio == pytest.approx({2: 0.5, 4: 0.75})  # the sizes it serves only


def test_the_split_chain_is_run_until_quick_before_it_is_measured():
    """Its first launches after GEMMs wait on OpenBLAS's spinning threads: the measurement
    starts once three calls in a row are quick, or after SETTLE_S."""
    calls = []

    def split(x):
        calls.append(1)
        end = time.perf_counter() + (2e-3 if len(calls) <= 5 else 1e-5)
        while time.perf_counter() < end:
            pass

    small_batch_split._settle(_timed(lambda rows: 1e-4), split, 8, np.dtype(np.float32))
    assert len(calls) == 8  # 5 slow, then 3 quick
    calls.clear()
    slow = _timed(lambda rows: 5e-3)
    start = time.perf_counter()
    small_batch_split._settle(_timed(lambda rows: 1e-4), slow, 8, np.dtype(np.float32),
                              most=0.05)
    assert 0.05 <= time.perf_counter() - start < 0.5
