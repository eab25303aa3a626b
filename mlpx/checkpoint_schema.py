"""Strict validation of an mlpx checkpoint's document against the tensors it carries.

`check_before_build` runs on what `read_file` returns, before any model is built: it checks
the types and ranges of the document's entries, rebuilds the layers unbuilt (configs only,
nothing allocated), and compares the parameter and buffer shapes the architecture implies with
the tensors actually present, so a small file cannot make mlpx allocate a large model.
`check_model_matches` runs on the built model, before anything is assigned: every tensor is a
declared parameter, buffer or optimiser slot with the model's shapes and dtypes, and buffer
names are limited to each layer's own `buffers()`.

Every problem raises CheckpointError naming the file and the field.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from .checkpoint_file import CheckpointError

#: top-level entries of the `mlpx` document
DOCUMENT_KEYS = ("format", "format_version", "mlpx_version", "model", "params", "buffers",
                 "loss", "optimizer", "training")
_MODEL_KEYS = ("class", "input_dim", "dtype", "seed", "layers")
_TRAINING_KEYS = ("epoch", "fit_index", "history")
_FLOAT_CODES = {"float32": "F32", "float64": "F64"}


def _fail(path: str, field: str, why: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {path!r}: {field} {why}")


def _is_int(v: Any, lo: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _exact_keys(obj: Any, keys: tuple[str, ...], path: str, field: str,
                optional: tuple[str, ...] = ()) -> dict:
    if not isinstance(obj, dict):
        raise _fail(path, field, f"must be a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(keys) - set(optional))
    missing = [k for k in keys if k not in obj]
    if unknown or missing:
        raise _fail(path, field, "must hold " + ", ".join(keys) + (
            f"; unknown {unknown}" if unknown else "") + (f"; missing {missing}" if missing
                                                           else ""))
    return obj


@contextlib.contextmanager
def entry_errors(path: str, field: str) -> Iterator[None]:
    """Turn the errors a constructor or setter raises on a bad entry into a CheckpointError
    naming `field` (a layer config, the optimiser config, a weight that is not finite)."""
    try:
        yield
    except CheckpointError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError,
            RecursionError) as e:
        raise _fail(path, field, f"is invalid: {e}") from None


def _tensor_refs(obj: Any, out: list[str]) -> list[str]:
    """Names in {"__tensor__": name} references anywhere in `obj`."""
    stack = [obj]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if set(node) == {"__tensor__"} and isinstance(node["__tensor__"], str):
                out.append(node["__tensor__"])
            else:
                stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return out


# ------------------------------------------------------------------- document structure
def check_document(meta: dict, tensors: dict[str, np.ndarray], path: str) -> None:
    """Types and ranges of every document entry mlpx reads; every tensor accounted for."""
    _exact_keys(meta, DOCUMENT_KEYS, path, "the mlpx document")
    model = _exact_keys(meta["model"], _MODEL_KEYS, path, "model")
    if model["class"] != "Sequential":
        raise _fail(path, "model.class", f"must be 'Sequential', got {model['class']!r}")
    if not _is_int(model["input_dim"], 1):
        raise _fail(path, "model.input_dim", f"must be a positive integer, got "
                                             f"{model['input_dim']!r}")
    if not isinstance(model["dtype"], str) or model["dtype"] not in _FLOAT_CODES:
        raise _fail(path, "model.dtype", f"must be one of {sorted(_FLOAT_CODES)}, got "
                                         f"{model['dtype']!r}")
    if model["seed"] is not None and not _is_int(model["seed"]):
        raise _fail(path, "model.seed", f"must be a non-negative integer or null, got "
                                        f"{model['seed']!r}")
    if not isinstance(model["layers"], list) or not model["layers"]:
        raise _fail(path, "model.layers", "must be a non-empty list of layer specs")
    params = meta["params"]
    if not isinstance(params, list) or not all(isinstance(n, str) for n in params) \
            or len(set(params)) != len(params):
        raise _fail(path, "params", "must be a list of distinct tensor names")
    buffers = meta["buffers"]
    if not isinstance(buffers, dict) or not all(
        isinstance(keys, list) and all(isinstance(k, str) for k in keys)
        for keys in buffers.values()
    ):
        raise _fail(path, "buffers", "must map layer paths to lists of buffer names")
    if meta["loss"] is not None and not isinstance(meta["loss"], str):
        raise _fail(path, "loss", f"must be a loss name or null, got {meta['loss']!r}")
    opt = meta["optimizer"]
    if opt is not None:
        _exact_keys(opt, ("config",), path, "optimizer", ("step_count", "initial_lr", "state"))
        if not isinstance(opt["config"], dict) or not isinstance(opt["config"].get("name"), str):
            raise _fail(path, "optimizer.config", "must be an object with a 'name'")
        if "step_count" in opt and not _is_int(opt["step_count"]):
            raise _fail(path, "optimizer.step_count", "must be a non-negative integer")
        if "state" in opt and not (isinstance(opt["state"], list) and all(
                isinstance(s, dict) for s in opt["state"])):
            raise _fail(path, "optimizer.state", "must be a list of objects")
    train = _exact_keys(meta["training"], _TRAINING_KEYS, path, "training")
    for key in ("epoch", "fit_index"):
        if not _is_int(train[key]):
            raise _fail(path, f"training.{key}", f"must be a non-negative integer, got "
                                                 f"{train[key]!r}")
    hist = train["history"]
    if hist is not None:
        _exact_keys(hist, ("epoch", "history"), path, "training.history")
        epochs, values = hist["epoch"], hist["history"]
        if not isinstance(epochs, list) or not all(_is_int(e) for e in epochs):
            raise _fail(path, "training.history.epoch", "must be a list of epoch numbers")
        if not isinstance(values, dict) or not all(
            isinstance(v, list) and len(v) <= len(epochs)
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
            for v in values.values()
        ):
            raise _fail(path, "training.history.history", "must map names to lists of "
                                                          "numbers, one per epoch at most")
    # every tensor is a parameter, a buffer or an optimiser slot, and nothing is referenced
    # that the file lacks
    named = set(params) | {f"{lpath}.{key}" for lpath, keys in buffers.items() for key in keys}
    refs = _tensor_refs(opt, [])
    missing = sorted((named | set(refs)) - set(tensors))
    if missing:
        raise _fail(path, "the tensor table", f"lacks {missing[:5]}, which the document names")
    extra = sorted(set(tensors) - named - set(refs))
    if extra:
        raise _fail(path, "the tensor table", f"holds tensors the document does not name: "
                                              f"{extra[:5]}")


# ------------------------------------------------------ shapes implied by the architecture
def _builtin_state(layer: Any, width: int, code: str) -> tuple[dict, dict, int] | None:
    """(parameters, buffers, output width) a built-in layer declares for an input `width`:
    {name: (dtype code, shape)}; None for other classes."""
    from .layers import BatchNorm, Dense, Dropout, LayerNorm, PReLU

    kind = type(layer)
    if kind is Dense:
        u = layer.units
        params = {"W": (code, (width, u))}
        if layer.use_bias:
            params["b"] = (code, (u,))
        if layer.activation.has_parameters:
            params["slopes"] = (code, (u,))
        return params, {}, u
    if kind in (BatchNorm, LayerNorm):
        params = {"gamma": (code, (width,)), "beta": (code, (width,))}
        bufs = {} if kind is LayerNorm else {"running_mean": (code, (width,)),
                                             "running_var": (code, (width,)),
                                             "num_batches_tracked": ("I64", ())}
        return params, bufs, width
    if kind is PReLU:
        return {"slopes": (code, (width,))}, {}, width
    if kind is Dropout:
        return {}, {"step": ("I64", ())}, width
    return None


def _walk_declared(layers: list, width: int, code: str, prefix: str,
                   out: dict[str, tuple[dict, dict] | None]) -> int | None:
    """Fill `out` with path -> declared (params, buffers) (None: undeclared) and return the
    output width, or None once a layer's width cannot be known without building it."""
    from .layers import Residual

    for i, layer in enumerate(layers):
        lpath = f"{prefix}.{i}"
        if type(layer) is Residual:
            inner = _walk_declared(layer.children(), width, code, f"{lpath}.layers", out)
            out[lpath] = ({}, {})
            if inner is None:
                return None
            if inner != width:
                raise ValueError(f"{lpath}: a Residual block must keep the width {width}, its "
                                 f"layers output {inner}")
            continue
        declared = _builtin_state(layer, width, code)
        out[lpath] = None if declared is None else declared[:2]
        if declared is None:
            return None
        width = declared[2]
    return width


def check_before_build(meta: dict, tensors: dict[str, np.ndarray], path: str) -> None:
    """Validate the document and compare the shapes its architecture implies with the
    tensors present, before a model is built (see the module docstring)."""
    from . import losses, optim
    from .layers.registry import layer_from_spec

    with entry_errors(path, "the mlpx document"):  # a last resort: specific checks come first
        check_document(meta, tensors, path)
    if meta["loss"] is not None:
        with entry_errors(path, "loss"):
            losses.get(meta["loss"])
    if meta["optimizer"] is not None:
        with entry_errors(path, "optimizer.config"):
            optim.from_config(dict(meta["optimizer"]["config"]))  # hyperparameters only
    spec = meta["model"]
    layers = []
    for i, s in enumerate(spec["layers"]):
        with entry_errors(path, f"model.layers[{i}]"):
            layers.append(layer_from_spec(s))  # configs only: nothing allocated
    code = _FLOAT_CODES[spec["dtype"]]
    declared: dict[str, tuple[dict, dict] | None] = {}
    with entry_errors(path, "model.layers"):
        _walk_declared(layers, spec["input_dim"], code, "layers", declared)
    from .checkpoint import _walk

    layers_by_path = dict(_walk(layers))
    params = meta["params"]
    for lpath, decl in declared.items():
        if decl is None:
            continue  # a custom layer: checked against the built model instead
        want_params, want_bufs = decl
        names = [n for n in params if n.rpartition(".")[0] == lpath]
        if names != [f"{lpath}.{k}" for k in want_params]:
            raise _fail(path, "params", f"list {names} for {lpath}, whose config declares "
                                        f"{[f'{lpath}.{k}' for k in want_params]}")
        got_bufs = meta["buffers"].get(lpath, [])
        if sorted(got_bufs) != sorted(want_bufs) or len(set(got_bufs)) != len(got_bufs):
            raise _fail(path, f"buffers[{lpath!r}]", f"names {got_bufs}; {lpath} "
                        f"({type(layers_by_path[lpath]).__name__}) has {sorted(want_bufs)}")
        items = [(k, want_params[k]) for k in want_params]
        items += [(k, want_bufs[k]) for k in got_bufs]
        for key, (want_code, want_shape) in items:
            _check_tensor(tensors, f"{lpath}.{key}", want_code, want_shape, path)
    known = {lp for lp in declared}
    stray = sorted({n.rpartition(".")[0] for n in params} - known)
    stray += sorted(set(meta["buffers"]) - known)
    if stray:
        raise _fail(path, "params/buffers", f"name layers the architecture lacks: {stray[:5]}")


def _check_tensor(tensors: dict[str, np.ndarray], name: str, want_code: str,
                  want_shape: tuple, path: str) -> None:
    from .checkpoint_file import dtype_code

    arr = tensors[name]
    got = (dtype_code(arr), tuple(arr.shape))
    if got != (want_code, tuple(want_shape)):
        raise _fail(path, f"tensor {name!r}", f"is {got[0]} {list(got[1])}; the architecture "
                                              f"declares {want_code} {list(want_shape)}")


# ------------------------------------------------------------------ against a built model
def check_model_matches(model: Any, meta: dict, tensors: dict[str, np.ndarray],
                        path: str) -> None:
    """Compare the file's tensors with a built model's parameters, buffers and optimiser
    slots before anything is assigned."""
    from .checkpoint import _param_names, _walk
    from .checkpoint_file import dtype_code

    code = _FLOAT_CODES.get(model.dtype.name)
    for name, p in zip(_param_names(model), model.parameters(), strict=True):
        if name in tensors:
            _check_tensor(tensors, name, code, p.shape, path)
            if not np.isfinite(tensors[name]).all():
                raise _fail(path, f"tensor {name!r}", "holds NaN or infinite weights")
    layers = dict(_walk(model.layers))
    for lpath, keys in meta["buffers"].items():
        layer = layers.get(lpath)
        if layer is None:
            raise _fail(path, f"buffers[{lpath!r}]", "names a layer the model lacks")
        current = layer.buffers()
        if sorted(keys) != sorted(current) or len(set(keys)) != len(keys):
            raise _fail(path, f"buffers[{lpath!r}]", f"names {keys}; {lpath} "
                        f"({type(layer).__name__}) has {sorted(current)}")
        for key in keys:
            want = np.asarray(current[key].get() if hasattr(current[key], "get")
                              else current[key])
            _check_tensor(tensors, f"{lpath}.{key}", dtype_code(want), want.shape, path)
    unsaved = sorted(lp for lp, layer in layers.items() if layer.buffers()
                     and lp not in meta["buffers"])
    if unsaved:
        raise _fail(path, "buffers", f"lack the layers {unsaved}, which have buffers")
    for name in _tensor_refs(meta["optimizer"], []):
        arr = tensors[name]
        if dtype_code(arr) != code:
            raise _fail(path, f"tensor {name!r}", f"is {arr.dtype}; optimiser state has the "
                                                  f"model's dtype {model.dtype.name}")


__all__ = ["check_document", "check_before_build", "check_model_matches", "entry_errors",
           "DOCUMENT_KEYS"]
