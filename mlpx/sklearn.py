"""scikit-learn estimators backed by mlpx: `MLPClassifier` and `MLPRegressor`.

    from mlpx.sklearn import MLPClassifier            # instead of sklearn.neural_network
    clf = MLPClassifier(hidden_layer_sizes=(100,), max_iter=200, backend="cuda").fit(X, y)
    clf.predict(X_test); clf.predict_proba(X_test); clf.score(X_test, y_test)

The parameters, attributes and training rules are scikit-learn's MLP ones (the same objective
with the L2 term `alpha`, Glorot-uniform initialisation, the `tol` / `n_iter_no_change`
stopping rule, `early_stopping` on a held-out `validation_fraction`, the `learning_rate`
schedules of `solver="sgd"`, `lbfgs` through SciPy), so the estimators work in `Pipeline`,
`GridSearchCV`, `cross_val_score` and `clone` with only the import changed. Two parameters
are mlpx's own: `backend` ("cpu", "cuda", "auto") and `dtype` (None, the default: the
input's float dtype, float32 input giving a float32 model and anything else float64, as
scikit-learn's MLP; or "float32", "float64" or "mixed_bfloat16" to choose, see
mlpx.precision).

Each estimator builds an `mlpx.Sequential` (`model_`) and trains it through its public
`fit`, `loss_and_grad`, `predict`, `get_weights` and `set_weights`.
"""

from __future__ import annotations

import math
import warnings
from numbers import Integral, Real
from typing import Any

import numpy as np

try:
    import scipy.optimize
    import scipy.sparse
    from scipy.special import expit
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import accuracy_score, r2_score
    from sklearn.preprocessing import LabelBinarizer
    from sklearn.utils import check_random_state
    from sklearn.utils.metaestimators import available_if
    from sklearn.utils.multiclass import type_of_target, unique_labels
    from sklearn.utils.validation import (
        _check_sample_weight,
        check_is_fitted,
        column_or_1d,
        validate_data,
    )
except ImportError as e:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError(
        f"mlpx.sklearn needs scikit-learn >= 1.6 ({e}); install it with: "
        'pip install "scikit-learn>=1.6" (or pip install ".[sklearn]" in a clone of mlpx)'
    ) from None

from . import optim
from .backends.proba import expit64, softmax64
from .callbacks import Callback
from .errors import NonFiniteLossError
from .layers import Dense
from .model import Sequential
from .precision import get_policy
from .regularizers import L2

__all__ = ["MLPClassifier", "MLPRegressor"]

#: scikit-learn's activation names, and mlpx's for the ones it adds (gelu, silu, ...)
_ACTIVATION_ALIASES = {"logistic": "sigmoid"}
_SOLVERS = ("adam", "sgd", "lbfgs")
_LEARNING_RATES = ("constant", "invscaling", "adaptive")


class _GlorotUniform:
    """U(-b, b) with b = sqrt(factor / (fan_in + fan_out)): scikit-learn's MLP initialisation,
    for weights and biases alike. A class (not a closure) so fitted estimators pickle."""

    def __init__(self, bound: float):
        self.bound = float(bound)
        self.__name__ = f"glorot_uniform({self.bound:.4g})"

    def __call__(self, shape: tuple[int, ...], rng: np.random.Generator, act: Any) -> np.ndarray:
        return rng.uniform(-self.bound, self.bound, size=shape)


class _EpochMonitor(Callback):
    """scikit-learn's per-epoch bookkeeping inside one mlpx `fit`: loss curve, learning-rate
    schedule, the no-improvement stopping rule and early stopping's best weights."""

    def __init__(self, est: _BaseMLP, n_train: int, validation: tuple | None, incremental: bool):
        self.est = est
        self.n_train = n_train
        self.validation = validation
        self.incremental = incremental
        self.converged = False

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        est, model = self.est, self.model
        loss = float(logs["loss"]) * est._loss_scale
        est.n_iter_ += 1
        est.t_ += self.n_train
        est.loss_ = loss
        est.loss_curve_.append(loss)
        if est.verbose:
            print(f"Iteration {est.n_iter_}, loss = {loss:.8f}")
        if self.validation is not None:
            X_val, t_val, w_val = self.validation
            score = est._score_outputs(model.predict(X_val), t_val, w_val)
            est.validation_scores_.append(score)
            if est.verbose:
                print(f"Validation score: {score:f}")
            improved = score >= est.best_validation_score_ + est.tol
            if score > est.best_validation_score_:
                est.best_validation_score_ = score
                est._best_weights = model.get_weights()
        else:
            improved = loss <= est.best_loss_ - est.tol
            est.best_loss_ = min(est.best_loss_, loss)
        est._no_improvement_count = 0 if improved else est._no_improvement_count + 1
        opt = model.optimizer_
        if est.solver == "sgd" and est.learning_rate == "invscaling":
            opt.lr = est._sgd_lr(est.learning_rate_init) / (est.t_ + 1) ** est.power_t
        if est._no_improvement_count > est.n_iter_no_change:
            if est.solver == "sgd" and est.learning_rate == "adaptive" and (
                opt.lr / est._sgd_lr(1.0) > 1e-6
            ):
                opt.lr /= 5.0  # scikit-learn: divide by 5 until the rate falls below 1e-6
                est._no_improvement_count = 0
                if est.verbose:
                    print(f"Setting learning rate to {opt.lr / est._sgd_lr(1.0):f}")
            else:
                self.converged = True
                if est.verbose:
                    what = "Validation score" if self.validation is not None else "Training loss"
                    print(f"{what} did not improve more than tol={est.tol:f} for "
                          f"{est.n_iter_no_change} consecutive epochs. Stopping.")
                model.stop_training = True


def _is_stochastic(est: _BaseMLP) -> bool:
    """partial_fit exists for the stochastic solvers only (hasattr is False for lbfgs)."""
    if est.solver not in ("sgd", "adam"):
        raise AttributeError(
            f"partial_fit is only available for the stochastic solvers 'adam' and 'sgd', "
            f"not {est.solver!r}"
        )
    return True


class _BaseMLP(BaseEstimator):
    """Shared parameters, validation and training of MLPClassifier and MLPRegressor."""

    def __init__(
        self,
        hidden_layer_sizes: Any = (100,),
        activation: str = "relu",
        *,
        solver: str = "adam",
        alpha: float = 0.0001,
        batch_size: int | str = "auto",
        learning_rate: str = "constant",
        learning_rate_init: float = 0.001,
        power_t: float = 0.5,
        max_iter: int = 200,
        shuffle: bool = True,
        random_state: Any = None,
        tol: float = 1e-4,
        verbose: bool = False,
        warm_start: bool = False,
        momentum: float = 0.9,
        nesterovs_momentum: bool = True,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        n_iter_no_change: int = 10,
        max_fun: int = 15000,
        backend: str = "cpu",
        dtype: str | None = None,
    ):
        # stored verbatim (scikit-learn's clone and get_params rely on it); checked in fit
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.backend = backend
        self.dtype = dtype

    # ------------------------------------------------------------------------- public API
    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> _BaseMLP:
        """Train on (X, y) from scratch (or from the current weights with warm_start=True).
        `sample_weight` weights each sample's loss (a weighted mean, as scikit-learn's MLP);
        an integer weight counts like repeating the sample."""
        return self._fit(X, y, incremental=False, sample_weight=sample_weight)

    @property
    def coefs_(self) -> list[np.ndarray]:
        """Weight matrices, one per layer, shape (n_inputs, n_outputs) as in scikit-learn."""
        return self._weights()[0::2]

    @property
    def intercepts_(self) -> list[np.ndarray]:
        """Bias vectors, one per layer."""
        return self._weights()[1::2]

    def _weights(self) -> list[np.ndarray]:
        check_is_fitted(self, "model_")
        return self.model_.get_weights()

    # --------------------------------------------------------------------- parameter checks
    def _check_params(self) -> tuple[list[int], str]:
        sizes = self.hidden_layer_sizes
        sizes = list(sizes) if hasattr(sizes, "__iter__") else [sizes]
        for s in sizes:
            if isinstance(s, (bool, np.bool_)) or not isinstance(s, Integral) or s <= 0:
                raise ValueError(
                    f"hidden_layer_sizes must be positive integers, e.g. (100,) or (64, 32); "
                    f"got {self.hidden_layer_sizes!r}"
                )
        act = self.activation
        if not isinstance(act, str):
            raise ValueError(f"activation must be a name such as 'relu', got {act!r}")
        act = _ACTIVATION_ALIASES.get(act, act)
        from . import activations

        hidden = activations.hidden_builtins()
        registered = set(activations.names()) - set(activations.NAMES.builtins())
        if act not in hidden and act not in registered:
            sklearn_names = ("identity", "sigmoid", "tanh", "relu")
            more = ", ".join(repr(n) for n in hidden if n not in sklearn_names)
            raise ValueError(
                f"activation must be 'identity', 'logistic', 'tanh' or 'relu' (or one of mlpx's "
                f"{more}), got {self.activation!r}"
            )
        _check_choice(self.solver, "solver", _SOLVERS)
        _check_choice(self.learning_rate, "learning_rate", _LEARNING_RATES)
        _check_real(self.alpha, "alpha", lo=0.0)
        _check_real(self.learning_rate_init, "learning_rate_init", lo=0.0, lo_open=True)
        _check_real(self.power_t, "power_t", lo=0.0)
        _check_real(self.tol, "tol", lo=0.0)
        _check_real(self.momentum, "momentum", lo=0.0, hi=1.0)
        _check_real(self.validation_fraction, "validation_fraction", lo=0.0, hi=1.0,
                    hi_open=True)
        _check_real(self.beta_1, "beta_1", lo=0.0, hi=1.0, hi_open=True)
        _check_real(self.beta_2, "beta_2", lo=0.0, hi=1.0, hi_open=True)
        _check_real(self.epsilon, "epsilon", lo=0.0, lo_open=True)
        _check_int(self.max_iter, "max_iter")
        _check_int(self.max_fun, "max_fun")
        if not (self.n_iter_no_change == np.inf):
            _check_int(self.n_iter_no_change, "n_iter_no_change")
        if not (isinstance(self.batch_size, str) and self.batch_size == "auto"):
            _check_int(self.batch_size, "batch_size", hint="or 'auto'")
        for name in ("shuffle", "warm_start", "nesterovs_momentum", "early_stopping"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.dtype is not None:
            get_policy(self.dtype)  # float32, float64 or mixed_bfloat16; else a clear error
        return [int(s) for s in sizes], act

    # ------------------------------------------------------------------------------ fitting
    def _validate_X(self, X: Any, reset: bool) -> np.ndarray:
        X = validate_data(self, X, accept_sparse=["csr", "csc", "coo"], dtype=(np.float64,
                          np.float32), reset=reset)
        return _dense(X)

    def _fit(self, X: Any, y: Any, incremental: bool, sample_weight: Any = None) -> _BaseMLP:
        sizes, act = self._check_params()
        first = not hasattr(self, "model_") or (not self.warm_start and not incremental)
        X, y = validate_data(
            self, X, y, accept_sparse=["csr", "csc", "coo"], multi_output=True,
            dtype=(np.float64, np.float32), reset=first, y_numeric=self._y_numeric,
        )
        X = _dense(X)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64,
                                                 ensure_non_negative=True)
            if not sample_weight.any():
                raise ValueError("sample_weight is zero for every sample: at least one "
                                 "weight must be > 0")
        target = self._encode_targets(y, first, incremental)
        rs = check_random_state(self.random_state)
        total = target.shape[0] if sample_weight is None else float(sample_weight.sum())
        if first:
            # scikit-learn's MLP computes in the input's float dtype (float32 stays float32,
            # the validated X is float64 otherwise) unless dtype chooses one
            self._model_dtype = str(X.dtype) if self.dtype is None else get_policy(self.dtype).name
            self._initialize(sizes, act, X.shape[1], target, rs, total)
        elif incremental and self.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True")
        else:
            self._apply_changed_params(sizes, act, target.shape[0], total)
        model = self.model_
        try:
            if self.solver == "lbfgs":
                self._fit_lbfgs(X, target, sample_weight)
            else:
                self._fit_stochastic(X, target, rs, incremental, sample_weight)
        except NonFiniteLossError as e:
            raise ValueError(
                f"{e}; the input data may contain large values: scale them first (e.g. "
                "sklearn.preprocessing.StandardScaler in a Pipeline)"
            ) from None
        if not all(np.isfinite(w).all() for w in model.get_weights()):
            raise ValueError(
                "the solver produced non-finite weights; scale the inputs (e.g. "
                "StandardScaler) or lower learning_rate_init"
            )
        return self

    def _initialize(self, sizes: list[int], act: str, n_features: int, target: np.ndarray,
                    rs: np.random.RandomState, total_weight: float) -> None:
        n_out = target.shape[1]
        self.n_outputs_ = n_out
        self.n_layers_ = len(sizes) + 2
        self.n_iter_ = 0
        self.t_ = 0
        units = [n_features, *sizes, n_out]
        factor = 2.0 if act == "sigmoid" else 6.0
        seed = int(rs.randint(np.iinfo(np.int32).max))
        self._seeded_by = self.random_state
        lam = self._l2_strength(target.shape[0], total_weight)
        self._architecture = (units, act, factor, lam)
        self.model_ = self._build_model(seed)
        self.loss_ = None
        if self.solver != "lbfgs":
            self.loss_curve_ = []
            self._no_improvement_count = 0
            if self.early_stopping:
                self.validation_scores_ = []
                self.best_validation_score_ = -np.inf
                self.best_loss_ = None
            else:
                self.validation_scores_ = None
                self.best_validation_score_ = None
                self.best_loss_ = np.inf
        self._has_optimizer = False
        self._best_weights = None

    def _l2_strength(self, rows: int, total_weight: float) -> float:
        """The L2 coefficient of mlpx's objective for scikit-learn's `alpha`, from the current
        parameters (alpha, solver, batch_size) and data.

        scikit-learn's objective: alpha / (2 n) * sum ||W||^2 on the loss of a batch of n;
        its regression loss is half the squared error, mlpx's mse the full one
        (`_loss_scale` converts), and its multi-label loss sums over the labels. With
        sample weights n is the weight total (of a batch: its expected weight)."""
        n = float(total_weight)
        if self.solver != "lbfgs":
            batch = min(200 if isinstance(self.batch_size, str) else int(self.batch_size), rows)
            n = batch * total_weight / rows
        return float(self.alpha) / (n * self._loss_scale)

    def _apply_changed_params(self, sizes: list[int], act: str, rows: int,
                              total_weight: float) -> None:
        """A fit that continues the fitted network (warm_start, partial_fit) with the current
        parameters, as scikit-learn's MLP reads them at every fit: alpha (and the batch size
        it is divided by), the activation, random_state's shuffling, early_stopping's
        bookkeeping, backend and dtype. The solver's settings apply through the optimiser each
        fit builds; the layer sizes cannot change (the weights would not fit)."""
        units, old_act, factor, _ = self._architecture
        if list(sizes) != list(units[1:-1]):
            raise ValueError(
                f"hidden_layer_sizes changed from {tuple(units[1:-1])} to {tuple(sizes)}, but "
                "warm_start=True (and partial_fit) continue the fitted layers; set "
                "warm_start=False to fit a new network"
            )
        self._architecture = (units, act, factor, self._l2_strength(rows, total_weight))
        model = self.model_
        if self.dtype is not None:  # None: the dtype of the first fit's input stays
            self._model_dtype = get_policy(self.dtype).name
        built_on = (act, str(self.backend), self._model_dtype)
        if built_on != getattr(self, "_built_on", built_on):
            self.model_ = self._rebuilt(self._model_state(model))
        else:
            self._set_l2(model)
        if self.random_state != getattr(self, "_seeded_by", self.random_state) and \
                isinstance(self.random_state, Integral):
            rs = check_random_state(self.random_state)
            self.model_.set_seed(int(rs.randint(np.iinfo(np.int32).max)))
            self._seeded_by = self.random_state
        if self.solver == "lbfgs":
            return
        if not hasattr(self, "loss_curve_"):  # the fitted network came from lbfgs
            self.loss_curve_, self._no_improvement_count = [], 0
            self.validation_scores_ = self.best_validation_score_ = None
            self.best_loss_ = np.inf
        if self.early_stopping and self.validation_scores_ is None:
            self.validation_scores_, self.best_validation_score_ = [], -np.inf
            self.best_loss_ = None
        elif not self.early_stopping and self.best_loss_ is None:
            self.validation_scores_, self.best_validation_score_ = None, None
            self.best_loss_ = min(self.loss_curve_, default=np.inf)

    def _set_l2(self, model: Sequential) -> None:
        """The L2 penalty of `_architecture` on every Dense kernel of `model`."""
        lam = self._architecture[3]
        for layer in model.layers:
            layer.kernel_regularizer = L2(lam) if lam > 0 else None

    def _build_model(self, seed: int) -> Sequential:
        units, act, factor, lam = self._architecture
        layers = []
        for i, width in enumerate(units[1:]):
            init = _GlorotUniform(math.sqrt(factor / (units[i] + width)))
            last = i == len(units) - 2
            layers.append(Dense(
                width, activation=None if last else act, init=init, bias_init=init,
                kernel_regularizer=L2(lam) if lam > 0 else None,
            ))
        model = Sequential(layers, input_dim=units[0], backend=self.backend,
                           dtype=self._model_dtype, seed=seed)
        self._built_on = (act, str(self.backend), self._model_dtype)
        return model.compile(loss=self._mlpx_loss)

    # Pickles hold the weights and the optimiser state as NumPy arrays, not the model's work
    # buffers: smaller, and a copy loaded read-only (joblib's memory maps) still predicts and
    # trains, since the model is rebuilt with arrays of its own.
    def __getstate__(self) -> dict:
        state = dict(super().__getstate__())
        model = state.pop("model_", None)
        if model is not None:
            state["_model_state"] = self._model_state(model)
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        saved = state.pop("_model_state", None)
        super().__setstate__(state)
        if saved is not None:
            self.model_ = self._rebuilt(saved)

    @staticmethod
    def _model_state(model: Sequential) -> dict:
        """What the next fit depends on: seed, weights, optimiser state and the fit index
        (the batch order of the next partial_fit follows from seed and fit index)."""
        opt = model.optimizer_
        return {
            "seed": model.seed,
            "weights": model.get_weights(),
            "optimizer": opt.state_dict() if opt is not None and opt.ops is not None
            else None,
            "fit_index": None if model.trainer_ is None else int(model.trainer_.fit_index),
        }

    def _rebuilt(self, saved: dict) -> Sequential:
        """A model built from the current parameters holding `_model_state`'s state."""
        from .training import Trainer

        model = self._build_model(saved["seed"])
        model.set_weights([np.array(w) for w in saved["weights"]])
        if saved["optimizer"] is not None:
            opt = optim.from_config(saved["optimizer"]["config"])
            model.compile(optimizer=opt)
            opt.load_state_dict(saved["optimizer"])
        fit_index = saved.get("fit_index", saved.get("run"))  # "run" in older pickles
        if fit_index is not None:
            model.trainer_ = Trainer(model)
            model.trainer_.fit_index = fit_index
        return model

    def _batch_size(self, n: int) -> int:
        if isinstance(self.batch_size, str):
            return min(200, n)
        if self.batch_size > n:
            warnings.warn(
                f"batch_size={self.batch_size} is larger than the {n} training samples; it is "
                "clipped to the number of samples", UserWarning, stacklevel=4,
            )
        return int(np.clip(self.batch_size, 1, n))

    def _sgd_lr(self, lr: float) -> float:
        """mlpx's SGD learning rate for scikit-learn's: the losses differ by `_loss_scale`."""
        return float(lr) * self._loss_scale

    def _new_optimizer(self) -> optim.Optimizer:
        if self.solver == "sgd":
            return optim.SGD(
                lr=self._sgd_lr(self.learning_rate_init), momentum=float(self.momentum),
                nesterov=bool(self.nesterovs_momentum) and self.momentum > 0,
            )
        # Adam is invariant to the loss scale (up to epsilon)
        return optim.Adam(lr=float(self.learning_rate_init),
                          betas=(float(self.beta_1), float(self.beta_2)), eps=float(self.epsilon))

    def _fit_stochastic(self, X: np.ndarray, target: np.ndarray, rs: np.random.RandomState,
                        incremental: bool, sample_weight: np.ndarray | None = None) -> None:
        validation = None
        if self.early_stopping:
            stratify = target if self._stratify_early_stopping else None
            w_val = None
            if sample_weight is None:
                X, X_val, target, t_val = _split(X, target, self.validation_fraction, rs,
                                                 stratify)
            else:
                X, X_val, target, t_val, sample_weight, w_val = _split(
                    X, target, self.validation_fraction, rs, stratify, sample_weight)
            if X_val.shape[0] < 2:
                raise ValueError(
                    "the early-stopping validation set has fewer than 2 samples; increase "
                    "validation_fraction or give more data"
                )
            validation = (X_val, t_val, w_val)
        n = X.shape[0]
        batch = self._batch_size(n)
        if not incremental or not self._has_optimizer:
            # scikit-learn: a new optimiser per fit (warm_start included), kept by partial_fit
            optimizer = self._new_optimizer()
            self._has_optimizer = True
        else:
            optimizer = None  # the model keeps its optimiser and its state (moments, steps)
        monitor = _EpochMonitor(self, n, validation, incremental)
        self.n_iter_ = 0
        epochs = 1 if incremental else int(self.max_iter)
        self.model_.fit(
            X, target, optimizer=optimizer, epochs=epochs, batch_size=batch,
            sample_weight=sample_weight,
            shuffle=bool(self.shuffle), verbose=0, callbacks=[monitor],
        )
        if validation is not None and getattr(self, "_best_weights", None) is not None:
            self.model_.set_weights(self._best_weights)  # scikit-learn restores the best
            self._best_weights = None
        if not incremental and not monitor.converged and self.n_iter_ == self.max_iter:
            warnings.warn(
                f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and the "
                "optimization hasn't converged yet.", ConvergenceWarning, stacklevel=4,
            )

    def _fit_lbfgs(self, X: np.ndarray, target: np.ndarray,
                   sample_weight: np.ndarray | None = None) -> None:
        model = self.model_
        shapes = [w.shape for w in model.get_weights()]
        splits = np.cumsum([int(np.prod(s)) for s in shapes])[:-1]
        scale = self._loss_scale

        def loss_grad(flat: np.ndarray) -> tuple[float, np.ndarray]:
            model.set_weights([p.reshape(s) for p, s in zip(np.split(flat, splits), shapes,
                                                                strict=True)])
            loss, grads = model.loss_and_grad(X, target, sample_weight=sample_weight)
            self.loss_ = loss * scale
            return self.loss_, np.concatenate([g.ravel() for g in grads]).astype(np.float64) * scale

        start = np.concatenate([w.ravel() for w in model.get_weights()]).astype(np.float64)
        res = scipy.optimize.minimize(
            loss_grad, start, method="L-BFGS-B", jac=True,
            options={"maxfun": int(self.max_fun), "maxiter": int(self.max_iter),
                     "gtol": float(self.tol)},
        )
        model.set_weights([p.reshape(s) for p, s in zip(np.split(res.x, splits), shapes,
                                                        strict=True)])
        self.n_iter_ = min(int(res.nit), int(self.max_iter))
        if res.status != 0:
            warnings.warn(
                f"lbfgs failed to converge after {self.n_iter_} iteration(s) "
                f"(status={res.status}): {res.message}; increase max_iter or scale the data",
                ConvergenceWarning, stacklevel=4,
            )

    def _outputs(self, X: Any) -> np.ndarray:
        few = self._few_rows_outputs(X)
        if few is not None:
            return few
        check_is_fitted(self, "model_")
        X = self._validate_X(X, reset=False)
        return self.model_.predict(X).astype(np.float64)

    def _few_rows_outputs(self, X: Any) -> np.ndarray | None:
        """`_few_rows_raw` in float64, as `_outputs` returns them."""
        out = self._few_rows_raw(X)
        return None if out is None else out.astype(np.float64)

    def _few_rows_raw(self, X: Any) -> np.ndarray | None:
        """The model's outputs (its dtype) for a few rows of a plain float array of the
        training width, checked here (shape, dtype, finite values: what validate_data would
        check for it) at the cost of one row; None sends X through validate_data (anything
        else, and every error)."""
        model = self.__dict__.get("model_")
        if (model is None or type(X) is not np.ndarray or X.ndim != 2
                or not 0 < X.shape[0] <= 64 or X.dtype.kind != "f"
                or "feature_names_in_" in self.__dict__
                or X.shape[1] != self.__dict__.get("n_features_in_")):
            return None
        x = np.ascontiguousarray(X, dtype=model.dtype)
        return model._small_batch_predict(x, None)  # None for NaN/inf: validate_data says so

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # densified: mlpx's layers take dense arrays
        return tags


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier with scikit-learn's API, trained by mlpx.

    Softmax cross-entropy for several classes, a logistic output for two classes and for
    multi-label indicator targets. Parameters are those of
    `sklearn.neural_network.MLPClassifier`, plus `backend` and `dtype`.

    Attributes: `classes_`, `n_features_in_`, `feature_names_in_` (DataFrames with string
    column names), `loss_`, `loss_curve_`, `best_loss_`, `validation_scores_`,
    `best_validation_score_`, `coefs_`, `intercepts_`, `n_iter_`, `t_`, `n_layers_`,
    `n_outputs_`, `out_activation_`, and `model_` (the trained `mlpx.Sequential`).

    Parameters
    ----------
    hidden_layer_sizes
        The hidden layers' widths, e.g. `(100,)` (default) or `(64, 32)`.
    activation
        The hidden activation: `"relu"` (default), `"tanh"`, `"logistic"`, `"identity"`
        (or mlpx's `"leaky_relu"`, `"elu"`, `"gelu"`, `"silu"`, `"softplus"`).
    solver
        `"adam"` (default), `"sgd"` or `"lbfgs"` (full batch, through SciPy).
    alpha
        The L2 penalty's strength (default 0.0001).
    batch_size
        Rows per mini-batch; `"auto"` (default) is `min(200, n_samples)`.
    learning_rate
        The `sgd` schedule: `"constant"` (default), `"invscaling"` or `"adaptive"`.
    learning_rate_init
        The initial learning rate (default 0.001; `sgd` and `adam`).
    power_t
        The exponent of `"invscaling"` (default 0.5).
    max_iter
        The most epochs (`lbfgs`: iterations) to train (default 200).
    shuffle
        Shuffle the rows every epoch (default True).
    random_state
        An int, a `numpy.random.RandomState` or None (default): initial weights, shuffling
        and the early-stopping split.
    tol
        The improvement below which an epoch counts as no progress (default 1e-4).
    verbose
        Print the loss of every epoch (default False).
    warm_start
        Continue from the current weights in `fit` (default False).
    momentum
        The `sgd` momentum (default 0.9).
    nesterovs_momentum
        Nesterov's momentum for `sgd` (default True).
    early_stopping
        Hold out `validation_fraction` of the rows and stop when its score stops
        improving (default False).
    validation_fraction
        The held-out share with `early_stopping` (default 0.1).
    beta_1
        Adam's first-moment decay (default 0.9).
    beta_2
        Adam's second-moment decay (default 0.999).
    epsilon
        Adam's epsilon (default 1e-8).
    n_iter_no_change
        Epochs without progress before stopping (default 10).
    max_fun
        The most loss evaluations of `lbfgs` (default 15000).
    backend
        mlpx's: `"cpu"` (default), `"cuda"`, `"cuda:N"` or `"auto"`.
    dtype
        mlpx's: None (default) computes in the input's float dtype, as scikit-learn's MLP
        (float32 input: float32, anything else: float64); `"float32"` or `"float64"`
        chooses.
    """

    _y_numeric = False

    def _encode_targets(self, y: np.ndarray, first: bool, incremental: bool) -> np.ndarray:
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        kind = type_of_target(y)
        if kind not in ("binary", "multiclass", "multilabel-indicator"):
            raise ValueError(
                f"Unknown label type: MLPClassifier needs class labels (binary, multiclass or "
                f"a multi-label indicator matrix), got {kind} targets; for real-valued targets "
                "use MLPRegressor"
            )
        if first and not (incremental and hasattr(self, "_label_binarizer")):
            self._label_binarizer = LabelBinarizer().fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start and not incremental:
                if set(classes) != set(self.classes_):
                    raise ValueError(
                        "warm_start can only be used where `y` has the same classes as in the "
                        f"previous call to fit. Previously got {self.classes_}, `y` has {classes}"
                    )
            elif len(np.setdiff1d(classes, self.classes_)):
                raise ValueError(
                    f"`y` has classes not in `self.classes_`. `self.classes_` has "
                    f"{self.classes_}. 'y' has {classes}."
                )
        target = self._label_binarizer.transform(y).astype(np.float64)
        kind = self._label_binarizer.y_type_
        self.out_activation_ = "softmax" if kind == "multiclass" else "logistic"
        self._mlpx_loss = "cross_entropy" if kind == "multiclass" else "bce"
        # scikit-learn's multi-label loss sums over the labels; bce averages over them
        self._loss_scale = float(target.shape[1]) if kind.startswith("multilabel") else 1.0
        # as scikit-learn: the early-stopping split is stratified for one output (binary)
        self._stratify_early_stopping = target.shape[1] == 1
        return target

    @available_if(_is_stochastic)
    def partial_fit(self, X: Any, y: Any, sample_weight: Any = None,
                    classes: Any = None) -> MLPClassifier:
        """One epoch over (X, y), keeping the optimiser's state between calls (solvers
        'adam' and 'sgd' only). `classes` (every possible label) is required on the first
        call. `sample_weight` as in fit (the argument order of scikit-learn >= 1.7).
        """
        if not hasattr(self, "classes_"):
            if classes is None and not type_of_target(y).startswith("multilabel"):
                raise ValueError("classes must be passed on the first call to partial_fit.")
            self._label_binarizer = LabelBinarizer().fit(
                y if classes is None else np.asarray(classes)
            )
            self.classes_ = self._label_binarizer.classes_
        elif classes is not None and not np.array_equal(
            np.unique(np.asarray(classes)), self.classes_
        ):
            raise ValueError(
                f"`classes={classes}` is not the same as on the first call to partial_fit "
                f"({self.classes_})"
            )
        return self._fit(X, y, incremental=True, sample_weight=sample_weight)

    def predict(self, X: Any) -> np.ndarray:
        """Class labels (of the same kind as the labels given to fit)."""
        check_is_fitted(self, "model_")
        return _labels(self._label_binarizer, self._probabilities(X))

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, columns in the order of `classes_` (rows sum to 1, except for
        multi-label targets, where each column is one label's probability)."""
        p = self._probabilities(X)
        if p.shape[1] == 1:
            return np.hstack([1.0 - p, p])
        return p

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """log(predict_proba(X))."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def _probabilities(self, X: Any) -> np.ndarray:
        few = self._few_rows_raw(X)
        if few is not None:
            # the float64 formulas below in one compiled call, the same bits; None: NaN/inf
            p = softmax64(few) if self.out_activation_ == "softmax" else expit64(few)
            if p is not None:
                return p
            z = few.astype(np.float64)
        else:
            z = self._outputs(X)
        if self.out_activation_ == "softmax":
            z = np.exp(z - z.max(axis=1, keepdims=True))
            return z / z.sum(axis=1, keepdims=True)
        return expit(z)

    def _score_outputs(self, outputs: np.ndarray, target: np.ndarray,
                       sample_weight: np.ndarray | None = None) -> float:
        """Accuracy of raw outputs against binarised targets (early stopping)."""
        if self.out_activation_ == "softmax":
            return float(accuracy_score(target.argmax(axis=1), outputs.argmax(axis=1),
                                        sample_weight=sample_weight))
        return float(accuracy_score(target > 0.5, outputs > 0, sample_weight=sample_weight))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor with scikit-learn's API, trained by mlpx.

    Minimises scikit-learn's objective, half the mean squared error plus the L2 term; one or
    several outputs. Parameters are those of `sklearn.neural_network.MLPRegressor` (the
    `squared_error` loss), plus `backend` and `dtype`.

    Attributes: `n_features_in_`, `feature_names_in_`, `loss_`, `loss_curve_`, `best_loss_`,
    `validation_scores_`, `best_validation_score_`, `coefs_`, `intercepts_`, `n_iter_`,
    `t_`, `n_layers_`, `n_outputs_`, `out_activation_`, and `model_` (an `mlpx.Sequential`).

    Parameters
    ----------
    loss
        `"squared_error"` (default; the only one).
    hidden_layer_sizes
        The hidden layers' widths, e.g. `(100,)` (default) or `(64, 32)`.
    activation
        The hidden activation: `"relu"` (default), `"tanh"`, `"logistic"`, `"identity"`
        (or mlpx's `"leaky_relu"`, `"elu"`, `"gelu"`, `"silu"`, `"softplus"`).
    solver
        `"adam"` (default), `"sgd"` or `"lbfgs"` (full batch, through SciPy).
    alpha
        The L2 penalty's strength (default 0.0001).
    batch_size
        Rows per mini-batch; `"auto"` (default) is `min(200, n_samples)`.
    learning_rate
        The `sgd` schedule: `"constant"` (default), `"invscaling"` or `"adaptive"`.
    learning_rate_init
        The initial learning rate (default 0.001; `sgd` and `adam`).
    power_t
        The exponent of `"invscaling"` (default 0.5).
    max_iter
        The most epochs (`lbfgs`: iterations) to train (default 200).
    shuffle
        Shuffle the rows every epoch (default True).
    random_state
        An int, a `numpy.random.RandomState` or None (default): initial weights, shuffling
        and the early-stopping split.
    tol
        The improvement below which an epoch counts as no progress (default 1e-4).
    verbose
        Print the loss of every epoch (default False).
    warm_start
        Continue from the current weights in `fit` (default False).
    momentum
        The `sgd` momentum (default 0.9).
    nesterovs_momentum
        Nesterov's momentum for `sgd` (default True).
    early_stopping
        Hold out `validation_fraction` of the rows and stop when its score stops
        improving (default False).
    validation_fraction
        The held-out share with `early_stopping` (default 0.1).
    beta_1
        Adam's first-moment decay (default 0.9).
    beta_2
        Adam's second-moment decay (default 0.999).
    epsilon
        Adam's epsilon (default 1e-8).
    n_iter_no_change
        Epochs without progress before stopping (default 10).
    max_fun
        The most loss evaluations of `lbfgs` (default 15000).
    backend
        mlpx's: `"cpu"` (default), `"cuda"`, `"cuda:N"` or `"auto"`.
    dtype
        mlpx's: None (default) computes in the input's float dtype, as scikit-learn's MLP
        (float32 input: float32, anything else: float64); `"float32"` or `"float64"`
        chooses.
    """

    _y_numeric = True
    _mlpx_loss = "mse"
    _loss_scale = 0.5  # scikit-learn's squared_error loss is half of mlpx's mse
    _stratify_early_stopping = False

    def __init__(
        self,
        loss: str = "squared_error",
        hidden_layer_sizes: Any = (100,),
        activation: str = "relu",
        *,
        solver: str = "adam",
        alpha: float = 0.0001,
        batch_size: int | str = "auto",
        learning_rate: str = "constant",
        learning_rate_init: float = 0.001,
        power_t: float = 0.5,
        max_iter: int = 200,
        shuffle: bool = True,
        random_state: Any = None,
        tol: float = 1e-4,
        verbose: bool = False,
        warm_start: bool = False,
        momentum: float = 0.9,
        nesterovs_momentum: bool = True,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        n_iter_no_change: int = 10,
        max_fun: int = 15000,
        backend: str = "cpu",
        dtype: str | None = None,
    ):
        super().__init__(
            hidden_layer_sizes, activation, solver=solver, alpha=alpha, batch_size=batch_size,
            learning_rate=learning_rate, learning_rate_init=learning_rate_init,
            power_t=power_t, max_iter=max_iter, shuffle=shuffle, random_state=random_state,
            tol=tol, verbose=verbose, warm_start=warm_start, momentum=momentum,
            nesterovs_momentum=nesterovs_momentum, early_stopping=early_stopping,
            validation_fraction=validation_fraction, beta_1=beta_1, beta_2=beta_2,
            epsilon=epsilon, n_iter_no_change=n_iter_no_change, max_fun=max_fun,
            backend=backend, dtype=dtype,
        )
        self.loss = loss

    def _encode_targets(self, y: np.ndarray, first: bool, incremental: bool) -> np.ndarray:
        if self.loss != "squared_error":
            raise ValueError(
                f"loss must be 'squared_error' (the only regression loss mlpx's MLPRegressor "
                f"implements), got {self.loss!r}"
            )
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        target = (y.reshape(-1, 1) if y.ndim == 1 else y).astype(np.float64)
        if not first and target.shape[1] != self.n_outputs_:
            raise ValueError(
                f"y has {target.shape[1]} output(s), the fitted model has {self.n_outputs_}"
            )
        self.out_activation_ = "identity"
        return target

    @available_if(_is_stochastic)
    def partial_fit(self, X: Any, y: Any, sample_weight: Any = None) -> MLPRegressor:
        """One epoch over (X, y), keeping the optimiser's state between calls (solvers
        'adam' and 'sgd' only); `sample_weight` as in fit."""
        return self._fit(X, y, incremental=True, sample_weight=sample_weight)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted values: shape (n_samples,) for one output, else (n_samples, n_outputs)."""
        out = self._outputs(X)
        return out.ravel() if out.shape[1] == 1 else out

    def _score_outputs(self, outputs: np.ndarray, target: np.ndarray,
                       sample_weight: np.ndarray | None = None) -> float:
        return float(r2_score(target, outputs, sample_weight=sample_weight))


# ------------------------------------------------------------------------------- helpers
def _dense(X: Any) -> np.ndarray:
    """mlpx's layers take dense arrays: sparse input is densified (fine for MLP-sized data)."""
    return X.toarray() if scipy.sparse.issparse(X) else X


def _labels(binarizer: Any, p: np.ndarray) -> np.ndarray:
    """binarizer.inverse_transform(p), with one class per row (multiclass: the largest
    probability; two classes: above 0.5) taken directly: its array-API dispatch costs more than
    a few rows' forward pass. Multi-label outputs go through it."""
    kind, classes = binarizer.y_type_, binarizer.classes_
    if kind == "multiclass" and p.ndim == 2 and p.shape[1] == len(classes):
        return classes.take(p.argmax(axis=1))
    if (kind == "binary" and len(classes) == 2 and p.ndim == 2 and p.shape[1] == 1
            and binarizer.neg_label == 0 and binarizer.pos_label == 1):
        return classes.take((p[:, 0] > 0.5).astype(np.intp))
    return binarizer.inverse_transform(p)


def _split(X, target, fraction, rs, stratify, *more):
    from .data import train_test_split

    return train_test_split(X, target, *more, test_size=float(fraction), random_state=rs,
                            stratify=stratify)


def _check_choice(value: Any, name: str, choices: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def _check_real(value: Any, name: str, lo: float, hi: float | None = None,
                lo_open: bool = False, hi_open: bool = False) -> None:
    ok = isinstance(value, Real) and not isinstance(value, (bool, np.bool_)) and math.isfinite(
        value)
    if ok:
        ok = (value > lo if lo_open else value >= lo) and (
            hi is None or (value < hi if hi_open else value <= hi))
    if not ok:
        lo_s = f"> {lo:g}" if lo_open else f">= {lo:g}"
        hi_s = "" if hi is None else (f" and < {hi:g}" if hi_open else f" and <= {hi:g}")
        raise ValueError(f"{name} must be a number {lo_s}{hi_s}, got {value!r}")


def _check_int(value: Any, name: str, hint: str = "") -> None:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1{' ' + hint if hint else ''}, "
                         f"got {value!r}")
