"""Learning-rate schedules against torch.optim.lr_scheduler, and inside fit()."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import mlpx
from mlpx import optim, schedules

torch = pytest.importorskip("torch")

BASE_LR = 0.1
EPOCHS = 25


def _torch_lrs(make_scheduler, epochs=EPOCHS, metrics=None):
    """The lr torch uses in each epoch (scheduler.step() at every epoch's end)."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=BASE_LR)
    sched = make_scheduler(opt)
    lrs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SequentialLR's deprecation chatter
        for e in range(epochs):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step(metrics[e]) if metrics is not None else sched.step()
    return lrs


def _our_lrs(schedule, epochs=EPOCHS, metrics=None):
    """Drive a schedule through the callback protocol as fit() does."""

    class _Model:
        optimizer_ = optim.SGD(lr=BASE_LR)

    model = _Model()
    schedule.set_model(model)
    schedule.on_train_begin({})
    lrs = []
    for e in range(epochs):
        schedule.on_epoch_begin(e, {})
        lrs.append(model.optimizer_.lr)
        logs = {"loss": metrics[e]} if metrics is not None else {"loss": 1.0}
        schedule.on_epoch_end(e, logs)
    return lrs


LR = torch.optim.lr_scheduler


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (lambda: schedules.StepLR(step_size=4, gamma=0.5), lambda o: LR.StepLR(o, 4, gamma=0.5)),
        (lambda: schedules.StepLR(step_size=1), lambda o: LR.StepLR(o, 1)),
        (lambda: schedules.ExponentialLR(gamma=0.9), lambda o: LR.ExponentialLR(o, gamma=0.9)),
        (lambda: schedules.CosineAnnealing(T_max=EPOCHS - 1),
         lambda o: LR.CosineAnnealingLR(o, T_max=EPOCHS - 1)),
        (lambda: schedules.CosineAnnealing(T_max=10, eta_min=0.01),
         lambda o: LR.CosineAnnealingLR(o, T_max=10, eta_min=0.01)),
        (lambda: schedules.LambdaLR(lambda e: 1.0 / (1 + e)),
         lambda o: LR.LambdaLR(o, lambda e: 1.0 / (1 + e))),
    ],
    ids=["step", "step1", "exponential", "cosine", "cosine_eta_min", "lambda"],
)
def test_closed_form_schedules_match_torch(ours, theirs):
    sched = ours()
    # torch's cosine rises again after T_max; ours stays at eta_min, so compare up to T_max
    n = sched.T_max + 1 if isinstance(sched, schedules.CosineAnnealing) else EPOCHS
    np.testing.assert_allclose(_our_lrs(sched, n), _torch_lrs(theirs, n), rtol=1e-12,
                               atol=1e-15)


@pytest.mark.parametrize("warmup, start", [(3, None), (5, 0.1), (1, 0.5)])
def test_cosine_with_warmup_matches_torch_sequential(warmup, start):
    t_max = 12
    sched = schedules.CosineAnnealing(T_max=t_max, eta_min=0.001, warmup_epochs=warmup,
                              warmup_start_factor=start)
    s = sched.warmup_start_factor
    if start is None:
        assert s == pytest.approx(1 / (warmup + 1))

    def theirs(o):
        return LR.SequentialLR(
            o,
            [LR.LinearLR(o, start_factor=s, end_factor=1.0, total_iters=warmup),
             LR.CosineAnnealingLR(o, T_max=t_max, eta_min=0.001)],
            milestones=[warmup],
        )

    n = warmup + t_max + 1
    ours = _our_lrs(sched, n)
    np.testing.assert_allclose(ours, _torch_lrs(theirs, n), rtol=1e-12, atol=1e-15)
    assert ours[0] == pytest.approx(BASE_LR * s) and ours[warmup] == pytest.approx(BASE_LR)
    # after T_max the lr stays at eta_min
    assert _our_lrs(sched, n + 5)[-5:] == [0.001] * 5


PLATEAU_METRICS = [1.0, 0.9, 0.9, 0.95, 0.91, 0.9, 0.89999, 0.7, 0.7, 0.7, 0.7, 0.71, 0.72,
                   0.69, 0.69, 0.69, 0.69, 0.69, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"patience": 2},
        {"patience": 1, "factor": 0.5, "cooldown": 2},
        {"patience": 0, "factor": 0.3, "min_lr": 0.005},
        {"patience": 1, "threshold": 0.05, "threshold_mode": "abs"},
        {"patience": 2, "threshold": 0.0},
    ],
)
def test_reduce_on_plateau_matches_torch(kwargs):
    ours = _our_lrs(schedules.ReduceLROnPlateau(monitor="loss", **kwargs), metrics=PLATEAU_METRICS)
    theirs = _torch_lrs(lambda o: LR.ReduceLROnPlateau(o, **kwargs), metrics=PLATEAU_METRICS)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    assert min(ours) < BASE_LR  # the sequence does trigger reductions


def test_reduce_on_plateau_max_mode_and_min_delta():
    accs = [0.5, 0.6, 0.6, 0.6, 0.61, 0.7]
    ours = _our_lrs(schedules.ReduceLROnPlateau(monitor="loss", mode="max", patience=1,
                                        min_delta=0.05), len(accs), metrics=accs)
    theirs = _torch_lrs(lambda o: LR.ReduceLROnPlateau(
        o, mode="max", patience=1, threshold=0.05, threshold_mode="abs"), len(accs), accs)
    assert ours == pytest.approx(theirs)
    assert ours[-1] == pytest.approx(BASE_LR * 0.1)


def _data(n=192):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 5)).astype(np.float32)
    y = (X[:, 0] - X[:, 2] > 0).astype(np.int64)
    return X, y


def test_history_records_the_lr_used_in_each_epoch(backend):
    X, y = _data()
    model = mlpx.MLP([5, 8, 2], backend=backend, seed=1)
    hist = model.fit(X, y, loss="cross_entropy", optimizer="momentum", lr=0.2, epochs=7,
                     batch_size=64, verbose=0, callbacks=[schedules.StepLR(step_size=3, gamma=0.1)])
    np.testing.assert_allclose(hist.lr, [0.2] * 3 + [0.02] * 3 + [0.002], rtol=1e-12)
    # the schedule scales the lr the optimiser started with, also in a second fit
    assert model.optimizer_.initial_lr == 0.2
    hist2 = model.fit(X, y, epochs=2, batch_size=64, verbose=0,
                      callbacks=[schedules.ExponentialLR(gamma=0.5)])
    np.testing.assert_allclose(hist2.lr, [0.2, 0.1], rtol=1e-12)
    sd = model.optimizer_.state_dict()
    assert sd["initial_lr"] == 0.2 and sd["config"]["lr"] == 0.1


def test_reduce_on_plateau_in_fit_uses_lr_from_next_epoch(backend):
    X, y = _data()
    model = mlpx.MLP([5, 8, 2], backend=backend, seed=1)
    # a validation loss that never improves enough after epoch 0 (a huge relative threshold):
    # epochs 1 and 2 are bad, 2 > patience, so the lr halves from epoch 3, again from 5
    sched = schedules.ReduceLROnPlateau(factor=0.5, patience=1, threshold=0.9)
    yv = np.random.default_rng(1).integers(0, 2, size=len(y))
    hist = model.fit(X, y, loss="cross_entropy", optimizer="sgd", lr=0.1, epochs=6,
                     batch_size=64, verbose=0, validation_data=(X, yv), callbacks=[sched])
    np.testing.assert_allclose(hist.lr, [0.1, 0.1, 0.1, 0.05, 0.05, 0.025])


def test_reduce_on_plateau_falls_back_to_training_loss():
    X, y = _data()
    model = mlpx.MLP([5, 8, 2], seed=1)
    sched = schedules.ReduceLROnPlateau(patience=0, threshold=0.9)
    with pytest.warns(UserWarning, match="using the training 'loss'") as record:
        hist = model.fit(X, y, loss="cross_entropy", optimizer="sgd", lr=0.1, epochs=3,
                         verbose=0, callbacks=[sched])
    assert record[0].filename == __file__  # the user's fit line, not mlpx's epoch loop
    assert hist.lr == pytest.approx([0.1, 0.1, 0.01])
    bad = schedules.ReduceLROnPlateau(monitor="val_accuracy")
    with pytest.raises(ValueError, match="'val_accuracy', which this fit does not record"):
        model.fit(X, y, epochs=1, verbose=0, callbacks=[bad])


def test_cosine_reaches_eta_min_zero_and_state_dict_still_loads():
    X, y = _data()
    model = mlpx.MLP([5, 8, 2], seed=1)
    hist = model.fit(X, y, loss="cross_entropy", optimizer="adam", lr=0.01, epochs=4,
                     verbose=0, callbacks=[schedules.CosineAnnealing(T_max=3)])
    assert hist.lr[-1] == 0.0 and math.isclose(hist.lr[0], 0.01)
    again = optim.from_config(model.optimizer_.get_config())
    assert again.lr == 0.0


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: schedules.StepLR(0), "step_size"),
        (lambda: schedules.ExponentialLR(gamma=1.5), "gamma must be > 0 and <= 1"),
        (lambda: schedules.CosineAnnealing(T_max=10, warmup_epochs=-1), "warmup_epochs"),
        (lambda: schedules.ReduceLROnPlateau(factor=1.0), "factor must be > 0 and < 1"),
        (lambda: schedules.ReduceLROnPlateau(mode="down"), "mode must be 'auto', 'min' or 'max'"),
        (lambda: schedules.LambdaLR(0.5), "lr_lambda must be a function"),
    ],
)
def test_bad_schedule_arguments_are_explained(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


def test_checkpoint_keeps_optimizer_state_schedule_base_and_regularizers(tmp_path):
    X, y = _data()
    model = mlpx.Sequential(
        [mlpx.Dense(8, activation="relu", kernel_regularizer=mlpx.regularizers.L2(1e-3)),
         mlpx.Dense(2)],
        input_dim=5, seed=0,
    )
    model.fit(X, y, loss="cross_entropy", optimizer=optim.AdamW(lr=0.01, weight_decay=0.05),
              epochs=3, verbose=0, callbacks=[schedules.StepLR(2, 0.5)])
    path = model.save(tmp_path / "run.safetensors")
    loaded = mlpx.load(path)
    assert loaded.layers[0].kernel_regularizer == mlpx.regularizers.L2(1e-3)
    a, b = model.optimizer_.state_dict(), loaded.optimizer_.state_dict()
    assert a["config"] == b["config"] and b["config"]["lr"] == 0.005
    assert b["initial_lr"] == 0.01 and b["step_count"] == a["step_count"] > 0
    for sa, sb in zip(a["state"], b["state"], strict=True):
        for k in sa:
            np.testing.assert_array_equal(sa[k], sb[k])
    # both continue identically, the schedule scaling the same base lr
    h1 = model.fit(X, y, epochs=3, verbose=0, callbacks=[schedules.StepLR(2, 0.5)])
    h2 = loaded.fit(X, y, epochs=3, verbose=0, callbacks=[schedules.StepLR(2, 0.5)])
    assert h1.lr == h2.lr == [0.01, 0.01, 0.005]
    for w1, w2 in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(w1, w2)
