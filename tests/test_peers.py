"""The peer programs of `mlpx bench` (mlpx/peers): standalone, same data and epoch rules as
mlpx's worker, one JSON line, and a clear "unavailable" exit for a device they cannot use."""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

from mlpx import peers
from mlpx.commands import bench_worker

SMALL = ["--sizes", "12,8,3", "--batch", "16", "--epoch-samples", "64", "--epochs", "2"]


def _needs(name: str):
    return pytest.mark.skipif(
        importlib.util.find_spec(name) is None,
        reason=f"{name} is not installed (pip install 'mlpx[bench]' adds the peers' frameworks)",
    )


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"peer_{name}", peers.script_path(name))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # the modules import their framework only inside main()
    return mod


def _run(name: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(peers.script_path(name)), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


@pytest.mark.parametrize("name", sorted(peers.PEERS))
def test_peer_scripts_import_their_framework_and_numpy_only(name):
    tree = ast.parse(peers.script_path(name).read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            roots.add(node.module.split(".")[0])
    third_party = roots - set(sys.stdlib_module_names) - {"__future__"}
    assert third_party == {"numpy", peers.PEERS[name][0]}


@pytest.mark.parametrize("name", sorted(peers.PEERS))
def test_peer_data_and_epochs_follow_the_workers_rules(name):
    mod = _load(name)
    sizes = [7, 5, 3]
    X, y = mod.make_data(40, sizes, seed=0)
    Xw, yw = bench_worker._data(40, sizes, seed=0)
    np.testing.assert_array_equal(X, Xw)
    np.testing.assert_array_equal(y, yw)
    assert X.dtype == np.float32 and y.min() >= 0 and y.max() < 3
    for batch, samples in [(256, 16384), (1000, 16384), (16384, 16384), (65536, 16384), (3, 1)]:
        assert mod.epoch_plan(batch, samples) == bench_worker.epoch_plan(batch, samples)
    assert bench_worker.epoch_plan(1000, 16384) == (17, 17000)  # whole batches, rounded up
    assert bench_worker.epoch_plan(65536, 16384) == (1, 65536)


@pytest.mark.parametrize("name", [pytest.param("torch", marks=_needs("torch")),
                                  pytest.param("jax", marks=_needs("jax"))])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_peer_trains_and_prints_one_json_line(name, dtype):
    proc = _run(name, *SMALL, "--dtype", dtype, "--threads", "1", "--infer-batch", "32")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    r = json.loads(lines[0])
    assert r["impl"] == name and r["device"] == "cpu" and r["batch"] == 16
    assert r["param_dtype"] == dtype  # float64 really trains in float64 (JAX: x64 enabled)
    assert r["steps_per_epoch"] == 4 and len(r["epoch_s"]) >= 2
    assert r["train_samples_per_s"] == pytest.approx(64 * len(r["epoch_s"]) / sum(r["epoch_s"]))
    assert 0.5 < r["final_loss"] < 3.0  # cross-entropy over 3 classes starts near ln 3
    assert r["infer_latency_s"] > 0 and r["infer_batch"] == 32
    assert r["infer_samples_per_s"] == pytest.approx(32 / r["infer_batch_s"])
    assert r["peak_rss_bytes"] > 10 * 2**20


@pytest.mark.parametrize("name", [pytest.param("torch", marks=_needs("torch")),
                                  pytest.param("jax", marks=_needs("jax"))])
def test_peer_trains_under_mixed_bfloat16(name):
    proc = _run(name, *SMALL, "--dtype", "mixed_bfloat16", "--threads", "1",
                "--infer-batch", "32")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["dtype"] == "mixed_bfloat16"
    # float32 master weights, bfloat16 products
    assert r["param_dtype"] == "float32" and r["compute_dtype"] == "bfloat16"
    assert 0.5 < r["final_loss"] < 3.0
    assert r["infer_samples_per_s"] > 0


@pytest.mark.parametrize("name", [pytest.param("torch", marks=_needs("torch")),
                                  pytest.param("jax", marks=_needs("jax"))])
def test_peer_without_the_device_exits_unavailable(name):
    from mlpx._compat import gpu_count

    if gpu_count() > 0:
        pytest.skip("a GPU is present: the peer may well reach it")
    proc = _run(name, *SMALL, "--device", "cuda")
    if proc.returncode == 0:  # a CUDA build of the framework with a GPU mlpx cannot see
        assert json.loads(proc.stdout)["device"] == "cuda"
        return
    assert proc.returncode == peers.EXIT_UNAVAILABLE, proc.stderr
    assert "cuda" in proc.stderr.lower() and proc.stdout == ""


def test_peer_rejects_bad_arguments():
    proc = _run("torch", "--sizes", "5", "--batch", "4")
    assert proc.returncode == 2 and "two or more positive widths" in proc.stderr


def test_unknown_peer_name_lists_the_known_ones():
    with pytest.raises(KeyError, match="known peers: torch, jax"):
        peers.script_path("tensorflow")


def _declared(method: str) -> list:
    from mlpx import activations

    acts = [c() for c in activations.builtins()]
    acts += [activations.LeakyReLU(0.2), activations.ELU(alpha=0.5)]
    return [pytest.param(a, id=repr(a)) for a in acts if activations.twin(a, method) is not None]


@_needs("jax")
@pytest.mark.parametrize("act", _declared("jax_function"))
def test_each_declared_jax_function_computes_the_reference_formula(act):
    """The JAX peer runs what `mlpx bench` passes it: the declaration's jax.nn function."""
    import jax

    from mlpx.backends import get_backend

    name, kwargs = act.jax_function()
    z = np.linspace(-6.0, 6.0, 48).reshape(12, 4)
    want = act.formula(get_backend("reference"), z)
    got = np.asarray(getattr(jax.nn, name)(z.astype(np.float32), **kwargs), dtype=np.float64)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)


def test_bench_passes_each_peer_the_function_the_activation_declares(monkeypatch):
    from mlpx import activations, bench

    seen = []
    monkeypatch.setattr(bench, "_run_json", lambda cmd, threads: seen.append(cmd) or {})
    for peer, option, method in [("torch", "--torch-module", "torch_module"),
                                 ("jax", "--jax-function", "jax_function")]:
        bench.run_peer(peer, "cpu", "float32", [4, 3, 2], "leaky_relu", 8, 0.0, 1)
        assert json.loads(seen[-1][seen[-1].index(option) + 1]) == list(
            getattr(activations.LeakyReLU(), method)())
        # no twin declared (the step function): the peer is not run, and says why
        assert "unavailable" in bench.run_peer(peer, "cpu", "float32", [4, 3, 2], "step", 8,
                                               0.0, 1)
