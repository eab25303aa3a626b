"""The scaling script runs end to end (tiny model, 1 and 2 ranks) and reports efficiency."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mpi4py", reason="needs mpi4py: pip install 'mlpx[mpi]'")
if not (Path(sys.executable).parent / "mpiexec").exists() and not shutil.which("mpiexec"):
    pytest.skip("no mpiexec: pip install 'mlpx[mpi]'", allow_module_level=True)

SCRIPT = Path(__file__).with_name("distributed_scaling.py")


def test_scaling_table_for_one_and_two_ranks():
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--ranks", "1,2", "--sizes", "12,8,3",
         "--per-rank-batch", "16", "--steps", "3"],
        capture_output=True, text=True, timeout=120, check=True)
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ")][1:]
    assert [r.split("|")[1].strip() for r in rows] == ["1", "2"]
    assert [r.split("|")[2].strip() for r in rows] == ["16", "32"]  # weak scaling
    assert rows[0].split("|")[4].strip() == "1.00"
    assert float(rows[1].split("|")[4]) > 0
