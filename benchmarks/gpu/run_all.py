"""Verify the cuda backend on a GPU machine in one command, from the source tree.

    benchmarks/gpu/run_all.sh --out DIR                          # the whole plan, <= 480 s
    benchmarks/gpu/run_all.sh --dry-run                          # print the plan and budget
    benchmarks/gpu/run_all.sh --out DIR2 --stages cuda-rest --budget 300   # a rerun

GPU-specific stages run first, each as its own process under its own time limit; a stage
that fails or times out does not stop the next. A stage past its limit gets SIGINT first (so
pytest prints its failures and summary), SIGTERM after a grace period, then SIGKILL. The whole
plan fits in the budget (BUDGET_S seconds at most): a stage gets its own limit or what is left,
whichever is less, with the stopping grace kept in reserve. The CUDA-marked tests run in two
stages: `cuda-core` (cuda_tests.json: the fewest tests that reach every cuda backend code path,
see select_cuda_tests.py) early, `cuda-rest` (every other CUDA-marked test) last, in the time
that is left: a `cuda-rest` cut short by the budget is reported as partial, not as a failure.
The CPU-only suite does not run here (CI runs it). Without a GPU every GPU stage reports
"skipped: no GPU".

CuPy's kernel cache and mlpx's compiled kernels live in one folder that outlasts the run
(--cache, default ~/.cache/mlpx-gpu-kit), so a rerun on the same machine starts warm.

Everything lands in DIR, at most MAX_FILES files, no sub-folders: summary.md (the table of
stage, status, seconds and key figures first, then what was skipped and which tests failed),
results.json (every stage's findings), trace.json, bench.json (when the stages get that far)
and logs.txt.gz (every stage's output). The summary and results are rewritten after each
stage, so a run cut short still reports what it did. Without --out the results go to
benchmarks/gpu/out/<date> (ignored by git).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gzip
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
BUDGET_S = 480
MAX_FILES = 8
#: Seconds between SIGINT and SIGTERM (pytest writes its summary), then SIGTERM and SIGKILL.
INT_GRACE_S = 10
TERM_GRACE_S = 3
#: Kept in reserve from every stage's limit, so a stopped stage still ends inside the budget.
STOP_RESERVE_S = INT_GRACE_S + TERM_GRACE_S + 2
#: Seconds before its limit at which pytest-timeout ends a pytest stage by itself.
SESSION_MARGIN_S = 5
#: Per-test limit of the pytest stages (pytest-timeout): a hung kernel costs one test.
TEST_TIMEOUT_S = 60
DEFAULT_CACHE = Path.home() / ".cache" / "mlpx-gpu-kit"
DEFAULT_OUT = HERE / "out"
FILES = ("summary.md", "results.json", "trace.json", "bench.json", "logs.txt.gz")
CORE_FILE = HERE / "cuda_tests.json"
PYTEST_FLAGS = ("-p", "no:cacheprovider", "-rfE", "--tb=short", "--durations=15")


@dataclass(frozen=True)
class Stage:
    name: str
    limit_s: int
    what: str
    needs_gpu: bool = True
    #: runs in whatever time is left: cut short by the budget is "partial", not a failure
    fills_budget: bool = False


#: The plan, in order: GPU-specific work first, the CUDA-marked tests beyond the core set last.
PLAN: tuple[Stage, ...] = (
    Stage("env", 30, "GPU, driver, CUDA, CuPy, PyTorch, JAX versions; is a GPU usable",
          needs_gpu=False),
    Stage("compile", 40, "compile every .cu file as the loader does, load every kernel, PTX FTZ"),
    Stage("cuda-core", 120, "pytest: the CUDA-marked tests that reach every code path once"),
    Stage("reductions", 35, "block reductions vs float64 NumPy, n = 1 .. 2**28; PReLU bitwise"),
    Stage("ftz", 10, "float32 updates on values near 1e-40, GPU vs cpu, bitwise"),
    Stage("trace", 45, "batch-65536 fit after warm-up, resident and streamed: syncs per step"),
    Stage("check", 35, "mlpx check --backend cuda (gradients vs reference and PyTorch)"),
    Stage("kernels", 20, "PReLU backward and softmax cross-entropy kernel timings"),
    Stage("bf16", 25, "mixed_bfloat16: conversion bitwise, products vs contract, timings"),
    Stage("bench", 75, "mlpx bench vs PyTorch CUDA and JAX, batches 1024 and 65536, 1 round"),
    Stage("cuda-rest", 45, "pytest: every other CUDA-marked test, in the time that is left",
          fills_budget=True),
)
PYTEST_STAGES = ("cuda-core", "cuda-rest")


def plan_budget(plan: tuple[Stage, ...] = PLAN) -> int:
    return sum(s.limit_s for s in plan)


def read_core(path: Path = CORE_FILE) -> dict[str, Any]:
    """cuda_tests.json (select_cuda_tests.py): {"core": [the core set's test ids, in order],
    "files": [every test file that holds CUDA-marked tests], ...}."""
    return json.loads(path.read_text())


def timeout_flags(limit: float) -> list[str]:
    """pytest-timeout's per-test and per-session limits, where it is installed (it is on the
    GPU image; without it the kit's own SIGINT still stops the stage)."""
    if importlib.util.find_spec("pytest_timeout") is None:
        return []
    flags = [f"--timeout={TEST_TIMEOUT_S}"]
    try:
        major, minor = (int(p) for p in metadata.version("pytest-timeout").split(".")[:2])
    except (metadata.PackageNotFoundError, ValueError):
        major, minor = 0, 0
    if (major, minor) >= (2, 3):  # --session-timeout arrived in 2.3
        flags.append(f"--session-timeout={max(1, int(limit - SESSION_MARGIN_S))}")
    return flags


def stage_command(stage: Stage, out: Path, work: Path, limit: float | None = None) -> list[str]:
    py = sys.executable
    limit = stage.limit_s if limit is None else limit
    if stage.name in PYTEST_STAGES:
        tests = read_core()
        pick = tests["core"] if stage.name == "cuda-core" else [
            *tests["files"], *(f"--deselect={t}" for t in tests["core"])]
        return [py, "-m", "pytest", *PYTEST_FLAGS, *timeout_flags(limit), "-m", "cuda", *pick]
    cmd = [py, str(HERE / "stages.py"), stage.name, "--json", str(work / f"{stage.name}.json")]
    if stage.name == "trace":
        cmd += ["--trace-out", str(out / "trace.json")]
    if stage.name == "bench":
        cmd += ["--bench-out", str(out / "bench.json")]
    return cmd


def stage_env(base: dict[str, str], stage: Stage, cache: Path) -> dict[str, str]:
    """The environment of a stage: the source tree first on the path, one kernel cache for
    the whole run and its reruns, JAX kept off the GPU in the pytest stages."""
    env = dict(base)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"]
                                     if env.get("PYTHONPATH") else "")
    env["MLPX_CACHE_DIR"] = str(cache / "mlpx")
    env["CUPY_CACHE_DIR"] = str(cache / "cupy")
    env["PYTHONUNBUFFERED"] = "1"
    if stage.name in PYTEST_STAGES:
        # JAX's CUDA plugin would take 75 % of the GPU's memory inside the test process
        env["JAX_PLATFORMS"] = "cpu"
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    return env


def stop(proc: subprocess.Popen) -> None:
    """SIGINT to the stage's process group (pytest then prints its failures and summary),
    SIGTERM after INT_GRACE_S, SIGKILL after TERM_GRACE_S more."""
    for sig, wait in ((signal.SIGINT, INT_GRACE_S), (signal.SIGTERM, TERM_GRACE_S),
                      (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _run(cmd: list[str], limit: float, log: Path, env: dict[str, str]) -> tuple[int | None, float]:
    """Run cmd in its own process group; stop the group at the limit. (exit code or None when
    it had to be stopped, seconds)."""
    t0 = time.monotonic()
    with open(log, "w") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, env=env,
                                start_new_session=True)
        try:
            rc: int | None = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            rc = None
            stop(proc)
    return rc, time.monotonic() - t0


_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected)")


def pytest_figures(log: Path) -> dict[str, Any]:
    """The summary line, the counts, the failing and erroring tests (-rfE) and whether the
    session ran out of time, from a pytest log."""
    text = log.read_text(errors="replace")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    summary = [ln for ln in lines if ln.startswith("=") and _COUNT.search(ln)]
    counts: dict[str, int] = {}
    if summary:
        for n, what in _COUNT.findall(summary[-1]):
            counts["errors" if what.startswith("error") else what] = int(n)
    selected = re.search(r"collected (\d+) items?(?: / (\d+) deselected)?(?: / (\d+) selected)?",
                         text)
    if selected:
        total = int(selected.group(3) or int(selected.group(1)) - int(selected.group(2) or 0))
        done = sum(v for k, v in counts.items() if k != "deselected")
        counts["not run"] = max(0, total - done)
    failing = [ln.split(" - ")[0] for ln in lines if ln.startswith(("FAILED ", "ERROR "))]
    return {"result": summary[-1].strip("= ") if summary else "no summary line",
            "counts": counts, "failing": failing,
            # stopped by SIGINT, or by pytest-timeout's --session-timeout between two tests
            "interrupted": "KeyboardInterrupt" in text or "session-timeout:" in text}


def _key_figures(stage: Stage, findings: dict[str, Any] | None, log: Path) -> Any:
    if findings is not None:
        return findings.get("key", {})
    if stage.name in PYTEST_STAGES:
        fig = pytest_figures(log)
        key: dict[str, Any] = {"result": fig["result"]}
        if fig["failing"]:
            key["failing"] = ", ".join(fig["failing"][:10]) + (
                f" and {len(fig['failing']) - 10} more" if len(fig["failing"]) > 10 else "")
        return key
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return {"last line": lines[-1][:200] if len(lines) > 1 else ""}


def _fmt_key(key: Any) -> str:
    if isinstance(key, dict):
        return "; ".join(f"{k}: {_fmt_key(v)}" for k, v in key.items())
    return str(key).replace("|", "/").replace("\n", " ")


def stage_status(stage: Stage, rc: int | None, limit: float, log: Path) -> str:
    """ok, FAILED, timeout, partial (a fills_budget stage the budget cut short with nothing
    failed) or skipped: no GPU (exit 3)."""
    if stage.name in PYTEST_STAGES:
        fig = pytest_figures(log)
        failed = fig["counts"].get("failed", 0) + fig["counts"].get("errors", 0)
        cut = rc is None or fig["interrupted"]
        if failed:
            return f"FAILED ({failed} failed{', cut at the time limit' if cut else ''})"
        if cut:
            left = fig["counts"].get("not run")
            if stage.fills_budget:
                return f"partial: {left if left is not None else 'some'} not run, time ran out"
            return f"timeout after {limit:.0f} s"
        if rc == 5:
            return "skipped: no tests selected"
        return "ok" if rc == 0 else f"FAILED (exit {rc})"
    if rc is None:
        return f"timeout after {limit:.0f} s"
    if rc == 0:
        return "ok"
    if rc == 3:
        return "skipped: no GPU"
    return f"FAILED (exit {rc})"


def is_failure(status: str) -> bool:
    return not (status == "ok" or status.startswith(("skipped", "partial")))


def write_reports(out: Path, work: Path, meta: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    lines = [
        f"# mlpx GPU verification, {meta['date']}",
        "",
        "| stage | status | seconds | limit | key figures |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['stage']} | {r['status']} | {r['seconds']:.0f} | {r['limit']:.0f} "
                     f"| {_fmt_key(r['key'])} |")
    lines += ["", f"GPU: {meta.get('gpu')}. Budget {meta['budget_s']:.0f} s, used "
              f"{meta['elapsed_s']:.0f} s. Command: `{meta['command']}`. Kernel cache: "
              f"`{meta['cache']}`.", ""]
    skipped = [f"- `{r['stage']}`: {r['status']}" for r in rows
               if r["status"].startswith(("skipped", "partial"))]
    if skipped:
        lines += ["Skipped (rerun them with `--stages NAMES --budget S`):", "", *skipped, ""]
    failing = [f"- `{r['stage']}`: {t}" for r in rows for t in r.get("failing", [])]
    if failing:
        lines += ["Failing tests:", "", *failing, ""]
    lines += ["Stages:", ""]
    lines += [f"- `{s.name}`: {s.what}" for s in PLAN]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(
        json.dumps({"meta": meta, "stages": rows}, indent=2, default=str) + "\n"
    )
    with gzip.open(out / "logs.txt.gz", "wt") as z:
        for r in rows:
            log = work / f"{r['stage']}.log"
            if log.is_file():
                z.write(f"===== {r['stage']}: {r['status']}\n{log.read_text(errors='replace')}\n")


def run(stages: list[Stage], out: Path, budget: float, cache: Path = DEFAULT_CACHE) -> int:
    """Run `stages` in order inside `budget` seconds; 0 unless a stage failed (skipped and
    partial stages are reported, not failures)."""
    out.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    meta: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "budget_s": budget, "elapsed_s": 0.0, "gpu": None, "cache": str(cache),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    rows: list[dict[str, Any]] = []
    failed = False
    with tempfile.TemporaryDirectory(prefix="mlpx-gpu-kit-") as tmp:
        work = Path(tmp)
        gpu: bool | None = None
        for stage in stages:
            left = budget - (time.monotonic() - t_start) - STOP_RESERVE_S
            limit = max(0.0, min(float(stage.limit_s), left))
            if stage.fills_budget:
                limit = max(0.0, left)  # all that remains
            row: dict[str, Any] = {"stage": stage.name, "limit": limit, "seconds": 0.0,
                                   "key": {}}
            if stage.needs_gpu and gpu is False:
                row["status"] = "skipped: no GPU"
                row["limit"] = float(stage.limit_s)
            elif limit < 5:
                row["status"] = "skipped: no time left"
            else:
                print(f"== {stage.name} (limit {limit:.0f} s)", flush=True)
                log = work / f"{stage.name}.log"
                rc, secs = _run(stage_command(stage, out, work, limit), limit, log,
                                stage_env(dict(os.environ), stage, cache))
                findings_path = work / f"{stage.name}.json"
                findings = (json.loads(findings_path.read_text())
                            if findings_path.is_file() else None)
                row["seconds"] = secs
                row["status"] = stage_status(stage, rc, limit, log)
                row["key"] = _key_figures(stage, findings, log)
                if stage.name in PYTEST_STAGES:
                    fig = pytest_figures(log)
                    row["failing"], row["counts"] = fig["failing"], fig["counts"]
                if findings is not None:
                    row["findings"] = findings
                if stage.name == "env" and findings is not None:
                    gpu = bool(findings.get("gpu"))
                    meta["gpu"] = findings.get("key", {}).get("gpu")
                failed = failed or is_failure(row["status"])
                print(f"   {row['status']} in {secs:.0f} s: {_fmt_key(row['key'])}", flush=True)
            rows.append(row)
            meta["elapsed_s"] = time.monotonic() - t_start
            write_reports(out, work, meta, rows)
    print((out / "summary.md").read_text())
    print(f"results in {out}")
    return 1 if failed else 0


def print_plan(stages: list[Stage], out: Path, budget: float, cache: Path) -> None:
    print(f"mlpx GPU verification plan: {len(stages)} stages, budget {plan_budget(tuple(stages))}"
          f" s (limit {budget:.0f} s), output {out}, kernel cache {cache}")
    print(f"{'stage':<11} {'limit':>6}  gpu  what")
    for s in stages:
        cmd = stage_command(s, out, Path("$WORK"))
        if s.name == "cuda-rest":  # the core set's --deselect list is long: say it instead
            cmd = [c for c in cmd if not c.startswith("--deselect")] + [
                f"--deselect=<the {len(read_core()['core'])} tests of {CORE_FILE.name}>"]
        print(f"{s.name:<11} {s.limit_s:>5}s  {'yes' if s.needs_gpu else 'no ':<3}  {s.what}")
        print(f"{'':<19}$ {' '.join(cmd)}")
    print(f"budget: {plan_budget(tuple(stages))} s")
    print(f"files: {', '.join(FILES)} ({len(FILES)} of at most {MAX_FILES}, no sub-folders)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=None,
                   help=f"output folder (default {DEFAULT_OUT.relative_to(REPO)}/<date>, "
                        "ignored by git)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and its budget")
    p.add_argument("--stages", default=None,
                   help=f"comma-separated subset, in plan order ({','.join(s.name for s in PLAN)})")
    p.add_argument("--budget", type=float, default=BUDGET_S,
                   help=f"seconds for the whole run (default and at most {BUDGET_S})")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                   help="kernel cache kept across runs (CuPy's and mlpx's; default "
                        "~/.cache/mlpx-gpu-kit): a rerun on the same machine starts warm")
    args = p.parse_args(argv)
    names = [s.name for s in PLAN]
    chosen = PLAN
    if args.stages:
        wanted = [n.strip() for n in args.stages.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            p.error(f"unknown stage(s) {', '.join(unknown)}; stages: {', '.join(names)}")
        # env always runs first: it decides whether there is a GPU
        chosen = tuple(s for s in PLAN if s.name in wanted or s.name == "env")
    if not 0 < args.budget <= BUDGET_S:
        p.error(f"--budget must be in (0, {BUDGET_S}] seconds, got {args.budget}")
    out = args.out or DEFAULT_OUT / _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    if args.dry_run:
        print_plan(list(chosen), out, args.budget, args.cache)
        return 0
    return run(list(chosen), out.resolve(), args.budget, args.cache.expanduser().resolve())


if __name__ == "__main__":
    sys.exit(main())
