"""Derive the smallest set of CUDA-marked tests that reaches every backend code path once.

    python benchmarks/gpu/select_cuda_tests.py            # prints the set and its coverage
    python benchmarks/gpu/select_cuda_tests.py --write    # rewrites cuda_tests.json

Runs on a CPU-only machine. Almost every CUDA-marked test is the `cuda` case of a test whose
`cpu` case runs here with the same arguments, so the cpu case calls the backend with the same
ops, dtypes, activations, losses and flags as its cuda twin will. Each backend op the cuda
backend implements is recorded per test as a code path: the op's name with the dtype and
rank of every array argument, the activation, the string and boolean arguments, and for
softmax cross-entropy whether the row is narrow or wide (the two CUDA kernels). A greedy
cover then picks the fewest tests that reach every recorded path; CUDA-marked tests without
a cpu twin (GPU-only behaviour) are always kept. run_all.py runs that set first.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CORE_FILE = HERE / "cuda_tests.json"
_CUDA_ID = re.compile(r"(?<=[\[-])cuda(?=[\]-])")


def cpu_twin(node_id: str) -> str | None:
    """The id of the cpu case of a CUDA-marked test (`[cuda-...]` -> `[cpu-...]`), or None."""
    twin = _CUDA_ID.sub("cpu", node_id, count=1)
    return twin if twin != node_id else None


def collect(marker: str, paths: Iterable[str] = ("tests",)) -> list[str]:
    """Test ids pytest selects with `-m marker`, collected in a subprocess."""
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         "-m", marker, *paths], capture_output=True, text=True, cwd=REPO, check=False,
    ).stdout
    return [ln.strip() for ln in out.splitlines() if "::" in ln]


def _describe(value: Any) -> str | None:
    """The part of an argument that picks a code path: dtype and rank of an array, an
    activation's name, a string or boolean's value; None for numbers and the rest."""
    dtype = getattr(value, "dtype", None)
    if dtype is not None and hasattr(value, "ndim"):
        return f"{dtype}/{value.ndim}d"
    if isinstance(value, bool | str):
        return repr(value)
    name = getattr(value, "name", None)
    if isinstance(name, str) and type(value).__module__.startswith("mlpx.activations"):
        return f"act:{name}"
    if isinstance(value, list | tuple) and value and hasattr(value[0], "dtype"):
        return f"[{_describe(value[0])}]"
    return None


def code_path(op: str, args: tuple, kwargs: dict) -> str:
    """One recorded code path of a backend call (see the module doc)."""
    parts = [d for d in (_describe(a) for a in (*args, *kwargs.values())) if d is not None]
    if op == "softmax_cross_entropy" and args and getattr(args[0], "ndim", 0) == 2:
        from mlpx.backends import _cuda_kernels as cuda_kernels

        parts.append("wide" if args[0].shape[1] > cuda_kernels.SOFTMAX_WIDE else "narrow")
    if op == "act_backward_bias_grad":  # the cuda backend does act_backward then a batch sum
        op = "act_backward"
    return f"{op}({', '.join(parts)})"


class _Recorder:
    """A pytest plugin: wraps the cpu backend's ops that the cuda backend also has and
    records, per test, the code paths they take."""

    def __init__(self) -> None:
        self.paths: dict[str, set[str]] = {}
        self.current: str | None = None
        self.outcomes: dict[str, str] = {}

    def install(self) -> None:
        from mlpx.backends.cpu import CPUBackend
        from mlpx.backends.cuda import CUDABackend

        ops = {n for n in dir(CUDABackend) if not n.startswith("_")
               and callable(getattr(CUDABackend, n, None))}
        ops.add("act_backward_bias_grad")
        for name in sorted(ops):
            orig = getattr(CPUBackend, name, None)
            if orig is None:
                continue
            setattr(CPUBackend, name, self._wrap(name, orig))

    def _wrap(self, name: str, orig: Any) -> Any:
        recorder = self

        def recorded(*args, **kwargs):
            if recorder.current is not None:
                recorder.paths[recorder.current].add(code_path(name, args[1:], kwargs))
            return orig(*args, **kwargs)

        return recorded

    # pytest hooks
    def pytest_runtest_setup(self, item) -> None:
        self.current = item.nodeid
        self.paths.setdefault(item.nodeid, set())

    def pytest_runtest_logreport(self, report) -> None:
        if report.when == "call" or report.outcome != "passed":
            self.outcomes[report.nodeid] = report.outcome

    def pytest_runtest_teardown(self, item) -> None:
        self.current = None


def record(node_ids: list[str]) -> tuple[dict[str, set[str]], dict[str, str]]:
    """Run the tests in this process with the recorder; ({id: code paths}, {id: outcome})."""
    import pytest

    rec = _Recorder()
    rec.install()
    pytest.main(["-q", "-p", "no:cacheprovider", "--no-header", *node_ids], plugins=[rec])
    return rec.paths, rec.outcomes


def greedy_cover(paths: dict[str, set[str]]) -> list[str]:
    """The fewest tests (greedy: most new paths first, then the test id) reaching every
    path any of them reaches."""
    left = set().union(*paths.values()) if paths else set()
    chosen: list[str] = []
    while left:
        best = max(sorted(paths), key=lambda t: len(paths[t] & left))
        gained = paths[best] & left
        if not gained:
            break
        chosen.append(best)
        left -= gained
    return chosen


def derive() -> dict[str, Any]:
    cuda_ids = collect("cuda")
    cpu_ids = set(collect("not cuda"))
    twins = {c: cpu_twin(c) for c in cuda_ids}
    gpu_only = [c for c, t in twins.items() if t not in cpu_ids]
    measured = sorted({t for t in twins.values() if t in cpu_ids})
    paths, outcomes = record(measured)
    chosen_cpu = greedy_cover(paths)
    back = {t: c for c, t in twins.items() if t in cpu_ids}
    core = [back[t] for t in chosen_cpu] + gpu_only
    all_paths = set().union(*paths.values()) if paths else set()
    files = sorted({c.split("::")[0] for c in cuda_ids})
    return {"cuda_marked": len(cuda_ids), "measured_twins": len(measured), "files": files,
            "gpu_only": gpu_only, "paths": sorted(all_paths), "core": core,
            "failed_twins": sorted(t for t, o in outcomes.items() if o == "failed")}


def write_core(result: dict[str, Any], path: Path = CORE_FILE) -> None:
    """Write the core set (run first on a GPU) and the files holding CUDA-marked tests."""
    data = {
        "about": "CUDA-marked tests that reach every cuda backend code path once, run first "
                 "on a GPU; derived by benchmarks/gpu/select_cuda_tests.py --write (rerun it "
                 "after adding ops or tests)",
        "cuda_marked": result["cuda_marked"], "code_paths": len(result["paths"]),
        "gpu_only": len(result["gpu_only"]), "files": result["files"], "core": result["core"],
    }
    path.write_text(json.dumps(data, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--write", action="store_true", help=f"rewrite {CORE_FILE.name}")
    args = p.parse_args(argv)
    result = derive()
    print(f"{result['cuda_marked']} CUDA-marked tests, {result['measured_twins']} cpu twins "
          f"measured, {len(result['paths'])} code paths, {len(result['gpu_only'])} GPU-only")
    print(f"core set: {len(result['core'])} tests")
    for t in result["core"]:
        print("  " + t)
    if result["failed_twins"]:
        print("cpu twins that failed here (paths recorded up to the failure):",
              *result["failed_twins"], sep="\n  ")
    if args.write:
        write_core(result)
        print(f"written to {CORE_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
