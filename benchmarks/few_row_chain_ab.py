"""The few-row chain's three ways to predict a handful of rows, in one process: the serial
chain, the threaded chain (wide layers' block sums shared between threads) and the GEMM path
(the layers' own inference), each timed as it serves calls in a row.

    python benchmarks/few_row_chain_ab.py --sizes 784,1024,1024,10 --rows 1,2,4

For each row count: the best and the median of `--blocks` means of `--calls` calls each,
after a warm-up; the serial and threaded outputs are checked to be the same bits. mlpx's
threads (2 by default) run the threaded chain; compare with benchmarks/predict_latency.py for
the path `predict` actually chooses on this machine.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any


def _mean(fn: Callable[[], Any], calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="784,1024,1024,10", help="layer widths, input first")
    parser.add_argument("--rows", default="1,2,4", help="row counts, comma-separated")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--blocks", type=int, default=5)
    args = parser.parse_args()

    import numba
    import numpy as np

    import mlpx
    from mlpx.backends import small_batch, small_batch_split

    mlpx.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    model = mlpx.MLP(sizes, activation="relu", seed=0)
    chain = small_batch.chain_of(model)
    chain.parts = small_batch_split.parts()
    numba.set_num_threads(chain.parts)
    rng = np.random.default_rng(0)
    print(f"sizes {args.sizes}, {chain.parts} thread(s), float32, {args.calls} calls per mean")
    for rows in (int(r) for r in args.rows.split(",")):
        x = rng.standard_normal((rows, sizes[0])).astype(np.float32)
        ways = {"serial": lambda x=x: chain._compute(x, False),
                "threaded": lambda x=x: chain._compute(x, True),
                "gemm path": lambda x=x: model._predict(x, 4096)}
        if not np.array_equal(ways["serial"](), ways["threaded"]()):
            raise SystemExit(f"{rows} rows: the threaded chain's bits differ from the serial's")
        cells = []
        for name, fn in ways.items():
            for _ in range(max(20, args.calls // 5)):
                fn()
            means = [_mean(fn, args.calls) for _ in range(args.blocks)]
            cells.append(f"{name} best {min(means) * 1e6:.1f} us "
                         f"median {statistics.median(means) * 1e6:.1f} us")
        print(f"{rows:>3} rows: " + "; ".join(cells))


if __name__ == "__main__":
    main()
