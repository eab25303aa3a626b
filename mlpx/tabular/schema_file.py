"""The preprocessing file (`model.json`): written as plain JSON, and checked on reading like a
checkpoint — every field's type, every length, every name — so that a damaged or
hand-edited file is one clear error, never a wrong prediction or a traceback."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from typing import Any

from .columns import KINDS, TabularError
from .preprocessing import MISSING, TASKS, Feature, Preprocessing

FORMAT = "mlpx-tabular"
#: 2 added `missing`, `na_values`, and `fill` and `other` per feature; version 1 files read
#: as before
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)


def preprocessing_json(pre: Preprocessing) -> str:
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(pre)}
    return json.dumps(doc, indent=1)


def preprocessing_from_json(text: str | bytes, where: str = "preprocessing file") -> Preprocessing:
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        doc = json.loads(text)
        return _checked(doc)
    except UnicodeDecodeError:
        problem = "it is not UTF-8 text"
    except json.JSONDecodeError as e:
        problem = f"it is not JSON ({e.msg} at line {e.lineno} column {e.colno})"
    except RecursionError:
        problem = "it nests too deeply"
    except _Invalid as e:
        problem = str(e)
    raise TabularError(f"{where} is not a valid mlpx preprocessing file: {problem}; train the "
                       "model again to write it") from None


class _Invalid(ValueError):
    pass


def _checked(doc: Any) -> Preprocessing:
    _expect(isinstance(doc, dict), "the document is not a JSON object")
    _expect(doc.get("format") == FORMAT, f"'format' is not {FORMAT!r}")
    version = doc.get("format_version")
    _expect(version in READABLE_VERSIONS and type(version) is int,
            f"'format_version' {version!r} is not one of {READABLE_VERSIONS}")
    known = {"format", "format_version", "target", "task", "features", "mean", "scale",
             "classes", "target_mean", "target_scale", "array_file", "missing", "na_values"}
    extra = sorted(set(doc) - known)
    _expect(not extra, f"unknown entries {extra}")
    for key in ("target", "task", "features", "mean", "scale"):
        _expect(key in doc, f"the entry {key!r} is missing")
    target = _string(doc["target"], "target")
    task = doc["task"]
    _expect(task in TASKS, f"'task' must be one of {TASKS}, got {task!r}")
    features = _features(doc["features"])
    names = [f.name for f in features]
    _expect(target not in names, f"the target {target!r} is also a feature")
    width = sum(f.width for f in features)
    mean = _numbers(doc["mean"], "mean", width)
    scale = _numbers(doc["scale"], "scale", width)
    _expect(all(s > 0 for s in scale), "'scale' holds a value <= 0")
    classes = doc.get("classes", [])
    _expect(isinstance(classes, list), "'classes' is not a list")
    if task == "classification":
        _expect(len(classes) >= 2, "a classification needs at least two 'classes'")
        _expect(all(isinstance(c, str) for c in classes) or
                all(type(c) in (int, float) and math.isfinite(c) for c in classes),
                "'classes' must be all text or all numbers")
        _expect(len({json.dumps(c) for c in classes}) == len(classes),
                "'classes' holds a class twice")
    else:
        _expect(not classes, "a regression has no 'classes'")
    target_mean = _number(doc.get("target_mean", 0.0), "target_mean")
    target_scale = _number(doc.get("target_scale", 1.0), "target_scale")
    _expect(target_scale > 0, "'target_scale' must be > 0")
    array_file = doc.get("array_file", False)
    _expect(isinstance(array_file, bool), "'array_file' is not true or false")
    missing = doc.get("missing")
    _expect(missing is None or missing in MISSING,
            f"'missing' must be null or one of {MISSING}, got {missing!r}")
    na_values = doc.get("na_values", [])
    _expect(isinstance(na_values, list) and all(isinstance(v, str) for v in na_values),
            "'na_values' is not a list of text")
    return Preprocessing(target=target, task=task, features=features, mean=mean, scale=scale,
                         classes=classes, target_mean=target_mean, target_scale=target_scale,
                         array_file=array_file, missing=missing, na_values=na_values)


def _features(items: Any) -> list[Feature]:
    _expect(isinstance(items, list) and items, "'features' is not a non-empty list")
    features, seen = [], set()
    for i, item in enumerate(items):
        where = f"features[{i}]"
        _expect(isinstance(item, dict), f"{where} is not an object")
        extra = sorted(set(item) - {"name", "kind", "categories", "other", "fill"})
        _expect(not extra, f"{where} has unknown entries {extra}")
        name = _string(item.get("name"), f"{where}.name")
        _expect(name not in seen, f"the feature {name!r} appears twice")
        seen.add(name)
        kind = item.get("kind")
        _expect(kind in KINDS, f"{where}.kind must be one of {KINDS}, got {kind!r}")
        categories = item.get("categories", [])
        _expect(isinstance(categories, list) and all(isinstance(c, str) for c in categories),
                f"{where}.categories is not a list of text")
        _expect(len(set(categories)) == len(categories), f"{where}.categories repeats a value")
        other = item.get("other", False)
        _expect(isinstance(other, bool), f"{where}.other is not true or false")
        fill = item.get("fill")
        if kind == "numeric":
            _expect(not categories and not other, f"{where} is numeric but has categories")
            if fill is not None:
                fill = _number(fill, f"{where}.fill")
        else:
            _expect(categories or other, f"{where} is categorical without categories")
            _expect(fill is None or isinstance(fill, str), f"{where}.fill is not text")
        features.append(Feature(name, kind, categories, other, fill))
    return features


def _expect(ok: bool, problem: str) -> None:
    if not ok:
        raise _Invalid(problem)


def _string(v: Any, what: str) -> str:
    _expect(isinstance(v, str) and v != "", f"'{what}' is not a non-empty text")
    return v


def _number(v: Any, what: str) -> float:
    _expect(type(v) in (int, float) and math.isfinite(v), f"'{what}' is not a finite number")
    return float(v)


def _numbers(v: Any, what: str, length: int) -> list[float]:
    _expect(isinstance(v, list), f"'{what}' is not a list")
    _expect(len(v) == length, f"'{what}' has {len(v)} entries; the features encode to {length}")
    return [_number(x, f"{what}[{i}]") for i, x in enumerate(v)]
