"""The `mlpx` command line: `mlpx train`, `mlpx predict`, `mlpx demo`, `mlpx bench`,
`mlpx check`, `mlpx info`.

Every subcommand's arguments are declared here, with shared argument types (sizes, dtypes,
backend names checked by the backend registry, counts, seeds). Every usage error, also those
that depend on several arguments or on this machine, goes through the parser before any work
starts: one line on stderr, exit status 2, no traceback. The subcommands' modules are
imported when they run; one that fails to import is reported, never dropped from the list.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

DEFAULT_SIZES = (784, 1024, 1024, 10)
DTYPES = ("float32", "float64")


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `mlpx check: --seed must be >= 0, got -1`, exit 2."""

    def error(self, message: str) -> NoReturn:
        # "argument --seed: --seed must be ..." says the name once
        message = re.sub(r"^argument (\S+): \1 ", r"\1 ", message)
        self.exit(2, f"{self.prog}: {message}\n")


# --------------------------------------------------------------------------- argument types
def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be an integer, got {text!r}") from None


def positive_int(what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        v = _int(text, what)
        if v < 1:
            raise argparse.ArgumentTypeError(f"{what} must be >= 1, got {v}")
        return v

    return parse


def non_negative_int(what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        v = _int(text, what)
        if v < 0:
            raise argparse.ArgumentTypeError(f"{what} must be >= 0, got {v}")
        return v

    return parse


def non_negative_float(what: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a number, got {text!r}") from None
        if not v >= 0:  # NaN too
            raise argparse.ArgumentTypeError(f"{what} must be >= 0, got {text}")
        return v

    return parse


def int_list(what: str, min_len: int = 1) -> Callable[[str], list[int]]:
    """Comma-separated positive integers, at least `min_len` of them."""

    def parse(text: str) -> list[int]:
        try:
            values = [int(v) for v in str(text).replace(" ", "").split(",") if v]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{what} must be comma-separated integers such as 256,1024; got {text!r}"
            ) from None
        if not values or min(values) < 1:
            raise argparse.ArgumentTypeError(f"{what} must be positive integers; got {text!r}")
        if len(values) < min_len:
            raise argparse.ArgumentTypeError(
                f"{what} needs at least an input and an output width, e.g. 784,1024,10; "
                f"got {text!r}"
            )
        return values

    return parse


sizes_type = int_list("--sizes", min_len=2)


def dtype_list(text: str) -> list[str]:
    """float32, float64, mixed_bfloat16 (mlpx.precision), comma-separated."""
    dtypes = [d.strip() for d in str(text).split(",") if d.strip()]
    if not dtypes or any(d not in (*DTYPES, "mixed_bfloat16") for d in dtypes):
        raise argparse.ArgumentTypeError(
            "--dtype must be float32, float64, mixed_bfloat16 or several of them "
            f"(float32,mixed_bfloat16); got {text!r}"
        )
    return list(dict.fromkeys(dtypes))


def backend_name(text: str) -> str:
    """A backend name the backend registry knows (availability is checked separately)."""
    from .backends import check_backend_name

    try:
        return check_backend_name(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def peer_list(text: str) -> list[str]:
    from .peers import PEERS

    names = [v for v in str(text).replace(" ", "").lower().split(",") if v]
    if names in (["none"], []):
        return []
    unknown = [v for v in names if v not in PEERS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown peer {unknown[0]!r}; choose from {', '.join(PEERS)} (comma-separated), "
            "or none"
        )
    return list(dict.fromkeys(names))


# ---------------------------------------------------------------- checks across arguments
def import_modules(parser: argparse.ArgumentParser, modules: Sequence[str]) -> None:
    """Import the modules that register user-defined parts (--import)."""
    for name in modules or ():
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - any failure is the user's module's
            parser.error(f"--import {name}: {type(e).__name__}: {e}")


def trainable_activation(parser: argparse.ArgumentParser, name: str) -> None:
    from .check import activation_error

    problem = activation_error(name)
    if problem:
        parser.error(f"--activation: {problem}")


def available_backend(parser: argparse.ArgumentParser, name: str) -> None:
    """Build the backend now, so that a missing GPU is a usage error, not a traceback."""
    from . import backends
    from .errors import BackendUnavailableError

    try:
        backends.get_backend(name)
    except (BackendUnavailableError, ValueError) as e:
        parser.error(str(e))


def _validate_demo(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    from .demo import check_out_dir

    available_backend(parser, args.backend)
    try:  # before the data loads and the training runs
        check_out_dir(args.out)
    except OSError as e:
        parser.error(f"--out: {e}")


def _validate_bench(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    from .backends import VALID_NAMES, available_backends

    for b in args.backend or []:
        if b not in available_backends() and not b.startswith("cuda:"):
            parser.error(
                f"backend {b!r} is not available here (available: "
                f"{', '.join(available_backends())}; valid names: {', '.join(VALID_NAMES)})"
            )
    trainable_activation(parser, args.activation)


def _validate_check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    import_modules(parser, args.imports)
    from . import losses as L

    trainable_activation(parser, args.activation)
    try:
        loss = L.get(args.loss)
    except (TypeError, ValueError) as e:
        parser.error(f"--loss: {e}")
    if args.model:
        args.model = _model_function(parser, args.model)
    elif loss.name in ("cross_entropy", "nll") and args.sizes[-1] < 2:
        parser.error(
            f"--sizes: loss {loss.name!r} needs at least 2 outputs (one per class), got "
            f"{args.sizes[-1]}; end the sizes with the number of classes, or use --loss mse"
        )


def _validate_train(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Read and encode the data now: a bad file or column is a usage error, not a crash
    after training."""
    from . import optim
    from .tabular import TabularError
    from .tabular_commands import check_out_dir, prepare_train

    trainable_activation(parser, args.activation)
    if args.optimizer.lower() not in optim.names():
        parser.error(f"--optimizer: unknown optimizer {args.optimizer!r}; choose from "
                     f"{', '.join(optim.names())}")
    available_backend(parser, args.backend)
    try:
        check_out_dir(args.out)
        args.job = prepare_train(args.data, args.target, args.task, args.drop,
                                 args.val_fraction, args.test_fraction, args.seed)
    except TabularError as e:
        parser.error(str(e))


def _validate_predict(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    from .tabular import TabularError
    from .tabular_commands import prepare_predict

    available_backend(parser, args.backend)
    if args.out != "-":
        out = Path(args.out)
        if out.is_dir() or not out.parent.is_dir():
            parser.error(f"--out: cannot write {args.out!r}: give a CSV file path in an "
                         "existing directory")
    try:
        args.job = prepare_predict(args.model, args.data, args.proba, args.backend)
    except TabularError as e:
        parser.error(str(e))


def _model_function(parser: argparse.ArgumentParser, spec: str) -> Callable[[], list[Any]]:
    module, _, attr = spec.partition(":")
    if not (module and attr):
        parser.error(f"--model must be MODULE:FUNCTION (a function returning a list of "
                     f"layers), got {spec!r}")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except Exception as e:  # noqa: BLE001 - the user's module
        parser.error(f"--model {spec}: {type(e).__name__}: {e}")
    if not callable(fn):
        parser.error(f"--model {spec}: {attr} is not a function")
    return fn


# ------------------------------------------------------------------------------- commands
def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.out, backend=args.backend, epochs=args.epochs, seed=args.seed,
             verbose=0 if args.quiet else 1)
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    import numpy as np

    from . import __version__, available_backends

    print(f"mlpx {__version__}, numpy {np.__version__}")
    print(f"available backends: {', '.join(available_backends())}")
    from .backends._bf16_gemm import describe

    print(f"dtype='mixed_bfloat16' on the cpu: {describe()}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .tabular_commands import run_train

    run_train(args.job, args.out, args.hidden, activation=args.activation, epochs=args.epochs,
              batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
              backend=args.backend, seed=args.seed, verbose=0 if args.quiet else 1,
              dtype=args.dtype)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from .tabular_commands import run_predict

    run_predict(args.job, args.out, proba=args.proba)
    return 0


def column_list(text: str) -> list[str]:
    """Comma-separated column names."""
    names = [v.strip() for v in str(text).split(",") if v.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated column names, got {text!r}")
    return names


def fraction(what: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a number, got {text!r}") from None
        if not 0 <= v < 1:  # NaN too
            raise argparse.ArgumentTypeError(f"{what} must be in [0, 1), got {text}")
        return v

    return parse


def positive_float(what: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a number, got {text!r}") from None
        if not (v > 0 and v < float("inf")):
            raise argparse.ArgumentTypeError(f"{what} must be > 0, got {text}")
        return v

    return parse


TRAIN_EPILOG = """\
data files:
  .csv              a header row names the columns; numbers, text and true/false cells
  .parquet, .pq     needs pyarrow (pip install pyarrow)
  .npy              a 2-D array; --target is a column index (-1: the last column)
  .npz              one 1-D array per column (--target names one), or a 2-D feature
                    array X next to a 1-D target array (--target y)

The task is inferred from the target: text, true/false or at most 20 integer levels mean
classification, other numbers regression (override with --task). Numeric features are
standardised on the training rows; text features are one-hot encoded (a text column with
more than 100 distinct values, mostly unique, is refused: --drop it). Missing values are
refused. OUT gets model.safetensors, model.json (the preprocessing, read by mlpx predict)
and loss_curves.png (with matplotlib).

example:
  mlpx train iris.csv --target species --hidden 64,32 --epochs 50 --out iris_model
  mlpx predict iris_model new.csv --out predictions.csv --proba
"""


def _add_train(sub: Any) -> None:
    p = sub.add_parser(
        "train", help="train an MLP on a CSV, Parquet, .npy or .npz file",
        description="Train an MLP classifier or regressor on a tabular file: features\n"
                    "standardised, text columns one-hot encoded, a validation split, the\n"
                    "held-out test score, the model and its loss curves saved.",
        epilog=TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", metavar="DATA", help="the training file (.csv, .parquet, .npy, "
                                                ".npz)")
    p.add_argument("--target", required=True, metavar="COLUMN",
                   help="the column to predict (in .npy files a column index, e.g. -1)")
    p.add_argument("--task", choices=("auto", "classification", "regression"), default="auto",
                   help="default auto: inferred from the target column")
    p.add_argument("--drop", type=column_list, default=[], metavar="COL,...",
                   help="columns to leave out (identifiers, free text)")
    p.add_argument("--hidden", type=int_list("--hidden"), default=[128, 64],
                   metavar="N,N,...", help="hidden layer widths (default 128,64)")
    p.add_argument("--activation", default="relu", help="hidden activation (default relu)")
    p.add_argument("--epochs", type=positive_int("--epochs"), default=30,
                   help="default 30")
    p.add_argument("--batch-size", type=positive_int("--batch-size"), default=32,
                   help="default 32")
    p.add_argument("--lr", type=positive_float("--lr"), default=1e-3,
                   help="learning rate (default 0.001)")
    p.add_argument("--optimizer", default="adam", help="adam (default), sgd, adamw, rmsprop, "
                                                       "...")
    p.add_argument("--val-fraction", type=fraction("--val-fraction"), default=0.1,
                   help="share of the rows for the validation loss curve (default 0.1)")
    p.add_argument("--test-fraction", type=fraction("--test-fraction"), default=0.2,
                   help="share of the rows held out for the test score (default 0.2)")
    p.add_argument("--backend", type=backend_name, default="auto",
                   help="cpu, cuda, cuda:N, reference or auto (default)")
    p.add_argument("--seed", type=non_negative_int("--seed"), default=0,
                   help="seeds the split and the initial weights (default 0)")
    p.add_argument("--dtype", choices=(*DTYPES, "mixed_bfloat16"), default="float32",
                   help="float32 (default), float64, or mixed_bfloat16: float32 weights, "
                        "bfloat16 matrix products (see docs/precision.md)")
    p.add_argument("--out", default="mlpx_model", metavar="DIR",
                   help="output directory (default mlpx_model)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train, validate=_validate_train)


def _add_predict(sub: Any) -> None:
    p = sub.add_parser(
        "predict", help="apply a model saved by mlpx train to a file",
        description="Predict with a model saved by mlpx train: the file is read and encoded "
                    "as the training file was (its target column may be absent; when present "
                    "the score is reported). Writes a CSV with one row per input row: class "
                    "labels (and with --proba one probability column per class) or values.")
    p.add_argument("model", metavar="MODEL",
                   help="the --out directory of mlpx train, or its model.safetensors")
    p.add_argument("data", metavar="DATA", help="the file to predict (.csv, .parquet, .npy, "
                                                ".npz)")
    p.add_argument("--out", default="-", metavar="FILE",
                   help="CSV file for the predictions (default: standard output)")
    p.add_argument("--proba", action="store_true",
                   help="add class probabilities (classification)")
    p.add_argument("--backend", type=backend_name, default="cpu",
                   help="cpu (default), cuda, cuda:N, reference or auto")
    p.set_defaults(func=_cmd_predict, validate=_validate_predict)


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
        print(f"mlpx {command}: cannot import mlpx.{command}: {error}", file=sys.stderr)
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
                   help="results directory (default benchmarks/results/<date>-<host>)")
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
    p.add_argument("--sizes", type=sizes_type, default=list(DEFAULT_SIZES),
                   help="layer widths, input first (default 784,1024,1024,10)")
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
    from . import __version__

    parser = Parser(prog="mlpx", description=__doc__.split("\n\n")[0],
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"mlpx {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    _add_train(sub)
    _add_predict(sub)
    _add_demo(sub)
    info = sub.add_parser("info", help="versions and available backends")
    info.set_defaults(func=_cmd_info, validate=None)
    _add_bench(sub)
    _add_check(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for any usage error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.validate is not None:
            sub = parser._subparsers._group_actions[0].choices[args.command]  # type: ignore
            args.validate(sub, args)
    except SystemExit as e:  # usage errors, --help, --version
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
