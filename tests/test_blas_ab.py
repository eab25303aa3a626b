"""benchmarks/blas_ab.py: the paired A/B behind the GEMM-path figures in docs/benchmarks.md."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "blas_ab.py"


def test_blas_ab_pairs_two_settings():
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--rounds", "2", "--batch", "16", "--sizes", "12,8,3",
         "--threads", "1", "MLPX_BLAS=numpy", "MLPX_BLAS=auto"],
        capture_output=True, text=True, check=True, timeout=600,
    )
    rounds = re.findall(r"round \d: A ([\d,]+)  B ([\d,]+) samples/s  B/A ([\d.]+)", proc.stdout)
    assert len(rounds) == 2
    for a, b, ratio in rounds:
        a, b = float(a.replace(",", "")), float(b.replace(",", ""))
        assert a > 0 and b > 0 and abs(float(ratio) - b / a) < 0.01
    assert "median B/A" in proc.stdout


def test_blas_ab_rejects_a_setting_without_a_value():
    proc = subprocess.run([sys.executable, str(SCRIPT), "MLPX_BLAS", "MLPX_BLAS=auto"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "VAR=value" in proc.stderr
