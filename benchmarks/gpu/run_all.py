"""Verify the cuda backend on a GPU machine in one command, from the source tree.

    python benchmarks/gpu/run_all.py --out DIR            # the whole plan, <= 480 s
    python benchmarks/gpu/run_all.py --dry-run            # print the plan and its budget
    python benchmarks/gpu/run_all.py --out DIR --stages compile,ftz

GPU-specific stages run first, each as its own process under its own time limit (killed with
its children when the limit passes); a stage that fails or times out does not stop the next.
The whole plan fits in BUDGET_S seconds: a stage gets its own limit or what is left of the
budget, whichever is less, and the last stage (the rest of the test suite) only what remains.
Without a GPU every GPU stage reports "skipped: no GPU".

Everything lands in DIR, at most MAX_FILES files, no sub-folders: summary.md (the table of
stage, status, seconds and key figures first), results.json (every stage's findings),
trace.json, bench.json (when the stages get that far) and logs.txt.gz (every stage's output).
The summary and results are rewritten after each stage, so a run cut short still reports
what it did.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gzip
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
BUDGET_S = 480
MAX_FILES = 8
KILL_GRACE_S = 3
FILES = ("summary.md", "results.json", "trace.json", "bench.json", "logs.txt.gz")


@dataclass(frozen=True)
class Stage:
    name: str
    limit_s: int
    what: str
    needs_gpu: bool = True


#: The plan, in order: GPU-specific work first, the rest of the suite last.
PLAN: tuple[Stage, ...] = (
    Stage("env", 20, "GPU, driver, CUDA, CuPy, PyTorch, JAX versions; is a GPU usable",
          needs_gpu=False),
    Stage("compile", 45, "NVRTC-compile every .cu file, load every kernel, PTX FTZ state"),
    Stage("cuda-tests", 120, "pytest -m cuda: every CUDA-marked test case"),
    Stage("reductions", 40, "block reductions vs float64 NumPy, n = 1 .. 2**28; PReLU bitwise"),
    Stage("ftz", 15, "float32 updates on values near 1e-40, GPU vs cpu, bitwise"),
    Stage("trace", 50, "batch-65536 fit after warm-up, resident and streamed: syncs per step"),
    Stage("check", 40, "mlpx check --backend cuda (gradients vs reference and PyTorch)"),
    Stage("bench", 100, "mlpx bench vs PyTorch CUDA and JAX, batches 1024 and 65536, 1 round"),
    Stage("kernels", 25, "PReLU backward and softmax cross-entropy kernel timings"),
    Stage("rest", 25, "the rest of the test suite, in the time that is left"),
)


def plan_budget(plan: tuple[Stage, ...] = PLAN) -> int:
    return sum(s.limit_s for s in plan)


def stage_command(stage: Stage, out: Path, work: Path) -> list[str]:
    py = sys.executable
    stages = str(HERE / "stages.py")
    js = str(work / f"{stage.name}.json")
    return {
        "env": [py, stages, "env", "--json", js],
        "compile": [py, stages, "compile", "--json", js],
        "cuda-tests": [py, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-m", "cuda",
                       "tests"],
        "reductions": [py, stages, "reductions", "--json", js],
        "ftz": [py, stages, "ftz", "--json", js],
        "trace": [py, str(HERE / "sync_trace.py"), "trace", "--batch", "65536",
                  "--out", str(out / "trace.json")],
        "check": [py, "-m", "mlpx", "check", "--backend", "cuda"],
        "bench": [py, stages, "bench", "--json", js, "--bench-out", str(out / "bench.json")],
        "kernels": [py, stages, "kernels", "--json", js],
        "rest": [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not cuda", "tests"],
    }[stage.name]


def _run(cmd: list[str], limit: float, log: Path, env: dict[str, str]) -> tuple[int | None, float]:
    """Run cmd in its own process group; kill the group at the limit. (exit code or None on
    timeout, seconds)."""
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
            for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, 10)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
    return rc, time.monotonic() - t0


def _pytest_figures(log: Path) -> dict[str, Any]:
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    tail = [ln for ln in lines if " passed" in ln or " failed" in ln or " error" in ln]
    return {"result": tail[-1].strip("= ") if tail else "no summary line"}


def _key_figures(stage: Stage, findings: dict[str, Any] | None, log: Path, out: Path) -> Any:
    if findings is not None:
        return findings.get("key", {})
    if stage.name in ("cuda-tests", "rest"):
        return _pytest_figures(log)
    if stage.name == "trace" and (out / "trace.json").is_file():
        data = json.loads((out / "trace.json").read_text())
        return {label: {k: run["summary"][k] for k in
                        ("syncs_inside_steps", "copy_waits", "gpu_ms_total", "gather_ms_total")}
                for label, run in data.get("runs", {}).items()}
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return {"last line": lines[-1][:200] if len(lines) > 1 else ""}


def _fmt_key(key: Any) -> str:
    if isinstance(key, dict):
        return "; ".join(f"{k}: {_fmt_key(v)}" for k, v in key.items())
    return str(key).replace("|", "/").replace("\n", " ")


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
    lines += ["", f"GPU: {meta.get('gpu')}. Budget {meta['budget_s']} s, used "
              f"{meta['elapsed_s']:.0f} s. Command: `{meta['command']}`.", "",
              "Stages:", ""]
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


def run(stages: list[Stage], out: Path, budget: float) -> int:
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    meta: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "budget_s": budget, "elapsed_s": 0.0, "gpu": None,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    rows: list[dict[str, Any]] = []
    failed = False
    with tempfile.TemporaryDirectory(prefix="mlpx-gpu-kit-") as tmp:
        work = Path(tmp)
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"]
                                         if env.get("PYTHONPATH") else "")
        env["MLPX_CACHE_DIR"] = str(work / "cache")  # compile stage compiles from scratch
        env.setdefault("CUPY_CACHE_DIR", str(work / "cupy-cache"))
        env["PYTHONUNBUFFERED"] = "1"
        gpu: bool | None = None
        for stage in stages:
            left = budget - (time.monotonic() - t_start) - KILL_GRACE_S
            limit = max(0.0, min(float(stage.limit_s), left))
            if stage.name == "rest":
                limit = max(0.0, left)  # only what remains
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
                rc, secs = _run(stage_command(stage, out, work), limit, log, env)
                findings_path = work / f"{stage.name}.json"
                findings = (json.loads(findings_path.read_text())
                            if findings_path.is_file() else None)
                row["seconds"] = secs
                if rc is None:
                    row["status"] = f"timeout after {limit:.0f} s"
                elif rc == 0:
                    row["status"] = "ok"
                elif rc == 3:
                    row["status"] = "skipped: no GPU"
                else:
                    row["status"] = f"FAILED (exit {rc})"
                row["key"] = _key_figures(stage, findings, log, out)
                if findings is not None:
                    row["findings"] = findings
                if stage.name == "env" and findings is not None:
                    gpu = bool(findings.get("gpu"))
                    meta["gpu"] = findings.get("key", {}).get("gpu")
                failed = failed or not (row["status"] == "ok"
                                        or row["status"].startswith("skipped"))
                print(f"   {row['status']} in {secs:.0f} s: {_fmt_key(row['key'])}", flush=True)
            rows.append(row)
            meta["elapsed_s"] = time.monotonic() - t_start
            write_reports(out, work, meta, rows)
    print((out / "summary.md").read_text())
    print(f"results in {out}")
    return 1 if failed else 0


def print_plan(stages: list[Stage], out: Path, budget: float) -> None:
    print(f"mlpx GPU verification plan: {len(stages)} stages, budget {plan_budget(tuple(stages))}"
          f" s (limit {budget:.0f} s), output {out}")
    print(f"{'stage':<11} {'limit':>6}  gpu  what")
    for s in stages:
        print(f"{s.name:<11} {s.limit_s:>5}s  {'yes' if s.needs_gpu else 'no ':<3}  {s.what}")
        print(f"{'':<19}$ {' '.join(stage_command(s, out, Path('$WORK')))}")
    print(f"budget: {plan_budget(tuple(stages))} s")
    print(f"files: {', '.join(FILES)} ({len(FILES)} of at most {MAX_FILES}, no sub-folders)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default benchmarks/results/gpu-<date>)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and its budget")
    p.add_argument("--stages", default=None,
                   help=f"comma-separated subset, in plan order ({','.join(s.name for s in PLAN)})")
    p.add_argument("--budget", type=float, default=BUDGET_S,
                   help=f"seconds for the whole run (default and at most {BUDGET_S})")
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
    out = args.out or REPO / "benchmarks" / "results" / (
        "gpu-" + _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S"))
    if args.dry_run:
        print_plan(list(chosen), out, args.budget)
        return 0
    return run(list(chosen), out.resolve(), args.budget)


if __name__ == "__main__":
    sys.exit(main())
