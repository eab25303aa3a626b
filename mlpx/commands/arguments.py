"""The command line's argument types and the checks that span arguments.

Every type raises `argparse.ArgumentTypeError` with a message that names the option and what
it takes, so that the parser prints one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

#: the model that `mlpx bench` and `mlpx check` measure unless --sizes says otherwise
DEFAULT_SIZES = (784, 1024, 1024, 10)
DTYPES = ("float32", "float64")


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `mlpx check: --seed must be >= 0, got -1`, exit 2."""

    def error(self, message: str) -> NoReturn:
        # "argument --seed: --seed must be ..." says the name once
        message = re.sub(r"^argument (\S+): \1 ", r"\1 ", message)
        self.exit(2, f"{self.prog}: {message}\n")


# --------------------------------------------------------------------------- argument types
def number(what: str, kind: Callable[[str], Any], holds: Callable[[Any], bool],
           bound: str) -> Callable[[str], Any]:
    """An argument type: `text` converted by `kind` (int or float) for which `holds` is
    true, else "`what` must be `bound`, got ..." (a NaN fails every bound)."""
    noun = "an integer" if kind is int else "a number"

    def parse(text: str) -> Any:
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be {noun}, got {text!r}") from None
        if not holds(v):
            raise argparse.ArgumentTypeError(f"{what} must be {bound}, got {text.strip()}")
        return v

    return parse


def positive_int(what: str) -> Callable[[str], int]:
    return number(what, int, lambda v: v >= 1, ">= 1")


def non_negative_int(what: str) -> Callable[[str], int]:
    return number(what, int, lambda v: v >= 0, ">= 0")


def non_negative_float(what: str) -> Callable[[str], float]:
    return number(what, float, lambda v: v >= 0, ">= 0")


def positive_float(what: str) -> Callable[[str], float]:
    return number(what, float, lambda v: 0 < v < math.inf, "> 0")


def fraction(what: str) -> Callable[[str], float]:
    return number(what, float, lambda v: 0 <= v < 1, "in [0, 1)")


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


def column_list(text: str) -> list[str]:
    """Comma-separated column names."""
    names = [v.strip() for v in str(text).split(",") if v.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated column names, got {text!r}")
    return names


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
    from ..backends import check_backend_name

    try:
        return check_backend_name(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def peer_list(text: str) -> list[str]:
    from ..peers import PEERS

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
def import_user_module(name: str) -> Any:
    """Import a module of the user's, found in the working directory as `python -m` finds
    it (an installed `mlpx` script does not put that directory on the path by itself)."""
    cwd = os.getcwd()
    if not any(entry in ("", ".", cwd) for entry in sys.path):
        sys.path.insert(0, cwd)
    return importlib.import_module(name)


def import_modules(parser: argparse.ArgumentParser, modules: Sequence[str]) -> None:
    """Import the modules that register user-defined parts (--import)."""
    for name in modules or ():
        try:
            import_user_module(name)
        except Exception as e:  # noqa: BLE001 - any failure is the user's module's
            parser.error(f"--import {name}: {type(e).__name__}: {e}")


def model_function(parser: argparse.ArgumentParser, spec: str) -> Callable[[], list[Any]]:
    """--model MODULE:FUNCTION: the user's function that returns a model's layers."""
    module, _, attr = spec.partition(":")
    if not (module and attr):
        parser.error(f"--model must be MODULE:FUNCTION (a function returning a list of "
                     f"layers), got {spec!r}")
    try:
        fn = getattr(import_user_module(module), attr)
    except Exception as e:  # noqa: BLE001 - the user's module
        parser.error(f"--model {spec}: {type(e).__name__}: {e}")
    if not callable(fn):
        parser.error(f"--model {spec}: {attr} is not a function")
    return fn


def trainable_activation(parser: argparse.ArgumentParser, name: str) -> None:
    """A hidden activation the training step can use (--activation of train, bench)."""
    problem = activation_error(name)
    if problem:
        parser.error(f"--activation: {problem}")


def available_backend(parser: argparse.ArgumentParser, name: str) -> None:
    """Build the backend now, so that a missing GPU is a usage error, not a traceback."""
    from .. import backends
    from ..errors import BackendUnavailableError

    try:
        backends.get_backend(name)
    except (BackendUnavailableError, ValueError) as e:
        parser.error(str(e))


def activation_error(name: str) -> str | None:
    """Why `name` cannot be the hidden activation of a trained MLP, or None if it can."""
    from .. import activations

    try:
        act = activations.get(name)
    except (ValueError, TypeError) as e:
        return str(e)
    if not act.differentiable:
        return (f"the {act.name!r} activation has no gradient, so there is no training step to "
                "measure or check; choose a differentiable one such as relu or tanh")
    return None
