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
    assert names == ["env", "compile", "cuda-core", "reductions", "ftz", "trace", "check",
                     "kernels", "bf16", "bench", "cuda-rest"]
    assert all(s.needs_gpu for s in kit.PLAN[1:])
    assert [s.name for s in kit.PLAN if s.fills_budget] == ["cuda-rest"]  # last, what is left


def test_dry_run_prints_the_plan_in_seconds(tmp_path):
    d = _run_kit("--dry-run", out=tmp_path / "o")
    assert d.returncode == 0, d.stderr
    budget = int(re.search(r"^budget: (\d+) s$", d.stdout, re.M).group(1))
    assert budget <= 480
    files = re.search(r"^files: (.*) \((\d+) of at most (\d+)", d.stdout, re.M)
    assert int(files.group(2)) <= 8 and int(files.group(3)) == 8
    for s in kit.PLAN:
        assert re.search(rf"^{re.escape(s.name)} +{s.limit_s}s", d.stdout, re.M), s.name
    assert "-rfE --tb=short --durations=15" in d.stdout and "-m cuda" in d.stdout
    assert "tests/test_activations.py" in d.stdout  # cuda-rest: the files, not the suite
    assert "--trace-out" in d.stdout and "kernel cache" in d.stdout
    assert not (tmp_path / "o").exists()  # a dry run writes nothing
    bad = _run_kit("--stages", "tset", out=tmp_path)
    assert bad.returncode == 2 and "unknown stage" in bad.stderr
    assert _run_kit("--budget", "600", "--dry-run").returncode == 2


def test_without_a_gpu_every_gpu_stage_reports_skipped(tmp_path):
    from mlpx._compat import gpu_count, has_cupy

    if has_cupy() and gpu_count() > 0:
        pytest.skip("a GPU is present: run benchmarks/gpu/run_all.py --out DIR for real")
    out = tmp_path / "run"
    r = _run_kit("--cache", str(tmp_path / "cache"), out=out)
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
    assert "Skipped (rerun them with `--stages NAMES --budget S`):" in summary
    assert f"Kernel cache: `{tmp_path / 'cache'}`" in summary


def test_every_stage_script_starts_and_says_no_gpu(tmp_path):
    """Each GPU stage as run_all runs it (a script in its own process): imports resolve,
    the arguments parse, and without a GPU it exits 3 (skipped) rather than failing."""
    from mlpx._compat import gpu_count, has_cupy

    if has_cupy() and gpu_count() > 0:
        pytest.skip("a GPU is present: the stages would run for real")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for stage in kit.PLAN:
        if stage.name == "env" or stage.name in kit.PYTEST_STAGES:
            continue
        cmd = kit.stage_command(stage, tmp_path, tmp_path)
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 3 and "no GPU" in r.stdout, (stage.name, r.stdout, r.stderr)


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
    monkeypatch.setattr(kit, "stage_command", lambda s, *a: cmds[s.name])
    t0 = time.monotonic()
    # 6 s for slow, 3 for good, the stop reserve, and less than the 5 s minimum for late
    rc = kit.run(plan, tmp_path, budget=kit.STOP_RESERVE_S + 6 + 6, cache=tmp_path / "c")
    assert time.monotonic() - t0 < 30
    rows = json.loads((tmp_path / "results.json").read_text())["stages"]
    status = {r["stage"]: r["status"] for r in rows}
    assert status["slow"].startswith("timeout after 6")
    assert status["bad"] == "FAILED (exit 4)" and status["good"] == "ok"
    assert status["late"] == "skipped: no time left"
    assert rc == 1
    assert rows[1]["key"] == {"last line": "broken"}


_PYTEST_STAGE = kit.Stage("cuda-core", 120, "")
_FILLER = kit.Stage("cuda-rest", 80, "", fills_budget=True)


def _pytest_run(tmp_path, body, limit):
    f = tmp_path / "test_stopped.py"
    f.write_text("import time\n\n" + body)
    log = tmp_path / "pytest.log"
    rc, _ = kit._run([sys.executable, "-m", "pytest", *kit.PYTEST_FLAGS, str(f)], limit, log,
                     dict(os.environ))
    return rc, log


def test_a_stopped_pytest_stage_still_names_its_failing_tests(tmp_path):
    """Stopped at its limit with SIGINT, pytest prints its short summary: the failure is
    named and counted, the stage reported failed and cut."""
    body = ("def test_fails():\n    assert 1 == 2\n\n"
            "def test_passes():\n    pass\n\n"
            "def test_hangs():\n    time.sleep(120)\n")
    rc, log = _pytest_run(tmp_path, body, limit=10)
    assert rc is None
    fig = kit.pytest_figures(log)
    assert len(fig["failing"]) == 1 and fig["failing"][0].startswith("FAILED ")
    assert fig["failing"][0].endswith("test_stopped.py::test_fails")
    assert fig["counts"]["failed"] == 1 and fig["counts"]["passed"] == 1
    assert fig["interrupted"] and fig["counts"]["not run"] == 1
    status = kit.stage_status(_PYTEST_STAGE, rc, 10, log)
    assert status == "FAILED (1 failed, cut at the time limit)" and kit.is_failure(status)
    assert kit.stage_status(_FILLER, rc, 10, log).startswith("FAILED")


def test_the_last_test_stage_cut_by_the_budget_is_partial_not_failed(tmp_path):
    body = "def test_passes():\n    pass\n\ndef test_hangs():\n    time.sleep(120)\n"
    rc, log = _pytest_run(tmp_path, body, limit=10)
    status = kit.stage_status(_FILLER, rc, 10, log)
    assert status == "partial: 1 not run, time ran out" and not kit.is_failure(status)
    assert kit.stage_status(_PYTEST_STAGE, rc, 10, log) == "timeout after 10 s"


def test_a_session_timeout_reads_as_cut_short(tmp_path):
    """pytest-timeout's --session-timeout ends the session between tests (exit 1, nothing
    failed); a test stopped by the per-test timeout is a failure."""
    log = tmp_path / "log"
    log.write_text("collected 90 items / 10 deselected / 80 selected\n"
                   "tests/test_a.py ....\n"
                   "!!!!!!!! session-timeout: 95.0 sec exceeded !!!!!!!!\n"
                   "============ 4 passed, 80 deselected in 96.1s ============\n")
    fig = kit.pytest_figures(log)
    assert fig["interrupted"] and fig["counts"] == {"passed": 4, "deselected": 80,
                                                   "not run": 76}
    assert kit.stage_status(_FILLER, 1, 100, log) == "partial: 76 not run, time ran out"
    assert kit.stage_status(_PYTEST_STAGE, 1, 100, log) == "timeout after 100 s"
    log.write_text("collected 2 items\n"
                   "FAILED tests/test_a.py::test_x - Failed: Timeout >60.0s\n"
                   "============ 1 failed, 1 passed in 61.0s ============\n")
    assert kit.stage_status(_FILLER, 1, 100, log) == "FAILED (1 failed)"


def test_pytest_stages_get_timeouts_where_pytest_timeout_is_installed(monkeypatch):
    monkeypatch.setattr(kit.importlib.util, "find_spec", lambda name: None)
    assert kit.timeout_flags(100) == []
    monkeypatch.setattr(kit.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(kit.metadata, "version", lambda name: "2.4.0")
    assert kit.timeout_flags(100) == [f"--timeout={kit.TEST_TIMEOUT_S}",
                                      f"--session-timeout={100 - kit.SESSION_MARGIN_S}"]
    monkeypatch.setattr(kit.metadata, "version", lambda name: "2.1.0")
    assert kit.timeout_flags(100) == [f"--timeout={kit.TEST_TIMEOUT_S}"]
    cmd = kit.stage_command(_PYTEST_STAGE, Path("o"), Path("w"), 100)
    assert cmd[cmd.index("-m", 3) + 1] == "cuda" and "--durations=15" in cmd


def test_stage_environment(tmp_path):
    base = {"PATH": "/bin", "PYTHONPATH": "/x"}
    env = kit.stage_env(base, _PYTEST_STAGE, tmp_path)
    assert env["JAX_PLATFORMS"] == "cpu" and env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    assert env["CUPY_CACHE_DIR"] == str(tmp_path / "cupy")
    assert env["MLPX_CACHE_DIR"] == str(tmp_path / "mlpx")
    assert env["PYTHONPATH"] == f"{kit.REPO}{os.pathsep}/x"
    bench = kit.stage_env(base, kit.Stage("bench", 80, ""), tmp_path)
    assert "JAX_PLATFORMS" not in bench and bench["CUPY_CACHE_DIR"] == env["CUPY_CACHE_DIR"]


def test_the_core_set_names_collected_cuda_tests():
    """Every id of cuda_tests.json is a CUDA-marked test pytest collects (a renamed test
    would silently drop out of the first stage)."""
    tests = kit.read_core()
    assert 0 < len(tests["core"]) < tests["cuda_marked"]
    assert all((REPO / f).is_file() for f in tests["files"])
    assert {t.split("::")[0] for t in tests["core"]} <= set(tests["files"])
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                          "-p", "no:cacheprovider", "-m", "cuda", *tests["core"]],
                         capture_output=True, text=True, cwd=REPO, timeout=600).stdout
    collected = [ln.strip() for ln in out.splitlines() if "::" in ln]
    assert sorted(collected) == sorted(tests["core"])


def test_results_without_out_go_to_an_ignored_folder():
    assert kit.DEFAULT_OUT.is_relative_to(kit.REPO)
    probe = kit.DEFAULT_OUT / "20260101-000000" / "summary.md"
    r = subprocess.run(["git", "check-ignore", "-q", str(probe)], cwd=REPO)
    if r.returncode == 128:
        pytest.skip("not a git checkout")
    assert r.returncode == 0, f"{kit.DEFAULT_OUT} is not ignored by git"


select = _load("select_cuda_tests")


def test_cuda_ids_map_to_their_cpu_twins():
    assert select.cpu_twin("tests/a.py::test_x[cuda-float32]") == "tests/a.py::test_x[cpu-float32]"
    assert select.cpu_twin("tests/a.py::test_x[relu-cuda]") == "tests/a.py::test_x[relu-cpu]"
    assert select.cpu_twin("tests/a.py::test_x[cuda]") == "tests/a.py::test_x[cpu]"
    assert select.cpu_twin("tests/a.py::test_cuda_only") is None
    assert select.cpu_twin("tests/a.py::test_x[cudax]") is None


def test_code_paths_tell_kernels_apart():
    from mlpx import activations

    z32, z64 = np.zeros((4, 40), np.float32), np.zeros((4, 3))
    relu = activations.get("relu")
    assert select.code_path("bias_act", (z32, z32[0], relu, z32), {}) == \
        "bias_act(float32/2d, float32/1d, act:relu, float32/2d)"
    assert select.code_path("bias_act", (z64, z64[0], relu, z64), {}) != \
        select.code_path("bias_act", (z32, z32[0], relu, z32), {})
    wide = select.code_path("softmax_cross_entropy", (z32, np.zeros(4, np.int64)), {})
    narrow = select.code_path("softmax_cross_entropy", (z64, np.zeros(4, np.int64)), {})
    assert wide.endswith("wide)") and narrow.endswith("narrow)")
    assert select.code_path("sgd_update", (z32, z32, 0.1), {}) == \
        select.code_path("sgd_update", (z32, z32, 0.5), {})  # numbers pick no path


def test_greedy_cover_keeps_the_fewest_tests_reaching_every_path():
    paths = {"a": {1, 2}, "b": {2, 3, 4}, "c": {4}, "d": {1}, "e": set()}
    chosen = select.greedy_cover(paths)
    assert chosen == ["b", "a"]
    assert set().union(*(paths[t] for t in chosen)) == {1, 2, 3, 4}
    assert select.greedy_cover({}) == []


def test_recording_a_cpu_test_gives_its_code_paths():
    """select_cuda_tests records the backend calls a cpu test makes (in its own process,
    as `--write` runs it)."""
    script = (
        "import json, sys; sys.path.insert(0, 'benchmarks/gpu'); import select_cuda_tests as S;"
        "paths, outcomes = S.record(sys.argv[1:]);"
        "print('RESULT', json.dumps({k: sorted(v) for k, v in paths.items()}))"
    )
    test_id = "tests/test_parity.py::test_optimiser_kernels_vs_reference[cpu-f32]"
    r = subprocess.run([sys.executable, "-c", script, test_id], capture_output=True, text=True,
                       cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=300)
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    assert line, r.stdout + r.stderr
    paths = json.loads(line[0][len("RESULT "):])[test_id]
    assert any(p.startswith("adam_update(float32/") for p in paths), paths
    from mlpx.backends.cuda import CUDABackend

    assert all(hasattr(CUDABackend, p.split("(")[0]) for p in paths)  # cuda's ops only
