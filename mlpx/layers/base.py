"""Layer and Parameter: the model every layer, optimiser and checkpoint builds on.

A layer is built once for an input width, on a backend, in a dtype. It owns `Parameter`s
(trainable arrays with a gradient array of the same shape, written by `backward`) and may own
non-trainable state (`buffers()`, e.g. running statistics) that checkpoints save but
`get_weights` does not return.

The layer contract (built-in and user-defined layers alike):

- **State is declared.** `param_spec(input_dim, dtype)` and `buffer_spec(input_dim, dtype)`
  name every array the layer will own, with its shape and dtype, from the layer's config and
  input width alone, allocating nothing; `state_spec` is both together. A built layer's
  `state_arrays()` returns exactly those arrays (its own, not its sub-layers'), so a loader can
  check a state dict or a checkpoint against the declaration before touching the layer.
- **Training is a step.** `forward(x, training)` followed by `backward(dy)` is one training
  step: forward may keep what backward needs (inputs, pre-activations) and reuse its work
  arrays from `_buffer`, which allocates once per (name, shape), so steady-state steps
  allocate nothing. Only one step runs at a time (the model serialises them).
- **User layers** subclass `Layer` and define `build(self, input_dim, rng)` (create
  parameters with `self.add_parameter(name, initial_value)`, return the output width; `self.ops`
  and `self.dtype` are set), `forward(self, x, training=False)` and
  `backward(self, dy, need_input_grad=True)` (write each `param.grad`, return dL/dx), with
  array code on `self.ops.xp`. Their parameters, `param_spec` and `get_config` come from the
  base class; register the class (`@mlpx.register_layer`) so that saved models rebuild it.
- **Inference is re-entrant.** `infer(x)` computes the inference output without writing
  anything to the layer: no caches, no shared work arrays (its outputs are new arrays), so any
  number of threads may call it at once, also while another thread trains. The default
  `infer` runs `forward(x, training=False)` under a per-layer lock and returns a copy: safe
  for layers that only implement `forward`, serialised rather than parallel.
"""

from __future__ import annotations

import inspect
import threading
from typing import Any

import numpy as np

from ..backends.base import Array, Backend

_MAX_CACHED_SHAPES = 24

#: {name: (shape, dtype)}: what a layer declares about its state (see the module docstring)
StateSpec = dict[str, tuple[tuple[int, ...], np.dtype]]


class Parameter:
    """A trainable array and its gradient (same shape, same backend)."""

    __slots__ = ("name", "data", "grad")

    def __init__(self, name: str, data: Array, grad: Array):
        self.name = name
        self.data = data
        self.grad = grad

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    def __repr__(self) -> str:
        return f"Parameter({self.name!r}, shape={self.shape})"


class Layer:
    """Base class: subclasses implement `build`, `forward`, `backward` and `get_config`."""

    #: True for layers that behave differently in training (Dropout, BatchNorm)
    has_training_mode = False
    #: True when `backward` returns the layer's own work array, which the layer below may
    #: overwrite (Dense); False when it may return dy itself or something still needed
    returns_work_grad = False
    #: set by Sequential.backward: dy may be overwritten by this call (layers may ignore it)
    _dy_scratch = False
    #: the data-parallel step in progress, set during `fit(distributed=True)` (None in one
    #: process): `start` (this process's first row in the global batch), `rows` (the global
    #: batch's rows) and `allreduce_(array)` (sum over the processes, in place). Layers whose
    #: training step mixes rows (BatchNorm) or draws per row (Dropout) read it
    batch_shard: Any = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # a user layer's build(self, input_dim, rng) is the hook the framework's build calls
        user_build = cls.__dict__.get("build")
        if user_build is not None and "ops" not in inspect.signature(user_build).parameters:
            cls._build = user_build
            cls.build = Layer.build

    def __init__(self, name: str | None = None):
        self.name = name
        self.built = False
        self._own_params: list[Parameter] = []
        self.ops: Backend | None = None
        self.dtype: Any = None
        self.input_dim: int | None = None
        self.output_dim: int | None = None
        self._ws: dict[tuple, Array] = {}
        self._infer_lock = threading.Lock()

    # lifecycle ---------------------------------------------------------------------------
    def build(self, input_dim: int, ops: Backend, dtype: Any, rng: np.random.Generator) -> int:
        """Create parameters for inputs of width `input_dim`; return the output width."""
        self.ops, self.dtype, self.input_dim = ops, np.dtype(dtype), int(input_dim)
        self._own_params = []
        width = self._build(self.input_dim, rng)
        self.output_dim = self.input_dim if width is None else int(width)
        self.built = True
        return self.output_dim

    def _build(self, input_dim: int, rng: np.random.Generator) -> int:
        return input_dim

    def add_parameter(self, name: str, value: Any) -> Parameter:
        """A new trainable parameter holding `value` (cast to the layer's dtype, on its
        backend), listed by the default `parameters()` in the order of creation."""
        if not self.__dict__.get("_infer_lock"):
            raise RuntimeError(f"{type(self).__name__}.__init__ must call super().__init__()")
        param = self._new_param(name, value)
        self._own_params.append(param)
        return param

    def forward(self, x: Array, training: bool = False) -> Array:  # pragma: no cover
        raise NotImplementedError

    def backward(self, dy: Array, need_input_grad: bool = True) -> Array | None:
        """Given dL/dy of the last forward, write parameter gradients and return dL/dx."""
        raise NotImplementedError  # pragma: no cover

    def infer(self, x: Array) -> Array:
        """The inference output for `x`, written to new arrays; never writes to the layer.

        Override it with a lock-free version (see Dense); this default serialises
        `forward(x, training=False)`, whose caches and work arrays are shared.
        """
        with self._infer_lock:
            return self.ops.copy(self.forward(x, training=False))

    def compute_output_dim(self, input_dim: int) -> int:
        """The output width for inputs of width `input_dim` (the layer need not be built).
        Layers that change the width override it; the default keeps it (or reports the
        built width)."""
        if self.built and int(input_dim) == self.input_dim:
            return int(self.output_dim)
        return int(input_dim)

    # state declarations ---------------------------------------------------------------------
    def param_spec(self, input_dim: int, dtype: Any) -> StateSpec:
        """{name: (shape, dtype)} of the trainable parameters, in `parameters()` order, for
        inputs of width `input_dim` and parameters of `dtype`. Allocates nothing. Layers with
        parameters override it; the default describes a built layer's own parameters."""
        if self.built and int(input_dim) == self.input_dim and not self.children():
            return {p.name: (p.shape, np.dtype(p.data.dtype)) for p in self.parameters()}
        return {}

    def buffer_spec(self, input_dim: int, dtype: Any) -> StateSpec:
        """{name: (shape, dtype)} of the non-trainable state (`buffers()`), like param_spec."""
        if self.built and int(input_dim) == self.input_dim:
            return {k: (tuple(np.shape(v)), np.dtype(v.dtype)) for k, v in self.buffers().items()}
        return {}

    def state_spec(self, input_dim: int, dtype: Any) -> StateSpec:
        """Parameters, then buffers: the names, shapes and dtypes `state_arrays()` will have.

        A layer with sub-layers lists each sub-layer's entries (prefixed `"layers.<j>."`), depth
        first, the order in which `Sequential.walk()` visits them.
        """
        return self.nested_spec(input_dim, dtype, params=True, buffers=True)

    def nested_spec(self, input_dim: int, dtype: Any, params: bool = True,
                    buffers: bool = True) -> StateSpec:
        """state_spec restricted to parameters and/or buffers."""
        if not self.children():
            out = dict(self.param_spec(input_dim, dtype)) if params else {}
            if buffers:
                out.update(self.buffer_spec(input_dim, dtype))
            return out
        out = {}
        width = int(input_dim)
        for j, child in enumerate(self.children()):
            for k, v in child.nested_spec(width, dtype, params, buffers).items():
                out[f"layers.{j}.{k}"] = v
            width = child.compute_output_dim(width)
        return out

    def state_arrays(self) -> dict[str, Array]:
        """The layer's own live state arrays (parameters' data, then buffers), by name; a
        block's sub-layers report theirs themselves. Scalars (counters) are 0-d NumPy arrays."""
        own = [] if self.children() else self.parameters()
        out: dict[str, Array] = {p.name: p.data for p in own}
        out.update(self.buffers())
        return out

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Copy host arrays (already checked against `state_spec`) into the layer's own
        state; names absent from `arrays` keep their values."""
        ops = self.ops
        for p in [] if self.children() else self.parameters():
            if p.name in arrays:
                value = np.asarray(arrays[p.name], dtype=p.data.dtype)
                ops.copy_into(p.data, ops.asarray(value))
        for key, current in self.buffers().items():
            if key not in arrays:
                continue
            value = np.asarray(arrays[key])
            if isinstance(current, np.ndarray) and current.ndim == 0:  # a host counter
                self._set_buffer(key, value.astype(current.dtype))
            else:
                ops.copy_into(current, ops.asarray(value.astype(current.dtype)))

    # parameters and state ----------------------------------------------------------------
    def parameters(self) -> list[Parameter]:
        """Trainable parameters in the public order (Dense: W, b, then PReLU slopes); by
        default those made with `add_parameter`."""
        return list(getattr(self, "_own_params", []))

    def buffers(self) -> dict[str, Array]:
        """Non-trainable state saved in checkpoints (not returned by get_weights)."""
        return {}

    def get_config(self) -> dict:
        return {"name": self.name}

    def _new_param(self, name: str, value: np.ndarray) -> Parameter:
        ops = self.ops
        value = np.asarray(value, dtype=self.dtype)
        data = ops.empty(value.shape, self.dtype)  # the backend's own (aligned) storage
        ops.copy_into(data, ops.asarray(value))
        return Parameter(name, data, ops.zeros(data.shape, self.dtype))

    def to_backend(self, ops: Backend) -> None:
        """Move parameters and buffers to another backend (values are kept bit for bit)."""
        for p in self.parameters():
            host = self.ops.to_numpy(p.data)
            p.data = ops.empty(host.shape, host.dtype)
            ops.copy_into(p.data, ops.asarray(host))
            p.grad = ops.zeros(p.data.shape, self.dtype)
        for key, value in self.buffers().items():
            self._set_buffer(key, ops.asarray(self.ops.to_numpy(value)))
        self.ops = ops
        self._ws.clear()
        for child in self.children():
            child.to_backend(ops)

    def _set_buffer(self, key: str, value: Array) -> None:
        setattr(self, key, value)

    def children(self) -> list[Layer]:
        """Sub-layers (Residual blocks); empty for plain layers."""
        return []

    def named_parts(self) -> list[Any]:
        """Parts this layer's `get_config()` records by name (Dense: its activation and
        regularisers); saving checks that each name brings its part back on load."""
        return []

    def regularized(self) -> list[tuple[Parameter, Any]]:
        """(parameter, regulariser) pairs whose penalty joins the objective (Dense's
        kernel_regularizer/bias_regularizer); by default those of the sub-layers."""
        return [pair for child in self.children() for pair in child.regularized()]

    # work arrays ---------------------------------------------------------------------------
    def _buffer(self, name: str, shape: tuple[int, ...], dtype: Any = None) -> Array:
        key = (name, shape, dtype)
        arr = self._ws.get(key)
        if arr is None:
            if len(self._ws) >= _MAX_CACHED_SHAPES:
                self._ws.clear()
            arr = self.ops.empty(shape, dtype or self.dtype)
            self._ws[key] = arr
        return arr

    def release_buffers(self) -> None:
        self._ws.clear()

    def __repr__(self) -> str:
        cfg = {k: v for k, v in self.get_config().items() if v is not None}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in cfg.items())})"
