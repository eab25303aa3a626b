"""The `mlpx` command line: `mlpx train`, `mlpx predict`, `mlpx demo`, `mlpx bench`,
`mlpx check`, `mlpx info`.

Every subcommand's arguments are declared here (`train` and `predict` in
mlpx.commands.tabular_parser), with the shared argument types of
`mlpx.commands.arguments` (sizes, dtypes, backend names checked by the backend registry,
counts, seeds). Every usage error, also those
that depend on several arguments or on this machine, goes through the parser before any work
starts: one line on stderr, exit status 2, no traceback. The subcommands' modules are
imported when they run; one that fails to import is reported, never dropped from the list.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from .arguments import (
    DEFAULT_SIZES,
    Parser,
    available_backend,
    backend_name,
    dtype_list,
    import_modules,
    int_list,
    model_function,
    non_negative_float,
    non_negative_int,
    peer_list,
    positive_int,
    sizes_type,
    trainable_activation,
)
from .outdir import check_out_dir


def _validate_demo(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    available_backend(parser, args.backend)
    try:  # before the data loads and the training runs
        check_out_dir(args.out)
    except OSError as e:
        parser.error(f"--out: {e}")


def _validate_bench(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    from ..backends import VALID_NAMES, available_backends

    for b in args.backend or []:
        if b not in available_backends() and not b.startswith("cuda:"):
            parser.error(
                f"backend {b!r} is not available here (available: "
                f"{', '.join(available_backends())}; valid names: {', '.join(VALID_NAMES)})"
            )
    trainable_activation(parser, args.activation)


def _validate_check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    from .. import losses
    from .check import output_width_problem
    from .comparison import model_output_width

    import_modules(parser, args.imports)
    trainable_activation(parser, args.activation)
    try:
        args.loss_fn = losses.get(args.loss)  # the one lookup: run_check takes the object
    except (TypeError, ValueError) as e:
        parser.error(f"--loss: {e}")
    if args.model:
        spec = args.model
        args.model = model_function(parser, spec)
        try:
            width = model_output_width(args.model, args.sizes[0])
        except Exception as e:  # noqa: BLE001 - the user's function or layers
            parser.error(f"--model {spec}: cannot build the model: {type(e).__name__}: {e}")
        problem = output_width_problem(args.loss_fn, width)
        if problem:
            parser.error(f"--model {spec}: {problem}; make its last layer as wide as the "
                         "number of classes, or use --loss mse")
        return
    if len(args.sizes) < 2:
        parser.error(f"--sizes needs an input and an output width, e.g. 784,1024,10 (the input "
                     f"width alone only with --model); got {args.sizes[0]}")
    problem = output_width_problem(args.loss_fn, args.sizes[-1])
    if problem:
        parser.error(f"--sizes: {problem}; end the sizes with the number of classes, or use "
                     "--loss mse")



def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.out, backend=args.backend, epochs=args.epochs, seed=args.seed,
             verbose=0 if args.quiet else 1)
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    import numpy as np

    from .. import __version__, available_backends

    print(f"mlpx {__version__}, numpy {np.__version__}")
    print(f"available backends: {', '.join(available_backends())}")
    print(f"cuda: {cuda_status()}")
    from ..backends.cpu_choices import describe, measure_training_shapes

    if args.measure:  # the benchmark models' training steps (mlpx bench's defaults)
        from ..backends import measured

        if measured.busy():
            print("mlpx info --measure: this machine is busy (load average above twice its "
                  "CPUs), so nothing is measured now; run it again when the machine is quiet")
        measure_training_shapes({(784, 1024, 1024, 10): (256, 1024, 4096),
                                 (784, 256, 128, 10): (32, 64, 128, 256)})
    print(describe())
    from ..backends._bf16_gemm import describe as describe_bf16

    print(f"dtype='mixed_bfloat16' on the cpu: {describe_bf16()}")
    if "cuda" in available_backends():
        from ..backends import get_backend
        from ..backends._cuda_bf16 import describe as describe_cuda

        try:
            line = describe_cuda(get_backend("cuda"))
        except Exception as e:  # noqa: BLE001 - info reports what it finds, it never fails
            line = f"unknown: the cuda backend did not start ({type(e).__name__}: {e})"
        print(f"dtype='mixed_bfloat16' on cuda: {line}")
    return 0


def cuda_status() -> str:
    """How many GPUs the cuda backend sees, or why it cannot run here and the fix."""
    from .._compat import gpu_count
    from ..backends import cuda_unavailable_reason

    reason = cuda_unavailable_reason()
    return f"not available: {reason}" if reason else f"{gpu_count()} GPU(s)"


def _add_demo(sub: Any) -> None:
    p = sub.add_parser("demo", help="train an MLP on the digits data set, plot loss curves")
    p.add_argument("--out", default="demo_output", help="directory for the loss-curve PNG")
    p.add_argument("--backend", type=backend_name, default="auto",
                   help="cpu, cuda, cuda:N, reference or auto")
    p.add_argument("--epochs", type=positive_int("--epochs"), default=30)
    p.add_argument("--seed", type=non_negative_int("--seed"), default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_demo, validate=_validate_demo)


def _unimportable(sub: Any, command: str, help: str, error: ImportError) -> None:
    """A subcommand whose module cannot be imported: listed, and it says why when run."""

    def report(args: argparse.Namespace) -> int:
        print(f"mlpx {command}: cannot import mlpx.commands.{command}: {error}", file=sys.stderr)
        return 1

    # "+" as the option prefix: every argument is taken as given, then the error is reported
    p = sub.add_parser(command, help=f"{help} (unavailable: {error})", add_help=False,
                       prefix_chars="+")
    p.add_argument("rest", nargs="*")
    p.set_defaults(func=report, validate=None)


def _add_bench(sub: Any) -> None:
    help = "throughput sweep over backends and batch sizes, against PyTorch and JAX"
    try:
        from . import bench
    except ImportError as e:
        return _unimportable(sub, "bench", help, e)
    CPU_BATCHES, GPU_BATCHES = bench.CPU_BATCHES, bench.GPU_BATCHES
    QUICK_BATCHES, EPOCH_SAMPLES = bench.QUICK_BATCHES, bench.EPOCH_SAMPLES
    p = sub.add_parser("bench", help=help, description=bench.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", type=backend_name, action="append", default=None,
                   help="backend to measure (repeatable); default: every available backend")
    p.add_argument("--dtype", type=dtype_list, default=["float32"],
                   help="float32, float64 or both: float32,float64")
    p.add_argument("--sizes", type=sizes_type, default=list(DEFAULT_SIZES),
                   help="layer widths, input first (default 784,1024,1024,10)")
    p.add_argument("--activation", default="relu", help="hidden activation (default relu)")
    p.add_argument("--batches", type=int_list("--batches"), default=None,
                   help=f"batch sizes (default CPU {','.join(map(str, CPU_BATCHES))}; GPU up "
                        f"to {GPU_BATCHES[-1]} or the largest that fits; --profile "
                        f"{','.join(map(str, QUICK_BATCHES))})")
    p.add_argument("--peers", type=peer_list, default=None,
                   help="peer frameworks, comma-separated: torch, jax, or none (default: torch "
                        "when installed); a peer that is not installed is reported as skipped")
    p.add_argument("--rounds", type=positive_int("--rounds"), default=None,
                   help="alternated mlpx/peer rounds per batch size (default 5; --profile 1)")
    p.add_argument("--min-time", type=non_negative_float("--min-time"), default=1.0,
                   help="seconds of timed training per measurement, at least 3 epochs "
                        "(default 1.0)")
    p.add_argument("--epoch-samples", type=positive_int("--epoch-samples"),
                   default=EPOCH_SAMPLES,
                   help=f"samples per epoch, rounded up to whole batches (default "
                        f"{EPOCH_SAMPLES})")
    p.add_argument("--threads", type=positive_int("--threads"), default=os.cpu_count() or 1,
                   help="CPU threads for BLAS and the peers (default: all cores)")
    p.add_argument("--no-torch", action="store_true", help="same as --peers none")
    p.add_argument("--profile", action="store_true",
                   help="per-op breakdown of mlpx's training step against the GEMMs alone "
                        "and the peers' steps")
    p.add_argument("--out", default=None,
                   help=f"results directory (default {bench.DEFAULT_RESULTS_DIR}/<date>-<host> "
                        "in the working directory)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: batches 256,1024, 1 round, short timings")
    p.add_argument("--no-plot", action="store_true", help="do not write the PNG plot")
    p.set_defaults(func=bench.run_command, validate=_validate_bench)


def _add_check(sub: Any) -> None:
    help = ("compare outputs and gradients of every backend (and PyTorch) with a float64 "
            "reference; non-zero exit on any difference above tolerance")
    try:
        from . import check
    except ImportError as e:
        return _unimportable(sub, "check", help, e)
    p = sub.add_parser("check", help=help, description=check.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int_list("--sizes"), default=list(DEFAULT_SIZES),
                   help="layer widths, input first (default 784,1024,1024,10); with --model "
                        "the input width alone")
    p.add_argument("--batch", type=positive_int("--batch"), default=256,
                   help="batch size (default 256)")
    p.add_argument("--activation", default="relu",
                   help="hidden activation, built in or registered (default relu)")
    p.add_argument("--loss", default="cross_entropy",
                   help="loss, built in or registered (default cross_entropy)")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import MODULE first (repeatable): where user-defined activations, "
                        "losses and layers register themselves")
    p.add_argument("--model", default=None, metavar="MODULE:FUNCTION",
                   help="a function returning the model's layers (user-defined layers "
                        "included) instead of the Dense stack of --sizes; --sizes then gives "
                        "only the input width")
    p.add_argument("--dtype", type=dtype_list, default=["float64", "float32"],
                   help="dtypes to check (default float64,float32)")
    p.add_argument("--backend", type=backend_name, action="append", default=None,
                   help="backend to check (repeatable); default every available backend")
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    p.add_argument("--seed", type=non_negative_int("--seed"), default=0)
    p.set_defaults(func=check.run_command, validate=_validate_check)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = Parser(prog="mlpx", description=__doc__.split("\n\n")[0],
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"mlpx {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=Parser, metavar="COMMAND")
    from .tabular_parser import add_train_and_predict

    add_train_and_predict(sub)
    _add_demo(sub)
    info = sub.add_parser("info", help="versions, the available backends, and why cuda is "
                                          "missing where it is")
    info.add_argument("--measure", action="store_true",
                      help="measure (once per machine, thread count and library versions) "
                           "the cpu GEMM routes of the benchmark models' training steps "
                           "before reporting them")
    info.set_defaults(func=_cmd_info, validate=None)
    _add_bench(sub)
    _add_check(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for any usage error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:  # bare `mlpx`: what it can do, not a usage error
            parser.print_help()
            return 0
        if args.validate is not None:
            sub = parser._subparsers._group_actions[0].choices[args.command]  # type: ignore
            args.validate(sub, args)
    except SystemExit as e:  # usage errors, --help, --version
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
