"""Strict validation of an mlpx checkpoint: its document, its tensors and the state the layers
declare. Every problem raises CheckpointError naming the file and the field.

Three stages, each before anything it guards against happens:

- `check_document(meta, tensors, path)`, on the JSON document alone: known keys only, types
  and ranges of every entry, and every tensor of the file named exactly once: a parameter or
  buffer listed in `params`/`buffers`, or a reference at its own place in the optimiser or
  callback state (`{"__tensor__": "optimizer.state.0.exp_avg"}` at optimizer.state[0].exp_avg).
- `check_declared(record, path)`, before anything is built or allocated: the loss, the
  optimiser config and every layer config are parsed (configs only), and the tensors are
  compared with the state each layer declares for its config and input width
  (`Layer.param_spec` / `buffer_spec` / `compute_output_dim`, built-in and registered custom
  layers alike): so a small file cannot make mlpx allocate a large model, and buffer names are
  limited to each layer's declared buffers. A custom layer that declares nothing (relying on
  the defaults, which describe a built layer) has those parts checked at the next stage.
- `check_record_fits_model(record, spec, params, dtype, path)`, against a model's
  `state_spec()` before anything is assigned: names, dtypes and shapes of every state
  tensor, optimiser slot and callback state dict (EarlyStopping's best state); floats finite,
  counters non-negative; built-in callbacks' state entries and types (`Callback.state_format`).
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator
from typing import Any

import numpy as np

from .container import FORMAT, FORMAT_VERSION, OLDEST_READABLE_VERSION, CheckpointError

#: top-level entries of the `mlpx` document
DOCUMENT_KEYS = ("format", "format_version", "mlpx_version", "model", "params", "buffers",
                 "loss", "optimizer", "training")
MODEL_KEYS = ("class", "input_dim", "dtype", "seed", "layers")
#: the training run: position, history, callback states, metrics' sums inside an epoch
TRAINING_KEYS = ("epoch", "fit_index", "step", "loss_sum", "stopped", "history", "callbacks",
                 "metric_sums", "metrics")
#: entries that version-1 files may lack (written before the run's position inside an epoch
#: and the callbacks' state were saved): such runs resume at an epoch boundary, fresh callbacks
V1_OPTIONAL_TRAINING = ("step", "loss_sum", "stopped", "callbacks")
#: entries that files written before fit(metrics=) existed lack: their metrics start afresh
OPTIONAL_TRAINING = ("metric_sums", "metrics")
#: History keys that are not metric names
_RESERVED_KEYS = ("loss", "lr", "grad_norm")
#: arrays of one metric's running state (R2Score keeps 4)
_MAX_METRIC_PARTS = 8
#: metrics a fit may record
_MAX_METRICS = 64
#: an unbound optimiser is saved as its config alone; a bound one with its state
OPTIMIZER_KEYS = ("config", "step_count", "initial_lr", "state")
_FLOAT_DTYPES = ("float32", "float64")
_LAYER_PATH = re.compile(r"layers\.\d{1,9}(\.layers\.\d{1,9})*")
_STATE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")
_MAX_SEED = 2**128
_MAX_NAME = 200


def _fail(path: str, field: str, why: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {path!r}: {field} {why}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(v: Any, lo: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _exact_keys(obj: Any, keys: tuple[str, ...], path: str, field: str,
                optional: tuple[str, ...] = ()) -> dict:
    if not isinstance(obj, dict):
        raise _fail(path, field, f"must be a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(keys))
    missing = [k for k in keys if k not in obj and k not in optional]
    if unknown or missing:
        raise _fail(path, field, "must hold " + ", ".join(keys) + (
            f"; unknown {unknown[:5]}" if unknown else "") + (f"; missing {missing}"
                                                              if missing else ""))
    return obj


def _class_entry(entry: Any, body: str, what: str, path: str, field: str) -> None:
    """{"class": name, body: {...}}: exactly these keys, a class name, a JSON object."""
    _exact_keys(entry, ("class", body), path, field)
    if not isinstance(entry["class"], str) or not 0 < len(entry["class"]) <= _MAX_NAME:
        raise _fail(path, f"{field}.class", f"must be {what} class name, got "
                                            f"{_short(entry['class'])}")
    if not isinstance(entry[body], dict):
        raise _fail(path, f"{field}.{body}", "must be a JSON object")


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


# ------------------------------------------------------------------- document structure
def _tensor_refs(obj: Any, place: str, path: str, out: dict[str, str]) -> None:
    """Collect {"__tensor__": name} references under `obj` (at `place`) into out[name] =
    field; each must name the tensor stored for its own place, and only once."""
    stack = [(obj, place)]
    while stack:
        node, where = stack.pop()
        if isinstance(node, dict):
            if "__tensor__" in node:
                name = node["__tensor__"]
                if set(node) != {"__tensor__"} or name != where:
                    raise _fail(path, where, f"must reference the tensor {where!r}, got "
                                             f"{_short(node)}")
                out[name] = where
            else:
                stack.extend((v, f"{where}.{k}") for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, f"{where}.{i}") for i, v in enumerate(node))


def _check_precision(model: dict, path: str) -> None:
    """A mixed precision policy whose variables are the model's dtype (mlpx.precision)."""
    from ..precision import POLICIES

    mixed = [name for name, p in POLICIES.items() if p.mixed]
    policy = POLICIES.get(model["precision"]) if isinstance(model["precision"], str) else None
    if policy is None or not policy.mixed:
        raise _fail(path, "model.precision", f"must be one of {mixed}, got "
                                             f"{_short(model['precision'])}")
    if policy.variable_dtype.name != model["dtype"]:
        raise _fail(path, "model.precision", f"{policy.name!r} keeps "
                    f"{policy.variable_dtype.name} weights, but model.dtype is "
                    f"{_short(model['dtype'])}")


def _check_model(model: Any, path: str) -> None:
    _exact_keys(model, MODEL_KEYS + ("precision",), path, "model", optional=("precision",))
    if model["class"] != "Sequential":
        raise _fail(path, "model.class", f"must be 'Sequential', got {_short(model['class'])}")
    if not _is_int(model["input_dim"], 1):
        raise _fail(path, "model.input_dim", f"must be a positive integer, got "
                                             f"{_short(model['input_dim'])}")
    if model["dtype"] not in _FLOAT_DTYPES:
        raise _fail(path, "model.dtype", f"must be one of {list(_FLOAT_DTYPES)}, got "
                                         f"{_short(model['dtype'])}")
    if "precision" in model:
        _check_precision(model, path)
    if not (_is_int(model["seed"]) and model["seed"] < _MAX_SEED):
        raise _fail(path, "model.seed", f"must be an integer in [0, 2**128), got "
                                        f"{_short(model['seed'])}")
    layers = model["layers"]
    if not isinstance(layers, list) or not layers:
        raise _fail(path, "model.layers", "must be a non-empty list of layer specs")
    stack = [(s, f"model.layers[{i}]") for i, s in enumerate(layers)]
    while stack:  # every spec, nested blocks included: {"class": name, "config": {...}}
        spec, field = stack.pop()
        _class_entry(spec, "config", "a layer", path, field)
        inner = spec["config"].get("layers")
        if isinstance(inner, list):
            stack.extend((s, f"{field}.config.layers[{j}]") for j, s in enumerate(inner))


def _check_names(meta: dict, path: str) -> set[str]:
    """`params` and `buffers`: distinct state keys "<layer path>.<name>"; returns them."""
    params, buffers = meta["params"], meta["buffers"]
    if not isinstance(params, list) or not all(isinstance(n, str) for n in params):
        raise _fail(path, "params", "must be a list of parameter names")
    for n in params:
        lpath, _, name = n.rpartition(".")
        if not (_LAYER_PATH.fullmatch(lpath) and _STATE_NAME.fullmatch(name)):
            raise _fail(path, "params", f"holds {_short(n)}, not a name such as 'layers.0.W'")
    if len(set(params)) != len(params):
        raise _fail(path, "params", "names a parameter twice")
    if not isinstance(buffers, dict):
        raise _fail(path, "buffers", "must map layer paths to lists of buffer names")
    names = set(params)
    for lpath, keys in buffers.items():
        field = f"buffers[{lpath!r}]"
        if not _LAYER_PATH.fullmatch(lpath):
            raise _fail(path, "buffers", f"holds {_short(lpath)}, not a layer path such as "
                                         "'layers.1'")
        if not isinstance(keys, list) or not keys or not all(
                isinstance(k, str) and _STATE_NAME.fullmatch(k) for k in keys):
            raise _fail(path, field, "must be a non-empty list of buffer names")
        full = [f"{lpath}.{k}" for k in keys]
        if len(set(full)) != len(full) or names & set(full):
            raise _fail(path, field, "names a state entry twice")
        names.update(full)
    return names


def _check_optimizer(opt: Any, path: str, refs: dict[str, str]) -> None:
    if opt is None:
        return
    if not isinstance(opt, dict) or set(opt) not in ({"config"}, set(OPTIMIZER_KEYS)):
        got = sorted(opt) if isinstance(opt, dict) else type(opt).__name__
        raise _fail(path, "optimizer", f"must hold 'config' alone (not yet bound) or all of "
                                       f"{list(OPTIMIZER_KEYS)}; got {got}")
    config = opt["config"]
    if not isinstance(config, dict) or not isinstance(config.get("name"), str):
        raise _fail(path, "optimizer.config", "must be an object with a 'name'")
    for key, value in config.items():
        scalars = value if isinstance(value, list) else [value]
        if not all(v is None or isinstance(v, (bool, int, float, str)) for v in scalars):
            raise _fail(path, f"optimizer.config.{key}", f"must be a number, string, boolean "
                                                         f"or list of them, got {_short(value)}")
    if "state" not in opt:
        return
    if not _is_int(opt["step_count"]):
        raise _fail(path, "optimizer.step_count", f"must be an integer >= 0, got "
                                                  f"{_short(opt['step_count'])}")
    lr = opt["initial_lr"]
    if lr is not None and not (_is_number(lr) and math.isfinite(lr) and lr > 0):
        raise _fail(path, "optimizer.initial_lr", f"must be a positive number or null, got "
                                                  f"{_short(lr)}")
    state = opt["state"]
    if not isinstance(state, list):
        raise _fail(path, "optimizer.state", "must be a list, one entry per parameter")
    for i, slots in enumerate(state):
        field = f"optimizer.state[{i}]"
        if not isinstance(slots, dict) or not all(
                isinstance(v, dict) and set(v) == {"__tensor__"} for v in slots.values()):
            raise _fail(path, field, "must map state names to tensors")
    _tensor_refs(state, "optimizer.state", path, refs)


def _check_history(hist: Any, path: str) -> None:
    if hist is None:
        return
    _exact_keys(hist, ("epoch", "history", "epochs_of"), path, "training.history",
                optional=("epochs_of",))
    epochs, values = hist["epoch"], hist["history"]
    if not isinstance(epochs, list) or not all(_is_int(e) for e in epochs):
        raise _fail(path, "training.history.epoch", "must be a list of epoch numbers")
    if not isinstance(values, dict) or not all(
        isinstance(v, list) and len(v) <= len(epochs) and all(_is_number(x) for x in v)
        for v in values.values()
    ):
        raise _fail(path, "training.history.history", "must map names to lists of numbers, "
                                                      "one per epoch at most")
    # keys recorded on some epochs only (validation_freq): the epochs their values belong to
    partial = hist.get("epochs_of", {})
    if not isinstance(partial, dict):
        raise _fail(path, "training.history.epochs_of", "must map history keys to lists of "
                                                        "epoch numbers")
    recorded = set(epochs)
    for key, at in partial.items():
        field = f"training.history.epochs_of[{_short(key)}]"
        if key not in values:
            raise _fail(path, field, "names a key that training.history.history lacks")
        if not isinstance(at, list) or not all(_is_int(e) and e in recorded for e in at):
            raise _fail(path, field, "must list epochs of training.history.epoch")
        if any(a >= b for a, b in zip(at, at[1:], strict=False)):
            raise _fail(path, field, "must list each epoch once, in increasing order")
        if len(at) != len(values[key]):
            raise _fail(path, field, f"lists {len(at)} epochs for {len(values[key])} values")


def _check_metric_sums(train: dict, path: str, refs: dict[str, str]) -> None:
    """`metric_sums`: {metric name: [tensor, ...]}, the running sums of an epoch interrupted
    after `step` steps (so empty at step 0)."""
    sums = train.get("metric_sums", {})
    if not isinstance(sums, dict):
        raise _fail(path, "training.metric_sums", f"must map metric names to lists of tensors, "
                                                  f"got {type(sums).__name__}")
    if sums and train.get("step", 0) == 0:
        raise _fail(path, "training.metric_sums", "must be empty at an epoch boundary (step 0)")
    for name, parts in sums.items():
        field = f"training.metric_sums[{_short(name)}]"
        if not (0 < len(name) <= _MAX_NAME and name.isprintable()) \
                or name in _RESERVED_KEYS or name.startswith("val_"):
            raise _fail(path, field, "is not a metric name (a History key other than loss, "
                                     "lr, grad_norm and val_*)")
        if not isinstance(parts, list) or not 0 < len(parts) <= _MAX_METRIC_PARTS or not all(
                isinstance(v, dict) and set(v) == {"__tensor__"} for v in parts):
            raise _fail(path, field, f"must be a list of 1 to {_MAX_METRIC_PARTS} tensors")
    _tensor_refs(sums, "metric_sums", path, refs)


def _check_metrics(train: dict, path: str) -> None:
    """`metrics`: the metrics of compile/fit, [{"name": History key, "builtin": bool}]."""
    from .. import metrics

    entries = train.get("metrics", [])
    if not isinstance(entries, list) or len(entries) > _MAX_METRICS:
        raise _fail(path, "training.metrics", f"must be a list of at most {_MAX_METRICS} "
                                              "{name, builtin} objects")
    for i, entry in enumerate(entries):
        field = f"training.metrics[{i}]"
        _exact_keys(entry, ("name", "builtin"), path, field)
        name = entry["name"]
        if not (isinstance(name, str) and 0 < len(name) <= _MAX_NAME and name.isprintable()) \
                or name in _RESERVED_KEYS or name.startswith("val_"):
            raise _fail(path, f"{field}.name", f"is not a metric name, got {_short(name)}")
        if not isinstance(entry["builtin"], bool):
            raise _fail(path, f"{field}.builtin", "must be true or false")
        if entry["builtin"] and metrics.builtin(name) is None:
            raise _fail(path, f"{field}.name", f"names no built-in metric ({_short(name)})")


def _check_training(train: Any, version: int, path: str, refs: dict[str, str]) -> None:
    optional = OPTIONAL_TRAINING + (V1_OPTIONAL_TRAINING if version < 2 else ())
    _exact_keys(train, TRAINING_KEYS, path, "training", optional)
    for key in ("epoch", "fit_index", "step"):
        if key in train and not _is_int(train[key]):
            raise _fail(path, f"training.{key}", f"must be an integer >= 0, got "
                                                 f"{_short(train[key])}")
    if "loss_sum" in train and not (_is_number(train["loss_sum"])
                                    and math.isfinite(train["loss_sum"])):
        raise _fail(path, "training.loss_sum", f"must be a finite number, got "
                                               f"{_short(train['loss_sum'])}")
    if train.get("step", 0) == 0 and train.get("loss_sum", 0) != 0:
        raise _fail(path, "training.loss_sum", "must be 0 at an epoch boundary (step 0)")
    if "stopped" in train and not isinstance(train["stopped"], bool):
        raise _fail(path, "training.stopped", f"must be true or false, got "
                                              f"{_short(train['stopped'])}")
    _check_history(train["history"], path)
    callbacks = train.get("callbacks", [])
    if not isinstance(callbacks, list):
        raise _fail(path, "training.callbacks", "must be a list of {class, state} objects")
    for i, entry in enumerate(callbacks):
        _class_entry(entry, "state", "a callback", path, f"training.callbacks[{i}]")
    _tensor_refs(callbacks, "callbacks", path, refs)
    _check_metric_sums(train, path, refs)
    _check_metrics(train, path)


def check_document(meta: dict, tensors: dict[str, np.ndarray], path: str) -> None:
    """Types and ranges of every document entry; every tensor named exactly once."""
    _exact_keys(meta, DOCUMENT_KEYS, path, "the mlpx document")
    if meta["format"] != FORMAT:
        raise _fail(path, "format", f"must be {FORMAT!r}, got {_short(meta['format'])}")
    version = meta["format_version"]
    if not (_is_int(version) and OLDEST_READABLE_VERSION <= version <= FORMAT_VERSION):
        raise _fail(path, "format_version", f"must be {OLDEST_READABLE_VERSION} to "
                                            f"{FORMAT_VERSION}, got {_short(version)}")
    if not isinstance(meta["mlpx_version"], str) or len(meta["mlpx_version"]) > _MAX_NAME:
        raise _fail(path, "mlpx_version", f"must be a version string, got "
                                          f"{_short(meta['mlpx_version'])}")
    _check_model(meta["model"], path)
    names = _check_names(meta, path)
    if meta["loss"] is not None and not isinstance(meta["loss"], str):
        raise _fail(path, "loss", f"must be a loss name or null, got {_short(meta['loss'])}")
    refs: dict[str, str] = {}
    _check_optimizer(meta["optimizer"], path, refs)
    _check_training(meta["training"], version, path, refs)
    named = names | set(refs)
    missing = sorted(named - set(tensors))
    if missing:
        raise _fail(path, "the tensor table", f"lacks {missing[:5]}, which the document names")
    extra = sorted(set(tensors) - named)
    if extra:
        raise _fail(path, "the tensor table", f"holds tensors the document does not name: "
                                              f"{extra[:5]}")


# ------------------------------------------------------- what the architecture declares
def _overrides(layer: Any, method: str) -> bool:
    from ..layers.base import Layer

    return getattr(type(layer), method) is not getattr(Layer, method)


def _declares(layer: Any, spec_method: str, state_method: str) -> bool:
    """Whether a layer's `spec_method` describes its `state_method` without building it:
    it overrides the declaration, or keeps the base class's empty state. A layer whose build
    may create parameters with `add_parameter` (it overrides `build` or `_build`) without
    declaring them is only known once built."""
    if _overrides(layer, spec_method):
        return True
    makers = (state_method, "build", "_build") if state_method == "parameters" else (state_method,)
    return not any(_overrides(layer, m) for m in makers)


class Declared:
    """What an unbuilt architecture declares: {state key: (shape, dtype)} of the layers (or
    parts of layers) that declare their state, the parameter keys in order, and the layer
    paths whose parameters or buffers are only known once built."""

    def __init__(self) -> None:
        self.spec: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        self.params: list[str] = []
        self.own: dict[str, tuple[list[str] | None, list[str] | None]] = {}
        self.classes: dict[str, str] = {}

    @property
    def complete(self) -> bool:
        return all(p is not None and b is not None for p, b in self.own.values())

    def walk(self, layers: list, width: int, dtype: np.dtype, prefix: str, path: str) -> int:
        from ..layers import Residual

        for i, layer in enumerate(layers):
            lpath = f"{prefix}.{i}"
            field = f"model.layers ({lpath}, {type(layer).__name__})"
            self.classes[lpath] = type(layer).__name__
            with entry_errors(path, field):
                kids = layer.children()
                if kids:  # a block: its sub-layers hold the state
                    inner = self.walk(kids, width, dtype, f"{lpath}.layers", path)
                    if isinstance(layer, Residual) and inner != width:
                        raise ValueError(f"a Residual block keeps the width {width}, its "
                                         f"layers output {inner}")
                    params = {}
                else:
                    params = (layer.param_spec(width, dtype)
                              if _declares(layer, "param_spec", "parameters") else None)
                self._own(lpath, layer, params, width, dtype)
                width = _width(layer.compute_output_dim(width), lpath)
        return width

    def _own(self, lpath: str, layer: Any, params: dict | None, width: int,
             dtype: np.dtype) -> None:
        buffers = (layer.buffer_spec(width, dtype)
                   if _declares(layer, "buffer_spec", "buffers") else None)
        for part in (params, buffers):
            for name, (shape, dt) in (part or {}).items():
                key = f"{lpath}.{name}"
                self.spec[key] = (tuple(_width(s, key) for s in shape), np.dtype(dt))
        self.params += [f"{lpath}.{k}" for k in params or {}]
        self.own[lpath] = (None if params is None else list(params),
                           None if buffers is None else list(buffers))


def _width(value: Any, where: str) -> int:
    if not (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 0):
        raise ValueError(f"{where}: the declared size {value!r} is not an integer >= 0")
    return int(value)


def check_declared(record: Any, path: str) -> None:
    """Parse loss, optimiser and layer configs (nothing allocated) and check the file's
    tensors against the state the architecture declares (see the module docstring)."""
    from .. import losses, optim
    from ..layers.registry import layer_from_spec

    arch = record.architecture
    layers = []
    for i, spec in enumerate(arch["layers"]):  # the model first, then its loss and optimiser
        with entry_errors(path, f"model.layers[{i}]"):
            layers.append(layer_from_spec(spec))  # configs only: nothing allocated
    if record.loss is not None:
        with entry_errors(path, "loss"):
            losses.get(record.loss)
    opt = record.optimizer
    if opt is not None:
        with entry_errors(path, "optimizer.config"):
            optimizer = optim.from_config(dict(opt["config"]))  # hyperparameters only
        for i, slots in enumerate(opt.get("state", [])):
            if sorted(slots) != sorted(optimizer.state_names):
                raise _fail(path, f"optimizer.state[{i}]", f"holds {sorted(slots)}; "
                            f"{optimizer!r} keeps {sorted(optimizer.state_names)}")
    dtype = np.dtype(arch["dtype"])
    declared = Declared()
    width = declared.walk(layers, arch["input_dim"], dtype, "layers", path)
    _check_listed(record, declared, path)
    check_record_fits_model(record, declared.spec, declared.params, dtype, path,
                            complete=declared.complete)
    _check_builtin_metric_sums(record, width, path)


def _check_builtin_metric_sums(record: Any, width: int, path: str) -> None:
    """The sums of mlpx's own metrics against their declared state (and the loss they need);
    those of a user's metric are checked when a fit that records it resumes the run."""
    from .. import losses, metrics

    loss = None if record.loss is None else losses.get(record.loss)
    for name, arrays in record.run.metric_sums.items():
        field = f"training.metric_sums[{_short(name)}]"
        metric = metrics.builtin(name)
        if metric is None:
            check_metric_state(arrays, None, path, field)
            continue
        if loss is not None:
            try:
                metric.check(loss, width)
            except ValueError as e:
                raise _fail(path, field, f"is not recorded with the loss {loss.name!r}: "
                                         f"{e}") from None
        check_metric_state(arrays, metric.state_spec(width), path, field)


def check_metric_sums(record: Any, recorded: list, width: int, path: str) -> None:
    """A resumed run's metric sums against the metrics the resuming fit records (`recorded`,
    mlpx.metrics objects): each names one of them and holds the state it declares."""
    by_name = {m.name: m for m in recorded}
    for name, arrays in record.run.metric_sums.items():
        field = f"training.metric_sums[{_short(name)}]"
        metric = by_name.get(name)
        if metric is None:
            raise _fail(path, field, f"holds the sums of a metric this fit does not record "
                                     f"(it records {sorted(by_name)}); resume with the "
                                     "metrics= of the saved run")
        check_metric_state(arrays, metric.state_spec(width), path, field)


def check_metric_state(arrays: list, spec: list | None, path: str, field: str) -> None:
    """One metric's running state: float64 arrays, finite; with a declaration (`spec`, see
    Metric.state_spec) their number and shapes, and no negative count or sum of squares."""
    if spec is not None and len(arrays) != len(spec):
        raise _fail(path, field, f"holds {len(arrays)} arrays; the metric declares {len(spec)}")
    for i, arr in enumerate(arrays):
        where = f"{field}[{i}]"
        shape = tuple(arr.shape) if spec is None else tuple(spec[i][0])
        if arr.dtype != np.float64 or tuple(arr.shape) != shape:
            raise _fail(path, where, f"is {_describe(arr.dtype, arr.shape)}; the metric "
                                     f"declares {_describe(np.dtype(np.float64), shape)}")
        if not np.isfinite(arr).all():
            raise _fail(path, where, "holds NaN or infinite values")
        if spec is not None and spec[i][1] and arr.size and arr.min() < 0:
            raise _fail(path, where, "is a count or a sum of squares and must not be negative")


def _check_listed(record: Any, declared: Declared, path: str) -> None:
    """The document's `params` and `buffers` against the declared names of each layer."""
    stray = sorted({n.rpartition(".")[0] for n in record.params} - set(declared.own))
    if stray:
        raise _fail(path, "params", f"name layers the architecture lacks: {stray[:5]}")
    stray = sorted(set(record.buffers) - set(declared.own))
    if stray:
        raise _fail(path, "buffers", f"name layers the architecture lacks: {stray[:5]}")
    for lpath, (params, buffers) in declared.own.items():
        cls = declared.classes[lpath]
        if params is not None:
            got = [n.rpartition(".")[2] for n in record.params if n.rpartition(".")[0] == lpath]
            if got != params:
                raise _fail(path, "params", f"list {got} for {lpath} ({cls}), whose config "
                                            f"declares {params}")
        if buffers is not None:
            got = record.buffers.get(lpath, [])
            if sorted(got) != sorted(buffers):
                raise _fail(path, f"buffers[{lpath!r}]", f"names {got}; {lpath} ({cls}) "
                                                         f"declares {sorted(buffers)}")


# ----------------------------------------------------------------------- tensor checks
def _describe(dtype: np.dtype, shape: tuple) -> str:
    """"F32 [4, 6]": the safetensors dtype code (as in the file's table) and the shape."""
    from .container import dtype_code

    try:
        code = dtype_code(np.empty(0, dtype))
    except TypeError:
        code = str(dtype)
    return f"{code} {[int(s) for s in shape]}"


def _check_array(arr: np.ndarray, want: tuple[tuple[int, ...], np.dtype], path: str,
                 field: str) -> None:
    shape, dtype = want
    if arr.dtype != dtype or tuple(arr.shape) != tuple(shape):
        raise _fail(path, field, f"is {_describe(arr.dtype, arr.shape)}; the model declares "
                                 f"{_describe(np.dtype(dtype), shape)}")
    if dtype.kind == "f" and not np.isfinite(arr).all():
        raise _fail(path, field, "holds NaN or infinite values")
    if dtype.kind in "iu" and arr.size and arr.min() < 0:
        raise _fail(path, field, "is a counter and must not be negative")


def _check_state_dict(state: dict, spec: dict, path: str, field: str, complete: bool) -> None:
    missing = [k for k in spec if k not in state]
    unexpected = [k for k in state if k not in spec]
    if missing or (complete and unexpected):
        raise _fail(path, field, f"does not match the model's state: missing {missing[:5]}, "
                                 f"unexpected {unexpected[:5] if complete else []}")
    for key, want in spec.items():
        _check_array(state[key], want, path, f"{field} entry {key!r}")


def _callback_classes() -> dict[str, type]:
    """mlpx's own callbacks by class name: their state format is known before fit."""
    from .. import callbacks, schedules

    out = {}
    for module in (callbacks, schedules):
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, callbacks.Callback) \
                    and obj.__module__ == module.__name__ and not obj.__name__.startswith("_"):
                out[obj.__name__] = obj
    return out


def check_record_fits_model(record: Any, spec: dict, params: list[str], dtype: np.dtype,
                            path: str, complete: bool = True) -> None:
    """Check every array of `record` against a state spec before anything is assigned:
    the state dict, the optimiser slots (the parameters' shapes, the model's dtype) and the
    callbacks' state (see the module docstring). With `complete=False` (parts of the model
    only known once built) keys outside `spec` are left to the check after building."""
    state = record.state
    for key, want in spec.items():
        if key not in state:
            raise _fail(path, "params/buffers", f"lack {key!r}, which the model declares")
        _check_array(state[key], want, path, f"tensor {key!r}")
    if complete:
        unexpected = [k for k in state if k not in spec]
        if unexpected:
            raise _fail(path, "params/buffers", f"name {unexpected[:5]}, which the model "
                                                "does not declare")
        if record.params != params:
            raise _fail(path, "params", f"list {record.params[:6]}, the model's parameters "
                                        f"are {params[:6]}")
    opt = record.optimizer
    if opt is not None and "state" in opt:
        if complete and len(opt["state"]) != len(params):
            raise _fail(path, "optimizer.state", f"has {len(opt['state'])} entries, the "
                                                 f"model has {len(params)} parameters")
        for i, slots in enumerate(opt["state"]):
            want = spec[params[i]] if complete else None
            for name, arr in slots.items():
                field = f"tensor 'optimizer.state.{i}.{name}'"
                _check_array(arr, want or (arr.shape, np.dtype(dtype)), path, field)
    known = _callback_classes()
    for i, entry in enumerate(record.run.callbacks):
        cls = known.get(entry["class"])
        if cls is None:
            continue  # a user's callback: its validate_state_dict checks it on resume
        field = f"training.callbacks[{i}].state"
        with entry_errors(path, field):
            cls.check_state_format(entry["state"])
        for key, kind in (cls.state_format or {}).items():
            value = entry["state"][key]
            if kind == "state_dict_or_none" and value is not None:
                _check_state_dict(value, spec, path, f"{field}.{key}", complete)


def check_weights(tensors: dict[str, np.ndarray], spec: dict, params: list[str],
                  path: str) -> dict[str, np.ndarray]:
    """The state dict of a plain weights file for a model of `spec` (`load_weights`): every
    parameter present, nothing the model lacks, shapes equal, floating-point weights converted
    to the model's dtype, counters kept integers; all checked before anything is assigned."""
    from .container import dtype_code

    missing = [n for n in params if n not in tensors]
    unexpected = sorted(set(tensors) - set(spec))
    if missing or unexpected:
        raise CheckpointError(
            f"{path!r} does not hold this model's weights: "
            + "; ".join(([f"missing {missing[:6]}"] if missing else [])
                        + ([f"unexpected {unexpected[:6]}"] if unexpected else []))
            + f" (the model's parameters are {params[:6]}{' ...' if len(params) > 6 else ''})"
        )
    state = {}
    for name, arr in tensors.items():
        shape, dtype = spec[name]
        kind = "f" if dtype.kind == "f" else "iu"
        what = "buffer" if name not in params else "tensor"
        if tuple(arr.shape) != tuple(shape) or arr.dtype.kind not in kind:
            need = "floating point" if kind == "f" else "integers"
            raise CheckpointError(f"{path!r}: {what} {name!r} is {dtype_code(arr)} "
                                  f"{list(arr.shape)}, the model needs {need} {list(shape)} "
                                  f"({dtype})")
        value = arr.astype(dtype)
        _check_array(value, (shape, dtype), path, f"{what} {name!r}")
        state[name] = value
    return state


__all__ = ["check_document", "check_declared", "check_record_fits_model", "check_weights",
           "entry_errors", "check_metric_sums", "check_metric_state",
           "Declared", "DOCUMENT_KEYS", "MODEL_KEYS", "TRAINING_KEYS", "OPTIMIZER_KEYS"]
