"""`mlpx bench`: FLOP accounting, the paired-ratio summary, and a quick end-to-end run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mlpx.bench import format_table, summarise
from mlpx.bench_worker import step_flops, step_gemms
from mlpx.cli import main


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


def test_bench_quick_end_to_end(tmp_path):
    out = tmp_path / "res"
    cmd = [sys.executable, "-m", "mlpx", "bench", "--quick", "--sizes", "32,16,4",
           "--batches", "64", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"results: {out / 'bench.json'}" in proc.stdout
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

    # the GEMM path (MLPX_BLAS, default numpy) is recorded and shown in the table
    assert row["blas"] == CPUBackend().blas
    assert doc["flags"]["mlpx_blas"] == row["blas"] and "blas" in proc.stdout
    assert doc["command"].startswith("mlpx bench --quick")
    st = doc["startup"]["cpu"]
    assert 0 < st["import_s"] < 10 and 0 < st["first_step_s"] < 60
    assert "import mlpx" in proc.stdout
    if doc["settings"]["torch"]:  # PyTorch installed: measured in its own process
        assert row["torch_train_samples_per_s"] > 0 and row["torch_ratio"] > 0
        assert row["runs"]["torch"][0]["impl"] == "torch"
    assert (out / "bench.png").stat().st_size > 1000
    assert "train/s" in proc.stdout and "ratio" in proc.stdout


def test_format_table_shows_errors():
    doc = {
        "model": {"sizes": [4, 2], "activation": "relu"},
        "settings": {"threads": 2},
        "machine": {"cpu_model": "x"},
        "results": [{"backend": "cuda", "dtype": "float32", "batch": 65536,
                     "error": "OutOfMemoryError", "oom": True}],
    }
    assert "error: OutOfMemoryError" in format_table(doc)


@pytest.mark.parametrize("argv, message", [
    (["bench", "--sizes", "784"], "at least an input and an output"),
    (["bench", "--batches", "0,12"], "positive integers"),
])
def test_bench_rejects_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit):
        main(argv)
    assert message in capsys.readouterr().err


def test_bench_rejects_an_untrainable_activation_before_measuring(tmp_path):
    with pytest.raises(SystemExit, match="'step' activation has no gradient"):
        main(["bench", "--activation", "step", "--quick", "--out", str(tmp_path)])
    assert not list(tmp_path.iterdir())  # nothing measured, nothing written


def test_bench_rejects_unknown_backend():
    with pytest.raises(SystemExit, match="not available here"):
        main(["bench", "--backend", "tpu", "--quick"])
