"""The arguments of `mlpx train` and `mlpx predict`, their checks and their commands.

`add_train_and_predict(sub)` declares both subcommands on the `mlpx` parser. Checks that need
the data run in the validators, before any training: a bad file, column or option is one
usage line and exit status 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

SEPARATOR_NAMES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|",
                   "space": " "}

TRAIN_EPILOG = """\
data files:
  .csv, .tsv, .txt  a header row names the columns; numbers, text and true/false cells;
                    the separator is detected (, ; tab |) or given with --sep; decimal
                    commas (1,5) are read as numbers in files not separated by commas
  .parquet, .pq     needs pyarrow (pip install pyarrow)
  .npy              a 2-D array; --target is a column index (-1: the last column)
  .npz              one 1-D array per column (--target names one), or a 2-D feature
                    array X next to a 1-D target array (--target y)

CSV files are read with pyarrow when installed (pip install "mlpx[tabular]": faster, less
memory), else with Python's csv module, the same way.

The task is inferred from the target: text, true/false or at most 20 integer levels mean
classification, other numbers regression (override with --task). Numeric features are
standardised on the training rows; text features are one-hot encoded (a text column with
more than 200 distinct values is refused: --drop it, or --max-categories N keeps its N-1
most frequent values and one input for the rest). Missing values are refused unless
--missing says what to do. OUT gets model.safetensors, model.json (the preprocessing, read
by mlpx predict and mlpx.TabularModel) and loss_curves.png (with matplotlib).

example:
  mlpx train iris.csv --target species --hidden 64,32 --epochs 50 --out iris_model
  mlpx predict iris_model new.csv --out predictions.csv --proba
"""


def separator(text: str) -> str:
    """A column separator: one character, or tab, comma, semicolon, pipe, space."""
    sep = SEPARATOR_NAMES.get(text.lower(), text)
    if len(sep) != 1 or sep in "\"\r\n":
        raise argparse.ArgumentTypeError(
            f"--sep must be one character (or tab, comma, semicolon, pipe, space), got {text!r}")
    return sep


def na_list(text: str) -> list[str]:
    """Comma-separated cell values that mean "missing"."""
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"--na-values: expected comma-separated cell values, "
                                         f"got {text!r}")
    return values


def at_least_two(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--max-categories must be a whole number, got "
                                         f"{text!r}") from None
    if n < 2:
        raise argparse.ArgumentTypeError(f"--max-categories must be >= 2 (the most frequent "
                                         f"values and one input for the rest), got {n}")
    return n


def _add_reading_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sep", type=separator, default=None, metavar="CHAR",
                   help="CSV column separator: , ; tab | ... (default: detected from the "
                        "header; tab for .tsv)")
    p.add_argument("--decimal", choices=("auto", ".", ","), default="auto", metavar="MARK",
                   help="decimal mark of CSV numbers: . or , (default auto: '.', and ',' as "
                        "in 1,5 when the separator is not a comma)")
    p.add_argument("--na-values", type=na_list, default=[], metavar="TEXT,...",
                   help="more cells to read as missing, e.g. ? (besides empty cells and, in "
                        "any case, NA, N/A, NaN, null, None, #N/A, #NA, <NA>, -NaN)")


def add_train_and_predict(sub: Any) -> None:
    """Declare `mlpx train` and `mlpx predict` on the subcommand parsers."""
    _add_train(sub)
    _add_predict(sub)


def _add_train(sub: Any) -> None:
    from .arguments import (
        backend_name,
        column_list,
        fraction,
        int_list,
        non_negative_int,
        positive_float,
        positive_int,
    )

    p = sub.add_parser(
        "train", help="train an MLP on a CSV, TSV, Parquet, .npy or .npz file",
        description="Train an MLP classifier or regressor on a tabular file: features\n"
                    "standardised, text columns one-hot encoded, a validation split, the\n"
                    "held-out test score, the model and its loss curves saved.",
        epilog=TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", metavar="DATA", help="the training file (.csv, .tsv, .txt, "
                                                ".parquet, .npy, .npz)")
    p.add_argument("--target", required=True, metavar="COLUMN",
                   help="the column to predict (in .npy files a column index, e.g. -1)")
    p.add_argument("--task", choices=("auto", "classification", "regression"), default="auto",
                   help="default auto: inferred from the target column")
    p.add_argument("--drop", type=column_list, default=[], metavar="COL,...",
                   help="columns to leave out (identifiers, free text)")
    p.add_argument("--missing", choices=("drop", "mean", "median", "most_frequent"),
                   default=None,
                   help="missing cells: drop their rows, or fill them with the training rows' "
                        "mean, median or most frequent value (text columns: most frequent); "
                        "default: refused")
    p.add_argument("--max-categories", type=at_least_two, default=None, metavar="N",
                   help="text columns with more values keep the N-1 most frequent, the rest "
                        "share one input (default: refuse more than 200)")
    _add_reading_options(p)
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
    p.add_argument("--dtype", choices=("float32", "float64", "mixed_bfloat16"),
                   default="float32",
                   help="float32 (default), float64, or mixed_bfloat16: float32 weights, "
                        "bfloat16 matrix products (see docs/precision.md)")
    p.add_argument("--out", default="mlpx_model", metavar="DIR",
                   help="output directory (default mlpx_model)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train, validate=_validate_train)


def _add_predict(sub: Any) -> None:
    from .arguments import backend_name

    p = sub.add_parser(
        "predict", help="apply a model saved by mlpx train to a file",
        description="Predict with a model saved by mlpx train: the file is read and encoded "
                    "as the training file was (its columns take the training file's kinds; "
                    "its target column may be absent; when present the score is reported). "
                    "Writes a CSV with one row per input row: class labels (and with --proba "
                    "one probability column per class) or values.")
    p.add_argument("model", metavar="MODEL",
                   help="the --out directory of mlpx train, or its model.safetensors")
    p.add_argument("data", metavar="DATA", help="the file to predict (.csv, .tsv, .txt, "
                                                ".parquet, .npy, .npz)")
    p.add_argument("--out", default="-", metavar="FILE",
                   help="CSV file for the predictions (default: standard output)")
    p.add_argument("--proba", action="store_true",
                   help="add class probabilities (classification)")
    _add_reading_options(p)
    p.add_argument("--backend", type=backend_name, default="cpu",
                   help="cpu (default), cuda, cuda:N, reference or auto")
    p.set_defaults(func=_cmd_predict, validate=_validate_predict)


# ------------------------------------------------------------------------------- checks
def _validate_train(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Read and encode the data now: a bad file or column is a usage error, not a crash
    after training."""
    from .. import optim
    from ..tabular import TabularError
    from .arguments import available_backend, trainable_activation
    from .tabular_commands import check_out_dir, prepare_train

    trainable_activation(parser, args.activation)
    if args.optimizer.lower() not in optim.names():
        parser.error(f"--optimizer: unknown optimizer {args.optimizer!r}; choose from "
                     f"{', '.join(optim.names())}")
    available_backend(parser, args.backend)
    try:
        check_out_dir(args.out)
    except OSError as e:
        parser.error(f"--out: {e}")
    try:
        args.job = prepare_train(args.data, args.target, args.task, args.drop,
                                 args.val_fraction, args.test_fraction, args.seed,
                                 sep=args.sep, decimal=args.decimal, missing=args.missing,
                                 max_categories=args.max_categories, na_values=args.na_values)
    except TabularError as e:
        parser.error(str(e))


def _validate_predict(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    from ..tabular import TabularError
    from .arguments import available_backend
    from .tabular_commands import prepare_predict

    available_backend(parser, args.backend)
    if args.out != "-":
        out = Path(args.out)
        if out.is_dir() or not out.parent.is_dir():
            parser.error(f"--out: cannot write {args.out!r}: give a CSV file path in an "
                         "existing directory")
    try:
        args.job = prepare_predict(args.model, args.data, args.proba, args.backend,
                                   sep=args.sep, decimal=args.decimal, na_values=args.na_values)
    except TabularError as e:
        parser.error(str(e))


# ------------------------------------------------------------------------------ commands
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
