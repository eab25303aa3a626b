"""`mlpx bench`: FLOP accounting, the paired-ratio summary, and a quick end-to-end run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import mlpx
from mlpx import peers
from mlpx.commands import bench
from mlpx.commands.bench import format_profile, format_table, resolve_peers, run_bench, summarise
from mlpx.commands.bench_worker import step_flops, step_gemms
from mlpx.commands.cli import main


def test_step_flops_counts_every_gemm_once():
    # 3-5-2, batch 4: forward 2*4*(15+10)=200, dW 200, dX only for the second layer 2*4*10=80
    assert step_flops([3, 5, 2], 4) == {"train": 480, "infer": 200}
    gemms = step_gemms([3, 5, 2], 4)
    assert [g[0] for g in gemms] == ["L0 fwd", "L0 dW", "L1 fwd", "L1 dW", "L1 dX"]
    total = 0
    for _, (sa, _sb, so), ta, _tb in gemms:
        total += 2 * so[0] * so[1] * (sa[0] if ta else sa[1])
    assert total == 480


def test_summary_uses_median_of_paired_ratios():
    m = [{"train_samples_per_s": v, "infer_samples_per_s": 1.0, "step_s": 1.0 / v,
          "gemm_step_s": 0.9 / v} for v in (100.0, 300.0, 200.0)]
    t = [{"train_samples_per_s": v, "infer_samples_per_s": 2.0} for v in (50.0, 300.0, 100.0)]
    row = summarise(m, t)
    assert row["torch_ratios"] == [2.0, 1.0, 2.0]
    assert row["torch_ratio"] == 2.0  # not median(m) / median(t) = 200 / 100 by accident
    assert row["train_samples_per_s"] == 200.0
    assert row["gemm_overhead"] == pytest.approx(1 / 0.9)
    assert row["torch_infer_ratio"] == 0.5
    assert row["peers"]["torch"]["ratio"] == 2.0 and row["peers"]["torch"]["spread"] == [1, 2]


def test_summary_pairs_each_peer_by_round_and_leaves_out_failed_runs():
    m = [{"train_samples_per_s": v, "step_s": 1.0 / v, "infer_latency_s": 1e-5,
          "infer_samples_per_s": 1e5} for v in (100.0, 100.0, 100.0)]
    jax_runs = [{"train_samples_per_s": 50.0, "step_s": 0.02, "infer_latency_s": 3e-5,
                 "infer_samples_per_s": 2e5},
                {"error": "killed", "oom": False},
                {"train_samples_per_s": 200.0, "step_s": 0.005, "infer_latency_s": 3e-5,
                 "infer_samples_per_s": 2e5}]
    row = summarise(m, {"jax": jax_runs, "torch": []})
    j = row["peers"]["jax"]
    assert j["ratios"] == [2.0, 0.5]  # rounds 1 and 3; round 2 failed
    assert j["ratio"] == pytest.approx(1.25)
    assert j["infer_latency_ratio"] == pytest.approx(3.0)  # its latency / mlpx's
    assert j["infer_ratio"] == pytest.approx(0.5)  # mlpx's throughput / its
    assert "torch" not in row["peers"] and "torch_ratio" not in row


def test_bench_quick_end_to_end(tmp_path):
    # without --out the results go under the working directory, in a git-ignored folder
    cmd = [sys.executable, "-m", "mlpx", "bench", "--quick", "--sizes", "32,16,4",
           "--batches", "64"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (out,) = (tmp_path / bench.DEFAULT_RESULTS_DIR).iterdir()
    assert out.name == bench.default_out_dir().name  # <date>-<host>
    assert f"results: {bench.default_out_dir() / 'bench.json'}" in proc.stdout
    doc = json.loads((out / "bench.json").read_text())
    (row,) = doc["results"]
    assert row["backend"] == "cpu" and row["batch"] == 64 and row["dtype"] == "float32"
    assert row["train_samples_per_s"] > 0 and row["infer_samples_per_s"] > 0
    assert 0 < row["roofline_fraction"] and row["gemm_overhead"] > 0
    assert row["step_gflops"] == pytest.approx(
        step_flops([32, 16, 4], 64)["train"] / row["step_s"] / 1e9
    )
    assert doc["machine"]["threads"] >= 1 and doc["machine"]["versions"]["numpy"]
    from mlpx.backends.cpu import CPUBackend

    # the libraries the float32 GEMMs' routes took (among MLPX_BLAS's candidates) are
    # recorded and shown in the table, not merely the backend's default library
    libraries = {label.split()[0] for label in row["gemm_routes"].values()}
    assert row["blas"] == "+".join(sorted(libraries))
    assert libraries <= set(CPUBackend().gemm_libraries)
    assert doc["flags"]["mlpx_blas"] == row["blas"] and "blas" in proc.stdout
    assert doc["command"].startswith("mlpx bench --quick")
    st = doc["startup"]["cpu"]
    assert 0 < st["import_s"] < 10 and 0 < st["first_step_s"] < 60
    assert "import mlpx" in proc.stdout
    if doc["settings"]["torch"]:  # PyTorch installed: measured in its own process
        assert row["torch_train_samples_per_s"] > 0 and row["torch_ratio"] > 0
        assert row["runs"]["torch"][0]["impl"] == "torch"
        assert doc["settings"]["peers"] == ["torch"]  # the default: PyTorch when installed
        assert "torch x" in proc.stdout
    assert row["infer_latency_s"] > 0 and "batch-1 us" in proc.stdout
    assert row["rounds"] == 1 and len(row["runs"]["mlpx"][0]["epoch_s"]) >= 3
    assert doc["loadavg"]["start"] is not None
    assert (out / "bench.png").stat().st_size > 1000
    md = (out / "bench.md").read_text()  # the Markdown the README's tables come from
    assert "| cpu | float32 | 64 |" in md and doc["command"] in md
    assert "train/s" in proc.stdout and "step ms" in proc.stdout


def test_format_table_shows_errors():
    doc = {
        "model": {"sizes": [4, 2], "activation": "relu"},
        "settings": {"threads": 2},
        "machine": {"cpu_model": "x"},
        "results": [{"backend": "cuda", "dtype": "float32", "batch": 65536,
                     "error": "OutOfMemoryError", "oom": True}],
    }
    assert "error: OutOfMemoryError" in format_table(doc)


def test_the_table_names_the_cpu_flags_and_each_batch_gemm_routes():
    run = {"train_samples_per_s": 1.0, "step_s": 1.0, "step_gflops": 1.0,
           "gemm_routes": {"thread pool": "numpy (measured 2026-01-01)",
                           "nn 2^27": "numpy 1-thread (measured 2026-01-01)"}}
    row = {"backend": "cpu", "dtype": "float32", "batch": 256, **summarise([run])}
    assert row["gemm_routes"] == run["gemm_routes"]
    doc = {"model": {"sizes": [4, 2], "activation": "relu"}, "settings": {"threads": 2},
           "machine": {"cpu_model": "x", "cpu_flags": ["avx2", "fma"]}, "results": [row]}
    text = format_table(doc)
    assert "cpu flags: avx2 fma" in text
    assert ("GEMM routes at batch 256: thread pool numpy (measured 2026-01-01); nn 2^27 "
            "numpy 1-thread") in text


@pytest.mark.parametrize("argv, message", [
    (["bench", "--sizes", "784"], "at least an input and an output"),
    (["bench", "--batches", "0,12"], "positive integers"),
])
def test_bench_rejects_bad_arguments(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_bench_rejects_an_untrainable_activation_before_measuring(tmp_path, capsys):
    assert main(["bench", "--activation", "step", "--quick", "--out", str(tmp_path)]) == 2
    assert "'step' activation has no gradient" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing measured, nothing written


def test_bench_rejects_unknown_and_unavailable_backends(capsys):
    assert main(["bench", "--backend", "tpu", "--quick"]) == 2
    assert "unknown backend 'tpu'" in capsys.readouterr().err
    if "cuda" not in mlpx.available_backends():
        assert main(["bench", "--backend", "cuda", "--quick"]) == 2
        assert "not available here" in capsys.readouterr().err


def test_bench_rejects_an_unknown_peer(capsys):
    assert main(["bench", "--peers", "torch,tensorflow", "--quick"]) == 2
    assert "unknown peer 'tensorflow'; choose from torch, jax" in capsys.readouterr().err


def test_missing_peers_are_skipped_with_the_reason(monkeypatch):
    monkeypatch.setattr(peers, "installed", lambda name: False)
    assert resolve_peers(None) == ([], {})  # the default asks for nothing that is missing
    run, skipped = resolve_peers(["torch", "jax"])
    assert run == [] and set(skipped) == {"torch", "jax"}
    assert "jax is not installed" in skipped["jax"] and "mlpx[bench]" in skipped["jax"]
    doc = run_bench(["cpu"], ["float32"], [8, 4, 2], batches=[16], rounds=1, min_time=0.0,
                    epoch_samples=32, peers=["torch", "jax"], log=lambda *a: None)
    (row,) = doc["results"]
    assert row["train_samples_per_s"] > 0 and row["peers"] == {}
    assert set(doc["skipped_peers"]) == {"torch", "jax"} and doc["settings"]["peers"] == []
    format_table(doc)  # no peer columns, no crash


def test_a_peer_that_cannot_reach_the_device_is_reported_unavailable():
    code = ("import sys; print('no such device', file=sys.stderr); "
            f"sys.exit({peers.EXIT_UNAVAILABLE})")
    res = bench._run_json([sys.executable, "-c", code], threads=1)
    assert res["unavailable"] and "no such device" in res["error"]
    res = bench._run_json([sys.executable, "-c", "import sys; sys.exit(1)"], threads=1)
    assert not res["unavailable"] and "error" in res


@pytest.mark.skipif(not (peers.installed("torch") and peers.installed("jax")),
                    reason="needs both peers' frameworks (pip install 'mlpx[bench]' torch)")
def test_bench_with_both_peers_and_profile(tmp_path):
    out = tmp_path / "prof"
    cmd = [sys.executable, "-m", "mlpx", "bench", "--profile", "--peers", "torch,jax",
           "--sizes", "32,16,4", "--batches", "64", "--epoch-samples", "256", "--min-time", "0",
           "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / "profile.json").read_text())
    (row,) = doc["results"]
    assert set(row["peers"]) == {"torch", "jax"} and doc["settings"]["peers"] == ["torch", "jax"]
    assert row["peers"]["jax"]["ratio"] == pytest.approx(
        row["train_samples_per_s"] / row["peers"]["jax"]["train_samples_per_s"])
    prof = row["runs"]["mlpx"][0]["profile"]
    assert {o["label"] for o in prof["ops"]} >= {"GEMM L0 fwd", "GEMM L1 dX", "gather (take_rows)"}
    text = format_profile(doc)
    assert text in proc.stdout
    assert "GEMM-only bound" in text and "Python (outside every op)" in text
    assert "jax: step" in text and "torch: step" in text


def test_default_results_folder_is_git_ignored():
    gitignore = Path(__file__).resolve().parents[1] / ".gitignore"
    if not gitignore.exists():
        pytest.skip("not a checkout: no .gitignore")
    assert f"{bench.DEFAULT_RESULTS_DIR}/" in gitignore.read_text().splitlines()
    assert bench.default_out_dir().parts[0] == bench.DEFAULT_RESULTS_DIR
