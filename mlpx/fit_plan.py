"""The plan of a `fit`: every argument, the data, the callbacks and a checkpoint to resume
from, checked, and the run's starting point worked out. Nothing here changes the model, so any
error leaves it exactly as it was; `Trainer.begin` applies the plan and the loop
(mlpx.training) runs it.

`plan_fit` takes `Sequential.fit`'s keywords one by one and returns a `FitPlan`. Warnings
about the user's arguments point at the user's `model.fit` line (plan_fit runs three frames
below it: Sequential.fit, Trainer.fit).
"""

from __future__ import annotations

import collections
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import losses, optim
from .backends.batches import steps_per_epoch
from .callbacks import Callback
from .history import History
from .input_scale import warn_if_unscaled
from .metrics import resolve as resolve_metrics
from .preconditions import check_positive_int
from .saving.container import CheckpointError
from .saving.reader import check_resumable, read_checkpoint
from .saving.records import CheckpointRecord, RunRecord
from .saving.schema import check_metric_sums
from .weighting import check_sample_weight, combined

#: the hooks fit calls on every callback
_CALLBACK_HOOKS = ("set_model", "on_train_begin", "on_epoch_begin", "on_epoch_end", "on_train_end")


@dataclass
class FitPlan:
    """Everything `plan_fit` checked, ready for `Trainer.begin` to apply."""

    loss: losses.Loss
    optimizer: optim.Optimizer
    opt_state: dict | None
    build_dim: int | None
    model_state: dict | None
    fit_index: int
    epoch: int
    step: int
    loss_sum: float
    stopped: bool
    history: History
    callbacks: list
    callback_states: list
    data: tuple
    val: tuple | None
    epochs: int
    batch_size: int  # as asked: the batch source cuts the epochs (mlpx.backends.batches)
    shuffle: bool
    verbose: int
    clipper: Any
    stream: bool | None
    resumed: bool
    seed: int | None
    metrics: list = ()
    weights: np.ndarray | None = None  # one per training sample (sample and class weights)
    val_weights: np.ndarray | None = None
    validation_freq: Any = 1
    metric_sums: dict | None = None  # a resumed epoch's partial metric sums
    accumulation: int = 1  # mini-batches per optimiser step (gradient_accumulation_steps)
    validation_batch_size: int = 1024  # the batches validation is evaluated in


def plan_fit(model: Any, X: Any, y: Any, loss: Any = None, optimizer: Any = None,
             lr: float | None = None, epochs: int = 1, batch_size: int = 32,
             shuffle: bool = True, validation_data: Any = None, verbose: int = 1,
             callbacks: Sequence[Any] | None = None, validation_split: float = 0.0,
             resume_from: Any = None, clip_norm: float | None = None,
             clip_value: float | None = None, stream_data: bool | None = None,
             sample_weight: Any = None, class_weight: Any = None, metrics: Any = None,
             validation_freq: Any = 1, gradient_accumulation_steps: int = 1) -> FitPlan:
    """Check everything and plan the run of `model.fit(X, y, ...)`; the model does not
    change. The keywords are `Sequential.fit`'s."""
    from .accumulation import check_accumulation_steps

    accumulation = check_accumulation_steps(gradient_accumulation_steps)
    epochs, batch_size, clipper, stream, callbacks, validation_freq = _check_options(
        epochs, batch_size, verbose, lr, clip_norm, clip_value, stream_data, callbacks,
        validation_freq)
    if validation_data is not None and validation_split:
        raise ValueError(
            "give either validation_data=(X_val, y_val) or validation_split=, not both")
    if validation_split:
        X, y, validation_data, sample_weight = _split_validation(X, y, validation_split,
                                                                 sample_weight)
    record = _read_resume(model, resume_from) if resume_from is not None else None
    loss_fn = _plan_loss(model, loss, record)
    if validation_split:
        _warn_if_classes_differ(y, validation_data[1], loss_fn, validation_split)
    dim = model.input_dim if model.built else (
        record.architecture["input_dim"] if record else None)
    data, val, val_w = _plan_data(model, X, y, validation_data, loss_fn, dim, stream)
    dim = dim or data[0].shape[1]
    out_dim = model.output_dim if model.built else model.compute_output_dim(dim)
    weights = combined(sample_weight, class_weight, data[1], loss_fn, out_dim)
    if metrics is None:
        metrics = getattr(model, "compiled_metrics", None)  # of compile or an earlier fit
    if metrics is None and record is not None and record.run.metrics:
        from .metrics import restore as restore_metrics

        metrics = restore_metrics(record.run.metrics)  # those of the saved run
    chosen = resolve_metrics(metrics, loss_fn, out_dim)
    model.check_trainable()
    warn_if_unscaled(data[0], stacklevel=4)  # the user's model.fit call
    opt, opt_state = _plan_optimizer(model, optimizer, lr, record, dim)
    opt = optim.for_model(opt, model)  # an optimiser of another model: a fresh copy
    run = record.run if record else None
    position = _plan_position(model, run, epochs)
    if run is not None:
        _warn_if_nothing_left(run, epochs, os.fspath(resume_from))
    if record is not None:
        _check_resumed_position(record, position["step"], int(data[0].shape[0]), batch_size,
                                chosen, out_dim, resume_from)
    return FitPlan(
        loss=loss_fn, optimizer=opt, opt_state=opt_state,
        build_dim=None if model.built else dim,
        model_state=record.state if record else None,
        **position, callbacks=callbacks,
        callback_states=_match_callback_states(callbacks, run.callbacks if run else [],
                                               resume_from),
        data=data, val=val, epochs=epochs, batch_size=batch_size, shuffle=bool(shuffle),
        verbose=verbose, clipper=clipper, stream=stream, resumed=record is not None,
        seed=int(record.architecture["seed"]) if record else None,
        metrics=chosen, weights=weights, val_weights=val_w, validation_freq=validation_freq,
        metric_sums=run.metric_sums if run else None, accumulation=accumulation,
        validation_batch_size=max(batch_size, 1024),
    )


def _check_options(epochs: Any, batch_size: Any, verbose: Any, lr: Any, clip_norm: Any,
                   clip_value: Any, stream_data: Any, callbacks: Any,
                   validation_freq: Any) -> tuple[int, int, Any, bool | None, list, Any]:
    """The options that need neither the data nor the model, checked: epochs, batch_size,
    the gradient clipper, stream_data, the callbacks and validation_freq."""
    from .backends.batches import check_stream_data
    from .clipping import GradientClipper

    epochs = check_positive_int(epochs, "epochs", minimum=0)
    batch_size = check_positive_int(batch_size, "batch_size")
    _check_verbose(verbose)
    if lr is not None:
        optim.check_lr(lr)
    clipper = GradientClipper(clip_norm, clip_value)  # validates both limits
    return (epochs, batch_size, clipper, check_stream_data(stream_data),
            _check_callbacks(callbacks), _check_validation_freq(validation_freq))


def _check_resumed_position(record: CheckpointRecord, step: int, n: int, batch_size: int,
                            metrics: list, out_dim: int, path: Any) -> None:
    """A run saved inside an epoch goes on only with data cut into as many batches, and with
    metrics whose saved partial sums fit."""
    steps = steps_per_epoch(n, batch_size)
    if step >= steps:
        raise CheckpointError(
            f"checkpoint {os.fspath(path)!r} stopped after step {step} "
            f"of epoch {record.run.epoch + 1}, but with these data and batch_size "
            f"{batch_size} an epoch has {steps} steps; resume with the data and "
            "batch_size of the saved run"
        )
    if step:  # inside an epoch: its metric sums go on with this fit's metrics
        check_metric_sums(record, metrics, out_dim, os.fspath(path))


def _check_validation_freq(freq: Any) -> Any:
    """An int (validate every `freq` epochs) or a collection of 1-based epoch numbers."""
    if isinstance(freq, (int, np.integer)) and not isinstance(freq, bool):
        return check_positive_int(freq, "validation_freq")
    if isinstance(freq, (list, tuple, set, frozenset, range)) and all(
            isinstance(e, (int, np.integer)) and not isinstance(e, bool) and e >= 1
            for e in freq):
        return frozenset(int(e) for e in freq)
    raise TypeError(
        "validation_freq must be a positive integer (validate every N epochs) or a list of "
        f"epoch numbers counted from 1, e.g. [1, 5, 10]; got {freq!r}"
    )


def _check_verbose(verbose: Any) -> None:
    if verbose not in (0, 1, 2):
        raise ValueError(
            "verbose must be 0 (silent), 1 (progress bar) or 2 (one line per epoch), "
            f"got {verbose!r}"
        )


def _check_callbacks(callbacks: Any) -> list:
    if isinstance(callbacks, Callback):
        name = type(callbacks).__name__
        raise TypeError(f"callbacks must be a list; pass callbacks=[{name}(...)]")
    callbacks = list(callbacks or [])
    for cb in callbacks:
        if isinstance(cb, type):  # the class has every hook, but as unbound functions
            raise TypeError(f"callbacks=[{cb.__name__}] holds a class; pass an object: "
                            f"callbacks=[{cb.__name__}(...)]")
        # duck-typed callbacks are fine; a bare function would fail later with an AttributeError
        missing = [h for h in _CALLBACK_HOOKS if not hasattr(cb, h)]
        if missing:
            raise TypeError(
                f"callbacks must be mlpx.callbacks.Callback objects; {cb!r} has no "
                f"{', '.join(missing)}; subclass mlpx.callbacks.Callback and override "
                "on_epoch_end(epoch, logs) (or another hook)"
            )
    return callbacks


def _plan_data(model: Any, X: Any, y: Any, validation_data: Any, loss: losses.Loss,
               dim: int | None, stream: bool | None) -> tuple[tuple, tuple | None, Any]:
    """Training data (as given: the batch source moves it), validation data and validation
    sample weights (Keras' optional third element), checked."""
    data = model.prepare_data(X, y, loss, to_device=False, input_dim=dim)
    if validation_data is None:
        return data, None, None
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
        raise ValueError("validation_data must be a tuple (X_val, y_val) or "
                         "(X_val, y_val, sample_weight_val)")
    val = model.prepare_data(
        validation_data[0], validation_data[1], loss, "X_val", "y_val",
        to_device=None if stream is None else not stream, input_dim=dim or data[0].shape[1])
    val_w = None
    if len(validation_data) == 3 and validation_data[2] is not None:
        val_w = check_sample_weight(validation_data[2], val[0].shape[0],
                                    "validation_data's sample weights")
    return data, val, val_w


def _plan_position(model: Any, run: RunRecord | None, epochs: int) -> dict[str, Any]:
    """Where the run starts: a resumed run where it was saved, a new run at its start (with
    the next fit index, so its batch orders differ from the previous run's)."""
    if run is None:
        prev = model.trainer_
        return {"fit_index": prev.fit_index + 1 if prev is not None else 0, "epoch": 0,
                "step": 0, "loss_sum": 0.0, "stopped": False, "history": History()}
    inside = run.epoch < epochs  # else there is nothing left to train
    return {"fit_index": run.fit_index, "epoch": min(run.epoch, epochs),
            "step": run.step if inside else 0, "loss_sum": run.loss_sum if inside else 0.0,
            "stopped": run.stopped, "history": run.history or History()}


def _warn_if_nothing_left(run: RunRecord, epochs: int, path: str) -> None:
    """A resumed run that trains no epoch says why, and how to train on."""
    train_on = (f"to train on from its weights, start a new run: model = mlpx.load({path!r}); "
                "model.fit(X, y, epochs=...) (the optimiser state comes along, History "
                "starts afresh)")
    if run.stopped:
        why = (f"the saved run was stopped by a callback (e.g. EarlyStopping) after epoch "
               f"{run.epoch}, so this fit trains no epoch; {train_on}")
    elif run.epoch >= epochs:
        why = (f"the saved run has completed {run.epoch} epoch(s) and epochs={epochs} counts "
               f"the run's epochs in total (Keras's initial_epoch={run.epoch} with "
               f"epochs={epochs}), so this fit trains no epoch; pass epochs > {run.epoch} "
               "to continue the run")
    else:
        return
    warnings.warn(f"resume_from: {why}", UserWarning, stacklevel=5)


def _plan_loss(model: Any, loss: Any, record: Any) -> losses.Loss:
    if loss is not None:
        return model.check_loss(loss, stacklevel=5)  # the user's model.fit call
    if record is not None and record.loss:
        return losses.get(record.loss)
    if model.loss_ is None:
        raise ValueError(
            "no loss given and none set by fit/compile; pass loss= (one of "
            f"{', '.join(losses.names())})"
        )
    return model.loss_


def _read_resume(model: Any, path: Any) -> CheckpointRecord:
    """The checkpoint's record, checked against the model (architecture, dtype, every array
    against the layers' declarations) without changing the model."""
    record = read_checkpoint(path)
    check_resumable(record, model, path)
    return record


def _plan_optimizer(model: Any, optimizer: Any, lr: float | None, record: Any,
                    dim: int) -> tuple[optim.Optimizer, dict | None]:
    """The optimiser of this fit and the state to load into it (resume), both checked.

    Resuming with `optimizer=`/`lr=` uses the new hyperparameters and keeps the saved state
    when the optimiser is of the same kind (a warning says it starts afresh otherwise)."""
    if record is None or record.optimizer is None:
        return optim.resolve(model.optimizer_, optimizer, lr), None
    saved = record.optimizer
    shapes = [shape for shape, _ in model.state_spec(dim, buffers=False).values()]
    try:
        base = optim.from_config(dict(saved["config"]))
        if "state" in saved:
            base.check_state_dict(saved, shapes)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"the checkpoint's optimiser entry is unusable: {e}") from None
    state = saved if "state" in saved else None
    if optimizer is None and lr is None:
        return base, state
    new = optim.resolve(base, optimizer, lr)
    if state is None:
        return new, None
    carried = {**state, "config": new.get_config()}  # this call's hyperparameters win
    try:
        new.check_state_dict(carried, shapes)
        return new, carried
    except ValueError:
        warnings.warn(
            f"resume_from: the checkpoint's optimiser is {saved['config'].get('name')!r} "
            f"({saved['config']}), this fit uses {new!r}; its state starts afresh",
            UserWarning, stacklevel=5,
        )
        return new, None


def _match_callback_states(callbacks: list, saved: list, path: Any) -> list:
    """For each callback the saved state of the same class and rank among that class's
    callbacks (None: it starts afresh), checked by the callback's validate_state_dict.
    The entries' structure was checked when the checkpoint was read."""
    by_class: dict[str, list] = collections.defaultdict(list)
    for i, entry in enumerate(saved):
        by_class[entry["class"]].append((i, entry["state"]))
    seen: collections.Counter = collections.Counter()
    out = []
    for cb in callbacks:
        name = type(cb).__name__
        states = by_class.get(name, [])
        rank = seen[name]
        seen[name] += 1
        i, state = states[rank] if rank < len(states) else (None, None)
        check = getattr(cb, "validate_state_dict", None)
        if state is not None and check is not None:
            try:
                check(state)
            except (ValueError, TypeError, KeyError) as e:
                raise CheckpointError(
                    f"checkpoint {os.fspath(path)!r}: training.callbacks[{i}].state cannot be "
                    f"given to this {name}: {e}") from None
        out.append(state)
    return out


def _split_validation(X: Any, y: Any, fraction: Any, sample_weight: Any = None,
                      ) -> tuple[Any, Any, tuple, Any]:
    """Keras semantics: the last `fraction` of the samples, taken before any shuffling (and
    of the sample weights, which then weight the validation loss and metrics too)."""
    from .preconditions import as_host_or_device, check_same_length

    try:
        f = float(fraction)
    except (TypeError, ValueError):
        raise TypeError(f"validation_split must be a number in (0, 1), got {fraction!r}") from None
    if not (0.0 < f < 1.0):
        raise ValueError(
            f"validation_split is the fraction of samples held out and must be in (0, 1), "
            f"got {fraction!r}"
        )
    X = as_host_or_device(X, "X")
    y = as_host_or_device(y, "y")
    check_same_length(X, y, "X", "y")
    n = X.shape[0] if X.ndim else 0
    split_at = int(math.floor(n * (1.0 - f)))
    if split_at < 1 or split_at >= n:
        raise ValueError(
            f"validation_split={fraction} of {n} samples leaves "
            f"{split_at} for training and {n - split_at} for validation; both need at least one"
        )
    if sample_weight is None:
        return X[:split_at], y[:split_at], (X[split_at:], y[split_at:]), None
    w = check_sample_weight(sample_weight, n)
    return X[:split_at], y[:split_at], (X[split_at:], y[split_at:], w[split_at:]), w[:split_at]


def _class_labels(y: Any) -> np.ndarray | None:
    """Integer class labels of a target (labels, one-hot or probability rows), else None."""
    y = np.asarray(y.get() if hasattr(y, "get") else y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    elif y.ndim == 2:
        if y.dtype.kind not in "biuf" or not np.allclose(y.sum(axis=1), 1.0):
            return None  # multi-label targets: no single class per sample
        y = y.argmax(axis=1)
    if y.ndim != 1 or y.dtype.kind not in "biuf" or not np.all(np.isfinite(y)) \
            or not np.array_equal(y, np.round(y)):
        return None
    return y.astype(np.int64)


def _warn_if_classes_differ(y_train: Any, y_val: Any, loss: losses.Loss, fraction: Any) -> None:
    """Warn when a class is absent from one part of a validation_split although a random
    split of that many samples would almost surely (p > 0.999) have put some there."""
    if not loss.classification:
        return
    a, b = _class_labels(y_train), _class_labels(y_val)
    if a is None or b is None:
        return
    f = float(fraction)
    classes, total = np.unique(np.concatenate([a, b]), return_counts=True)
    in_train = dict(zip(*np.unique(a, return_counts=True), strict=True))
    in_val = dict(zip(*np.unique(b, return_counts=True), strict=True))
    gone_val = [int(c) for c, t in zip(classes, total, strict=True)
                if c not in in_val and (1 - f) ** t < 1e-3]
    gone_train = [int(c) for c, t in zip(classes, total, strict=True)
                  if c not in in_train and f ** t < 1e-3]
    if not (gone_val or gone_train):
        return
    parts = []
    if gone_val:
        parts.append(f"class(es) {gone_val} are missing from the validation part")
    if gone_train:
        parts.append(f"class(es) {gone_train} are missing from the training part")
    warnings.warn(
        f"validation_split={fraction} holds out the last {len(b)} samples, and their classes "
        f"differ strongly from the training part's: {'; '.join(parts)} (training counts "
        f"{ {int(k): int(v) for k, v in in_train.items()} }, validation counts "
        f"{ {int(k): int(v) for k, v in in_val.items()} }). The data looks sorted by class, "
        "so validation metrics and EarlyStopping would measure the wrong thing: shuffle X "
        "and y first (e.g. with a permutation or mlpx.train_test_split), or pass "
        "validation_data=(X_val, y_val)",
        UserWarning, stacklevel=5,
    )



