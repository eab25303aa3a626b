"""The cpu backend: NumPy (BLAS GEMMs into preallocated outputs) + Numba fused kernels.

Numba is imported on the first kernel call, not with `import mlpx`. Ops whose arrays a
kernel does not handle (row-wise activations, unusual layouts) fall back to the reference.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

import numpy as np

from .. import activations
from . import threads
from .base import Array, Backend
from .gemm_plumbing import aligned_empty, thread_scratch
from .gemm_routes import gemm_for


@functools.cache  # the import machinery once, not on every op
def _kernels() -> Any:
    from . import numba_activations

    return numba_activations


@functools.cache  # the import machinery once, not on every op
def _loss_kernels() -> Any:
    from . import numba_losses

    return numba_losses


@functools.cache  # the import machinery once, not on every op
def _optim_kernels() -> Any:
    from . import numba_optim

    return numba_optim


@functools.cache  # the import machinery once, not on every op
def _norm_kernels() -> Any:
    from . import norm_kernels

    return norm_kernels


@functools.cache
def _library_gemm(path: str) -> Any:
    """The `gemm(a, b, out, trans_a, trans_b) -> bool` of a GEMM path (None: NumPy's)."""
    if path == "onednn":
        from ._onednn import gemm

        return gemm
    if path == "mkl":
        from ._mkl import gemm

        return gemm
    return None


_bf16_local = threading.local()


def _bf16_scratch(slot: str, shape: tuple[int, ...]) -> Array:
    """This thread's float32 array of `shape` for a rounded operand (kept for the next call)."""
    return thread_scratch(_bf16_local, slot, shape, np.float32)


def _contig(*arrays: Array) -> bool:
    for a in arrays:  # a loop, not all(generator): this runs several times per op
        if not a.flags.c_contiguous:
            return False
    return True


_BLAS_CHOICES = ("auto", "onednn", "mkl", "numpy")


def _blas_choice(value: str | None) -> str:
    choice = (value or "auto").strip().lower()
    if choice not in _BLAS_CHOICES:
        raise ValueError(
            f"MLPX_BLAS={value!r} is not a GEMM path; use one of {', '.join(_BLAS_CHOICES)}"
        )
    return choice


class CPUBackend(Backend):
    name = "cpu"
    xp = np
    _blas: str | None = None  # "onednn", "mkl" or "numpy", resolved on first use
    # the float32 GEMM libraries the measured routes choose among, the default first
    _gemm_libraries: tuple[str, ...] = ("numpy",)

    # arrays -----------------------------------------------------------------------------
    def empty(self, shape: tuple[int, ...], dtype: Any) -> Array:
        return aligned_empty(shape, dtype)

    def zeros(self, shape: tuple[int, ...], dtype: Any) -> Array:
        out = aligned_empty(shape, dtype)
        out.fill(0)
        return out

    def copy(self, x: Array) -> Array:
        out = aligned_empty(x.shape, x.dtype)
        np.copyto(out, x)
        return out

    # GEMM -------------------------------------------------------------------------------
    @property
    def blas(self) -> str:
        """The float32 GEMM path in use: "onednn", "mkl" or "numpy" (NumPy's BLAS).

        Chosen on first use from MLPX_BLAS: auto (the default), onednn, mkl or numpy.
        auto's default library is oneDNN where its wheel is installed (a dependency on
        x86-64 Linux), else the faster of MKL and NumPy's BLAS on this machine when MKL is
        installed (measured once and cached; see mlpx.backends._mkl), else NumPy's BLAS;
        each float32 GEMM then runs on the default or on NumPy's BLAS, on all threads or
        one, as measured per shape class on this machine (mlpx.backends.gemm_routes). A
        library named in MLPX_BLAS runs every float32 GEMM. float64 GEMMs run on MKL when
        it is the path, else on NumPy's BLAS (oneDNN has no float64 GEMM). Assigning
        "auto", "onednn", "mkl" or "numpy" changes the path.
        """
        if self._blas is None:
            import os

            self._select_blas(os.environ.get("MLPX_BLAS"))
        return self._blas  # type: ignore[return-value]

    @blas.setter
    def blas(self, choice: str) -> None:
        self._select_blas(choice)

    def _select_blas(self, choice: str | None) -> None:
        choice = _blas_choice(choice)
        threads.apply()  # the pools are sized before the first GEMM
        if choice == "numpy":
            self._blas = "numpy"
            self._gemm_libraries = ("numpy",)
            return
        from . import _mkl, _onednn

        if choice == "onednn" and not _onednn.available():
            why = _onednn.error()
            raise RuntimeError(
                "MLPX_BLAS=onednn but oneDNN "
                + (f"could not be opened ({why})" if why else "(libdnnl) was not found")
                + "; install it with `pip install onednn-cpu-gomp` (x86-64 Linux), or set "
                "MLPX_BLAS=auto"
            )
        if choice == "mkl" and not _mkl.available():
            raise RuntimeError(
                "MLPX_BLAS=mkl but Intel MKL (libmkl_rt) was not found; install it with "
                "`pip install mlpx[mkl]` (or `pip install mkl`), or set MLPX_BLAS=numpy"
            )
        if choice in ("onednn", "mkl"):
            self._blas = choice
            self._gemm_libraries = (choice,)
        elif _onednn.available():  # auto: oneDNN or NumPy's BLAS per shape, as measured
            self._blas = "onednn"
            self._gemm_libraries = ("onednn", "numpy")
        else:  # auto without oneDNN: whichever measured faster (cached after the first time)
            self._blas = _mkl.measured_choice()
            self._gemm_libraries = tuple(dict.fromkeys((self._blas, "numpy")))

    @property
    def gemm_libraries(self) -> tuple[str, ...]:
        """The libraries float32 GEMMs are routed among (the default first)."""
        self.blas  # noqa: B018 - resolves the path on first use
        return self._gemm_libraries

    def matmul(self, a, b, out, trans_a=False, trans_b=False):
        path = self._blas or self.blas
        if out.dtype == np.float32:  # the measured route of its shape class
            gemm_for(self._gemm_libraries, a, b, out, trans_a, trans_b)(
                a, b, out, trans_a, trans_b)
            return out
        gemm = _library_gemm(path)
        if gemm is not None and gemm(a, b, out, trans_a, trans_b):
            return out
        return super().matmul(a, b, out, trans_a, trans_b)

    def matmul_bf16(self, a, b, out, trans_a=False, trans_b=False):
        # a bfloat16 GEMM library where the processor has the instructions, else emulated
        from . import _bf16_gemm

        if _bf16_gemm.gemm(a, b, out, trans_a, trans_b, self.matmul):
            return out
        if a.ndim != 2 or b.ndim != 2 or a.dtype != np.float32 or b.dtype != np.float32:
            return super().matmul_bf16(a, b, out, trans_a, trans_b)
        # the reference's rounding in one compiled pass into reused per-thread copies (NumPy's
        # takes several passes and temporaries: most of a few-row product's time)
        from .numba_bfloat16 import round_into

        ra, rb = _bf16_scratch("a", a.shape), _bf16_scratch("b", b.shape)
        round_into(a, ra)
        round_into(b, rb)
        _bf16_gemm.emulated_gemm(self.matmul)(ra, rb, out, trans_a, trans_b)
        return out

    def rounded_bf16(self, x):
        """A new float32 array of `x` rounded to bfloat16 (the contract's bits), by one
        compiled pass: what the policy's derivative reads, without NumPy's temporaries."""
        if x.ndim != 2 or x.dtype != np.float32 or not x.flags.c_contiguous:
            from .bfloat16 import round_to_bfloat16

            return round_to_bfloat16(x)
        from .numba_bfloat16 import round_into

        out = np.empty_like(x)
        round_into(x, out)
        return out

    def warmup(self, dtypes: tuple = (np.float32, np.float64)) -> None:
        """Compile (or load from the disk cache) the kernels for `dtypes` ahead of use."""
        k = _kernels()
        for dt in dtypes:
            z = np.zeros((2, 3), dt)
            b = np.zeros(3, dt)
            out = np.zeros((2, 3), dt)
            k.bias_relu(z, b, out)
            k.relu_backward(out, z, out)
            k.bias_act(z, b, activations.ACT_SIGMOID, 0.0, out)
            k.act_backward(out, z, out, activations.ACT_SIGMOID, 0.0, out)
            _loss_kernels().softmax_xent(z, np.zeros(2, np.int64), out, True)
            _optim_kernels().sgd_update(z, out, 0.1)
            k.act_forward(z, activations.ACT_SIGMOID, 0.0, out)
            k.bias_relu_(z, b)
            k.relu_backward_(out, z)
            k.bias_act_(z, b, activations.ACT_SIGMOID, 0.0)
            k.act_forward_(z, activations.ACT_SIGMOID, 0.0)
            k.relu_forward(z, out)
            k.relu_forward_(z)
            k.act_backward_(out, z, z, activations.ACT_SIGMOID, 0.0)
            k.relu_backward_bias(out, z, z, b)
            k.relu_backward_bias_(out, z, b)
            k.act_backward_bias(out, z, z, activations.ACT_SIGMOID, 0.0, out, b)
            k.act_backward_bias_(out, z, z, activations.ACT_SIGMOID, 0.0, b)

    # activations ------------------------------------------------------------------------
    # Only built-in declarations have kernels (activations.scalar_kernel /
    # activations.kernel_code); any other activation runs its own formula on the reference path.
    def bias_act(self, z, b, act, out, slopes=None):
        if activations.kernel_code(act) == activations.ACT_PRELU:
            return self._bias_prelu(z, b, act, out, slopes)
        code = activations.scalar_kernel(act)
        if code is None or not _contig(z, out) or (b is not None and not _contig(b)):
            return super().bias_act(z, b, act, out, slopes)
        k = _kernels()
        if b is None:  # a Dense layer without bias: f(z) alone
            if code == activations.ACT_IDENTITY:
                if out is not z:
                    out[...] = z
            elif code == activations.ACT_RELU:  # branch-free: vectorises, unlike the generic switch
                k.relu_forward_(z) if out is z else k.relu_forward(z, out)
            elif out is z:  # aliased arguments would stop vectorisation
                k.act_forward_(z, code, act.alpha)
            else:
                k.act_forward(z, code, act.alpha, out)
            return out
        if out is z:
            if code == activations.ACT_RELU:
                k.bias_relu_(z, b)
            else:
                k.bias_act_(z, b, code, act.alpha)
        elif code == activations.ACT_RELU:
            k.bias_relu(z, b, out)
        else:
            k.bias_act(z, b, code, act.alpha, out)
        return out

    def _bias_prelu(self, z, b, act, out, slopes):
        if slopes is None or not _contig(z, out, slopes) or (
                b is not None and not _contig(b)):
            return super().bias_act(z, b, act, out, slopes)
        if b is None:  # the PReLU layer, or a Dense layer without bias
            _kernels().prelu_forward(z, slopes, out)
        else:
            _kernels().bias_prelu(z, b, slopes, out)
        return out

    def act_backward(self, dy, z, y, act, out, slopes=None):
        code = activations.scalar_kernel(act)
        if code is None or code == activations.ACT_IDENTITY or not _contig(dy, z, y, out):
            return super().act_backward(dy, z, y, act, out, slopes)
        if not act.differentiable:
            act.derivative(self, dy, z, y)  # raises the explanatory error
        k = _kernels()
        if out is dy:  # Dense writes delta over dy: the in-place twins vectorise
            if code == activations.ACT_RELU:
                k.relu_backward_(dy, z)
            else:
                k.act_backward_(dy, z, y, code, act.alpha)
        elif code == activations.ACT_RELU:
            k.relu_backward(dy, z, out)
        else:
            k.act_backward(dy, z, y, code, act.alpha, out)
        return out

    def act_backward_bias_grad(self, dy, z, y, act, out, bias_grad):
        """One pass for delta and the bias gradient (sums in `sum_rows`' order and dtype)."""
        code = activations.scalar_kernel(act)
        if (code is None or code == activations.ACT_IDENTITY
                or bias_grad.dtype != out.dtype or not _contig(dy, z, y, out, bias_grad)):
            return super().act_backward_bias_grad(dy, z, y, act, out, bias_grad)
        if not act.differentiable:
            act.derivative(self, dy, z, y)  # raises the explanatory error
        k = _kernels()
        if out is dy:
            if code == activations.ACT_RELU:
                k.relu_backward_bias_(dy, z, bias_grad)
            else:
                k.act_backward_bias_(dy, z, y, code, act.alpha, bias_grad)
        elif code == activations.ACT_RELU:
            k.relu_backward_bias(dy, z, out, bias_grad)
        else:
            k.act_backward_bias(dy, z, y, code, act.alpha, out, bias_grad)
        return out

    def prelu_backward(self, dy, z, slopes, out, dslopes):
        """Fused PReLU derivative and slope gradient (one pass)."""
        _kernels().prelu_backward(dy, z, slopes, out, dslopes)
        return out

    # dropout: Philox in one compiled loop (the reference takes ~100 NumPy calls per mask)
    def dropout_mask(self, seed, stream, step, p, mask, offset=0):
        if not _contig(mask) or mask.dtype != np.uint8:
            return super().dropout_mask(seed, stream, step, p, mask, offset)
        from ..random import drop_threshold
        from .numba_random import dropout_mask

        m32, u = 0xFFFFFFFF, np.uint64
        dropout_mask(
            u(int(seed) & m32), u((int(seed) >> 32) & m32), u(int(stream) & m32),
            u(int(step) & m32), u((int(step) >> 32) & m32), u(drop_threshold(p)),
            np.int64(offset), mask.reshape(-1),
        )
        return mask

    def dropout_apply(self, x, mask, scale, out):
        if not _contig(x, mask, out):
            return super().dropout_apply(x, mask, scale, out)
        from .numba_random import dropout_apply

        dropout_apply(x, mask, float(scale), out)
        return out

    # losses -----------------------------------------------------------------------------
    def softmax_cross_entropy(self, logits, labels, grad=None):
        if not _contig(logits):
            return super().softmax_cross_entropy(logits, labels, grad)
        g = grad if grad is not None else logits  # never written when write_grad is False
        return np.float64(_loss_kernels().softmax_xent(logits, labels, g, grad is not None))

    def _elementwise_loss(self, kernel, y, t, grad, fallback):
        if not _contig(y, t) or y.shape != t.shape:
            return fallback(y, t, grad)
        g = grad if grad is not None else y
        return np.float64(kernel(y, t, g, grad is not None))

    def bce_with_logits(self, logits, targets, grad=None):
        return self._elementwise_loss(
            _loss_kernels().bce_logits, logits, targets, grad, super().bce_with_logits
        )

    def mse(self, y, t, grad=None):
        return self._elementwise_loss(_loss_kernels().mse, y, t, grad, super().mse)

    def l1(self, y, t, grad=None):
        return self._elementwise_loss(_loss_kernels().l1, y, t, grad, super().l1)

    # optimisers ---------------------------------------------------------------------------
    # Normalisation: one pass of the reference's float64 expression (norm_kernels.py), the
    # same bits without its temporaries
    def batchnorm_inference(self, x, gamma, beta, mean, var, eps, out, xhat):
        if x.ndim != 2 or not _contig(x, gamma, beta, mean, var, out, xhat):
            return super().batchnorm_inference(x, gamma, beta, mean, var, eps, out, xhat)
        _norm_kernels().batchnorm_inference(x, gamma, beta, mean, var, float(eps), out, xhat)
        return out

    def layernorm_forward(self, x, gamma, beta, eps, out, xhat, rstd):
        if x.ndim != 2 or not _contig(x, gamma, beta, out, xhat, rstd):
            return super().layernorm_forward(x, gamma, beta, eps, out, xhat, rstd)
        _norm_kernels().layernorm_forward(x, gamma, beta, float(eps), out, xhat, rstd)
        return out

    def sgd_update(self, param, grad, lr):
        if not _contig(param, grad):
            return super().sgd_update(param, grad, lr)
        _optim_kernels().sgd_update(param, grad, float(lr))
        return param

    # Stateful optimisers, penalties, clipping: Numba kernels in numba_optim.py (one pass).
    # Unused state arrays (None in the reference) are replaced by `grad`, which the kernels
    # then neither read nor write, so one compiled signature serves every configuration.
    def sgd_momentum_update(self, param, grad, buf, lr, momentum, dampening, nesterov,
                            weight_decay):
        b = grad if buf is None or momentum == 0.0 else buf
        if not _contig(param, grad, b):
            return super().sgd_momentum_update(
                param, grad, buf, lr, momentum, dampening, nesterov, weight_decay
            )
        _optim_kernels().sgd_momentum_update(
            param, grad, b, float(lr), float(momentum), float(dampening), bool(nesterov),
            float(weight_decay),
        )
        return param

    def adagrad_update(self, param, grad, sum_sq, clr, weight_decay, eps):
        if not _contig(param, grad, sum_sq):
            return super().adagrad_update(param, grad, sum_sq, clr, weight_decay, eps)
        _optim_kernels().adagrad_update(
            param, grad, sum_sq, float(clr), float(weight_decay), float(eps)
        )
        return param

    def rmsprop_update(self, param, grad, square_avg, grad_avg, buf, lr, alpha, eps,
                       weight_decay, momentum, centered):
        ga = grad_avg if centered and grad_avg is not None else grad
        b = buf if momentum > 0.0 and buf is not None else grad
        if not _contig(param, grad, square_avg, ga, b):
            return super().rmsprop_update(
                param, grad, square_avg, grad_avg, buf, lr, alpha, eps, weight_decay,
                momentum, centered,
            )
        _optim_kernels().rmsprop_update(
            param, grad, square_avg, ga, b, float(lr), float(alpha), float(eps),
            float(weight_decay), float(momentum), bool(centered),
        )
        return param

    def adam_update(self, param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step,
                    decoupled):
        if not _contig(param, grad, m, v):
            return super().adam_update(
                param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step, decoupled
            )
        # step as a float: beta**step then uses pow(), exactly as the reference's Python pow
        _optim_kernels().adam_update(
            param, grad, m, v, float(lr), float(beta1), float(beta2), float(eps),
            float(weight_decay), float(step), bool(decoupled),
        )
        return param

    def sum_abs(self, x):
        if not _contig(x):
            return super().sum_abs(x)
        return np.float64(_optim_kernels().sum_abs(x))

    def add_penalty_grad(self, param, grad, l1, l2):
        if not _contig(param, grad):
            return super().add_penalty_grad(param, grad, l1, l2)
        _optim_kernels().add_penalty_grad(param, grad, float(l1), float(l2))
        return grad

    def scale_(self, x, factor):
        if not _contig(x):
            return super().scale_(x, factor)
        f = float(factor)  # a host value already on the cpu backend: no sync to avoid
        if f != 1.0:  # the common case of clip_norm: the norm was below the limit
            _optim_kernels().scale_(x, f)
        return x

    def global_norm(self, arrays):
        """Numba sum of squares per array (no float64 copies of float32 gradients)."""
        if not all(_contig(a) for a in arrays):
            return super().global_norm(arrays)
        k = _optim_kernels()
        return np.sqrt(np.float64(sum(k.sum_squares(a) for a in arrays)))

    def clip_(self, x, lo, hi):
        if not _contig(x):
            return super().clip_(x, lo, hi)
        _optim_kernels().clip_(x, float(lo), float(hi))
        return x
