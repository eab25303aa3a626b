"""The command line's argument types: each accepts what it names and refuses the rest with a
message naming the option, its bound and the value given."""

from __future__ import annotations

import argparse

import pytest

from mlpx.commands.arguments import (
    fraction,
    int_list,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)


@pytest.mark.parametrize("kind, text, value", [
    (positive_int, "3", 3), (non_negative_int, "0", 0), (non_negative_float, "0", 0.0),
    (positive_float, "1e-3", 1e-3), (fraction, "0", 0.0), (fraction, "0.25", 0.25),
])
def test_accepted(kind, text, value):
    assert kind("--x")(text) == value


@pytest.mark.parametrize("kind, text, message", [
    (positive_int, "0", "--x must be >= 1, got 0"),
    (positive_int, "1.5", "--x must be an integer, got '1.5'"),
    (non_negative_int, "-1", "--x must be >= 0, got -1"),
    (non_negative_float, "nan", "--x must be >= 0, got nan"),
    (non_negative_float, "fast", "--x must be a number, got 'fast'"),
    (positive_float, "inf", "--x must be > 0, got inf"),
    (positive_float, "0", "--x must be > 0, got 0"),
    (fraction, "1", "--x must be in [0, 1), got 1"),
    (fraction, "nan", "--x must be in [0, 1), got nan"),
])
def test_refused_with_the_bound(kind, text, message):
    with pytest.raises(argparse.ArgumentTypeError) as e:
        kind("--x")(text)
    assert str(e.value) == message


def test_int_list_needs_its_minimum_length():
    assert int_list("--sizes", min_len=2)("784, 10") == [784, 10]
    with pytest.raises(argparse.ArgumentTypeError, match="at least an input and an output"):
        int_list("--sizes", min_len=2)("8")
    with pytest.raises(argparse.ArgumentTypeError, match="positive integers"):
        int_list("--hidden")("0")
