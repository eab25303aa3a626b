"""The GPU run kit (benchmarks/gpu): the sync-counting training trace and the stage runner.

The trace runs here on the cpu backend and on the host-emulated cuda backend (host clocks
instead of CUDA events); a step that reads a value back to the host must be caught.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import mlpx

REPO = Path(__file__).resolve().parent.parent
KIT = REPO / "benchmarks" / "gpu"


def _load_trace_module():
    spec = importlib.util.spec_from_file_location("sync_trace", KIT / "sync_trace.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


st = _load_trace_module()


def _xy(rng, n=96, d=6):
    return rng.standard_normal((n, d)), rng.integers(0, 3, n)


@pytest.mark.parametrize("stream_data", [None, True])
def test_trace_counts_no_sync_inside_steps_on_cpu(rng, stream_data):
    X, y = _xy(rng)
    model = mlpx.MLP([6, 8, 3], backend="cpu", seed=0)
    res = st.trace_fit(model, X, y, epochs=2, batch_size=32, stream_data=stream_data)
    assert res["ok"] and res["summary"]["steps"] == 6
    assert res["summary"]["syncs_inside_steps"] == 0
    assert res["summary"]["syncs_outside_steps"] > 0  # per-epoch reads are counted outside
    assert {"ops.to_float", "ops.all_finite"} <= set(res["patched"])
    assert [s["rows"] for s in res["steps"]] == [32, 32, 32] * 2
    assert all(s["gpu_ms"] >= 0 for s in res["steps"])
    # the wrappers are gone afterwards: the model and backend behave as before
    assert "forward" not in vars(model) and "step" not in vars(model.optimizer_)
    assert "to_float" not in vars(model.ops)
    json.dumps(res)  # the trace is JSON-serialisable


def test_trace_catches_a_step_that_reads_back(rng, monkeypatch):
    X, y = _xy(rng)
    model = mlpx.MLP([6, 8, 3], backend="cpu", seed=0)
    orig_backward = model.backward

    def syncing_backward(grad):
        model.ops.to_float(grad[0, 0])  # a per-step host read, as a buggy layer might do
        return orig_backward(grad)

    monkeypatch.setattr(model, "backward", syncing_backward)
    res = st.trace_fit(model, X, y, epochs=1, batch_size=32)
    assert not res["ok"]
    assert res["summary"]["syncs_inside_steps"] == 3
    assert res["steps"][0]["syncs_inside"] == ["ops.to_float"]


def test_trace_on_the_host_emulated_cuda_backend(rng, tmp_path):
    cuda_host = pytest.importorskip("cuda_host")
    if not cuda_host.have_compiler():
        pytest.skip("g++ not found: cannot build the kernels for the host")
    emu = cuda_host.HostEmulatedCUDABackend(cuda_host.build(tmp_path))
    X, y = _xy(rng)
    for stream_data in (False, True):
        model = mlpx.MLP([6, 8, 3], backend=emu, seed=0)
        res = st.trace_fit(model, X, y, epochs=2, batch_size=40, stream_data=stream_data)
        assert res["ok"] and res["summary"]["steps"] == 6, res["summary"]
        assert [s["rows"] for s in res["steps"]] == [40, 40, 16] * 2


def test_environment_record_without_gpu():
    env = st.environment()
    for key in ("date", "python", "numpy", "numba", "cupy", "gpu"):
        assert key in env
    assert env["numpy"] == np.__version__


def test_trace_cli_writes_json(tmp_path):
    out = tmp_path / "t.json"
    code = st.main(["trace", "--backend", "cpu", "--batch", "64", "--batches-per-epoch", "2",
                    "--epochs", "1", "--sizes", "5,8,3", "--out", str(out)])
    data = json.loads(out.read_text())
    assert code == 0 and data["ok"]
    assert set(data["runs"]) == {"resident", "streamed"}
    assert data["runs"]["resident"]["summary"]["steps"] == 2


def _load(name):
    spec = importlib.util.spec_from_file_location(name, KIT / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


kit = _load("run_all")


def _run_kit(*args, out=None):
    env = dict(os.environ, PYTHON=sys.executable)
    extra = ["--out", str(out)] if out is not None else []
    return subprocess.run(["bash", str(KIT / "run_all.sh"), *args, *extra],
                          capture_output=True, text=True, env=env, timeout=300)


def test_plan_fits_the_window():
    """<= 480 s and <= 8 files; GPU-specific stages first, in the documented order."""
    assert kit.plan_budget() <= 480 == kit.BUDGET_S
    assert len(kit.FILES) <= kit.MAX_FILES <= 8
    names = [s.name for s in kit.PLAN]
    assert names == ["env", "compile", "cuda-tests", "reductions", "ftz", "trace", "check",
                     "bench", "kernels", "rest"]
    assert all(s.needs_gpu for s in kit.PLAN[1:])


def test_dry_run_prints_the_plan_in_seconds(tmp_path):
    d = _run_kit("--dry-run", out=tmp_path / "o")
    assert d.returncode == 0, d.stderr
    budget = int(re.search(r"^budget: (\d+) s$", d.stdout, re.M).group(1))
    assert budget <= 480
    files = re.search(r"^files: (.*) \((\d+) of at most (\d+)", d.stdout, re.M)
    assert int(files.group(2)) <= 8 and int(files.group(3)) == 8
    for s in kit.PLAN:
        assert re.search(rf"^{re.escape(s.name)} +{s.limit_s}s", d.stdout, re.M), s.name
    assert "-m cuda tests" in d.stdout and "--batch 65536" in d.stdout
    assert not (tmp_path / "o").exists()  # a dry run writes nothing
    bad = _run_kit("--stages", "tset", out=tmp_path)
    assert bad.returncode == 2 and "unknown stage" in bad.stderr
    assert _run_kit("--budget", "600", "--dry-run").returncode == 2


def test_without_a_gpu_every_gpu_stage_reports_skipped(tmp_path):
    from mlpx._compat import gpu_count, has_cupy

    if has_cupy() and gpu_count() > 0:
        pytest.skip("a GPU is present: run benchmarks/gpu/run_all.py --out DIR for real")
    out = tmp_path / "run"
    r = _run_kit(out=out)
    assert r.returncode == 0, r.stdout + r.stderr
    files = sorted(p.name for p in out.iterdir())
    assert all(p.is_file() for p in out.iterdir()) and len(files) <= 8
    assert {"summary.md", "results.json", "logs.txt.gz"} <= set(files)
    summary = (out / "summary.md").read_text()
    table = [ln for ln in summary.splitlines() if ln.startswith("| ")][1:]
    assert summary.splitlines()[2].startswith("| stage | status")  # the table comes first
    status = {ln.split("|")[1].strip(): ln.split("|")[2].strip() for ln in table}
    assert list(status) == [s.name for s in kit.PLAN]
    assert status.pop("env") == "ok"
    assert set(status.values()) == {"skipped: no GPU"}
    results = json.loads((out / "results.json").read_text())
    env = results["stages"][0]["findings"]["environment"]
    assert env["numpy"] == np.__version__ and results["stages"][0]["findings"]["gpu"] is False
    with gzip.open(out / "logs.txt.gz", "rt") as f:
        assert "===== env: ok" in f.read()


def test_stage_failures_and_timeouts_do_not_stop_the_run(tmp_path, monkeypatch):
    """A stage that fails, one that overruns its limit (killed with its children) and one
    for which no time is left: each recorded, the later stages still run."""
    py = sys.executable
    cmds = {
        "slow": [py, "-c", "import subprocess, sys, time; subprocess.Popen([sys.executable, "
                 "'-c', 'import time; time.sleep(60)']); time.sleep(60)"],
        "bad": [py, "-c", "import sys; print('broken'); sys.exit(4)"],
        "good": [py, "-c", "import time; time.sleep(3); print('fine')"],
        "late": [py, "-c", "print('never')"],
    }
    plan = [kit.Stage("slow", 6, ""), kit.Stage("bad", 20, ""), kit.Stage("good", 20, ""),
            kit.Stage("late", 20, "")]
    monkeypatch.setattr(kit, "stage_command", lambda s, out, work: cmds[s.name])
    t0 = time.monotonic()
    # 6 s for slow, 3 for good, the kill grace, and less than the 5 s minimum for late
    rc = kit.run(plan, tmp_path, budget=kit.KILL_GRACE_S + 6 + 6)
    assert time.monotonic() - t0 < 30
    rows = json.loads((tmp_path / "results.json").read_text())["stages"]
    status = {r["stage"]: r["status"] for r in rows}
    assert status["slow"].startswith("timeout after 6")
    assert status["bad"] == "FAILED (exit 4)" and status["good"] == "ok"
    assert status["late"] == "skipped: no time left"
    assert rc == 1
    assert rows[1]["key"] == {"last line": "broken"}




def test_gpu_stage_checks_run_on_the_host_emulated_backend(tmp_path):
    """The reductions, FTZ and kernel-timing stages, small sizes, on the emulated cuda
    backend: every check passes, so on a GPU a failure points at the GPU, not the kit."""
    cuda_host = pytest.importorskip("cuda_host")
    if not cuda_host.have_compiler():
        pytest.skip("g++ not found: cannot build the kernels for the host")
    stages = _load("stages")
    emu = cuda_host.HostEmulatedCUDABackend(cuda_host.build(tmp_path))
    red = stages.stage_reductions(emu, sizes=(1, 255, 256, 257), wide=((9, 10), (5, 40)),
                                  prelu=(130, 3))
    assert red["ok"], red
    assert red["key"]["prelu dslopes vs cpu"] == "bitwise" and red["key"]["failed"] == 0
    assert {c["op"] for c in red["checks"]} >= {"sum_squares", "mse", "softmax_xent 40 classes"}
    ftz = stages.stage_ftz(emu)
    assert ftz["ok"] and ftz["key"]["float32 subnormals"] == "kept", ftz
    kern = stages.stage_kernels(emu, prelu=(64, 8), softmax=((16, 10), (4, 64)))
    assert kern["ok"] and len(kern["timings"]) == 3
    assert all(t["fused_ms"] > 0 for t in kern["timings"].values())
    json.dumps([red, ftz, kern])
    assert stages.main(["env", "--json", str(tmp_path / "env.json")]) == 0
    assert json.loads((tmp_path / "env.json").read_text())["environment"]["numpy"]
