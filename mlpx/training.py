"""The mini-batch training loop behind `Sequential.fit`.

One step: gather the shuffled batch into a reused buffer, forward, fused loss + gradient,
backward, optimiser update. Nothing inside a step reads a value back to the host: the epoch's
loss is accumulated on the backend's device and read once per epoch.
"""

from __future__ import annotations

import math
import signal
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from .callbacks import Callback  # noqa: F401  (re-exported: mlpx.training.Callback)
from .errors import NonFiniteLossError
from .history import History
from .validation import check_positive_int

#: the hooks fit calls on every callback
_CALLBACK_HOOKS = ("set_model", "on_train_begin", "on_epoch_begin", "on_epoch_end", "on_train_end")


class _DeferredInterrupt:
    """Ctrl-C during a step is acted on after that step, so weights stay consistent."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._active = threading.current_thread() is threading.main_thread()

    def _handler(self, signum, frame):
        if self.requested:  # a second Ctrl-C: stop at once
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> _DeferredInterrupt:
        if self._active:
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._active:
            signal.signal(signal.SIGINT, self._previous)


def _progress(total: int, verbose: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(
        total=total, disable=verbose != 1, unit="batch", desc=desc, dynamic_ncols=True,
        leave=True, mininterval=0.2,
    )


def fit_model(
    model: Any,
    X: Any,
    y: Any,
    *,
    loss: Any,
    optimizer: Any,
    lr: float | None,
    epochs: int,
    batch_size: int,
    shuffle: bool,
    validation_data: tuple[Any, Any] | None,
    verbose: int,
    callbacks: Sequence[Callback] | None,
    validation_split: float = 0.0,
    resume_from: Any = None,
    clip_norm: float | None = None,
    clip_value: float | None = None,
    stream_data: bool | None = None,
) -> History:
    # ---- validate everything before any kernel runs
    epochs = check_positive_int(epochs, "epochs", minimum=0)
    batch_size = check_positive_int(batch_size, "batch_size")
    if verbose not in (0, 1, 2):
        raise ValueError(
            "verbose must be 0 (silent), 1 (progress bar) or 2 (one line per epoch), "
            f"got {verbose!r}"
        )
    if lr is not None:
        from .optim import check_lr

        check_lr(lr)
    from .clipping import GradientClipper

    clipper = GradientClipper(clip_norm, clip_value)  # validates both limits
    from .backends.batches import check_stream_data

    stream_data = check_stream_data(stream_data)
    if validation_data is not None and validation_split:
        raise ValueError(
            "give either validation_data=(X_val, y_val) or validation_split=, not both"
        )
    if validation_split:
        X, y, validation_data = _split_validation(X, y, validation_split)
    resumed = None
    if resume_from is not None:
        from . import checkpoint

        resumed = checkpoint.resume(model, resume_from)  # weights, optimiser, epoch, history
        if optimizer is not None or lr is not None:
            saved_opt = model.optimizer_.state_dict() if model.optimizer_ is not None else None
            model._set_optimizer(optimizer, lr)
            _carry_optimizer_state(model, saved_opt)
            optimizer = lr = None
    if loss is not None:
        model._set_loss(loss)
    loss_fn = model._loss_or(None)
    # host or device arrays as given: the backend's batch source decides where they live
    Xh, yh = model._prepare(X, y, loss_fn, to_device=False)
    model._check_trainable()
    if optimizer is not None or lr is not None or model.optimizer_ is None:
        model._set_optimizer(optimizer, lr)
    val = None
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("validation_data must be a tuple (X_val, y_val)")
        val = model._prepare(
            validation_data[0], validation_data[1], loss_fn, "X_val", "y_val",
            to_device=None if stream_data is None else not stream_data,
        )

    ops = model.ops
    opt = model.optimizer_
    opt.bind(model.parameters(), ops)
    source = ops.batch_source(Xh, yh, batch_size, model.dtype, stream=stream_data)
    del Xh, yh  # the source holds what it needs (a device copy, or the host arrays)
    n, bs, steps = source.n, source.batch_size, source.steps
    # Each epoch shuffles with its own generator, seeded by (model seed, run, epoch), so a
    # run resumed from a checkpoint draws the batches the uninterrupted run would have drawn.
    if resumed is not None:
        run = model._run_fit_index
        initial_epoch = min(model.epoch_, epochs)
    else:
        run = model._fit_count
        initial_epoch = 0
        model.epoch_ = 0
    model._run_fit_index = run
    model._fit_count = max(model._fit_count, run + 1)
    if isinstance(callbacks, Callback):
        name = type(callbacks).__name__
        raise TypeError(f"callbacks must be a list; pass callbacks=[{name}(...)]")
    callbacks = list(callbacks or [])
    for cb in callbacks:
        # duck-typed callbacks are fine; a bare function would fail later with an AttributeError
        missing = [h for h in _CALLBACK_HOOKS if not hasattr(cb, h)]
        if missing:
            raise TypeError(
                f"callbacks must be mlpx.callbacks.Callback objects; {cb!r} has no "
                f"{', '.join(missing)}; subclass mlpx.callbacks.Callback and override "
                "on_epoch_end(epoch, logs) (or another hook)"
            )
        cb.set_model(model)

    history = model.history_ if resumed is not None and model.history_ is not None else History()
    model.history_ = history
    model.stop_training = False
    gbuf = {
        m: ops.empty((m, model.output_dim), model.dtype) for m in {bs, n - (steps - 1) * bs}
    }

    snapshot = model._snapshot()
    # the names each epoch's logs will hold, so callbacks can check theirs before any step
    recorded = ["loss"]
    if val is not None:
        recorded += ["val_loss"] + (["val_accuracy"] if loss_fn.classification else [])
    recorded += ["lr", "grad_norm"]
    for cb in callbacks:
        cb.on_train_begin({"metrics": recorded})
    bar = _progress((epochs - initial_epoch) * steps, verbose, "training")
    try:
        with _DeferredInterrupt() as interrupt:
            for epoch in range(initial_epoch, epochs):
                for cb in callbacks:
                    cb.on_epoch_begin(epoch, {})
                bar.set_description(f"epoch {epoch + 1}/{epochs}")
                rng = np.random.default_rng(np.random.SeedSequence([model.seed, run, epoch]))
                order = rng.permutation(n) if shuffle else None
                total = 0.0
                last_norm = 0.0  # the epoch's last pre-clip gradient norm, on device
                params = model.parameters()
                for s, (xb, yb) in enumerate(source.epoch(order)):
                    m = xb.shape[0]
                    out = model.forward(xb, training=True)
                    g = gbuf[m]
                    step_loss = loss_fn(ops, out, yb, g)
                    model.backward(g)
                    model._add_penalty_grads()
                    # the norm costs a pass over every gradient: computed each step only
                    # when clip_norm needs it, else on the epoch's last step for History
                    norm = clipper(ops, params, need_norm=s == steps - 1)
                    if norm is not None:
                        last_norm = norm
                    opt.step()
                    total = total + step_loss * m
                    bar.update(1)
                    if interrupt.requested:
                        raise KeyboardInterrupt
                epoch_loss = ops.to_float(total) / n + ops.to_float(model._penalty())
                # The loss is summed in float64, so float32 weights can overflow while the
                # epoch's loss is still finite: check the weights too (once per epoch).
                weights_ok = all(ops.all_finite(p.data) for p in model.parameters())
                if not (math.isfinite(epoch_loss) and weights_ok):
                    model._restore(snapshot)
                    what = (
                        f"the training loss became {epoch_loss}" if not math.isfinite(epoch_loss)
                        else "the weights overflowed to NaN/inf"
                    )
                    raise NonFiniteLossError(
                        f"{what} in epoch {epoch + 1}; the model keeps the weights of its last "
                        f"finite epoch ({epoch}). Lower the learning rate, standardise the "
                        "inputs, or clip gradients"
                    )
                snapshot = model._snapshot()
                logs = {"loss": epoch_loss}
                if val is not None:
                    v = model._evaluate_prepared(val[0], val[1], loss_fn, max(bs, 1024))
                    logs.update({f"val_{k}": value for k, value in v.items()})
                logs["lr"] = opt.lr
                logs["grad_norm"] = ops.to_float(last_norm)
                history.append(epoch, logs)
                model.epoch_ = epoch + 1
                shown = {k: f"{v:.4g}" for k, v in logs.items() if k != "lr"}
                bar.set_postfix(shown)
                if verbose == 2:
                    line = " ".join(f"{k}={v}" for k, v in shown.items())
                    print(f"epoch {epoch + 1}/{epochs} {line}")
                for cb in callbacks:
                    cb.on_epoch_end(epoch, logs)
                if model.stop_training:
                    break
    finally:
        bar.close()
        source.close()
    for cb in callbacks:
        cb.on_train_end({"history": history})
    return history


def _split_validation(X: Any, y: Any, fraction: Any) -> tuple[Any, Any, tuple[Any, Any]]:
    """Keras semantics: the last `fraction` of the samples, taken before any shuffling."""
    from .validation import as_host_or_device, check_same_length

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
    return X[:split_at], y[:split_at], (X[split_at:], y[split_at:])


def _carry_optimizer_state(model: Any, saved: dict | None) -> None:
    """After resume_from with an explicit optimizer: keep the checkpoint's state (moments,
    step count) when it is the same kind of optimiser, else warn that it starts afresh."""
    import warnings

    opt = model.optimizer_
    if saved is None:
        return
    if saved["config"].get("name") != opt.name:
        warnings.warn(
            f"resume_from: the checkpoint's optimiser is {saved['config'].get('name')!r}, this "
            f"fit uses {opt.name!r}; its state starts afresh",
            UserWarning,
            stacklevel=4,
        )
        return
    opt.bind(model.parameters(), model.ops)
    hyper = opt.get_config()
    opt.load_state_dict(saved)
    # the hyperparameters given to this fit call win over the checkpoint's
    for k, v in hyper.items():
        if k != "name" and hasattr(opt, k):
            setattr(opt, k, v)
