"""mlpx.tabular.schema_file: the preprocessing JSON round-trips, and any damaged or
hand-edited file is one TabularError naming the problem, never another exception."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from mlpx.tabular import Preprocessing, TabularError
from mlpx.tabular.schema_file import preprocessing_from_json, preprocessing_json


@pytest.fixture(scope="module")
def doc() -> dict:
    t = {"x": np.array([1.0, 2.0, 4.0, 8.0]), "c": np.array(["a", "b", "a", None], dtype=object),
         "y": np.array(["p", "q", "p", "q"], dtype=object)}
    return json.loads(preprocessing_json(Preprocessing.fit(t, "y", missing="most_frequent")))


def test_round_trip(doc):
    pre = preprocessing_from_json(json.dumps(doc))
    assert preprocessing_from_json(preprocessing_json(pre)) == pre
    assert pre.features[1].fill == "a" and pre.missing == "most_frequent"


def test_version_1_files_still_load(doc):
    old = copy.deepcopy(doc)
    old["format_version"] = 1
    del old["missing"]
    for f in old["features"]:
        del f["fill"], f["other"]
    pre = preprocessing_from_json(json.dumps(old))
    assert pre.missing is None and pre.features[1].fill is None


def edited(doc: dict, path: tuple, value) -> str:
    d = copy.deepcopy(doc)
    node = d
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return json.dumps(d)


EDITS = [
    (("format",), "other", "'format'"),
    (("format_version",), 99, "format_version"),
    (("format_version",), "2", "format_version"),
    (("target",), 5, "'target'"),
    (("target",), KeyError, "'target' is missing"),
    (("task",), "clustering", "'task'"),
    (("features",), {}, "'features'"),
    (("features",), [], "'features'"),
    (("features", 0), "x", "features[0] is not an object"),
    (("features", 0, "kind"), "date", "features[0].kind"),
    (("features", 0, "name"), ["x"], "features[0].name"),
    (("features", 1, "name"), "x", "appears twice"),
    (("features", 1, "categories"), [1, 2], "features[1].categories"),
    (("features", 1, "categories"), ["a", "a"], "repeats a value"),
    (("features", 1, "fill"), 3, "features[1].fill"),
    (("features", 0, "fill"), "lots", "features[0].fill"),
    (("features", 0, "surprise"), 1, "unknown entries"),
    (("mean",), [0.0], "'mean' has 1 entries; the features encode to 3"),
    (("mean", 0), "NaN", "mean[0]"),
    (("scale", 1), 0.0, "'scale' holds a value <= 0"),
    (("scale",), "1,2,3", "'scale' is not a list"),
    (("classes",), ["p"], "at least two"),
    (("classes",), ["p", 1], "all text or all numbers"),
    (("classes",), ["p", "p"], "holds a class twice"),
    (("target_scale",), -1.0, "target_scale"),
    (("array_file",), "no", "array_file"),
    (("missing",), "guess", "'missing'"),
    (("na_values",), "?", "'na_values'"),
    (("na_values",), [None], "'na_values'"),
    (("extra",), 1, "unknown entries"),
]


@pytest.mark.parametrize("path, value, message", EDITS,
                         ids=[f"{'.'.join(map(str, p))}={v!r}" for p, v, _ in EDITS])
def test_hand_edits_are_named(doc, path, value, message):
    with pytest.raises(TabularError, match="not a valid mlpx preprocessing file") as e:
        preprocessing_from_json(edited(doc, path, value))
    assert message in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("text", [b"\xff\xfe\x00garbage", b"", b"[1, 2", "null", "[]", "3"])
def test_not_a_json_object(text):
    with pytest.raises(TabularError, match="not a valid mlpx preprocessing file"):
        preprocessing_from_json(text)


def test_random_damage_is_always_a_tabular_error(doc):
    good = json.dumps(doc).encode()
    rng = np.random.default_rng(0)
    for _ in range(300):
        damaged = bytearray(good)
        for i in rng.integers(0, len(damaged), size=rng.integers(1, 4)):
            damaged[i] = int(rng.integers(0, 256))
        try:
            preprocessing_from_json(bytes(damaged))
        except TabularError:
            pass


def test_deep_nesting_is_a_tabular_error():
    with pytest.raises(TabularError, match="nests too deeply"):
        preprocessing_from_json("[" * 100_000 + "]" * 100_000)
