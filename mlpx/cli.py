"""The `mlpx` command line: `mlpx demo`, `mlpx bench`, `mlpx check`, `mlpx info`."""

from __future__ import annotations

import argparse
import sys


def _cmd_demo(args: argparse.Namespace) -> int:
    from .backends import get_backend
    from .demo import check_out_dir, run_demo
    from .errors import BackendUnavailableError

    try:  # checked before the data loads: one line instead of a traceback from deep inside
        get_backend(args.backend)
    except (BackendUnavailableError, ValueError) as e:
        print(f"mlpx demo: {e}", file=sys.stderr)
        return 2
    try:
        check_out_dir(args.out)
    except OSError as e:
        raise SystemExit(f"mlpx demo: --out: {e}") from None
    run_demo(args.out, backend=args.backend, epochs=args.epochs, seed=args.seed,
             verbose=0 if args.quiet else 1)
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    import numpy as np

    from . import __version__, available_backends

    print(f"mlpx {__version__}, numpy {np.__version__}")
    print(f"available backends: {', '.join(available_backends())}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlpx", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="train an MLP on the digits data set, plot loss curves")
    demo.add_argument("--out", default="demo_output", help="directory for the loss-curve PNG")
    demo.add_argument("--backend", default="auto", help="cpu, cuda, cuda:N or auto")
    demo.add_argument("--epochs", type=int, default=30)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(func=_cmd_demo)

    info = sub.add_parser("info", help="versions and available backends")
    info.set_defaults(func=_cmd_info)

    try:
        from .bench import add_bench_parser
    except ImportError:
        pass
    else:
        add_bench_parser(sub)
    try:
        from .check import add_check_parser
    except ImportError:
        pass
    else:
        add_check_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
