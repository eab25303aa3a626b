"""The training loop behind `Sequential.fit`: a small object with named phases (Keras' Trainer).

    plan        (mlpx.fit_plan.plan_fit) check every argument, the data, the callbacks and
                a checkpoint to resume from, and plan the run; nothing changes yet, so any
                error leaves the model exactly as it was
    begin       apply the plan: build, load the checkpoint's state, install loss and
                optimiser, set the run's position
    run_epoch   the shuffled batches of one epoch, from the run's position, with the
                batch-level callback hooks around each step (without hooks, chunks of
                compiled steps per call where the run takes the compiled step)
    train_step  forward, fused loss + gradient (sample-weighted when asked), metrics,
                backward, penalties, clipping, optimiser step
    end_epoch   finiteness check (loss, parameters, buffers), validation (every
                `validation_freq` epochs), History, callbacks

The trainer talks to the model through public methods only. The run's own state (optimiser,
fit index, position: epoch, step and the epoch's partial loss sum, callbacks' state) is
`Trainer.state_dict()`; the model's parameters and buffers are `model.state_dict()`.
Checkpoints hold both, and the rollbacks (a diverged epoch, an interrupted step) restore both.

The batch order of an epoch is a pure function of (model seed, fit index, epoch), and Dropout masks
of (seed, layer, step): a run resumed from any saved position replays the uninterrupted run
bit for bit. Nothing inside a step reads a value back to the host.

Data parallelism (`fit(distributed=True)`, mlpx.distributed) plugs in through `parallel`, an
object with a few hooks whose single-process versions (`SingleProcess`) do nothing: which rows
of each batch this process takes, what to do before backward and after it (the gradient all-reduce),
how to total a number over the processes, and whether this process prints and writes files.
"""

from __future__ import annotations

import math
import signal
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from .accumulation import Accumulation
from .callbacks import Callback, EpochLogs
from .errors import NonFiniteLossError
from .fit_plan import FitPlan, plan_fit
from .history import History
from .metrics import state_to_device, state_to_host
from .progress import EpochProgress
from .saving.records import RunRecord, nonfinite_entries


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


def _interrupted_at(epoch: int, step: int) -> str:
    """The traceback's last line: where the run stopped and how to continue it."""
    where = f"step {step} of epoch {epoch + 1}" if step else f"epoch {epoch}"
    return (f"fit stopped by Ctrl-C after {where}; the model holds the weights of that "
            "step: model.save(path), then fit(..., resume_from=path) finishes the run")


class _EpochInputs(NamedTuple):
    """What one epoch's steps read besides the plan (`Trainer._epoch_inputs`)."""

    order: np.ndarray | None  # the epoch's batch order (None: unshuffled)
    batches: Any  # batches(start): the source's (x, y) batches in that order, from start on
    weights: Any  # the sample weights in that order, on the device (None: unweighted)
    host_weights: np.ndarray | None  # the same on the host, for data-parallel scaling
    begin_hooks: list
    end_hooks: list


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


class SingleProcess:
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
        self.fit_index = 0  # which fit of the model this run is: it seeds the batch orders
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
        self._compiled: Any = None  # the run's compiled step (mlpx.backends.compiled_step)
        self._chunks: Any = None  # its chunks of steps per call (mlpx.backends.compiled_epoch)
        self._bar: Any = None
        self._accum = Accumulation(1, 1, 1)  # gradient accumulation of the run (fit sets it)
        self._phase = "between"  # of the step in progress: forward, update, between steps
        self._guard: _BufferGuard | None = None
        self.parallel: Any = SingleProcess()
        self._interrupt: Any = None
        self._agreed_stop: bool | None = None  # the processes' decision at the last step

    # ------------------------------------------------------------------------------ state
    @classmethod
    def from_run(cls, model: Any, run: RunRecord) -> Trainer:
        """The trainer of a saved run (a loaded checkpoint's), holding its position, so that
        `save` writes it back and the next fit counts `fit_index` on from it (its batch
        orders differ from the saved run's)."""
        trainer = cls(model)
        trainer.fit_index, trainer.epoch, trainer.step = run.fit_index, run.epoch, run.step
        trainer.loss_sum, trainer.stopped = run.loss_sum, run.stopped
        trainer.saved_metric_sums = run.metric_sums
        return trainer

    def state_dict(self) -> dict[str, Any]:
        """The run: fit index, position, stop flag, optimiser state and each callback's state
        (class and state, in callback order). NumPy arrays and plain values."""
        opt_state = optimizer_snapshot(self.model.optimizer_)
        cbs = [{"class": type(cb).__name__, "state": cb.state_dict()}
               for cb in self.callbacks if callable(getattr(cb, "state_dict", None))]
        metrics = getattr(self.model, "metrics_", None) or []
        sums = {m.name: state_to_host(self.model.ops, s)
                for m, s in zip(metrics, self.metric_sums, strict=False) if s is not None}
        if not sums and self.step:
            sums = dict(self.saved_metric_sums)
        return {"fit_index": self.fit_index, "epoch": self.epoch, "step": self.step,
                "loss_sum": self.loss_sum, "stopped": bool(self.stopped),
                "optimizer": opt_state, "callbacks": cbs, "metric_sums": sums}

    # -------------------------------------------------------------------------------- fit
    def fit(self, X: Any, y: Any, loss: Any = None, optimizer: Any = None,
            lr: float | None = None, epochs: int = 1, batch_size: int = 32,
            shuffle: bool = True, validation_data: Any = None, verbose: int = 1,
            callbacks: Sequence[Any] | None = None, validation_split: float = 0.0,
            resume_from: Any = None, clip_norm: float | None = None,
            clip_value: float | None = None, stream_data: bool | None = None,
            sample_weight: Any = None, class_weight: Any = None, metrics: Any = None,
            validation_freq: Any = 1, gradient_accumulation_steps: int = 1,
            distributed: Any = False) -> History:
        """`Sequential.fit` (its keywords): plan the run (mlpx.fit_plan), apply the plan,
        train; with `distributed`, every process agrees on the plan first."""
        parallel = None
        if distributed is not False and distributed is not None:
            from .distributed.data_parallel import start

            if gradient_accumulation_steps != 1:
                raise ValueError(
                    "gradient_accumulation_steps is not supported with distributed=True; the "
                    "processes already form a large batch: raise batch_size instead"
                )

            parallel = start(distributed, self.model, stacklevel=3)  # the caller of model.fit
        failed: BaseException | None = None
        try:
            plan = plan_fit(
                self.model, X, y, loss=loss, optimizer=optimizer, lr=lr, epochs=epochs,
                batch_size=batch_size, shuffle=shuffle, validation_data=validation_data,
                verbose=verbose, callbacks=callbacks, validation_split=validation_split,
                resume_from=resume_from, clip_norm=clip_norm, clip_value=clip_value,
                stream_data=stream_data, sample_weight=sample_weight,
                class_weight=class_weight, metrics=metrics, validation_freq=validation_freq,
                gradient_accumulation_steps=gradient_accumulation_steps)
        except BaseException as e:
            if parallel is None:
                raise
            plan, failed = None, e  # every process learns of it when they agree
        if parallel is None:  # one process (distributed alone has warned)
            self.begin(plan)
            return self.train(plan)
        return self._fit_together(parallel, plan, failed)

    def _fit_together(self, parallel: Any, plan: FitPlan | None,
                      failed: BaseException | None) -> History:
        """A data-parallel fit: the processes agree on their plans (or on one's failure to
        plan), then train in step."""

        def planned() -> FitPlan | None:
            if failed is not None:
                raise failed
            return plan

        try:
            plan = parallel.agree(planned)
            self.begin(plan)
            self.parallel = parallel
            parallel.begin(self, plan)
            return self.train(plan)
        except BaseException as e:
            parallel.failed(e, isinstance(e, (NonFiniteLossError, _StepBoundaryInterrupt)))
            raise
        finally:
            parallel.end()
            self.parallel = SingleProcess()

    def begin(self, plan: FitPlan) -> None:
        """Apply the plan; nothing here can fail on bad input (plan_fit checked it all)."""
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
            # gradients an earlier hand-written backward left unused are not this run's (the
            # steps' own backward replaces them: nothing else to clear, and no pass over
            # every parameter on each call)
            if model._grads_pending:
                plan.optimizer.zero_grad()
        self.fit_index, self.epoch, self.step = plan.fit_index, plan.epoch, plan.step
        self.loss_sum, self.stopped, self.callbacks = plan.loss_sum, plan.stopped, plan.callbacks
        self.metric_sums = _restore_metric_sums(model.ops, plan.metrics, plan.metric_sums,
                                                plan.step)
        self._first_epoch = plan.epoch
        model.trainer_, model.epoch_, model.history_ = self, plan.epoch, plan.history
        model.stop_training = False
        for cb in self.callbacks:
            cb.set_model(model)

    def train(self, plan: FitPlan) -> History:
        """The epochs from the run's position to `plan.epochs`, then on_train_end."""
        model, ops = self.model, self.model.ops
        source = ops.batch_source(*plan.data, plan.batch_size, model.dtype, stream=plan.stream)
        plan.data = ()  # the source holds what it needs (a device copy, or the host arrays)
        self._gbuf = {m: ops.empty((m, model.output_dim), model.dtype)
                      for m in {source.batch_size, source.last_rows}}
        self._accum = Accumulation(plan.accumulation, source.n, source.batch_size)
        self._guard, self._phase = _BufferGuard(model), "between"
        self._compiled = self._compiled_step(plan)
        self._chunks = self._compiled_chunks(plan, source)
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
        left = 0 if self.stopped else (plan.epochs - self.epoch) * source.steps - self.step
        bar = self._bar = EpochProgress(left, source.steps, plan.verbose == 1)
        try:
            with _DeferredInterrupt() as interrupt:
                self._interrupt = interrupt
                while self.epoch < plan.epochs and not self.stopped:
                    self.run_epoch(plan, source, bar, interrupt)
        finally:
            bar.close()
            source.close()
            self._compiled = self._chunks = None  # their work arrays go with them
        for cb in self.callbacks:
            cb.on_train_end({"history": model.history_})
        return model.history_

    # ------------------------------------------------------------------------------ epoch
    def run_epoch(self, plan: FitPlan, source: Any, bar: Any, interrupt: Any) -> None:
        """One epoch from the run's position: the source's batches, each step with the batch
        hooks around it, then end_epoch. Ctrl-C leaves a consistent position."""
        model, epoch = self.model, self.epoch
        if self.step == 0:
            self.metric_sums = [None] * len(plan.metrics)
        snapshot = self._capture()
        for cb in self.callbacks:
            cb.on_epoch_begin(epoch, {})
        bar.set_description(f"epoch {epoch + 1}/{plan.epochs}")
        part = self.parallel.rows  # a process's shard of every batch (None: all rows)
        run = self._epoch_inputs(plan, source, part)
        self._accum.begin_epoch(plan.weights, run.order)
        total, last_norm, steps, done = self.loss_sum, 0.0, source.steps, self.step
        carried = done  # steps of a resumed epoch already summed in loss_sum and metric_sums
        params = model.parameters()
        chunks = self._chunks
        if run.begin_hooks or run.end_hooks or part is not None:
            chunks = None  # Python runs between the steps
        try:
            # whole chunks of steps per call while nothing needs Python between them; the
            # epoch's last step stays below (it records the gradient norm)
            while chunks is not None and done < steps - 1:
                end = min(done + chunks.chunk, steps - 1)
                with model.step_lock():
                    if not chunks.covers(run.order):
                        break  # a part was swapped: one step at a time from here
                    self._phase = "update"  # the weights change inside the one call
                    total, sums = chunks.run(run.order, done, end, total,
                                             model.optimizer_.lr, self.metric_sums)
                    self.metric_sums, done, first = sums, end, done
                    self._phase = "between"
                bar.update(done - first)
                if self._stop_requested(interrupt) and done < steps:
                    self._stop_between_steps(plan, done, total)
            for s, (xb, yb) in enumerate(run.batches(done), start=done):
                self.parallel.begin_step(*source.rows(s), run.host_weights)
                for hook in run.begin_hooks:
                    hook(s, {})
                wb = None if run.weights is None else run.weights[slice(*source.rows(s, part))]
                with model.step_lock():
                    total, norm = self.train_step(xb, yb, plan, params, total, s == steps - 1,
                                                  weight=wb, step=s)
                done = s + 1
                last_norm = last_norm if norm is None else norm
                bar.update(1)
                if run.end_hooks:
                    logs = BatchLogs(self, plan, total, run.order, source, done, part, carried)
                    for hook in run.end_hooks:
                        hook(s, logs)
                    # a batch hook stops the run (data parallel: when it does on any process)
                    model.stop_training = self.parallel.any(model.stop_training)
                    # a stop waits for the end of a gradient-accumulation group
                    if model.stop_training and done < steps and self._accum.boundary(done):
                        bar.update(steps - done)
                        break
                if (self._stop_requested(interrupt) and done < steps
                        and self._accum.boundary(done)):
                    self._stop_between_steps(plan, done, total)
            self.end_epoch(plan, total, last_norm, snapshot, _seen(plan, run.order, source, done))
        except (_StepBoundaryInterrupt, NonFiniteLossError):
            raise  # the position is recorded, or the divergence rollback restored the state
        except BaseException:
            # Ctrl-C, or an exception from a hook, a metric or a custom part: keep the run
            # at a step boundary, so that save + resume_from continue it exactly
            if self.epoch == epoch:  # the epoch is not recorded yet: a consistent position
                self._interrupted(snapshot, done, steps, total)
            raise
        if self._stop_requested(interrupt):
            raise _StepBoundaryInterrupt(_interrupted_at(self.epoch, self.step))

    def _stop_between_steps(self, plan: FitPlan, done: int, total: Any) -> None:
        """Ctrl-C acted on after step `done`: record the run's position there and stop."""
        ops = self.model.ops
        self.step = done
        self.loss_sum = self.parallel.total(ops.to_float(total))
        self.metric_sums = self.parallel.merge_metric_sums(ops, plan.metrics, self.metric_sums)
        raise _StepBoundaryInterrupt(_interrupted_at(self.epoch, self.step))

    def _epoch_inputs(self, plan: FitPlan, source: Any, part: Any) -> _EpochInputs:
        """The epoch's batch order, batches, sample weights and batch hooks."""
        order = batch_order(self.model.seed, self.fit_index, self.epoch,
                            source.n) if plan.shuffle else None

        def batches(start: int) -> Any:
            if start:  # resumed or continued inside the epoch: no gathers for done batches
                return source.epoch(order, part, start=start)
            return source.epoch(order) if part is None else source.epoch(order, part)

        host_weights = None  # the epoch's weights in batch order, for data-parallel scaling
        if part is not None and plan.weights is not None:
            host_weights = plan.weights if order is None else plan.weights[order]
        return _EpochInputs(order, batches, self._epoch_weights(order, source), host_weights,
                            _batch_hooks(self.callbacks, "on_train_batch_begin"),
                            _batch_hooks(self.callbacks, "on_train_batch_end"))

    def _epoch_weights(self, order: np.ndarray | None, source: Any) -> Any:
        """The sample weights in the epoch's batch order, on the device (None: unweighted)."""
        w = self._weights
        if w is None or order is None:
            return w
        ops = self.model.ops
        out = ops.empty(w.shape, w.dtype)
        return ops.take_rows(w, ops.asarray(order), out)

    def _compiled_step(self, plan: FitPlan) -> Any:
        """The compiled step (mlpx.backends.compiled_step) where this run needs nothing it
        leaves out: no sample weights, clipping, accumulation or data parallelism."""
        if (plan.weights is not None or plan.accumulation != 1
                or plan.clipper.clip_norm is not None or plan.clipper.clip_value is not None
                or type(self.parallel) is not SingleProcess):
            return None
        from .backends import compiled_step

        return compiled_step.plan(self.model, plan.loss, self.model.optimizer_)

    def _compiled_chunks(self, plan: FitPlan, source: Any) -> Any:
        """Chunks of compiled steps per call (mlpx.backends.compiled_epoch) where the run
        takes the compiled step, or None."""
        if self._compiled is None:
            return None
        from .backends import compiled_epoch

        return compiled_epoch.plan(self._compiled, source, plan.loss, list(plan.metrics),
                                   self._gbuf)

    def train_step(self, xb: Any, yb: Any, plan: FitPlan, params: list, total: Any,
                   last: bool, weight: Any = None, step: int = 0) -> tuple[Any, Any]:
        """One update; returns the running loss sum and the pre-clip gradient norm (only
        computed on the epoch's last step unless clip_norm needs it every step). `weight`:
        the batch's sample weights (device), or None for the plain mean loss. With gradient
        accumulation, `step` (the batch's index in the epoch) places the batch in its group:
        only a group's last batch updates the weights (see mlpx.accumulation)."""
        model, ops = self.model, self.model.ops
        fast = self._compiled
        # the compiled step, bit for bit this method's result; the epoch's last step stays
        # here for the gradient norm it records
        if fast is not None and not last and fast.covers(xb, yb, self._gbuf.get(xb.shape[0])):
            self._phase = "update"  # the weights change inside the one call
            mean, out = fast.run(xb, yb, self._gbuf[xb.shape[0]], model.optimizer_.lr)
            # the metrics read the outputs, which the step leaves as the forward pass made them
            self.metric_sums = [metric.update(ops, prev, out, yb, None) for metric, prev
                                in zip(plan.metrics, self.metric_sums, strict=True)]
            self._phase = "between"
            return total + np.float64(mean) * xb.shape[0], None
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

    def end_epoch(self, plan: FitPlan, total: Any, last_norm: Any, snapshot: tuple,
                  n: float) -> None:
        model, ops, epoch = self.model, self.model.ops, self.epoch
        # the loss is summed in float64, so float32 weights or running statistics can
        # overflow while the epoch's loss is still finite: check the whole state too
        data_loss = self.parallel.total(ops.to_float(total))
        # n is 0 when every sample seen so far weighs 0: those contribute nothing
        epoch_loss = (data_loss / n if n > 0 else 0.0) + ops.to_float(model.penalty())
        # data parallel: every process's running sums of its rows, merged into the global ones
        self.metric_sums = self.parallel.merge_metric_sums(ops, plan.metrics, self.metric_sums)
        bad = [] if math.isfinite(epoch_loss) else [f"the training loss became {epoch_loss}"]
        bad += [f"{k} overflowed to NaN/inf" for k in
                nonfinite_entries(model.state_arrays(), ops)]
        if bad:
            self._diverged(epoch, bad, snapshot)
        logs = EpochLogs(loss=epoch_loss)
        for metric, sums in zip(plan.metrics, self.metric_sums, strict=True):
            logs[metric.name] = metric.result(ops, sums)
        if plan.val is not None:
            keys = ["val_loss", *(f"val_{m.name}" for m in plan.metrics)]
            if _validation_due(plan.validation_freq, epoch + 1):
                v = model.evaluate_batches(plan.val[0], plan.val[1], plan.loss,
                                           plan.validation_batch_size, plan.metrics,
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
        """An exception inside the epoch (not the deferred Ctrl-C): keep the last
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
def optimizer_snapshot(opt: Any) -> dict | None:
    """The optimiser's part of a run's state: its state dict once bound to parameters, its
    config alone before (None: no optimiser)."""
    if opt is None:
        return None
    if opt.ops is not None and opt.params:
        return opt.state_dict()
    return {"config": opt.get_config()}


def batch_order(seed: int, run: int, epoch: int, n: int) -> np.ndarray:
    """The shuffled sample order of an epoch: a pure function of (seed, run, epoch)."""
    return np.random.default_rng(np.random.SeedSequence([seed, run, epoch])).permutation(n)


class BatchLogs(Mapping):
    """The logs of `on_train_batch_end`: the epoch's running loss and metrics up to this
    batch. Values are read from the device when looked up, so a callback that reads none
    costs no host synchronisation. In a data-parallel fit they are this process's own: the
    rows of its shards (and, on rank 0 of a run resumed inside the epoch, the saved part)."""

    def __init__(self, trainer: Trainer, plan: FitPlan, total: Any, order: Any, cuts: Any,
                 done: int, part: Any = None, carried: int = 0) -> None:
        self._ops = trainer.model.ops
        self._plan, self._total, self._order = plan, total, order
        self._cuts, self._done = cuts, done
        self._part, self._carried, self._lead = part, carried, trainer.parallel.lead
        self._sums = dict(zip((m.name for m in plan.metrics), trainer.metric_sums, strict=True))
        self._metrics = {m.name: m for m in plan.metrics}

    def __getitem__(self, key: str) -> float:
        if key == "loss":
            seen = _seen(self._plan, self._order, self._cuts, self._done, self._part,
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


def _seen(plan: FitPlan, order: Any, cuts: Any, done: int, part: Any = None,
          carried: int = 0, lead: bool = True) -> float:
    """The number (or, weighted, the total weight) of samples in the epoch's first `done`
    batches (as `cuts`, the batch source, cuts the epoch): what the epoch's loss sum is divided
    by. With `part` (a data-parallel process's share of each batch), those of its shards only,
    except the first `carried` batches of a resumed epoch, whose saved sums the lead process
    holds whole and the others not at all."""
    if part is None:
        spans = [(0, cuts.rows_before(done))]
    else:
        spans = [(0, cuts.rows_before(min(carried, done)))] if lead else []
        spans += [cuts.rows(s, part) for s in range(carried, done)]
    if plan.weights is None:
        return float(sum(b - a for a, b in spans))
    w = plan.weights if order is None else plan.weights[order]
    return float(sum(w[a:b].sum() for a, b in spans))


def _validation_due(freq: Any, epoch: int) -> bool:
    return epoch % freq == 0 if isinstance(freq, int) else epoch in freq


def _restore_metric_sums(ops: Any, metrics: list, saved: dict | None, step: int) -> list:
    """The partial sums of a resumed epoch for the metrics of the same name (others start
    empty and cover the epoch's remaining batches)."""
    if not saved or step == 0:
        return [None] * len(metrics)
    return [state_to_device(ops, saved.get(m.name)) for m in metrics]


def _report(plan: FitPlan, epoch: int, logs: dict, bar: Any) -> None:
    shown = {k: f"{v:.4g}" for k, v in logs.items() if k != "lr"}
    bar.set_postfix(shown)
    if plan.verbose == 2:
        line = " ".join(f"{k}={v}" for k, v in shown.items())
        print(f"epoch {epoch + 1}/{plan.epochs} {line}")


