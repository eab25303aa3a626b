"""Dense stacks under "mixed_bfloat16" with their saved activations in bfloat16.

Under the policy every matrix product rounds its operands to bfloat16, so what the backward
pass keeps of a hidden layer's output y as the next product's input is exactly its bfloat16
copy; and the derivative of each activation served here reads bfloat16 values too (the sign
of y for ReLU-like ones; y for sigmoid, tanh and ELU; the pre-activation z for GELU, SiLU
and softplus: mlpx.backends.bfloat16's contract). Kept as uint16 bits they take half the
memory of the float32 arrays (y alone, or z and y). Per step:

- forward, hidden layer: the float32 product lands in a shared work array; one kernel adds
  the bias, applies the activation and writes the bfloat16 bits the layer keeps (y's, and
  z's where f' reads z);
- forward, last layer: as Dense does (its float32 output is what the loss reads);
- backward, hidden layer: one kernel reads the bits for the derivative, sums the bias
  gradient from the unrounded delta and leaves delta rounded in place for both products;
- the products' float32 operands (bits expanded, or the input rounded) and each layer's
  input gradient use two work arrays shared by the whole stack, taken in turn, instead of
  batch-sized arrays per layer.

This runs on the cpu backend for stacks of Dense layers whose hidden activations are
identity, ReLU, LeakyReLU with a slope >= 0, sigmoid, tanh, ELU, GELU, SiLU or softplus. The
results are those of the float32-saving path under the policy bit for bit, with one
exception: a positive pre-activation below 2**-133 rounds to a bfloat16 zero, whose ReLU or
LeakyReLU derivative is then that of z <= 0 (the next product multiplies that zero in both
paths). Any other model keeps its activations in float32 (Dense's own path).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import activations
from ..precision import unwrap
from .dense import Dense

#: set False to keep float32 saved activations under the policy (the comparison in the tests)
ENABLED = True

_SIGN_ONLY = (activations.Identity.code, activations.ReLU.code, activations.LeakyReLU.code)
_NO_BIAS = np.zeros(1, np.float32)  # a kernel's bias argument, unread without a bias
#: f' computed from y alone (ELU: alpha > 0, so y > 0 exactly where z > 0)
_FROM_OUTPUT = (activations.Sigmoid.code, activations.Tanh.code, activations.ELU.code)
#: f' reads z: its bfloat16 bits are kept beside y's
_FROM_INPUT = (activations.GELU.code, activations.SiLU.code, activations.Softplus.code)


def saved(act: activations.Activation) -> str | None:
    """What a hidden layer with `act` keeps in bfloat16 for its derivative: "sign" (of y),
    "y", "z" (and y, the next product's input), or None when this module does not serve it."""
    code = activations.scalar_kernel(act)
    if code in _SIGN_ONLY:
        return "sign" if float(getattr(act, "alpha", 0.0) or 0.0) >= 0.0 else None
    if code in _FROM_OUTPUT:
        return "y"
    return "z" if code in _FROM_INPUT else None


def supports(layers: list[Any], ops: Any) -> bool:
    """Whether `layers` under `ops` run through this module (see the module notes)."""
    if not ENABLED or getattr(ops, "compute_dtype", None) != "bfloat16" or len(layers) < 2:
        return False
    if getattr(unwrap(ops), "name", "") != "cpu":
        return False
    if not all(type(layer) is Dense and layer.slopes is None for layer in layers):
        return False
    return all(saved(layer.activation) is not None for layer in layers[:-1])


def _kernels() -> Any:
    from ..backends import numba_bfloat16

    return numba_bfloat16


def _as_float32_operand(a: Any, kind: str, scratch: Any | None) -> Any:
    """`a` as the float32 values of its bfloat16 rounding, in `scratch` where a copy is due."""
    if kind == "rounded":
        return a
    if kind == "operand":
        return a.rounded(scratch)
    if scratch is None:
        from ..backends.bfloat16 import round_to_bfloat16

        return round_to_bfloat16(a) if kind == "float32" else _expanded(a)
    (_kernels().expand_bits if kind == "bits" else _kernels().round_into)(a, scratch)
    return scratch


class Operand:
    """A product operand of one step in the forms the routes read, each made once, when a
    route first asks for it: bfloat16 bits (a library's operand) and float32 values holding
    bfloat16 ones (the emulated route's). A step reads the weights in up to two products and
    delta in two: converting each once halves the passes over them."""

    __slots__ = ("values", "is_rounded", "_store", "_slot", "_bits", "_rounded")
    ndim = 2

    def __init__(self, store: Any, slot: str, values: Any, is_rounded: bool) -> None:
        self.values, self.is_rounded = values, is_rounded
        self._store, self._slot = store, slot  # store(slot, shape, dtype): a kept array
        self._bits: Any = None
        self._rounded: Any = values if is_rounded else None

    @property
    def shape(self) -> tuple[int, ...]:
        return self.values.shape

    def bits(self) -> Any:
        if self._bits is None:
            out = self._store(self._slot + " bits", self.values.shape, np.uint16)
            _kernels().to_bits_into(self.values, out)
            self._bits = out
        return self._bits

    def rounded(self, scratch: Any | None = None) -> Any:
        """The float32 operand; into `scratch` (not kept: the caller reuses it) when given
        and not made yet, else into an array of the store's."""
        if self._rounded is not None:
            return self._rounded
        if scratch is not None:
            _kernels().round_into(self.values, scratch)
            return scratch
        out = self._store(self._slot + " rounded", self.values.shape, np.float32)
        _kernels().round_into(self.values, out)
        self._rounded = out
        return out


def _expanded(bits: Any) -> Any:
    from ..backends.bfloat16 import from_bfloat16_bits

    return from_bfloat16_bits(bits).reshape(bits.shape)


def _as_bits_operand(a: Any, kind: str, slot: str) -> Any:
    if kind == "bits":
        return a
    if kind == "operand":
        return a.bits()
    from ..backends._bf16_gemm import bits_of

    return bits_of(a, slot)


def product(ops: Any, a: Any, a_kind: str, b: Any, b_kind: str, out: Any,
            trans_a: bool = False, trans_b: bool = False, scratch: Any | None = None) -> Any:
    """out = op(a) @ op(b) by the policy's contract (mlpx.backends.bfloat16), on the route
    measured for its shape (a bfloat16 GEMM library, or the float32 GEMM on rounded
    operands: mlpx.backends._bf16_gemm).

    Each operand is "bits" (uint16 bfloat16), "rounded" (float32 holding bfloat16 values),
    "float32" (to round) or "operand" (an Operand: its forms made once per step);
    `scratch`, a float32 array of a's shape, receives a's float32 operand where the emulated
    product needs one (else a temporary is made)."""
    from ..backends import _bf16_gemm

    backend = unwrap(ops)
    m, n = out.shape
    k = a.shape[0] if trans_a else a.shape[1]
    library = _bf16_gemm.route(m, n, k, trans_a, trans_b, backend.matmul)
    if library == "rows":  # a few rows: both rounded as they are read (float32 values)
        from ..backends.bf16_rows_kernels import product as rows_product

        rows_product(_as_float32_operand(a, a_kind, scratch),
                     b.values if b_kind == "operand" else _as_float32_operand(b, b_kind, None),
                     out)
        return out
    if library != "emulated" and _bf16_gemm.library_gemm(
            library, _as_bits_operand(a, a_kind, "a"), _as_bits_operand(b, b_kind, "b"), out,
            trans_a, trans_b):
        return out
    ra = _as_float32_operand(a, a_kind, scratch)
    rb = _as_float32_operand(b, b_kind, None)
    _bf16_gemm.emulated_gemm(backend.matmul)(ra, rb, out, trans_a, trans_b)
    return out


class BF16Chain:
    """Forward and backward of a Dense stack, keeping hidden outputs as bfloat16 bits."""

    def __init__(self) -> None:
        # flat arrays sized for the largest batch seen; a smaller batch (an epoch's last)
        # uses their first elements instead of allocating arrays of its own
        self._work: list[Any] = []
        self._work_key: tuple = (None, 0)
        self._bits: dict[int, Any] = {}  # each hidden layer's y, as bfloat16 bits
        self._zbits: dict[int, Any] = {}  # its z too, where the derivative reads z
        self._weights: dict[int, Operand] = {}  # each layer's W, for the step's products
        self._kept: dict[str, Any] = {}  # the Operands' arrays, by slot (flat, grown only)
        self._inputs: list[tuple[Any, str]] = []

    def _work_arrays(self, ops: Any, rows: int, layers: list[Dense]) -> list[Any]:
        widest = max([layers[0].input_dim] + [layer.units for layer in layers])
        backend, size = unwrap(ops), rows * widest
        if self._work_key[0] is not backend or self._work_key[1] < size:
            self._work = [backend.empty((size,), np.float32) for _ in range(2)]
            self._work_key = (backend, size)
        return self._work

    def _bits_array(self, ops: Any, i: int, rows: int, units: int,
                    store: dict[int, Any] | None = None) -> Any:
        store = self._bits if store is None else store
        flat = store.get(i)
        if flat is None or flat.size < rows * units:
            flat = store[i] = unwrap(ops).empty((rows * units,), np.uint16)
        return self._view(flat, rows, units)

    def _keep(self, slot: str, shape: tuple[int, int], dtype: Any) -> Any:
        """The chain's array for `slot` (an Operand's bits or rounded values), reused from
        step to step."""
        flat = self._kept.get(slot)
        size = shape[0] * shape[1]
        if flat is None or flat.dtype != dtype or flat.size < size:
            flat = self._kept[slot] = np.empty(size, dtype)
        return self._view(flat, *shape)

    def _weight_operand(self, i: int, layer: Dense) -> Operand:
        """Layer i's weights as this step's operand (rounded or converted on first use)."""
        operand = self._weights[i] = Operand(self._keep, f"W{i}", layer.W.data, False)
        return operand

    @staticmethod
    def _view(flat: Any, rows: int, cols: int) -> Any:
        return flat[: rows * cols].reshape(rows, cols)

    def forward(self, layers: list[Dense], ops: Any, x: Any) -> Any:
        """The stack's float32 output for batch `x`; hidden outputs are kept as bits."""
        rows = x.shape[0]
        operand, product_out = self._work_arrays(ops, rows, layers)
        # the input's bits are made once, for the first product and its weight gradient's
        x, kind, last = Operand(self._keep, "x", x, False), "operand", len(layers) - 1
        self._inputs = []
        for i, layer in enumerate(layers):
            self._inputs.append((x, kind))
            scratch = self._view(operand, rows, layer.input_dim)
            act, b = layer.activation, (layer.b.data if layer.b is not None else None)
            if i == last:  # float32 output, as Dense keeps it: the loss reads it
                z = layer._buffer("z", (rows, layer.units))
                y = z if act.derivative_from_output else layer._buffer("y", z.shape)
                product(ops, x, kind, self._weight_operand(i, layer), "operand", z,
                        scratch=scratch)
                if b is not None or not activations.is_identity(act):
                    ops.bias_act(z, b, act, out=y)
                layer._x, layer._z, layer._y = None, z, y
                return y
            z = self._view(product_out, rows, layer.units)
            product(ops, x, kind, self._weight_operand(i, layer), "operand", z,
                    scratch=scratch)
            bits = self._bits_array(ops, i, rows, layer.units)
            code, alpha = activations.scalar_kernel(act), float(act.alpha or 0.0)
            if saved(act) == "z":
                zbits = self._bits_array(ops, i, rows, layer.units, self._zbits)
                _kernels().bias_act_z_bits(z, b if b is not None else _NO_BIAS, code, alpha,
                                           b is not None, zbits, bits)
            elif b is not None:
                _kernels().bias_act_bits(z, b, code, alpha, bits)
            else:
                _kernels().act_bits(z, code, alpha, bits)
            layer._x = layer._z = layer._y = None
            x, kind = bits, "bits"
        raise AssertionError("unreachable: the last layer returns")

    def backward(self, layers: list[Dense], ops: Any, grad: Any) -> None:
        """Parameter gradients for dLoss/d(output) `grad` (never overwritten) of the last
        forward."""
        rows = grad.shape[0]
        work = self._work_arrays(ops, rows, layers)
        dy, dy_work = grad, None
        for i in range(len(layers) - 1, -1, -1):
            layer = layers[i]
            if i == len(layers) - 1:
                from ..backends.bfloat16 import round_to_bfloat16

                delta = round_to_bfloat16(self._last_delta(layer, ops, dy))
            else:
                act = layer.activation
                has_bias = layer.b is not None
                bgrad = layer.b.grad if has_bias else _NO_BIAS
                y_bits, _ = self._inputs[i + 1]
                code, alpha = activations.scalar_kernel(act), float(act.alpha or 0.0)
                kept = saved(act)
                if kept == "sign":
                    _kernels().sign_backward_bits_(dy, y_bits, code, alpha, bgrad, has_bias)
                else:
                    z_bits = y_bits
                    if kept == "z":
                        z_bits = self._view(self._zbits[i], rows, layer.units)
                    _kernels().act_backward_bits_(dy, z_bits, y_bits, code, alpha, bgrad,
                                                  has_bias)
                delta = dy  # rounded in place: all the two products read
            delta = Operand(self._keep, "delta", delta, True)
            # the work array dy is not in: first the operand x, then the input gradient
            other = work[1] if dy_work is work[0] else work[0]
            x, kind = self._inputs[i]
            product(ops, x, kind, delta, "operand", layer.W.grad, trans_a=True,
                    scratch=self._view(other, rows, layer.input_dim))
            if i == 0:
                return
            dx = self._view(other, rows, layer.input_dim)
            # the weights the forward pass multiplied, rounded then
            product(ops, delta, "operand", self._weights[i], "operand", dx, trans_b=True)
            dy, dy_work = dx, other

    @staticmethod
    def _last_delta(layer: Dense, ops: Any, dy: Any) -> Any:
        """dL/dz of the last layer, its bias gradient written: Dense's own ops and order."""
        act = layer.activation
        if not act.differentiable:
            act.derivative(ops, dy, layer._z, layer._y)  # raises the explanatory error
        if activations.is_identity(act):
            if layer.b is not None:
                ops.sum_rows(dy, out=layer.b.grad)
            return dy
        delta = layer._buffer("delta", dy.shape)
        if layer.b is not None:
            ops.act_backward_bias_grad(dy, layer._z, layer._y, act, delta, layer.b.grad)
        else:
            ops.act_backward(dy, layer._z, layer._y, act, out=delta)
        return delta
