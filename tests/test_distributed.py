"""mlpx.distributed without an MPI launcher: the hooks, the checks, the NCCL engine's calls
(with a fake NCCL), the watchdog, and `distributed=True` in a process that runs alone.
Real multi-process runs: tests/test_distributed_mpi.py."""

from __future__ import annotations

import sys
import threading
import time
import warnings
from types import SimpleNamespace

import numpy as np
import pytest

import mlpx
from mlpx import distributed as dist
from mlpx.distributed.comm import NCCL_DTYPES, Communicator, NCCLCommunicator
from mlpx.distributed.data_parallel import ParallelRun, compare
from mlpx.distributed.watchdog import Watchdog, check_timeout


class Loopback(Communicator):
    """A world of one process that counts the collectives."""

    def __init__(self, rank: int = 0, size: int = 1) -> None:
        super().__init__(rank, size)
        self.calls: list[tuple[str, tuple]] = []

    def allreduce_(self, array):
        self.calls.append(("allreduce", tuple(array.shape)))
        return array

    def broadcast_(self, array, root=0):
        self.calls.append(("broadcast", tuple(np.shape(array))))
        return array

    def allgather(self, obj):
        self.calls.append(("allgather", ()))
        return [obj]

    def broadcast_object(self, obj, root=0):
        return obj

    def abort(self, code=1):
        raise AssertionError("abort called")


def _data(n=70, d=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return X, (X[:, 0] > 0).astype(np.int64)


def _model(dtype="float64", layers=None):
    layers = layers or [mlpx.Dense(8, activation="tanh"), mlpx.Dropout(0.25), mlpx.Dense(2)]
    return mlpx.Sequential(layers, input_dim=5, seed=1, dtype=dtype)


FIT = dict(loss="cross_entropy", optimizer="adam", lr=0.01, epochs=2, batch_size=16, verbose=0)


def test_alone_distributed_warns_and_trains_as_an_ordinary_fit():
    X, y = _data()
    a, b = _model(), _model()
    with pytest.warns(UserWarning, match="trains alone") as rec:
        a.fit(X, y, distributed=True, **FIT)
    assert rec[0].filename == __file__  # points at the caller's fit line
    b.fit(X, y, **FIT)
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)
    assert (dist.rank(), dist.size(), dist.local_rank()) == (0, 1, 0)


def test_bad_distributed_arguments_are_named():
    X, y = _data()
    with pytest.raises(TypeError, match="distributed must be True, False or an"):
        _model().fit(X, y, distributed="yes", **FIT)
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        dist.DataParallel(timeout=-1)
    with pytest.raises(TypeError, match="comm must be an mlpx.distributed Communicator"):
        dist.DataParallel(comm=object())
    assert check_timeout(None) is None and check_timeout("2.5") == 2.5


def test_one_process_through_the_hooks_matches_an_ordinary_fit():
    """A world of one: every hook runs (start check, broadcast, one all-reduce per step over
    the flat buffer, epoch totals, the metric sums gathered at each epoch's end), and the
    weights and History are those of an ordinary fit, bit for bit."""
    X, y = _data()
    comm = Loopback()
    a, b = _model(), _model()
    ha = a.fit(X, y, distributed=dist.DataParallel(comm=comm), **FIT)
    hb = b.fit(X, y, **FIT)
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)
    assert ha.history == hb.history and "accuracy" in ha.history
    steps = 2 * -(-70 // 16)
    n_params = a.count_params()
    assert comm.calls.count(("allreduce", (n_params + 1,))) == steps  # + the stop flag
    # the start check, then each epoch's metric sums
    assert [c for c in comm.calls if c[0] == "allgather"] == [("allgather", ())] * 3
    assert all(layer.batch_shard is None for _, layer in a.walk())  # removed after fit


def test_weighted_fit_with_metrics_through_the_hooks_matches_an_ordinary_fit():
    X, y = _data()
    w = np.random.default_rng(3).uniform(0, 2, len(X))
    kw = dict(FIT, sample_weight=w, class_weight={1: 3.0}, metrics=["top_1_accuracy"],
              validation_split=0.2, validation_freq=2)
    a, b = _model(), _model()
    ha = a.fit(X, y, distributed=dist.DataParallel(comm=Loopback()), **kw)
    hb = b.fit(X, y, **kw)
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)
    assert ha.history == hb.history and ha.epochs_of("val_loss") == [1]


def test_a_metric_the_processes_cannot_merge_is_refused_at_start():
    class Median(mlpx.metrics.Metric):
        name = "median"

        def update(self, ops, state, out, target, weight):
            return (out[:, 0],)

        def result(self, ops, state):
            return float(np.median(state[0]))

    X, y = _data()
    model = _model()
    with pytest.raises(ValueError, match=r"\['median'\] define no merge"):
        model.fit(X, y, distributed=dist.DataParallel(comm=Loopback()),
                  **dict(FIT, metrics=[Median()]))
    assert model.trainer_ is None
    model.fit(X, y, **dict(FIT, metrics=[Median()], epochs=1))  # alone, it is fine


def test_a_bad_argument_of_a_data_parallel_fit_is_shared_before_it_is_raised():
    """Planning fails on this process: the others learn of it at the agreement (one
    exchange), then every process raises the error, and the model is unchanged."""
    X, y = _data()
    model, comm = _model(), Loopback()
    before = model.get_weights()
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        model.fit(X, y, distributed=dist.DataParallel(comm=comm), **dict(FIT, batch_size=0))
    assert comm.calls == [("allgather", ())]
    assert model.trainer_ is None
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("lead", [True, False])
def test_batch_logs_count_the_rows_of_this_process_only(lead):
    """A data-parallel process's running loss is over its shards: rows part(lo, hi) of each
    batch (of a resumed epoch's first `carried` batches, rank 0 holds the saved sums whole)."""
    from mlpx.backends.batches import EpochCuts
    from mlpx.training import _seen

    plan = SimpleNamespace(weights=None)
    run = ParallelRun(Loopback(1, 3), None)
    # 50 rows, batches of 16: 16, 16, 16, 2 rows; rank 1 of 3 takes 5, 5, 5 and 1 of them
    cuts = EpochCuts(50, 16)
    assert _seen(plan, None, cuts, 4, run.rows) == 16
    assert _seen(plan, None, cuts, 4) == 50
    assert _seen(plan, None, cuts, 3, run.rows, carried=2, lead=lead) == (
        32 + 5 if lead else 5)
    order = np.arange(50)[::-1]
    plan.weights = np.arange(50, dtype=np.float64)
    rows = [order[a:b] for a, b in (run.rows(0, 16), run.rows(16, 32))]
    assert _seen(plan, order, cuts, 2, run.rows) == sum(plan.weights[r].sum() for r in rows)


def test_a_shard_weighs_its_share_of_the_batch():
    """With sample weights each shard's gradient is scaled by its rows' weight over the
    global batch's (0 for a shard, or a batch, of zero weight)."""
    w = np.array([1.0, 3.0, 0.0, 0.0, 2.0, 2.0])
    shares = []
    for r in range(3):
        run = ParallelRun(Loopback(r, 3), None)
        run.begin_step(0, 6, w)
        shares.append(run._scale)
    assert shares == [4 / 8, 0.0, 4 / 8]
    run.begin_step(2, 4, w)
    assert run._scale == 0.0
    run.begin_step(0, 6)
    assert run._scale == 2 / 6


@pytest.mark.parametrize("size", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("lo, hi", [(0, 16), (48, 51), (10, 11), (5, 5 + 64)])
def test_shards_split_every_batch_into_contiguous_parts(size, lo, hi):
    parts = [ParallelRun(Loopback(r, size), None).rows(lo, hi) for r in range(size)]
    assert parts[0][0] == lo and parts[-1][1] == hi
    assert all(a[1] == b[0] for a, b in zip(parts, parts[1:], strict=False))
    sizes = [b - a for a, b in parts]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("size", [2, 3])
def test_dropout_shards_draw_the_masks_of_the_global_batch(size):
    """Each shard's Dropout output (rows a:b, start a) equals rows a:b of one process's."""
    X = np.random.default_rng(2).standard_normal((11, 7))
    whole = mlpx.Dropout(0.4)
    whole.build(7, mlpx.get_backend("cpu"), np.dtype("float64"), None)
    whole.set_random_key(9, 2)
    want = whole.forward(X, training=True).copy()
    run = ParallelRun(Loopback(0, size), None)
    for r in range(size):
        run.rank = r
        a, b = run.rows(0, 11)
        part = mlpx.Dropout(0.4)
        part.build(7, mlpx.get_backend("cpu"), np.dtype("float64"), None)
        part.set_random_key(9, 2)
        part.batch_shard = SimpleNamespace(start=a, rows=11)
        np.testing.assert_array_equal(part.forward(X[a:b], training=True), want[a:b])


def test_differences_name_the_rank_and_what_differs():
    base = {"model": {"seed": 1, "dtype": "float32", "input_dim": 4, "layers": [1]},
            "X": ((10, 4), "float64", "abc"), "epochs": 3}
    other = dict(base, model=dict(base["model"], seed=2))
    shorter = dict(base, X=((9, 4), "float64", "abd"))
    msgs = compare([base, base, other, shorter])
    assert msgs[0] == "rank 2's model seed is 2, rank 0's 1"
    assert msgs[1].startswith("rank 3's X (shape, dtype, checksum of sampled rows) is ((9, 4)")
    assert compare([base, dict(base)]) == []


def test_watchdog_reports_a_wait_that_outlasts_its_timeout():
    said: list[str] = []
    fired = threading.Event()
    dog = Watchdog(0.2, lambda message: (said.append(message), fired.set()))
    dog.context = "step 3"
    with dog.waiting("the gradient all-reduce"):
        assert fired.wait(5.0)
    assert "in the gradient all-reduce (step 3)" in said[0] and "timeout 0.2 s" in said[0]
    quiet = Watchdog(0.2, lambda message: said.append(message))
    for _ in range(3):
        with quiet.waiting("a quick all-reduce"):
            time.sleep(0.01)
    time.sleep(0.4)
    assert len(said) == 1  # completed waits never fire


class _FakeNccl:
    """The part of cupy.cuda.nccl that NCCLCommunicator uses, recording its calls."""

    def __init__(self):
        self.made: list[tuple] = []
        self.reduced: list[tuple] = []
        fake = self

        class NcclCommunicator:
            def __init__(self, size, uid, rank):
                fake.made.append((size, uid, rank))

            def allReduce(self, send, recv, count, dtype, op, stream):
                fake.reduced.append((send, recv, count, dtype, op, stream))

            def abort(self):
                fake.made.append("abort")

        self.NcclCommunicator = NcclCommunicator

    def get_unique_id(self):
        return (7,) * 4


def _device_array(dtype, size, contiguous=True):
    return SimpleNamespace(dtype=np.dtype(dtype), size=size, data=SimpleNamespace(ptr=4096),
                           flags=SimpleNamespace(c_contiguous=contiguous))


def test_nccl_engine_starts_over_mpi_and_reduces_in_place_on_the_stream():
    nccl, mpi = _FakeNccl(), Loopback()
    comm = NCCLCommunicator(mpi, nccl=nccl, stream=SimpleNamespace(ptr=99))
    assert nccl.made == [(1, (7,) * 4, 0)] and (comm.rank, comm.size) == (0, 1)
    for dtype in ("float32", "float64"):
        comm.allreduce_(_device_array(dtype, 10))
    assert nccl.reduced == [(4096, 4096, 10, NCCL_DTYPES["float32"], 0, 99),
                            (4096, 4096, 10, NCCL_DTYPES["float64"], 0, 99)]
    with pytest.raises(TypeError, match="C-contiguous"):
        comm.allreduce_(_device_array("float32", 10, contiguous=False))
    host = np.zeros(3)
    comm.broadcast_(host)
    assert ("broadcast", (3,)) in mpi.calls  # host arrays and objects travel over MPI
    assert comm.allgather({"a": 1}) == [{"a": 1}]


def test_nccl_fit_on_one_gpu():
    """One NCCL rank (one GPU cannot host two) through the whole data-parallel fit."""
    from conftest import cuda_skip_reason

    reason = cuda_skip_reason()
    if reason:
        pytest.skip(reason)
    try:
        from cupy.cuda import nccl
    except ImportError as e:
        pytest.skip(f"CuPy has no NCCL here: {e}")
    if not getattr(nccl, "available", True):  # CuPy imports the module without the library
        pytest.skip("CuPy found no NCCL library here: pip install nvidia-nccl-cu<CUDA major>")
    X, y = _data()
    comm = NCCLCommunicator(Loopback(), nccl=nccl)
    a = _model("float64", None)
    a.to("cuda")
    b = _model("float64", None)
    b.to("cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a.fit(X, y, distributed=dist.DataParallel(comm=comm), **FIT)
    b.fit(X, y, **FIT)
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_allclose(wa, wb, rtol=1e-12, atol=1e-12)


test_nccl_fit_on_one_gpu = pytest.mark.cuda(test_nccl_fit_on_one_gpu)


@pytest.mark.parametrize("major", [12, 13])
def test_a_missing_nccl_names_the_wheel_for_cupys_cuda_version(monkeypatch, major):
    from mlpx.distributed import comm as C

    fake_cupy = SimpleNamespace(cuda=SimpleNamespace(
        nccl=SimpleNamespace(available=False),
        runtime=SimpleNamespace(runtimeGetVersion=lambda: major * 1000 + 20)))
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    monkeypatch.setitem(sys.modules, "cupy.cuda", fake_cupy.cuda)
    monkeypatch.setitem(sys.modules, "cupy.cuda.nccl", fake_cupy.cuda.nccl)
    with pytest.raises(dist.DistributedError, match=rf"pip install nvidia-nccl-cu{major},"):
        C.communicator_for(SimpleNamespace(name="cuda", device_id=7), Loopback())
    assert C.nccl_install_hint(None).startswith("pip install nvidia-nccl-cu<CUDA major>")
