"""The training loop behind `Sequential.fit`: a small object with named phases (Keras' Trainer).

    setup       check every argument, the data, the callbacks and a checkpoint to resume
                from, and plan the run; nothing changes yet, so any error leaves the model
                exactly as it was
    begin       apply the plan: build, load the checkpoint's state, install loss and
                optimiser, set the run's position
    run_epoch   the shuffled batches of one epoch, from the run's position, with the
                batch-level callback hooks around each step
    train_step  forward, fused loss + gradient (sample-weighted when asked), metrics,
                backward, penalties, clipping, optimiser step
    end_epoch   finiteness check (loss, parameters, buffers), validation (every
                `validation_freq` epochs), History, callbacks

The trainer talks to the model through public methods only. The run's own state (optimiser,
run index, position: epoch, step and the epoch's partial loss sum, callbacks' state) is
`Trainer.state_dict()`; the model's parameters and buffers are `model.state_dict()`.
Checkpoints hold both, and the rollbacks (a diverged epoch, an interrupted step) restore both.

The batch order of an epoch is a pure function of (model seed, run, epoch), and Dropout masks
of (seed, layer, step): a run resumed from any saved position replays the uninterrupted run
bit for bit. Nothing inside a step reads a value back to the host.

Data parallelism (`fit(distributed=True)`, mlpx.distributed) plugs in through `parallel`, an
object with a few hooks whose single-process versions (`Alone`) do nothing: which rows of each
batch this process takes, what to do before backward and after it (the gradient all-reduce),
how to total a number over the processes, and whether this process prints and writes files.
"""

from __future__ import annotations

import collections
import math
import os
import signal
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import checkpoint
from . import losses as L
from . import metrics as M
from . import optim as O
from . import state as S
from .accumulation import Accumulation, check_accumulation_steps
from .callbacks import Callback, EpochLogs
from .checkpoint import CheckpointError
from .checkpoint_schema import check_metric_sums
from .errors import NonFiniteLossError
from .history import History
from .input_scale import warn_if_unscaled
from .progress import EpochProgress
from .validation import check_positive_int
from .weighting import check_sample_weight, combined

#: the hooks fit calls on every callback
_CALLBACK_HOOKS = ("set_model", "on_train_begin", "on_epoch_begin", "on_epoch_end", "on_train_end")


class _DeferredInterrupt:
    """Ctrl-C during a step is acted on after that step, so weights stay consistent."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._active = threading.current_thread() is threading.main_thread()

    def _handler(self, signum, frame):
        if self.requested:  # a second Ctrl-C: stop at once (the step is rolled back)
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> _DeferredInterrupt:
        if self._active:
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._active:
            signal.signal(signal.SIGINT, self._previous)


class _StepBoundaryInterrupt(KeyboardInterrupt):
    """Ctrl-C acted on between two steps: the state is that of the last completed step."""


@dataclass
class _Plan:
    """Everything `setup` checked, ready for `begin` to apply."""

    loss: L.Loss
    optimizer: O.Optimizer
    opt_state: dict | None
    build_dim: int | None
    model_state: dict | None
    run: int
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
    batch_size: int
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


@dataclass
class _Prior:
    """The model's training attributes before a fit, restored when its first epoch diverges."""

    loss: Any
    optimizer: Any
    history: Any
    epoch: int
    trainer: Any

    def restore(self, model: Any) -> None:
        model.loss_, model.optimizer_, model.history_ = self.loss, self.optimizer, self.history
        model.epoch_, model.trainer_ = self.epoch, self.trainer


class Alone:
    """The data-parallel hooks of a single process: every row, nothing to exchange."""

    #: this process prints progress and writes files (callbacks' after_epoch)
    lead = True
    #: narrows the rows lo:hi of each batch to this process's share (None: all of them)
    rows = None

    def begin_step(self, lo: int, hi: int, weights: np.ndarray | None = None) -> None:
        """A step on the batch of rows lo:hi of the epoch's order starts (`weights`: the
        sample weights in the epoch's order, host array, None when unweighted)."""

    def scale_output_grad(self, ops: Any, g: Any) -> None:
        """Before backward: adapt dL/d(output) of this process's rows to the global batch."""

    def reduce_gradients(self, params: list, stop: bool) -> bool | None:
        """After backward: combine the gradients. Returns whether the processes agreed to
        stop after this step (one of them got Ctrl-C), or None where no agreement is needed:
        then the interrupt is acted on as soon as it is seen."""
        return None

    def total(self, value: float) -> float:
        """`value` summed over the processes."""
        return value

    def merge_metric_sums(self, ops: Any, metrics: list, sums: list) -> list:
        """The metrics' running sums of every process's rows (each process's own on entry)."""
        return sums

    def any(self, flag: bool) -> bool:
        """True when `flag` is True on any process."""
        return bool(flag)

    def failed(self, error: BaseException, collective: bool) -> None:
        """`fit` raised `error` (`collective`: every process raises it at the same point)."""

    def end(self) -> None:
        """fit is over (also after an error)."""


class Trainer:
    """Runs `fit` for one model and holds the run's state (`state_dict()`)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.run = 0
        self.epoch = 0  # epochs completed = the epoch in progress
        self.step = 0  # steps completed in the epoch in progress
        self.loss_sum = 0.0  # their summed loss (times each batch's size or total weight)
        self.metric_sums: list = []  # the metrics' running sums of those steps (device)
        self.saved_metric_sums: dict = {}  # those of a loaded checkpoint, until a fit runs
        self.stopped = False
        self.callbacks: list = []
        self._prior: _Prior | None = None
        self._first_epoch = 0
        self._gbuf: dict[int, Any] = {}
        self._bar: Any = None
        self._accum = Accumulation(1, 1, 1)  # gradient accumulation of the run (fit sets it)
        self._phase = "between"  # of the step in progress: forward, update, between steps
        self._guard: _BufferGuard | None = None
        self.parallel: Any = Alone()
        self._interrupt: Any = None
        self._agreed_stop: bool | None = None  # the processes' decision at the last step

    # ------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The run: index, position, stop flag, optimiser state and each callback's state
        (class and state, in callback order). NumPy arrays and plain values."""
        opt = self.model.optimizer_
        if opt is None:
            opt_state = None
        elif opt.ops is not None and opt.params:
            opt_state = opt.state_dict()
        else:
            opt_state = {"config": opt.get_config()}
        cbs = [{"class": type(cb).__name__, "state": cb.state_dict()}
               for cb in self.callbacks if callable(getattr(cb, "state_dict", None))]
        metrics = getattr(self.model, "metrics_", None) or []
        sums = {m.name: M.state_to_host(self.model.ops, s)
                for m, s in zip(metrics, self.metric_sums, strict=False) if s is not None}
        if not sums and self.step:
            sums = dict(self.saved_metric_sums)
        return {"run": self.run, "epoch": self.epoch, "step": self.step,
                "loss_sum": self.loss_sum, "stopped": bool(self.stopped),
                "optimizer": opt_state, "callbacks": cbs, "metric_sums": sums}

    # -------------------------------------------------------------------------------- fit
    def fit(self, X: Any, y: Any, distributed: Any = False, **kwargs: Any) -> History:
        if distributed is False or distributed is None:
            plan = self.setup(X, y, **kwargs)
            self.begin(plan)
            return self.train(plan)
        from .distributed.data_parallel import start

        if kwargs.get("gradient_accumulation_steps", 1) != 1:
            raise ValueError(
                "gradient_accumulation_steps is not supported with distributed=True; the "
                "processes already form a large batch: raise batch_size instead"
            )
        parallel = start(distributed, self.model, stacklevel=3)  # the caller of model.fit
        if parallel is None:  # alone (warned): an ordinary fit
            return self.fit(X, y, **kwargs)
        try:
            plan = parallel.agree(lambda: self.setup(X, y, **kwargs))
            self.begin(plan)
            self.parallel = parallel
            parallel.begin(self, plan)
            return self.train(plan)
        except BaseException as e:
            parallel.failed(e, isinstance(e, (NonFiniteLossError, _StepBoundaryInterrupt)))
            raise
        finally:
            parallel.end()
            self.parallel = Alone()

    def setup(self, X: Any, y: Any, *, loss: Any = None, optimizer: Any = None,
              lr: float | None = None, epochs: int = 1, batch_size: int = 32,
              shuffle: bool = True, validation_data: Any = None, verbose: int = 1,
              callbacks: Sequence[Any] | None = None, validation_split: float = 0.0,
              resume_from: Any = None, clip_norm: float | None = None,
              clip_value: float | None = None, stream_data: bool | None = None,
              sample_weight: Any = None, class_weight: Any = None, metrics: Any = None,
              validation_freq: Any = 1, gradient_accumulation_steps: int = 1) -> _Plan:
        """Check everything and plan the run; the model does not change."""
        from .backends.batches import check_stream_data
        from .clipping import GradientClipper

        model = self.model
        epochs = check_positive_int(epochs, "epochs", minimum=0)
        batch_size = check_positive_int(batch_size, "batch_size")
        _check_verbose(verbose)
        if lr is not None:
            O.check_lr(lr)
        clipper = GradientClipper(clip_norm, clip_value)  # validates both limits
        stream = check_stream_data(stream_data)
        callbacks = _check_callbacks(callbacks)
        validation_freq = _check_validation_freq(validation_freq)
        accumulation = check_accumulation_steps(gradient_accumulation_steps)
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
        chosen = M.resolve(metrics, loss_fn, out_dim)
        model.check_trainable()
        warn_if_unscaled(data[0], stacklevel=4)  # the user's model.fit call
        opt, opt_state = _plan_optimizer(model, optimizer, lr, record, dim)
        run = record.run if record else None
        position = _plan_position(model, run, epochs)
        steps = -(-int(data[0].shape[0]) // batch_size)
        if position["step"] >= steps:
            raise CheckpointError(
                f"checkpoint {os.fspath(resume_from)!r} stopped after step {position['step']} "
                f"of epoch {position['epoch'] + 1}, but with these data and batch_size "
                f"{batch_size} an epoch has {steps} steps; resume with the data and "
                "batch_size of the saved run"
            )
        if position["step"]:  # inside an epoch: its metric sums go on with this fit's metrics
            check_metric_sums(record, chosen, out_dim, os.fspath(resume_from))
        return _Plan(
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
        )

    def begin(self, plan: _Plan) -> None:
        """Apply the plan; nothing here can fail on bad input (setup checked it all)."""
        model = self.model
        self._prior = None if plan.resumed else _Prior(
            model.loss_, model.optimizer_, model.history_, model.epoch_, model.trainer_)
        with model.step_lock():
            if plan.build_dim is not None:
                model.build(plan.build_dim)
            if plan.model_state is not None:
                model.load_state_dict(plan.model_state)
            if plan.seed is not None:
                model.set_seed(plan.seed)
            model.loss_, model.optimizer_ = plan.loss, plan.optimizer
            model.metrics_ = list(plan.metrics)
            model.compiled_metrics = [m for m in plan.metrics if not m.implicit]
            plan.optimizer.bind(model.parameters(), model.ops)
            if plan.opt_state is not None:
                plan.optimizer.load_state_dict(plan.opt_state)
            # gradients an earlier hand-written backward left unused are not this run's
            plan.optimizer.zero_grad()
        self.run, self.epoch, self.step = plan.run, plan.epoch, plan.step
        self.loss_sum, self.stopped, self.callbacks = plan.loss_sum, plan.stopped, plan.callbacks
        self.metric_sums = _restore_metric_sums(model.ops, plan.metrics, plan.metric_sums,
                                                plan.step)
        self._first_epoch = plan.epoch
        model.trainer_, model.epoch_, model.history_ = self, plan.epoch, plan.history
        model.stop_training = False
        for cb in self.callbacks:
            cb.set_model(model)

    def train(self, plan: _Plan) -> History:
        """The epochs from the run's position to `plan.epochs`, then on_train_end."""
        model, ops = self.model, self.model.ops
        source = ops.batch_source(*plan.data, plan.batch_size, model.dtype, stream=plan.stream)
        plan.data = ()  # the source holds what it needs (a device copy, or the host arrays)
        n, bs, steps = source.n, source.batch_size, source.steps
        self._gbuf = {m: ops.empty((m, model.output_dim), model.dtype)
                      for m in {bs, n - (steps - 1) * bs}}
        self._accum = Accumulation(plan.accumulation, n, bs)
        self._guard, self._phase = _BufferGuard(model), "between"
        # device copies of the weights, gathered per batch like X and y
        self._weights = None if plan.weights is None else ops.asarray(plan.weights)
        # the names each epoch's logs will hold, so callbacks can check theirs before any step
        recorded = ["loss", *(m.name for m in plan.metrics)]
        if plan.val is not None:
            recorded += ["val_loss", *(f"val_{m.name}" for m in plan.metrics)]
        for cb in self.callbacks:
            cb.on_train_begin({"metrics": [*recorded, "lr", "grad_norm"]})
        for cb, saved in zip(self.callbacks, plan.callback_states, strict=True):
            if saved is not None:
                cb.load_state_dict(saved)
        left = 0 if self.stopped else (plan.epochs - self.epoch) * steps - self.step
        bar = self._bar = EpochProgress(left, steps, plan.verbose == 1)
        try:
            with _DeferredInterrupt() as interrupt:
                self._interrupt = interrupt
                while self.epoch < plan.epochs and not self.stopped:
                    self.run_epoch(plan, source, bar, interrupt)
        finally:
            bar.close()
            source.close()
        for cb in self.callbacks:
            cb.on_train_end({"history": model.history_})
        return model.history_

    # ------------------------------------------------------------------------------ epoch
    def run_epoch(self, plan: _Plan, source: Any, bar: Any, interrupt: Any) -> None:
        model, epoch = self.model, self.epoch
        if self.step == 0:
            self.metric_sums = [None] * len(plan.metrics)
        snapshot = self._capture()
        for cb in self.callbacks:
            cb.on_epoch_begin(epoch, {})
        bar.set_description(f"epoch {epoch + 1}/{plan.epochs}")
        order = batch_order(model.seed, self.run, epoch, source.n) if plan.shuffle else None
        total, last_norm, steps, done = self.loss_sum, 0.0, source.steps, self.step
        carried = done  # steps of a resumed epoch already summed in loss_sum and metric_sums
        params, bs = model.parameters(), source.batch_size
        part = self.parallel.rows  # a process's shard of every batch (None: all rows)
        batches = source.epoch(order) if part is None else source.epoch(order, part)
        weights = self._epoch_weights(order, source)
        self._accum.begin_epoch(plan.weights, order)
        host_weights = None  # the epoch's weights in batch order, for data-parallel scaling
        if part is not None and plan.weights is not None:
            host_weights = plan.weights if order is None else plan.weights[order]
        begin_hooks = _batch_hooks(self.callbacks, "on_train_batch_begin")
        end_hooks = _batch_hooks(self.callbacks, "on_train_batch_end")
        try:
            for s, (xb, yb) in enumerate(batches):
                if s < done:  # resumed inside this epoch: these batches are done
                    continue
                lo, hi = s * bs, min((s + 1) * bs, source.n)
                self.parallel.begin_step(lo, hi, host_weights)
                for hook in begin_hooks:
                    hook(s, {})
                if weights is not None:
                    a, b = (lo, hi) if part is None else part(lo, hi)
                    wb = weights[a:b]
                else:
                    wb = None
                with model.step_lock():
                    total, norm = self.train_step(xb, yb, plan, params, total, s == steps - 1,
                                                  weight=wb, step=s)
                done = s + 1
                last_norm = last_norm if norm is None else norm
                bar.update(1)
                if end_hooks:
                    logs = BatchLogs(self, plan, total, order, bs, done, source.n, part,
                                     carried)
                    for hook in end_hooks:
                        hook(s, logs)
                    # a batch hook stops the run (data parallel: when it does on any process)
                    model.stop_training = self.parallel.any(model.stop_training)
                    # a stop waits for the end of a gradient-accumulation group
                    if model.stop_training and done < steps and self._accum.boundary(done):
                        bar.update(steps - done)
                        break
                if (self._stop_requested(interrupt) and done < steps
                        and self._accum.boundary(done)):
                    self.step = done
                    self.loss_sum = self.parallel.total(model.ops.to_float(total))
                    self.metric_sums = self.parallel.merge_metric_sums(
                        model.ops, plan.metrics, self.metric_sums)
                    raise _StepBoundaryInterrupt
            self.end_epoch(plan, total, last_norm, snapshot,
                           _seen(plan, order, source.batch_size, done, source.n))
        except _StepBoundaryInterrupt:
            raise
        except KeyboardInterrupt:
            if self.epoch == epoch:  # the epoch is not recorded yet: a consistent position
                self._interrupted(snapshot, done, steps, total)
            raise
        if self._stop_requested(interrupt):
            raise _StepBoundaryInterrupt

    def _epoch_weights(self, order: np.ndarray | None, source: Any) -> Any:
        """The sample weights in the epoch's batch order, on the device (None: unweighted)."""
        w = self._weights
        if w is None or order is None:
            return w
        ops = self.model.ops
        out = ops.empty(w.shape, w.dtype)
        return ops.take_rows(w, ops.asarray(order), out)

    def train_step(self, xb: Any, yb: Any, plan: _Plan, params: list, total: Any,
                   last: bool, weight: Any = None, step: int = 0) -> tuple[Any, Any]:
        """One update; returns the running loss sum and the pre-clip gradient norm (only
        computed on the epoch's last step unless clip_norm needs it every step). `weight`:
        the batch's sample weights (device), or None for the plain mean loss. With gradient
        accumulation, `step` (the batch's index in the epoch) places the batch in its group:
        only a group's last batch updates the weights (see mlpx.accumulation)."""
        model, ops = self.model, self.model.ops
        self._phase = "forward"
        self._guard.save()
        m = xb.shape[0]
        out = model.forward(xb, training=True)
        g = self._gbuf.get(m)
        if g is None:  # a data-parallel shard's size: allocated at its first step
            g = self._gbuf[m] = ops.empty((m, model.output_dim), model.dtype)
        step_sum, sums = 0.0, self.metric_sums
        # a data-parallel process may hold no row of a small last batch: it still takes part
        # in the step's exchanges, with a zero gradient
        if m:
            if weight is None:
                step_sum = plan.loss(ops, out, yb, g) * m
            else:
                step_sum = plan.loss.weighted(ops, out, yb, weight, g) * weight.sum()
            # before backward, which may reuse the output buffers; device work only
            sums = [metric.update(ops, prev, out, yb, weight)
                    for metric, prev in zip(plan.metrics, self.metric_sums, strict=True)]
        self.parallel.scale_output_grad(ops, g)
        accum = self._accum
        if accum.active:
            g *= accum.share(step)  # the batch's part of the group's mean gradient
        if accum.active:  # a group's first batch replaces the gradients, the others add
            model.backward(g, accumulate=not accum.first(step))
        else:
            model.backward(g)
        asked = self._interrupt is not None and self._interrupt.requested
        self._agreed_stop = self.parallel.reduce_gradients(params, asked)
        if accum.active:
            if not accum.last(step):
                self.metric_sums = sums
                self._phase = "between"
                return total + step_sum, None
        model.add_penalty_grads()
        norm = plan.clipper(ops, params, need_norm=last)
        self._phase = "update"
        model.optimizer_.step()
        self.metric_sums = sums
        self._phase = "between"
        return total + step_sum, norm

    def end_epoch(self, plan: _Plan, total: Any, last_norm: Any, snapshot: tuple,
                  n: float) -> None:
        model, ops, epoch = self.model, self.model.ops, self.epoch
        # the loss is summed in float64, so float32 weights or running statistics can
        # overflow while the epoch's loss is still finite: check the whole state too
        epoch_loss = self.parallel.total(ops.to_float(total)) / n + ops.to_float(model.penalty())
        # data parallel: every process's running sums of its rows, merged into the global ones
        self.metric_sums = self.parallel.merge_metric_sums(ops, plan.metrics, self.metric_sums)
        bad = [] if math.isfinite(epoch_loss) else [f"the training loss became {epoch_loss}"]
        bad += [f"{k} overflowed to NaN/inf" for k in
                S.nonfinite_entries(model.state_arrays(), ops)]
        if bad:
            self._diverged(epoch, bad, snapshot)
        logs = EpochLogs(loss=epoch_loss)
        for metric, sums in zip(plan.metrics, self.metric_sums, strict=True):
            logs[metric.name] = metric.result(ops, sums)
        if plan.val is not None:
            keys = ["val_loss", *(f"val_{m.name}" for m in plan.metrics)]
            if _validation_due(plan.validation_freq, epoch + 1):
                v = model.evaluate_batches(plan.val[0], plan.val[1], plan.loss,
                                           max(plan.batch_size, 1024), plan.metrics,
                                           plan.val_weights)
                logs.update({f"val_{k}": value for k, value in v.items()})
            else:
                logs.not_recorded = tuple(keys)
        logs["lr"] = model.optimizer_.lr
        logs["grad_norm"] = ops.to_float(last_norm)
        model.history_.append(epoch, logs)
        self.epoch = model.epoch_ = epoch + 1
        self.step, self.loss_sum = 0, 0.0
        self.metric_sums = [None] * len(plan.metrics)
        _report(plan, epoch, logs, self._bar)
        for cb in self.callbacks:
            cb.on_epoch_end(epoch, logs)
        self.stopped = self.parallel.any(model.stop_training)
        model.stop_training = self.stopped
        for cb in self.callbacks if self.parallel.lead else ():  # the epoch's state is
            after = getattr(cb, "after_epoch", None)  # complete: now it may be saved
            if after is not None:
                after(epoch, logs)

    # ------------------------------------------------------------------------- rollbacks
    def _capture(self) -> tuple:
        opt = self.model.optimizer_
        # the metric sums are replaced, never written in place: the list is a snapshot
        return (self.model.state_dict(), opt.state_dict(), self.step, self.loss_sum,
                list(self.metric_sums))

    def _restore(self, snapshot: tuple) -> None:
        state, opt_state, self.step, self.loss_sum, sums = snapshot
        self.metric_sums = list(sums)
        self.model.load_state_dict(state)
        self.model.optimizer_.load_state_dict(opt_state)

    def _stop_requested(self, interrupt: Any) -> bool:
        """Ctrl-C seen: here, or (data parallel) by any process before the last exchange, so
        that all processes stop after the same step."""
        agreed = self._agreed_stop
        return interrupt.requested if agreed is None else agreed

    def _interrupted(self, snapshot: tuple, done: int, steps: int, total: Any) -> None:
        """A KeyboardInterrupt inside the epoch (not the deferred Ctrl-C): keep the last
        completed step where the state is consistent, else go back to the epoch's start."""
        if self._phase == "update" or done >= steps:  # a half-applied update, or end_epoch
            self._restore(snapshot)
            return
        if self._phase == "forward":  # forward/backward only moved the buffers: undo that
            self._guard.restore()
        self.step, self.loss_sum = done, self.model.ops.to_float(total)

    def _diverged(self, epoch: int, bad: list[str], snapshot: tuple) -> None:
        self._restore(snapshot)
        before = ""
        if epoch == self._first_epoch and self._prior is not None:
            self._prior.restore(self.model)  # loss, optimiser, history and epoch of before
            before = ", as before this fit"
        what = "; ".join(bad[:3]) + (f" (and {len(bad) - 3} more)" if len(bad) > 3 else "")
        raise NonFiniteLossError(
            f"{what} in epoch {epoch + 1}; the model keeps the state of its last "
            f"finite epoch ({epoch}){before}: weights, buffers and optimiser state. Lower the "
            "learning rate, standardise the inputs, or clip gradients"
        )


class _BufferGuard:
    """The layers' buffers as they were before the step in progress (copied into arrays
    allocated once), so that a step interrupted before its update can be undone exactly."""

    def __init__(self, model: Any) -> None:
        self.ops = model.ops
        self.saved = [(layer, {k: None if _is_counter(v) else self.ops.copy(v)
                               for k, v in layer.buffers().items()})
                      for _, layer in model.walk() if layer.buffers()]
        self.counters: dict[tuple[int, str], Any] = {}

    def save(self) -> None:
        for i, (layer, copies) in enumerate(self.saved):
            for k, v in layer.buffers().items():
                if copies[k] is None:
                    self.counters[i, k] = v
                else:
                    self.ops.copy_into(copies[k], v)

    def restore(self) -> None:
        for i, (layer, copies) in enumerate(self.saved):
            layer.load_state_arrays({k: self.counters[i, k] if c is None else
                                     self.ops.to_numpy(c) for k, c in copies.items()})


def _is_counter(value: Any) -> bool:
    return isinstance(value, np.ndarray) and value.ndim == 0


# -------------------------------------------------------------------------------- helpers
def batch_order(seed: int, run: int, epoch: int, n: int) -> np.ndarray:
    """The shuffled sample order of an epoch: a pure function of (seed, run, epoch)."""
    return np.random.default_rng(np.random.SeedSequence([seed, run, epoch])).permutation(n)


class BatchLogs(Mapping):
    """The logs of `on_train_batch_end`: the epoch's running loss and metrics up to this
    batch. Values are read from the device when looked up, so a callback that reads none
    costs no host synchronisation. In a data-parallel fit they are this process's own: the
    rows of its shards (and, on rank 0 of a run resumed inside the epoch, the saved part)."""

    def __init__(self, trainer: Trainer, plan: _Plan, total: Any, order: Any, batch_size: int,
                 done: int, n: int, part: Any = None, carried: int = 0) -> None:
        self._ops = trainer.model.ops
        self._plan, self._total, self._order = plan, total, order
        self._bs, self._done, self._n = batch_size, done, n
        self._part, self._carried, self._lead = part, carried, trainer.parallel.lead
        self._sums = dict(zip((m.name for m in plan.metrics), trainer.metric_sums, strict=True))
        self._metrics = {m.name: m for m in plan.metrics}

    def __getitem__(self, key: str) -> float:
        if key == "loss":
            seen = _seen(self._plan, self._order, self._bs, self._done, self._n, self._part,
                         self._carried, self._lead)
            return self._ops.to_float(self._total) / seen if seen > 0 else math.nan
        return self._metrics[key].result(self._ops, self._sums[key])

    def __iter__(self):
        return iter(["loss", *self._metrics])

    def __len__(self) -> int:
        return 1 + len(self._metrics)

    def __repr__(self) -> str:
        return f"BatchLogs(keys={list(self)}; values are read on access)"


def _batch_hooks(callbacks: list, name: str) -> list:
    """The bound `name` hooks of the callbacks that override Callback's no-op."""
    base = getattr(Callback, name)
    hooks = []
    for cb in callbacks:
        fn = getattr(type(cb), name, None)
        if fn is not None and fn is not base:
            hooks.append(getattr(cb, name))
    return hooks


def _seen(plan: _Plan, order: Any, batch_size: int, done: int, n: int, part: Any = None,
          carried: int = 0, lead: bool = True) -> float:
    """The number (or, weighted, the total weight) of samples in the epoch's first `done`
    batches: what the epoch's loss sum is divided by. With `part` (a data-parallel process's
    share of each batch), those of its shards only, except the first `carried` batches of a
    resumed epoch, whose saved sums the lead process holds whole and the others not at all."""
    stop = min(done * batch_size, n)
    if part is None:
        spans = [(0, stop)]
    else:
        start = min(carried * batch_size, stop)
        spans = [(0, start)] if lead else []
        spans += [part(lo, min(lo + batch_size, n)) for lo in range(start, stop, batch_size)]
    if plan.weights is None:
        return float(sum(b - a for a, b in spans))
    w = plan.weights if order is None else plan.weights[order]
    return float(sum(w[a:b].sum() for a, b in spans))


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


def _validation_due(freq: Any, epoch: int) -> bool:
    return epoch % freq == 0 if isinstance(freq, int) else epoch in freq


def _restore_metric_sums(ops: Any, metrics: list, saved: dict | None, step: int) -> list:
    """The partial sums of a resumed epoch for the metrics of the same name (others start
    empty and cover the epoch's remaining batches)."""
    if not saved or step == 0:
        return [None] * len(metrics)
    return [M.state_to_device(ops, saved.get(m.name)) for m in metrics]


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
        # duck-typed callbacks are fine; a bare function would fail later with an AttributeError
        missing = [h for h in _CALLBACK_HOOKS if not hasattr(cb, h)]
        if missing:
            raise TypeError(
                f"callbacks must be mlpx.callbacks.Callback objects; {cb!r} has no "
                f"{', '.join(missing)}; subclass mlpx.callbacks.Callback and override "
                "on_epoch_end(epoch, logs) (or another hook)"
            )
    return callbacks


def _report(plan: _Plan, epoch: int, logs: dict, bar: Any) -> None:
    shown = {k: f"{v:.4g}" for k, v in logs.items() if k != "lr"}
    bar.set_postfix(shown)
    if plan.verbose == 2:
        line = " ".join(f"{k}={v}" for k, v in shown.items())
        print(f"epoch {epoch + 1}/{plan.epochs} {line}")


def _plan_data(model: Any, X: Any, y: Any, validation_data: Any, loss: L.Loss,
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


def _plan_position(model: Any, run: S.RunRecord | None, epochs: int) -> dict[str, Any]:
    """Where the run starts: a resumed run where it was saved, a new run at its start (with
    the next run index, so its batch orders differ from the previous run's)."""
    if run is None:
        prev = model.trainer_
        return {"run": prev.run + 1 if prev is not None else 0, "epoch": 0, "step": 0,
                "loss_sum": 0.0, "stopped": False, "history": History()}
    inside = run.epoch < epochs  # else there is nothing left to train
    return {"run": run.run, "epoch": min(run.epoch, epochs), "step": run.step if inside else 0,
            "loss_sum": run.loss_sum if inside else 0.0, "stopped": run.stopped,
            "history": run.history or History()}


def _plan_loss(model: Any, loss: Any, record: Any) -> L.Loss:
    if loss is not None:
        return model.check_loss(loss, stacklevel=5)  # the user's model.fit call
    if record is not None and record.loss:
        return L.get(record.loss)
    if model.loss_ is None:
        raise ValueError(
            f"no loss given and none set by fit/compile; pass loss= (one of {', '.join(L.names())})"
        )
    return model.loss_


def _read_resume(model: Any, path: Any) -> S.CheckpointRecord:
    """The checkpoint's record, checked against the model (architecture, dtype, every array
    against the layers' declarations) without changing the model."""
    p = os.fspath(path)
    record = S.read_record(*checkpoint.read_file(p), p)
    arch = record.architecture
    diff = S.architecture_difference(arch, model.input_dim, model.get_config()["layers"])
    if diff is not None:
        raise CheckpointError(f"checkpoint {p!r} holds a different architecture than this "
                              f"model ({diff}); load it with mlpx.load")
    if model.dtype.name != arch["dtype"]:
        raise CheckpointError(
            f"checkpoint {p!r} holds {arch['dtype']} weights, this model is "
            f"{model.dtype.name}; build the model with dtype={arch['dtype']!r}"
        )
    dim = arch["input_dim"]
    S.check_record(record, model.state_spec(dim), list(model.state_spec(dim, buffers=False)),
                   model.dtype, p)
    return record


def _plan_optimizer(model: Any, optimizer: Any, lr: float | None, record: Any,
                    dim: int) -> tuple[O.Optimizer, dict | None]:
    """The optimiser of this fit and the state to load into it (resume), both checked.

    Resuming with `optimizer=`/`lr=` uses the new hyperparameters and keeps the saved state
    when the optimiser is of the same kind (a warning says it starts afresh otherwise)."""
    if record is None or record.optimizer is None:
        return O.resolve(model.optimizer_, optimizer, lr), None
    saved = record.optimizer
    shapes = [shape for shape, _ in model.state_spec(dim, buffers=False).values()]
    try:
        base = O.from_config(dict(saved["config"]))
        if "state" in saved:
            base.check_state_dict(saved, shapes)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"the checkpoint's optimiser entry is unusable: {e}") from None
    state = saved if "state" in saved else None
    if optimizer is None and lr is None:
        return base, state
    new = O.resolve(base, optimizer, lr)
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


def _warn_if_classes_differ(y_train: Any, y_val: Any, loss: L.Loss, fraction: Any) -> None:
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
