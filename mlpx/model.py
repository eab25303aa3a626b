"""Sequential: a stack of layers on one backend, and the MLP shorthand.

The model owns its layers, their state (`state_dict`, declared by the layers: `state_spec`)
and inference; `fit` hands its keywords to the training loop (mlpx.training), and
`save` / `load` / `load_weights` are thin calls into the checkpoint format (mlpx.saving),
which never imports the model: `from_record` builds a model from a checked record.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from . import activations, losses, optim
from .backends import Backend, get_backend
from .backends import threads as _threads
from .backends.proba import loss_proba_in_place
from .concurrency import StateLock
from .history import History
from .layers.base import Layer, Parameter
from .layers.dense import Dense
from .layers.registry import layer_from_spec, layer_spec
from .precision import get_policy, ops_for, unwrap
from .preconditions import (
    check_features,
    check_positive_int,
    check_same_length,
    is_device_array,
    to_host,
)
from .saving.records import CheckpointRecord, RunRecord, as_host_array, check_state_dict

DEFAULT_PREDICT_BATCH = 4096


def _resolve_dtype(dtype: Any) -> np.dtype:
    """The variable dtype of the precision policy `dtype` names (see mlpx.precision)."""
    return get_policy(dtype).variable_dtype


def _walk(layers: Sequence[Layer], prefix: str = "layers"):
    """(path, layer) for the layers and, depth first, every sub-layer of a block."""
    for i, layer in enumerate(layers):
        path = f"{prefix}.{i}"
        yield path, layer
        yield from _walk(layer.children(), f"{path}.layers")


class LoadResult(NamedTuple):
    """What `load_state_dict` matched, as PyTorch's `_IncompatibleKeys`."""

    missing_keys: list[str]
    unexpected_keys: list[str]


class ParameterList(list):
    """`model.parameters()`: a list of Parameters that knows its model, so that an optimiser
    built on it (`mlpx.optim.SGD(model.parameters(), lr=0.1)`) finds the backend and can
    tell a forgotten step from a finished one."""

    def __init__(self, params: Sequence[Parameter], model: Sequential):
        super().__init__(params)
        self.model = model


class Sequential:
    """A feed-forward stack of layers.

    >>> model = Sequential([Dense(64, activation="relu"), Dense(10)], input_dim=784,
    ...                    backend="cpu", dtype="float32", seed=0)

    Parameters
    ----------
    layers
        The layers, input side first (`mlpx.Dense`, `mlpx.Dropout`, ...); more can be
        appended with `add` until the model is built.
    input_dim
        The number of input features. None (default): the model is built on the first
        `fit`, `forward` or `build`, from the data's width.
    backend
        `"cpu"` (default), `"cuda"`, `"cuda:N"` or `"auto"` (CUDA when CuPy sees a GPU),
        or a backend object from `mlpx.get_backend`.
    dtype
        `"float32"` (default), `"float64"` or `"mixed_bfloat16"`.
    seed
        Seeds the initial weights, dropout masks and shuffling. None (default) draws one.
    """

    def __init__(
        self,
        layers: Sequence[Layer] | None = None,
        input_dim: int | None = None,
        backend: str | Backend = "cpu",
        dtype: Any = "float32",
        seed: int | None = None,
    ):
        #: the precision policy (mlpx.precision): `dtype` holds the variables' dtype
        self.policy = get_policy(dtype)
        self.dtype = self.policy.variable_dtype
        self.ops: Backend = ops_for(get_backend(backend), self.policy)
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0])
        # checked here: NumPy's own error at build time ("expected non-negative integer")
        # names neither the argument nor the model
        self.seed = check_positive_int(seed, "seed", minimum=0)
        self.layers: list[Layer] = []
        self.input_dim: int | None = None
        self.loss_: losses.Loss | None = None
        self.optimizer_: optim.Optimizer | None = None
        self.history_: History | None = None
        self.stop_training = False
        #: epochs completed by the current (or last) training run; checkpoints save it
        self.epoch_ = 0
        #: the training loop of the current (or last) run: its position, optimiser and
        #: callbacks (`trainer_.state_dict()`); None before the first fit
        self.trainer_: Any = None
        #: the metrics the last fit recorded (mlpx.metrics objects; evaluate reports them)
        self.metrics_: list = []
        #: the metrics asked for by compile(metrics=) or fit(metrics=), used by later calls
        self.compiled_metrics: list | None = None
        # inference reads, training steps and state loads write (see mlpx.concurrency)
        self._lock = StateLock()
        #: gradients written by backward() and not yet used by an optimiser step (or zeroed)
        self._grads_pending = False
        #: an optimiser was built on model.parameters(): check the manual loop's order
        self._manual_loop = False
        #: copies of the gradients while a backward adds to them (gradient accumulation)
        self._grad_stash: Any = None
        #: mixed_bfloat16's bfloat16-saving pass (mlpx.layers.bf16_chain), and whether the
        #: last forward ran through it (then backward does too)
        self._bf16_chain: Any = None
        self._chained: Any = None
        for layer in layers or []:
            self.add(layer)
        if input_dim is not None:
            self.build(check_positive_int(input_dim, "input_dim"))

    # --------------------------------------------------------------------------- structure
    def add(self, layer: Layer) -> Sequential:
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential takes mlpx layers, got {type(layer).__name__}")
        if self.built:
            raise RuntimeError("cannot add layers to a built model; build a new Sequential")
        # a layer keeps one input cache and one gradient slot per parameter, so a second use
        # would overwrite the first's gradient instead of adding to it: refuse weight sharing
        seen: set[int] = set()
        for _, x in _walk([*self.layers, layer]):
            if id(x) in seen:
                raise ValueError(
                    f"the layer object {x!r} appears twice in this model; layers cannot be "
                    "shared, so create a new layer object for each position"
                )
            seen.add(id(x))
        self.layers.append(layer)
        return self

    @property
    def built(self) -> bool:
        return self.input_dim is not None

    @property
    def backend(self) -> str:
        return self.ops.name

    @property
    def compute_dtype(self) -> str:
        """The dtype of the matrix products' operands: "bfloat16" under "mixed_bfloat16",
        else the variables' dtype."""
        return self.policy.compute_dtype

    @property
    def output_dim(self) -> int:
        self._require_built()
        return self.layers[-1].output_dim

    def build(self, input_dim: int) -> Sequential:
        """Create every layer's parameters for inputs of width `input_dim` (seeded)."""
        if not self.layers:
            raise ValueError("the model has no layers; pass a list such as [Dense(10)]")
        rng = np.random.default_rng(np.random.SeedSequence(self.seed).spawn(2)[0])
        width = int(input_dim)
        for layer in self.layers:
            width = layer.build(width, self.ops, self.dtype, rng)
        self._assign_random_keys()
        self.input_dim = int(input_dim)
        if self.optimizer_ is not None:
            self.optimizer_.bind(self.parameters(), self.ops)
        return self

    def set_seed(self, seed: int) -> None:
        """Adopt `seed` for what is random during training (batch order, Dropout masks)
        without touching the weights: `fit(resume_from=...)` continues the saved run's."""
        self.seed = check_positive_int(seed, "seed", minimum=0)
        if self.built:
            self._assign_random_keys()

    def _assign_random_keys(self) -> None:
        """Give random layers (Dropout) the model seed and their depth-first position."""
        stream = 0
        for layer in self.layers:
            key = getattr(layer, "set_random_key", None)
            nxt = key(self.seed, stream) if key is not None else None
            stream = nxt if isinstance(nxt, int) else stream + 1

    def _require_built(self) -> None:
        if not self.built:
            raise RuntimeError(
                "the model is not built yet: pass input_dim= to the constructor, call "
                "build(n_features), or call fit() first"
            )

    def parameters(self) -> ParameterList:
        """Trainable parameters in layer order (the order of get_weights)."""
        return ParameterList([p for layer in self.layers for p in layer.parameters()], self)

    # ------------------------------------------------------------------------------ state
    def walk(self):
        """(path, layer) for every layer, depth first, a block before its sub-layers:
        ("layers.0", ...), ..., ("layers.4.layers.0", ...). State keys are `"<path>.<name>"`."""
        return _walk(self.layers)

    def state_spec(self, input_dim: int | None = None, *, params: bool = True,
                   buffers: bool = True) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """{key: (shape, dtype)} of `state_dict()` for inputs of width `input_dim` (default:
        the built model's), from the layers' declarations: nothing is built or allocated.
        `params=False` / `buffers=False` leave those entries out."""
        width = self.input_dim if input_dim is None else int(input_dim)
        if width is None:
            raise ValueError("state_spec needs input_dim for a model that is not built")
        spec = {}
        for i, layer in enumerate(self.layers):
            for k, v in layer.nested_spec(width, self.dtype, params, buffers).items():
                spec[f"layers.{i}.{k}"] = v
            width = layer.compute_output_dim(width)
        return spec

    def compute_output_dim(self, input_dim: int) -> int:
        """The output width for inputs of width `input_dim` (the model need not be built)."""
        width = int(input_dim)
        for layer in self.layers:
            width = layer.compute_output_dim(width)
        return width

    def state_arrays(self) -> dict[str, Any]:
        """The live state arrays (backend arrays, no copies) by state key: what the trainer
        snapshots. Use `state_dict()` for copies."""
        self._require_built()
        return {f"{path}.{k}": v for path, layer in _walk(self.layers)
                for k, v in layer.state_arrays().items()}

    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameters and buffers as NumPy copies, keyed `"layers.<i>.<name>"` (nested blocks
        `"layers.<i>.layers.<j>.<name>"`), parameters before buffers in each layer: PyTorch's
        `Module.state_dict()`. Optimiser, epoch and callbacks are the training run's state
        (`model.trainer_.state_dict()`); checkpoints hold both."""
        ops = self.ops
        with self._lock.reading():  # a consistent copy, also while another thread trains
            return {k: np.array(ops.to_numpy(v), copy=True)
                    for k, v in self.state_arrays().items()}

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> LoadResult:
        """Copy `state` (as `state_dict()` returns it) into the model. Every entry is checked
        against the layers' declarations (shape, numbers, finite) before anything changes;
        with `strict` (default), missing or unexpected keys raise KeyError."""
        self._require_built()
        missing, unexpected = check_state_dict(self.state_spec(), state, strict)
        with self._lock.writing():
            for path, layer in _walk(self.layers):
                prefix = f"{path}."
                given = {k: as_host_array(state[prefix + k]) for k in layer.state_arrays()
                         if prefix + k in state}
                if given:
                    layer.load_state_arrays(given)
        return LoadResult(missing, unexpected)

    def count_params(self) -> int:
        return int(sum(int(np.prod(p.shape)) for p in self.parameters()))

    def summary(self, print_fn: Callable[[str], Any] | None = None) -> None:
        """Print the layers, their output widths and parameter counts (Keras's summary).

        Parameters
        ----------
        print_fn
            Called with the whole summary as one string instead of `print`, e.g.
            `lines.append` or `logger.info`. `str(model)` returns the same text.
        """
        (print if print_fn is None else print_fn)(self._summary_text())

    def _summary_text(self) -> str:
        self._require_built()
        lines = [f"Sequential on {self.backend!r} ({self.policy.name}), input_dim={self.input_dim}"]
        for i, layer in enumerate(self.layers):
            n = sum(int(np.prod(p.shape)) for p in layer.parameters())
            lines.append(f"  {i:>2} {layer!r}  -> {layer.output_dim}  params={n}")
        lines.append(f"  total params: {self.count_params()}")
        return "\n".join(lines)

    def __str__(self) -> str:
        # an unbuilt model has no widths to show yet: its repr says what it holds
        return self._summary_text() if self.built else repr(self)

    def __repr__(self) -> str:
        inner = ", ".join(repr(layer) for layer in self.layers)
        return f"{type(self).__name__}([{inner}], backend={self.backend!r})"

    # --------------------------------------------------------------------- forward/backward
    def forward(self, x: Any, training: bool = False) -> Any:
        """Raw outputs for a batch `x` of shape (batch, input_dim): a backend array (used as
        is) or anything array-like (copied to the backend). Builds an unbuilt model for x's
        width. The result is a work array of the model, valid until the next forward."""
        if not self.built and getattr(x, "ndim", 0) == 2:
            self.build(int(x.shape[1]))
        self._require_built()
        if not (hasattr(x, "shape") and len(x.shape) == 2 and x.shape[1] == self.input_dim):
            shape = tuple(np.shape(x))
            raise ValueError(
                f"forward takes a batch of shape (batch, {self.input_dim}) for this model's "
                f"{self.input_dim} input features, got shape {shape}"
                + ("; reshape a single sample with x.reshape(1, -1)" if len(shape) == 1 else "")
            )
        if x.dtype != self.dtype or not isinstance(x, self.ops.xp.ndarray):
            x = self._to_backend(x)
        self._chained = self._bf16_chain_for_layers()
        if self._chained is not None:  # mixed_bfloat16: hidden outputs kept in bfloat16
            return self._chained.forward(self.layers, self.ops, x)
        for layer in self.layers:
            x = layer.forward(x, training=training)
        return x

    def _bf16_chain_for_layers(self) -> Any:
        """The bfloat16-saving pass of mlpx.layers.bf16_chain when it serves these layers."""
        if self.policy.compute_dtype != "bfloat16":
            return None
        from .layers import bf16_chain

        if not bf16_chain.supports(self.layers, self.ops):
            return None
        if self._bf16_chain is None:
            self._bf16_chain = bf16_chain.BF16Chain()
        return self._bf16_chain

    def backward(self, grad: Any, accumulate: bool | None = None) -> None:
        """Backpropagate dL/d(output) through every layer, writing parameter gradients.

        In a hand-written loop (an optimiser built on `model.parameters()`), a backward
        before the optimiser has used the previous one's gradients adds to them, as in
        PyTorch: several backward calls, then one `opt.step()`, accumulate gradients.

        Parameters
        ----------
        grad
            dLoss/d(output) of the last `forward`, shape (batch, output_dim).
        accumulate
            True adds to the current gradients, False replaces them; None (default)
            follows the rule above.
        """
        if accumulate is None:
            accumulate = self._manual_loop and self._grads_pending
        if not accumulate:
            self._backward(grad)
            return
        if self._grad_stash is None:
            from .accumulation import GradientStash

            self._grad_stash = GradientStash()  # its buffers are reused by later calls
        self._grad_stash.save(self.parameters())
        self._backward(grad)
        self._grad_stash.add_back(self.parameters())

    def _backward(self, grad: Any) -> None:
        if self._chained is not None:
            self._chained.backward(self.layers, self.ops, grad)
            self._grads_pending = True
            return
        last = len(self.layers) - 1
        scratch = False  # the caller's array is never overwritten
        for i in range(last, -1, -1):
            layer = self.layers[i]
            # a work array of the layer above, read by nobody after this call (Dense writes
            # its delta over it, saving a batch-sized array per layer)
            layer._dy_scratch = scratch
            grad = layer.backward(grad, need_input_grad=i > 0)
            scratch = layer.returns_work_grad
        self._grads_pending = True

    def compute_loss(self, out: Any, y: Any, loss: str | losses.Loss | None = None
                     ) -> tuple[float, Any]:
        """(loss, dLoss/d(out)) for outputs `out` of `forward` and targets `y` (validated
        and converted like fit's): the loss step of a hand-written training loop. The
        gradient is a new backend array, to hand to `backward`."""
        loss_fn = self._loss_or(loss)
        n_out = int(out.shape[1]) if getattr(out, "ndim", 0) == 2 else self.output_dim
        if getattr(y, "shape", (None,))[0] != out.shape[0]:
            raise ValueError(
                f"compute_loss got {out.shape[0]} outputs but {len(y)} targets; pass the "
                "targets of the batch given to forward"
            )
        target = self.ops.asarray(loss_fn.prepare_target(self.ops.to_numpy(y), n_out,
                                                         self.dtype))
        grad = self.ops.empty(out.shape, self.dtype)
        value = loss_fn(self.ops, out, target, grad)
        return self.ops.to_float(value), grad

    # ---------------------------------------------------------------------- loss/optimiser
    def compile(
        self,
        loss: str | losses.Loss | None = None,
        optimizer: str | optim.Optimizer | None = None,
        lr: float | None = None,
        metrics: Sequence[Any] | None = None,
    ) -> Sequential:
        """Set the loss, optimiser and metrics that fit/evaluate/predict_proba use (Keras
        style). `metrics`: see mlpx.metrics (names such as "mae", "top_k_accuracy", Metric
        objects or functions fn(y_true, y_pred)).

        `lr` alone keeps the optimiser's kind and hyperparameters with a new learning rate
        (and fresh state); an optimiser object is used as it is, state included (one that
        trains another model: a fresh copy, see mlpx.optim.for_model)."""
        from .metrics import get as get_metric
        from .metrics import resolve as resolve_metrics

        new_loss = self.check_loss(loss, stacklevel=2) if loss is not None else None
        new_metrics = None
        if metrics is not None:
            new_metrics = [get_metric(m) for m in ([metrics] if isinstance(metrics, str)
                                              or not isinstance(metrics, (list, tuple))
                                              else metrics)]
            target_loss = new_loss or self.loss_
            if target_loss is not None:
                width = self.output_dim if self.built else None
                resolve_metrics(new_metrics, target_loss, width)  # a metric unfit for the loss
        new_opt = None
        if optimizer is not None or lr is not None:
            new_opt = optim.for_model(optim.resolve(self.optimizer_, optimizer, lr), self)
        if new_loss is not None:
            self.loss_ = new_loss
        if new_metrics is not None:
            self.compiled_metrics = new_metrics
        if new_opt is not None:
            self.optimizer_ = new_opt
            if self.built:
                new_opt.bind(self.parameters(), self.ops)
        return self

    def check_loss(self, loss: str | losses.Loss, stacklevel: int = 1) -> losses.Loss:
        """The loss object for `loss`, warning when the output layer does not fit it
        (`stacklevel` as in warnings.warn, counted from the caller of check_loss)."""
        loss_fn = losses.get(loss)
        last_act = getattr(self.layers[-1], "activation", None) if self.layers else None
        code = last_act.code if last_act is not None else activations.ACT_IDENTITY
        squashing = (activations.ACT_SOFTMAX, activations.ACT_SIGMOID, activations.ACT_LOG_SOFTMAX)
        if loss_fn.expects == "logits" and code in squashing:
            warnings.warn(
                f"loss {loss_fn.name!r} expects logits (raw scores), but the output layer "
                f"applies {last_act.name!r}; remove the output activation (predict_proba "
                "applies it for you) or the loss will be computed on transformed values",
                UserWarning,
                stacklevel=stacklevel + 1,
            )
        if loss_fn.expects == "log_probs" and code != activations.ACT_LOG_SOFTMAX:
            warnings.warn(
                "loss 'nll' expects log-probabilities; give the output layer "
                "activation='log_softmax', or use loss='cross_entropy' on logits",
                UserWarning,
                stacklevel=stacklevel + 1,
            )
        return loss_fn

    def _loss_or(self, loss: str | losses.Loss | None) -> losses.Loss:
        if loss is not None:
            return losses.get(loss)
        if self.loss_ is None:
            raise ValueError(
                f"no loss given and none set by fit/compile; pass loss= (one of "
                f"{', '.join(losses.names())})"
            )
        return self.loss_

    # ------------------------------------------------------------------------------ data
    def check_inputs(self, X: Any, name: str = "X", input_dim: int | None = None) -> Any:
        """Validate a feature matrix for this model (width `input_dim`, default the model's;
        None on an unbuilt model accepts any width). Changes nothing."""
        X = check_features(X, self.input_dim if input_dim is None else input_dim, name)
        if X.dtype.kind == "f" and X.dtype.itemsize > self.dtype.itemsize:
            # finite float64 values beyond float32's range would become inf in the cast
            big = float(np.finfo(self.dtype).max)
            top = max(float(X.max()), -float(X.min()))
            if top > big:
                raise ValueError(
                    f"{name} has values up to {top:.3g} in magnitude, beyond the range of the "
                    f"model's {self.dtype.name} ({big:.3g}); rescale the inputs (e.g. with "
                    "mlpx.Standardizer) or build the model with dtype='float64'"
                )
        return X

    def _check_X(self, X: Any, name: str = "X") -> Any:
        X = self.check_inputs(X, name)
        if not self.built:
            with self._lock.writing():
                if not self.built:
                    self.build(X.shape[1])
        return X

    def _to_backend(self, X: Any) -> Any:
        if is_device_array(X) and self.ops.name != "cuda":  # host backends (cpu, reference)
            X = self.ops.to_numpy(X.get() if hasattr(X, "get") else X)
        return self.ops.asarray(X, dtype=self.dtype)

    def prepare_data(self, X: Any, y: Any, loss: losses.Loss, xname: str = "X", yname: str = "y",
                     to_device: bool | None = True, input_dim: int | None = None):
        """Validate X and y once, changing nothing; return both as backend arrays
        (`to_device=True`), as they are (False: a batch source moves them), or on the device
        only if they fit (None). `input_dim` checks X against that width (a model not built
        yet); by default the model's, or X's own when the model is not built."""
        X = self.check_inputs(X, xname, input_dim)
        if y is None:
            raise ValueError(f"{yname} is required")
        y_host = to_host(y, yname)
        check_same_length(X, y_host, xname, yname)
        width = input_dim or self.input_dim or X.shape[1]
        out_dim = self.output_dim if self.built else self.compute_output_dim(width)
        target = loss.prepare_target(y_host, out_dim, self.dtype)
        if to_device is None:
            from .backends.batches import data_nbytes

            to_device = is_device_array(X) or self.ops.fits_on_device(
                data_nbytes(X, target, self.dtype)
            )
        if not to_device:  # host arrays; device arrays stay only on a device backend
            if is_device_array(X) and self.ops.name != "cuda":
                X = self.ops.to_numpy(X.get() if hasattr(X, "get") else X)
            return X, target
        return self._to_backend(X), self.ops.asarray(target)

    # ------------------------------------------------------------------------- inference
    def __call__(self, X: Any, batch_size: int | None = None, device: bool = False) -> Any:
        """`model(X)` is `model.predict(X)` (the PyTorch habit): raw outputs as a NumPy
        array, computed in inference mode; takes `predict`'s parameters."""
        return self.predict(X, batch_size=batch_size, device=device)

    def infer(self, x: Any) -> Any:
        """Inference outputs for a backend array `x`, in new arrays: re-entrant (any number
        of threads), writes nothing to the model. Takes no lock: see predict."""
        for layer in self.layers:
            x = layer.infer(x)
        return x

    def predict(self, X: Any, batch_size: int | None = None, device: bool = False) -> Any:
        """Raw network outputs (logits or values), computed in batches.

        `X` may be any array: NumPy, CuPy, PyTorch or JAX (CPU or CUDA), anything with
        DLPack, `__cuda_array_interface__` or `__array__`; it is read without a copy where
        its memory and dtype allow. Returns a NumPy array, or with `device=True` an array on
        the model's device (NumPy for cpu, CuPy for cuda) that any DLPack consumer takes
        without a copy: `torch.from_dlpack(model.predict(X, device=True))`,
        `jax.dlpack.from_dlpack(...)`. Thread-safe: several threads may predict at once.

        Parameters
        ----------
        X
            The inputs, shape (n_samples, input_dim).
        batch_size
            Rows per forward pass; None (default) uses a large batch (memory, not
            results, depends on it).
        device
            Return an array on the model's device instead of a NumPy array.

        Returns
        -------
        array
            The outputs, shape (n_samples, output_dim), in the model's dtype.
        """
        fast = self._small_batch_predict(X, batch_size)
        if fast is not None:
            return fast
        X = self._check_X(X)
        default = DEFAULT_PREDICT_BATCH if batch_size is None else batch_size  # 0 is an error
        bs = check_positive_int(default, "batch_size")
        if type(X) is np.ndarray and X.shape[0] <= 64:  # e.g. a list: the same path as arrays
            fast = self._small_batch_predict(np.ascontiguousarray(X, self.dtype), batch_size)
            if fast is not None:
                return fast
        with self._lock.reading():
            result = self._predict(X, bs)
        return result if device else self.ops.to_numpy(result)

    def _small_batch_predict(self, X: Any, batch_size: int | None) -> Any:
        """predict's path for a few rows of a C-contiguous NumPy array of the model's dtype
        (mlpx.backends.small_batch: validation, allocation and dispatch sized for one row), or
        None: the general path. Up to the chain's cut-off the compiled chain serves them;
        above it, or for a model that has no chain, the layers themselves do (`infer`, the
        general path's own computation), without its per-call conversions and checks."""
        if type(X) is not np.ndarray or X.ndim != 2 or X.dtype != self.dtype \
                or not X.flags.c_contiguous or not 0 < X.shape[0] <= 64 or not self.built \
                or X.shape[1] != self.input_dim \
                or (batch_size is not None and batch_size < X.shape[0]):
            return None
        # the chain copies each Dense layer's activation: a layer or activation swapped since
        # must build a new one, or a few rows would run the old formula; its threaded form and
        # cut-off are measured per thread count (set_num_threads builds a new one too)
        key = (id(self.ops), X.shape[1], _threads.applied_count(),
               tuple([(id(layer), id(getattr(layer, "activation", None)))
                      for layer in self.layers]))  # a list: no generator per call
        cached = self.__dict__.get("_small_batch")
        if cached is None or cached[0] != key:
            from .backends import compiled_forward

            forward = compiled_forward.plan(self)
            cached = self._small_batch = (key, self._make_chain(forward), forward)
        chain, forward = cached[1], cached[2]
        if chain is not None and X.shape[0] in chain.reach:
            with self._lock.reading():
                return chain(X)  # None for NaN or infinity: the general path says which
        return self._few_rows_infer(X, forward)

    def _few_rows_infer(self, X: np.ndarray, forward: Any = None) -> Any:
        """The layers' outputs for a few checked rows of a host backend (what `_predict`
        computes for them, to the bit: through the compiled forward pass where `forward`
        serves them, else the layers' own `infer`), or None for NaN or infinity (the general
        path's error) or a device backend."""
        from .backends.small_batch import all_finite

        if self.ops.xp is not np or not all_finite(X):
            return None
        with self._lock.reading():
            out = None if forward is None else forward(X)
            if out is None:
                out = self.infer(X)
        # never the caller's memory (a model of Dropout layers alone returns X itself)
        return out.copy() if np.may_share_memory(out, X) else out

    def _make_chain(self, forward: Any = None) -> Any:
        from .backends.small_batch import chain_of, configure

        chain = chain_of(self)
        if chain is not None:
            # measured against what serves the rows above the cut-off: the compiled
            # inference where the model has one, else the layers' own
            def above(x: Any) -> Any:
                out = None if forward is None else forward(x)
                return self.infer(x) if out is None else out

            with self._lock.reading():
                configure(chain, above, self.ops.blas)
        return chain

    def _predict(self, X: Any, bs: int) -> Any:
        ops = self.ops
        result = ops.empty((X.shape[0], self.output_dim), self.dtype)
        for start in range(0, X.shape[0], bs):
            xb = self._to_backend(X[start : start + bs])
            ops.copy_into(result[start : start + bs], self.infer(xb))
        return result

    def predict_proba(self, X: Any, batch_size: int | None = None,
                      device: bool = False) -> Any:
        """Class probabilities: softmax (cross_entropy), sigmoid (bce), exp (nll). NumPy,
        or with `device=True` an array on the model's device (as predict).

        Parameters
        ----------
        X
            The inputs, shape (n_samples, input_dim).
        batch_size
            Rows per forward pass; None (default) as in `predict`.
        device
            Return an array on the model's device instead of a NumPy array.
        """
        loss = self.loss_
        if loss is None:
            code = getattr(getattr(self.layers[-1], "activation", None), "code", None)
            if code in (activations.ACT_SOFTMAX, activations.ACT_SIGMOID):
                return self.predict(X, batch_size, device=device)
            raise ValueError(
                "predict_proba needs to know the loss to turn outputs into probabilities: "
                "call fit(...) or compile(loss='cross_entropy' | 'bce' | 'nll') first"
            )
        out = self._small_batch_predict(X, batch_size)  # a new array: free to overwrite
        if out is not None:
            # softmax/sigmoid compiled, without float64 NumPy temporaries; the same bits
            proba = loss_proba_in_place(loss, out)
            if proba is not None:
                return proba
        else:
            out = self.predict(X, batch_size, device=True)
        proba = loss.proba(self.ops, out)
        return proba if device else self.ops.to_numpy(proba)

    def evaluate(
        self, X: Any, y: Any, loss: str | losses.Loss | None = None, batch_size: int | None = None,
        sample_weight: Any = None, metrics: Sequence[Any] | None = None,
    ) -> dict[str, float]:
        """Mean loss over (X, y), in batches, with accuracy for classification losses and
        the metrics of compile/fit (or `metrics`). `sample_weight` makes every mean a
        weighted one, as in fit.

        Parameters
        ----------
        X
            The inputs, shape (n_samples, input_dim).
        y
            The targets, as `fit` takes them (class labels, one-hot rows or values).
        loss
            The loss's name or object; None (default) uses the loss of `fit`/`compile`.
        batch_size
            Rows per forward pass; None (default) uses a large batch.
        sample_weight
            One weight per sample; None (default) weighs them equally.
        metrics
            Metric names or objects (see `mlpx.metrics`); None (default) uses those of
            `compile`/`fit`.

        Returns
        -------
        dict
            `{"loss": ..., "accuracy": ..., <metric>: ...}` as floats.
        """
        from .metrics import resolve as resolve_metrics
        from .weighting import check_sample_weight

        loss_fn = self._loss_or(loss)
        if not self.built:
            self._check_X(X)
        Xd, yd = self.prepare_data(X, y, loss_fn, to_device=None)  # too big: batches
        default = DEFAULT_PREDICT_BATCH if batch_size is None else batch_size  # 0 is an error
        bs = check_positive_int(default, "batch_size")
        if metrics is None and loss is None:
            metrics = self.compiled_metrics
        chosen = resolve_metrics(metrics, loss_fn, self.output_dim)
        w = None if sample_weight is None else check_sample_weight(sample_weight, Xd.shape[0])
        return self.evaluate_batches(Xd, yd, loss_fn, bs, chosen, w)

    def evaluate_batches(self, Xd: Any, yd: Any, loss_fn: losses.Loss, bs: int,
                         metrics: Sequence[Any] | None = None,
                         weights: np.ndarray | None = None) -> dict[str, float]:
        """evaluate() on data already checked by prepare_data (the trainer's validation):
        the loss and `metrics` (mlpx.metrics objects; None: accuracy for classification
        losses), weighted by `weights` (one per sample) when given."""
        from .metrics import resolve as resolve_metrics

        ops = self.ops
        n = Xd.shape[0]
        if metrics is None:
            metrics = resolve_metrics(None, loss_fn, self.output_dim)
        total: Any = 0.0
        sums: list = [None] * len(metrics)
        wd = None if weights is None else ops.asarray(weights)
        wb = None
        with self._lock.reading():
            for start in range(0, n, bs):
                # device arrays pass as they are; host data (too big for the device) is
                # copied one batch at a time
                xb = ops.asarray(Xd[start : start + bs], dtype=self.dtype)
                yb = ops.asarray(yd[start : start + bs])
                out = self.infer(xb)
                if wd is None:
                    total = total + loss_fn(ops, out, yb) * xb.shape[0]
                else:
                    wb = wd[start : start + bs]
                    total = total + loss_fn.weighted(ops, out, yb, wb) * wb.sum()
                sums = [m.update(ops, s, out, yb, wb) for m, s in zip(metrics, sums, strict=True)]
        denominator = n if weights is None else float(weights.sum())
        logs = {"loss": ops.to_float(total) / denominator if denominator > 0 else float("nan")}
        for m, s in zip(metrics, sums, strict=True):
            logs[m.name] = m.result(ops, s)
        return logs

    # ------------------------------------------------------------------------- gradients
    def loss_and_grad(
        self, X: Any, y: Any, loss: str | losses.Loss | None = None, training: bool = False,
        sample_weight: Any = None,
    ) -> tuple[float, list[np.ndarray]]:
        """Full-batch loss and gradients (NumPy, aligned with get_weights()).

        `training=True` runs layers in training mode (batch statistics, dropout).
        `sample_weight` gives the weighted mean loss sum(w_i l_i) / sum(w), as fit does.
        """
        from .weighting import check_sample_weight

        loss_fn = self._loss_or(loss)
        self.check_trainable()
        if not self.built:
            self._check_X(X)
        Xd, yd = self.prepare_data(X, y, loss_fn)
        w = None if sample_weight is None else self.ops.asarray(
            check_sample_weight(sample_weight, Xd.shape[0]))
        with self._lock.writing():  # a step: caches, gradients, running statistics
            out = self.forward(Xd, training=training)
            grad = self.ops.empty(out.shape, self.dtype)
            if w is None:
                value = loss_fn(self.ops, out, yd, grad)
            else:
                value = loss_fn.weighted(self.ops, out, yd, w, grad)
            value = value + self.penalty()
            self.backward(grad)
            self.add_penalty_grads()
            grads = [self.ops.to_numpy(p.grad).copy() for p in self.parameters()]
            self._grads_pending = False  # handed to the caller
        return self.ops.to_float(value), grads

    def _regularized(self) -> list[tuple[Parameter, Any]]:
        return [pair for layer in self.layers for pair in layer.regularized()]

    def penalty(self) -> Any:
        """The layers' regularisation penalties: a 0-d device array (0.0 without any).
        Nothing is read back to the host here."""
        total = 0.0
        for p, reg in self._regularized():
            total = total + reg.penalty(self.ops, p.data)
        return total

    def add_penalty_grads(self) -> None:
        """Add the regularisers' gradients to the parameter gradients (after backward)."""
        for p, reg in self._regularized():
            reg.add_grad(self.ops, p)

    def check_trainable(self) -> None:
        """Raise ValueError when a layer cannot be trained by backpropagation."""
        for layer in self.layers:
            act = getattr(layer, "activation", None)
            if act is not None and not act.differentiable:
                raise ValueError(
                    f"layer {layer!r} uses the {act.name!r} activation, which has no gradient "
                    "and cannot be trained by backpropagation; use mlpx.Perceptron for "
                    "Rosenblatt's rule, or a smooth activation such as 'sigmoid'"
                )

    def step_lock(self) -> Any:
        """The write side of the model's lock: the trainer holds it for each training step,
        so inference in other threads sees the state of a completed step."""
        return self._lock.writing()

    # --------------------------------------------------------------------------- weights
    def get_weights(self) -> list[np.ndarray]:
        """Trainable parameters as NumPy copies, in layer order (Dense: W (in, out), b)."""
        self._require_built()
        with self._lock.reading():
            return [np.array(self.ops.to_numpy(p.data), copy=True) for p in self.parameters()]

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Replace every trainable parameter (same order and shapes as get_weights())."""
        self._require_built()
        params = self.parameters()
        weights = list(weights)
        if len(weights) != len(params):
            raise ValueError(
                f"set_weights got {len(weights)} arrays, the model has {len(params)} "
                f"parameters ({', '.join(f'{p.name}{p.shape}' for p in params)})"
            )
        host = []
        for i, (p, w) in enumerate(zip(params, weights, strict=True)):
            w = to_host(w, f"weight {i}")
            if tuple(w.shape) != p.shape:
                raise ValueError(
                    f"weight {i} ({p.name}) must have shape {p.shape}, got {tuple(w.shape)}"
                )
            if w.dtype.kind not in "biuf" or not np.isfinite(w).all():
                raise ValueError(f"weight {i} ({p.name}) must be finite numbers")
            host.append(w.astype(self.dtype))
        with self._lock.writing():  # validated all first: nothing changes on error
            for p, w in zip(params, host, strict=True):
                self.ops.copy_into(p.data, self.ops.asarray(w))

    # ----------------------------------------------------------------------------- moving
    def to(self, backend: str | Backend) -> Sequential:
        """Move the model (weights, state, optimiser state) to another backend, in place."""
        if get_backend(backend) is unwrap(self.ops):
            return self
        ops = ops_for(get_backend(backend), self.policy)
        opt_state = self.optimizer_.state_dict() if self.optimizer_ and self.built else None
        with self._lock.writing():
            for layer in self.layers:
                if layer.built:
                    layer.to_backend(ops)
            self.ops = ops
            if self.optimizer_ is not None and self.built:
                self.optimizer_.ops = None
                self.optimizer_.state = []
                self.optimizer_.bind(self.parameters(), ops)
                if opt_state is not None:
                    self.optimizer_.load_state_dict(opt_state)
        return self

    # ----------------------------------------------------------------------------- train
    def fit(
        self,
        X: Any,
        y: Any,
        loss: str | losses.Loss | None = None,
        optimizer: str | optim.Optimizer | None = None,
        lr: float | None = None,
        epochs: int = 1,
        batch_size: int = 32,
        shuffle: bool = True,
        validation_data: tuple[Any, Any] | None = None,
        verbose: int = 1,
        callbacks: Sequence[Any] | None = None,
        validation_split: float = 0.0,
        resume_from: str | os.PathLike | None = None,
        clip_norm: float | None = None,
        clip_value: float | None = None,
        stream_data: bool | None = None,
        sample_weight: Any = None,
        class_weight: dict[int, float] | str | None = None,
        metrics: Sequence[Any] | None = None,
        validation_freq: int | Sequence[int] = 1,
        distributed: Any = False,
        gradient_accumulation_steps: int = 1,
    ) -> History:
        """Mini-batch training; returns a History of per-epoch loss (and validation metrics).

        Everything (file, data, arguments) is checked before the model changes. The model
        keeps the loss and optimiser for later evaluate/predict_proba/fit calls. Callbacks
        may also define on_train_batch_begin / on_train_batch_end (see mlpx.callbacks).
        Inputs that look unscaled raise an mlpx.UnscaledInputWarning.

        A loss or state that becomes NaN/inf raises NonFiniteLossError and leaves the model
        as after its last finite epoch. Ctrl-C stops after the current step: the model keeps
        that step's weights and `trainer_` records the position, so `save` + `resume_from`
        continues exactly where the run stopped.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training inputs: NumPy, CuPy, or anything with `__array__` or DLPack.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Targets: integer labels, one-hot or probability rows (classification losses),
            or values (regression losses).
        loss : str or mlpx.losses.Loss, default None
            A loss name ("cross_entropy", "mse", ...) or object; None keeps the loss set by
            `compile` or an earlier fit (or a resumed checkpoint's).
        optimizer : str or mlpx.optim.Optimizer, default None
            An optimiser name (then `lr` sets its learning rate) or object; None keeps the
            model's optimiser (SGD for a model that has none).
        lr : float, default None
            Learning rate of the optimiser named by `optimizer`; alone, the model's current
            optimiser with this rate (its kind and settings, fresh state). None: the
            optimiser's default or current rate.
        epochs : int, default 1
            Epochs to train; with `resume_from`, the run's total, so re-running the same call
            after a crash trains only what is missing.
        batch_size : int, default 32
            Samples per step; the last batch of an epoch holds the rest. With
            `distributed`, the global batch, split across the processes.
        shuffle : bool, default True
            Shuffle the samples each epoch (the order is a function of the model's seed, the
            fit's index and the epoch, so a resumed run replays it).
        validation_data : tuple, default None
            `(X_val, y_val)` or `(X_val, y_val, sample_weight_val)`, evaluated after each
            epoch (see `validation_freq`) and recorded as "val_loss", "val_accuracy", ...
        verbose : int, default 1
            0 silent, 1 a progress bar, 2 one line per epoch.
        callbacks : list of mlpx.callbacks.Callback, default None
            Objects whose hooks run at the start and end of the run, of each epoch and, if
            defined, of each batch.
        validation_split : float, default 0.0
            Hold out the last fraction of (X, y), before shuffling (Keras); warns when the
            classes of the two parts differ strongly (sorted labels). Not with
            `validation_data`.
        resume_from : str or os.PathLike, default None
            A checkpoint (`save`, ModelCheckpoint) whose run this fit continues: weights,
            buffers, optimiser state, callback state, epoch counter, position inside an
            interrupted epoch and history.
        clip_norm : float, default None
            Rescale the gradients so that their global L2 norm is at most this, after
            backpropagation and before the optimiser step (see mlpx.clipping). History's
            "grad_norm" is the norm before clipping of each epoch's last step.
        clip_value : float, default None
            Clip every gradient element to [-clip_value, clip_value].
        stream_data : bool, default None
            cuda backend: None copies X and y to the GPU once when they take at most half
            its free memory and otherwise streams batches from pinned host memory; True /
            False force streaming / a single copy. Host backends ignore it.
        sample_weight : array-like of shape (n_samples,), default None
            One weight per sample: the loss becomes a weighted mean (see mlpx.weighting).
        class_weight : dict or "balanced", default None
            `{class: weight}`, or "balanced" for weights inversely proportional to the class
            frequencies; multiplies `sample_weight`.
        metrics : list, default None
            Names such as "accuracy", "top_k_accuracy", "mae", "r2", mlpx.metrics objects or
            functions fn(y_true, y_pred), computed on the device for training and
            validation; None keeps those of `compile` or an earlier fit. Classification
            losses always record "accuracy".
        validation_freq : int or list of int, default 1
            Validate every N epochs, or at the listed epochs (counted from 1); other epochs
            record no val_* values.
        distributed : bool or mlpx.distributed.DataParallel, default False
            True in a script started with `mpirun -n N` (every process passing the same X
            and y): one model trained data-parallel, every process ending with the weights
            one process would have reached (see mlpx.distributed; a DataParallel object sets
            options). Without an MPI launcher it warns and trains alone. The options above
            work with it as in one process: metric sums are merged across the processes
            each epoch, weighted shards are scaled by their share of the batch's weight, and
            batch hooks run on every process with that process's own running values.
        gradient_accumulation_steps : int, default 1
            One optimiser step per this many mini-batches, with the mean gradient of the
            group (Keras 3): the step of a k times larger batch, holding one batch's
            activations (see mlpx.accumulation). Not with `distributed`.

        Returns
        -------
        History
            Per-epoch lists: "loss", the metrics, "lr", "grad_norm" and the val_* values.
        """
        from .training import Trainer

        trainer: Trainer = Trainer(self)
        return trainer.fit(
            X, y, loss=loss, optimizer=optimizer, lr=lr, epochs=epochs,
            batch_size=batch_size, shuffle=shuffle, validation_data=validation_data,
            verbose=verbose, callbacks=callbacks, validation_split=validation_split,
            resume_from=resume_from, clip_norm=clip_norm, clip_value=clip_value,
            stream_data=stream_data, sample_weight=sample_weight, class_weight=class_weight,
            metrics=metrics, validation_freq=validation_freq, distributed=distributed,
            gradient_accumulation_steps=gradient_accumulation_steps,
        )

    # ------------------------------------------------------------------------ checkpoints
    def get_config(self) -> dict[str, Any]:
        """The architecture: class, input width, dtype, seed and every layer's spec."""
        config = {"class": "Sequential", "input_dim": self.input_dim,
                  "dtype": self.dtype.name, "seed": self.seed,
                  "layers": [layer_spec(layer) for layer in self.layers]}
        if self.policy.mixed:  # recorded only when mixed: float32 files stay as they were
            config["precision"] = self.policy.name
        return config

    def save(self, path: str | os.PathLike, epoch: int | None = None) -> Path:
        """Write the model's state dict, architecture, loss and the training run's state
        (optimiser, position, callbacks, History) to one safetensors file, atomically (see
        mlpx.saving). Load it with `mlpx.load(path, backend=...)`, or continue the run
        with `fit(..., resume_from=path)`.

        Parameters
        ----------
        path
            The file to write (by convention `*.safetensors`); its folder must exist.
        epoch
            The epoch count to record; None (default) records the model's own.

        Returns
        -------
        Path
            The path written.
        """
        from .registry import check_saved_names
        from .saving.writer import write_checkpoint
        from .training import Trainer

        self._require_built()
        # every part must come back as itself on load (or the load names it as missing)
        check_saved_names([self.loss_, self.optimizer_,
                           *(part for _, layer in self.walk() for part in layer.named_parts())])
        trainer = self.trainer_
        if trainer is None:  # never trained here: a run that has not started
            trainer = Trainer.from_run(self, RunRecord(epoch=self.epoch_))
        run = trainer.state_dict()
        if epoch is not None:
            run["epoch"] = int(epoch)
        return write_checkpoint(path, self, run)

    def parameter_names(self) -> list[str]:
        """State keys of the trainable parameters, in get_weights() order."""
        self._require_built()
        return list(self.state_spec(buffers=False))

    def to_onnx(self, path: str | os.PathLike, opset: int = 17) -> Path:
        """Write the model as an ONNX file for ONNX Runtime (see mlpx.onnx_export)."""
        from .onnx_export import export

        return export(self, path, opset=opset)

    def load_weights(self, path: str | os.PathLike) -> None:
        """Copy the weights of a safetensors file into this built model (Keras's
        `load_weights`; PyTorch's `load_state_dict(safetensors.torch.load_file(path))`).

        The file may be a plain safetensors file holding exactly the model's parameters under
        their state keys (`layers.0.W`, `layers.0.b`, nested blocks as `layers.4.layers.0.W`)
        and, optionally, its buffers (`layers.1.running_mean`), or a full mlpx checkpoint
        (verified; its optimiser and training state are ignored). Names, shapes and dtypes are
        all checked before anything is assigned; floating-point weights are converted to the
        model's dtype. Raises CheckpointError naming the file and the entry.
        """
        from .saving.reader import read_weights
        from .saving.schema import check_weights

        self._require_built()
        p = os.fspath(path)
        state = check_weights(read_weights(p), self.state_spec(), self.parameter_names(), p)
        self.load_state_dict(state, strict=False)


class MLP(Sequential):
    """`MLP([784, 256, 10], activation="relu")`: Dense layers between the given widths.

    The first size is the input width; hidden layers use `activation`; the output layer uses
    `output_activation` (None: raw logits/values, the right choice for the built-in losses).

    Parameters
    ----------
    sizes
        The widths, input first and output last, e.g. `[784, 256, 10]` (at least two).
    activation
        The hidden layers' activation: a name (`"relu"`, `"tanh"`, ...) or an
        `mlpx.activations` object such as `LeakyReLU(0.1)`.
    output_activation
        The output layer's activation; None (default) gives raw outputs.
    init
        The weight initialiser's name (see `mlpx.initializers`); None picks the one
        suited to each layer's activation.
    backend
        As for `Sequential`: `"cpu"` (default), `"cuda"`, `"cuda:N"` or `"auto"`.
    dtype
        `"float32"` (default), `"float64"` or `"mixed_bfloat16"`.
    seed
        Seeds the initial weights, dropout masks and shuffling. None (default) draws one.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        activation: str | activations.Activation = "relu",
        output_activation: str | activations.Activation | None = None,
        init: str | None = None,
        backend: str | Backend = "cpu",
        dtype: Any = "float32",
        seed: int | None = None,
    ):
        sizes = list(sizes)
        if len(sizes) < 2:
            raise ValueError(
                f"MLP needs at least an input and an output size, e.g. [784, 10]; got {sizes}"
            )
        for s in sizes:
            check_positive_int(s, "every MLP size")
        activations.get(activation)  # an unknown name is an error even without hidden layers
        layers: list[Layer] = [Dense(s, activation=activation, init=init) for s in sizes[1:-1]]
        layers.append(Dense(sizes[-1], activation=output_activation, init=init))
        super().__init__(layers, input_dim=sizes[0], backend=backend, dtype=dtype, seed=seed)
        self.sizes = sizes


def load(path: str | os.PathLike, backend: str | Backend = "cpu",
         custom_objects: dict[str, Any] | None = None, dtype: Any = None) -> Sequential:
    """Rebuild the model saved at `path` on `backend` (weights bitwise, optimiser state,
    buffers, loss, epoch count and history). Never unpickles: only arrays and JSON are read,
    and everything is checked (see mlpx.saving.schema) before it is built or assigned.

    User-defined activations, losses and layers are found by the names the file records:
    in `custom_objects` ({name: class or function}, as in Keras) first, then among the parts
    registered with `mlpx.register_activation` / `register_loss` / `register_layer`.

    Parameters
    ----------
    path
        A file written by `model.save` (or `ModelCheckpoint`).
    backend
        Where to build the model: `"cpu"` (default), `"cuda"`, `"cuda:N"` or `"auto"`;
        the file does not depend on the backend that saved it.
    custom_objects
        `{name: class or function}` for user-defined parts the file names.
    dtype
        None (default): the precision policy the file records; else another policy with
        the same weight dtype (a "mixed_bfloat16" checkpoint loads as "float32" and back).

    Returns
    -------
    Sequential
        The model, ready to predict, evaluate, save or `fit` further.
    """
    from .custom_objects import custom_object_scope
    from .saving.reader import read_checkpoint

    p = os.fspath(path)
    with custom_object_scope(custom_objects):
        return from_record(read_checkpoint(p), backend, p, dtype)


def from_record(record: CheckpointRecord, backend: str | Backend = "cpu",
                path: str = "<checkpoint>", dtype: Any = None) -> Sequential:
    """The model of a checkpoint's record (`mlpx.saving.reader.read_checkpoint`), checked
    against the built model before anything is assigned; its trainer holds the saved run."""
    from .saving.reader import check_fits_model
    from .saving.schema import entry_errors
    from .training import Trainer

    arch = record.architecture
    policy = get_policy(arch.get("precision", arch["dtype"]) if dtype is None else dtype)
    if policy.variable_dtype.name != arch["dtype"]:
        raise ValueError(f"{path} holds {arch['dtype']} weights; dtype={policy.name!r} keeps "
                         f"{policy.variable_dtype.name} ones: pick a policy with "
                         f"{arch['dtype']} weights (or leave dtype=None)")
    with entry_errors(path, "model"):
        model = Sequential([layer_from_spec(s) for s in arch["layers"]],
                           input_dim=arch["input_dim"], backend=backend, dtype=policy,
                           seed=arch["seed"])
    # layers that declare nothing are known now: check everything against the built model
    check_fits_model(record, model, path)
    with entry_errors(path, "a restored entry"):
        model.load_state_dict(record.state)
        optimizer = None
        if record.optimizer is not None:
            optimizer = optim.from_config(dict(record.optimizer["config"]))
            if "state" in record.optimizer:
                optimizer.bind(model.parameters(), model.ops)
                optimizer.load_state_dict(record.optimizer)
    with entry_errors(path, "loss"):
        model.loss_ = losses.get(record.loss) if record.loss else None
    model.optimizer_ = optimizer
    model.epoch_ = record.run.epoch
    model.history_ = record.run.history
    model.trainer_ = Trainer.from_run(model, record.run)
    if record.run.metrics:
        from . import metrics

        model.compiled_metrics = metrics.restore(record.run.metrics)
    return model
