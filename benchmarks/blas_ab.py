"""Paired A/B of mlpx's training throughput under two environment settings, e.g. two GEMM
paths:

    python benchmarks/blas_ab.py --rounds 6 --batch 1024 MLPX_BLAS=numpy MLPX_BLAS=auto
    python benchmarks/blas_ab.py --rounds 6 --batch 32 --sizes 784,256,128,10 \\
        MLPX_BLAS=numpy MLPX_BLAS=auto

Each round runs `python -m mlpx.commands.bench_worker` once per setting, each in its own
process (the order alternates between rounds), with the thread count pinned; prints each round
and the median of the paired ratios B/A (above 1: B is faster). Pairing cancels the drift of
a shared machine, which moves single runs here by 10-30 %.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys


def run(setting: str, args: argparse.Namespace) -> float:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(args.threads)
    key, _, value = setting.partition("=")
    env[key] = value
    cmd = [sys.executable, "-m", "mlpx.commands.bench_worker", "--batch", str(args.batch),
           "--sizes", args.sizes, "--threads", str(args.threads), "--no-infer"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return float(json.loads(out)["train_samples_per_s"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", help="setting A, VAR=value")
    p.add_argument("b", help="setting B, VAR=value")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--sizes", default="784,1024,1024,10")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = p.parse_args(argv)
    for s in (args.a, args.b):
        if "=" not in s:
            p.error(f"a setting is VAR=value, got {s!r}")
    a, b = [], []
    for r in range(args.rounds):
        order = ((args.a, a), (args.b, b)) if r % 2 == 0 else ((args.b, b), (args.a, a))
        for setting, results in order:
            results.append(run(setting, args))
        print(f"round {r + 1}: A {a[-1]:,.0f}  B {b[-1]:,.0f} samples/s  B/A {b[-1] / a[-1]:.3f}",
              flush=True)
    ratios = [y / x for x, y in zip(a, b, strict=True)]
    print(f"batch {args.batch}, sizes {args.sizes}: median B/A {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f}); A {statistics.median(a):,.0f}, "
          f"B {statistics.median(b):,.0f} samples/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
