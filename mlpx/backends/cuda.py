"""The cuda backend: CuPy arrays on one GPU, cuBLAS GEMMs, fused CUDA C kernels.

The kernels (`kernels/*.cu`) are the twins of the Numba kernels of the cpu backend: the same
expression per element, evaluated in double and rounded once on store, compiled without FMA
contraction. They are compiled with NVRTC on first use and cached on disk by CuPy
(`_cuda_kernels.py`). Every op the kernels do not cover, and every array layout they do not
handle, falls back to the reference implementation in `base.py`, which runs on CuPy as is.

GEMMs run in plain FP32 (or FP64) by default. TF32 tensor cores are used only when asked for
with `CUDABackend(device, allow_tf32=True)`; `allow_tf32` stays readable on the backend so
benchmarks and logs can report it.
Under dtype="mixed_bfloat16" the products go through `matmul_bf16` instead: operands rounded
to bfloat16 by a kernel, then cuBLAS GemmEx on tensor cores (mlpx.backends._cuda_bf16).

No op here reads a device value back to the host except `to_numpy`, `to_float` and
`all_finite`: losses return 0-d device arrays, so a training step never synchronises.

CuPy is imported in `CUDABackend.__init__`, not at module import: this module can be imported
(e.g. to inspect the API) on machines without CuPy.
"""

from __future__ import annotations

import functools
import inspect
import math
import threading
from typing import Any

import numpy as np

from .. import activations
from ..errors import BackendUnavailableError
from . import _cuda_bf16
from . import _cuda_kernels as kernels
from .base import Array, Backend

_MAX_SCRATCH = 16


class GPUOutOfMemoryError(MemoryError):
    """An array did not fit in the GPU's free memory; the message says what would fit."""


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def _on_device(fn):
    """Run the op with this backend's GPU as CuPy's current device."""

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        if self._single_gpu:  # the only GPU is always the current one: skip the switch
            return fn(self, *args, **kwargs)
        with self._device:
            return fn(self, *args, **kwargs)

    return wrapper


class CUDABackend(Backend):
    """CuPy on GPU `device`. `allow_tf32=True` lets float32 GEMMs use TF32 tensor cores."""

    name = "cuda"
    xp: Any = None  # cupy, set in __init__ (CuPy is imported only when a backend is built)

    def __init__(self, device: int = 0, allow_tf32: bool = False) -> None:
        if isinstance(device, bool) or not isinstance(device, (int, np.integer)) or device < 0:
            raise ValueError(f"device must be a GPU number >= 0, got {device!r}")
        from . import cuda_unavailable_reason  # the registry's messages, one wording

        reason = cuda_unavailable_reason(int(device))
        if reason:
            raise BackendUnavailableError(reason)
        import cupy

        count = int(cupy.cuda.runtime.getDeviceCount())
        if device >= count:
            raise ValueError(f"GPU {device} was asked for, but only {count} GPU(s) exist")
        self.xp = cupy
        self.device_id = int(device)
        self.device = f"cuda:{self.device_id}"
        self._device = cupy.cuda.Device(self.device_id)
        self._single_gpu = count == 1
        self.allow_tf32 = bool(allow_tf32)
        self._scratch: dict[tuple[str, int], Array] = {}
        self._compute_types = self._gemm_compute_types()
        self.compute_capability = str(self._device.compute_capability)
        self._bf16_local = threading.local()  # per thread: a re-entrant predict's own operands

    def __repr__(self) -> str:
        tf32 = ", allow_tf32=True" if self.allow_tf32 else ""
        return f"<mlpx backend 'cuda' on GPU {self.device_id}{tf32}>"

    @property
    def gemm_precision(self) -> str:
        """"tf32" or "fp32": how float32 GEMMs are computed (for benchmark reports)."""
        return "tf32" if self.allow_tf32 else "fp32"

    def _gemm_compute_types(self) -> tuple[Any, Any] | None:
        """CuPy's float32 GEMM compute-type switch (a private CuPy API, hence guarded)."""
        try:
            from cupy._core import _routines_linalg as rl

            plain = getattr(rl, "COMPUTE_TYPE_FP32", rl.COMPUTE_TYPE_DEFAULT)
            return rl, (rl.COMPUTE_TYPE_TF32 if self.allow_tf32 else plain)
        except (ImportError, AttributeError):  # pragma: no cover - depends on CuPy version
            if self.allow_tf32:
                raise RuntimeError(
                    "allow_tf32=True needs CuPy's compute-type switch, which this CuPy "
                    "version lacks; set the environment variable CUPY_TF32=1 instead"
                ) from None
            return None

    # ------------------------------------------------------------------ arrays and transfer
    def _out_of_memory(self, shape: tuple[int, ...], dtype: Any) -> GPUOutOfMemoryError:
        cp = self.xp
        free, total = self._device.mem_info
        free += cp.get_default_memory_pool().free_bytes()  # cached blocks are reusable
        itemsize = np.dtype(dtype).itemsize
        shape = tuple(int(s) for s in shape)
        need = itemsize * math.prod(shape)
        row = itemsize * math.prod(shape[1:]) if len(shape) > 1 else itemsize
        rows = int(free // row) if row else 0
        return GPUOutOfMemoryError(
            f"GPU {self.device_id} is out of memory: a {shape} {np.dtype(dtype).name} array "
            f"needs {_fmt_bytes(need)}, but only {_fmt_bytes(free)} of {_fmt_bytes(total)} "
            f"are free. The largest batch that would fit is about {rows} rows of this array "
            "alone; a training step also keeps each layer's activations and gradients for the "
            f"batch, so use batch_size well below {rows} (halve it until it fits). Data that "
            "does not fit on the GPU as a whole is streamed from host memory by "
            "fit(..., stream_data=True) (the default when it takes more than half the free "
            "memory)"
        )

    def _alloc(self, make, shape: tuple[int, ...], dtype: Any) -> Array:
        try:
            return make()
        except self.xp.cuda.memory.OutOfMemoryError:
            raise self._out_of_memory(shape, dtype) from None

    def asarray(self, x: Any, dtype: Any = None) -> Array:
        """A C-contiguous CuPy array on this GPU from NumPy, CuPy, CUDA-array-interface or
        DLPack input (no copy when `x` already is one)."""
        cp = self.xp
        if isinstance(x, cp.ndarray):
            if x.device.id != self.device_id:
                x = self._alloc(x.copy, x.shape, x.dtype)  # copy() lands on the current GPU
        elif hasattr(x, "__cuda_array_interface__"):
            x = cp.asarray(x)
        elif hasattr(x, "__dlpack__") and not isinstance(x, np.ndarray):
            dev_type = int(x.__dlpack_device__()[0]) if hasattr(x, "__dlpack_device__") else 1
            if dev_type in (2, 13):  # kDLCUDA, kDLCUDAManaged: zero-copy on the GPU
                x = cp.from_dlpack(x)
            else:  # host memory: through NumPy, then one copy to the GPU below
                try:
                    x = np.from_dlpack(x)
                except (TypeError, ValueError, RuntimeError, BufferError):
                    x = np.asarray(x)
        if not isinstance(x, cp.ndarray):
            host = np.asarray(x, dtype=dtype)
            x = self._alloc(lambda: cp.asarray(host), host.shape, host.dtype)
        if dtype is not None and x.dtype != np.dtype(dtype):
            x = self._alloc(lambda: x.astype(dtype), x.shape, dtype)
        if not x.flags.c_contiguous:
            x = self._alloc(lambda: cp.ascontiguousarray(x), x.shape, x.dtype)
        return x

    def to_numpy(self, x: Any) -> np.ndarray:
        if isinstance(x, self.xp.ndarray):
            return x.get()
        return np.asarray(x)

    def empty(self, shape: tuple[int, ...], dtype: Any) -> Array:
        return self._alloc(lambda: self.xp.empty(shape, dtype=dtype), shape, dtype)

    def zeros(self, shape: tuple[int, ...], dtype: Any) -> Array:
        return self._alloc(lambda: self.xp.zeros(shape, dtype=dtype), shape, dtype)

    def copy_into(self, dst: Array, src: Array) -> None:
        if not isinstance(src, self.xp.ndarray):
            src = self.asarray(src)
        dst[...] = src

    def to_float(self, x: Array) -> float:
        """Read a 0-d device value on the host: the one place this backend synchronises."""
        if isinstance(x, self.xp.ndarray):
            return float(x.get())
        return float(x)

    def synchronize(self) -> None:
        """Wait until all work queued on this GPU has finished."""
        self._device.synchronize()

    # ------------------------------------------------------------------ training data
    def _free_bytes(self) -> int:
        free, _ = self._device.mem_info
        return int(free) + int(self.xp.get_default_memory_pool().free_bytes())

    def fits_on_device(self, nbytes: int) -> bool:
        """True when `nbytes` take at most RESIDENT_FRACTION (half) of the free GPU memory
        (CuPy's cached pool blocks count as free): the rest is kept for the weights, the
        optimiser state, the activations and gradients of a batch and cuBLAS workspace."""
        from .batches import RESIDENT_FRACTION

        return int(nbytes) <= RESIDENT_FRACTION * self._free_bytes()

    def _stream_runtime(self) -> Any:
        from .batches import CupyStreamRuntime

        return CupyStreamRuntime()

    def batch_source(self, X, y, batch_size, dtype, stream=None):
        """Resident batches when the data fits (or `stream=False`); batches streamed from
        pinned host memory, double buffered on a copy stream, when it does not (or
        `stream=True`). Data given as device arrays is used where it is."""
        from .batches import ResidentBatches, StreamedBatches, check_stream_data, data_nbytes

        stream = check_stream_data(stream)
        on_host = not hasattr(X, "__cuda_array_interface__")  # CuPy arrays have it
        if stream is None:
            stream = on_host and not self.fits_on_device(data_nbytes(X, y, dtype))
        if stream and on_host:
            y_host = self.to_numpy(y)
            return StreamedBatches(self, X, y_host, batch_size, dtype, self._stream_runtime())
        return ResidentBatches(self, X, y, batch_size, dtype)

    def warmup(self, dtypes: tuple = (np.float32, np.float64)) -> None:
        """Compile every kernel file now (NVRTC, or the disk cache) and load every kernel, so
        the first training step does not pay for compilation. `dtypes` must be kernel dtypes
        (float32, float64); each file holds the kernels of both."""
        for dt in dtypes:
            if kernels.suffix(dt) is None:
                raise ValueError(f"the CUDA kernels exist for float32 and float64, not {dt}")
        for filename in kernels.KERNEL_FILES:
            for name in kernels.kernel_names(filename):
                kernels.get_kernel(self.device_id, filename, name)

    def erf(self, x: Array) -> Array:
        from cupyx.scipy.special import erf

        return erf(x)

    # ------------------------------------------------------------------------------- GEMM
    def matmul(
        self, a: Array, b: Array, out: Array, trans_a: bool = False, trans_b: bool = False
    ) -> Array:
        """out = op(a) @ op(b) with cuBLAS (transposes are BLAS flags, not copies)."""
        if out.dtype == np.float32 and self._compute_types is not None:
            rl, want = self._compute_types
            if rl.get_compute_type(np.float32) != want:  # CuPy's switch is process-wide
                rl.set_compute_type(np.float32, want)
        self.xp.matmul(a.T if trans_a else a, b.T if trans_b else b, out=out)
        return out

    def check_bfloat16(self) -> None:
        """Raise when this GPU cannot run the "mixed_bfloat16" products (before a model uses
        them, so the error names the GPU rather than a failed cuBLAS call)."""
        reason = _cuda_bf16.unsupported_reason(self.compute_capability, f"GPU {self.device_id}")
        if reason:
            raise BackendUnavailableError(reason)

    def matmul_bf16(self, a, b, out, trans_a=False, trans_b=False):
        """out = op(a) @ op(b) under "mixed_bfloat16": both operands rounded to bfloat16 by
        the to_bfloat16 kernel (the reference's bits), then one cuBLAS GemmEx with float32
        accumulation on tensor cores (mlpx.backends._cuda_bf16). Other layouts and dtypes
        take the reference path (rounded float32 copies, the float32 GEMM): same contract."""
        arrays_ok = all(
            isinstance(x, self.xp.ndarray) and x.dtype == np.float32 and x.ndim == 2
            and x.flags.c_contiguous for x in (a, b, out)
        )
        if not arrays_ok:
            return super().matmul_bf16(a, b, out, trans_a, trans_b)
        m, n, k, kb = _cuda_bf16.product_shape(a.shape, b.shape, trans_a, trans_b)
        if k != kb or out.shape != (m, n):
            return super().matmul_bf16(a, b, out, trans_a, trans_b)  # the reference's error
        if m * n == 0:
            return out
        if k == 0:
            out[...] = 0
            return out
        a16 = self._bfloat16_operand("a", a)
        b16 = self._bfloat16_operand("b", b)
        self._gemm_bf16(_cuda_bf16.cublas_args(a.shape, b.shape, trans_a, trans_b), a16, b16,
                        out)
        return out

    def _bfloat16_operand(self, slot: str, x: Array) -> Array:
        """x rounded to bfloat16 bits (flat uint16) in this thread's buffer `slot`, which
        grows to the largest operand and is reused: stream order makes reuse safe."""
        buffers = self._bf16_local.__dict__
        buf = buffers.get(slot)
        if buf is None or buf.size < x.size:
            buffers[slot] = None  # free the old buffer before allocating a larger one
            buf = buffers[slot] = self.empty((x.size,), np.uint16)
        bits = buf[: x.size]
        self._launch("bfloat16.cu", "to_bfloat16", kernels.grid(x.size),
                     (x, bits, np.int64(x.size)))
        return bits

    def _gemm_bf16(self, args: _cuda_bf16.GemmArgs, a16: Array, b16: Array, out: Array) -> None:
        _cuda_bf16.gemm(args, a16, b16, out)

    # -------------------------------------------------------------------- kernel plumbing
    def _fusable(self, *arrays: Array) -> str | None:
        """The kernel suffix ("f32"/"f64") when every array is a C-contiguous CuPy array of
        one supported dtype; None means: use the reference implementation."""
        first = arrays[0]
        sfx = kernels.suffix(first.dtype) if isinstance(first, self.xp.ndarray) else None
        if sfx is None:
            return None
        for a in arrays:
            if not isinstance(a, self.xp.ndarray) or a.dtype != first.dtype:
                return None
            if not a.flags.c_contiguous:
                return None
        return sfx

    def _launch(self, filename: str, name: str, blocks: int, args: tuple) -> None:
        kernels.get_kernel(self.device_id, filename, name)((blocks,), (kernels.BLOCK,), args)

    def _scratch_f64(self, tag: str, size: int) -> Array:
        """A reused float64 work vector (partial sums); stream order makes reuse safe."""
        key = (tag, size)
        arr = self._scratch.get(key)
        if arr is None:
            if len(self._scratch) >= _MAX_SCRATCH:
                self._scratch.clear()
            arr = self.empty((size,), np.float64)
            self._scratch[key] = arr
        return arr

    # ------------------------------------------------------------------------ activations
    # Only built-in declarations have kernels (activations.scalar_kernel /
    # activations.kernel_code); any other activation runs its own formula on the reference path.
    def bias_act(self, z, b, act, out, slopes=None):
        prelu = activations.kernel_code(act) == activations.ACT_PRELU
        code = activations.scalar_kernel(act)
        if z.ndim != 2 or (code is None and not (prelu and slopes is not None)):
            return super().bias_act(z, b, act, out, slopes)
        n, m = z.shape
        extra = (slopes,) if prelu else ()
        sfx = self._fusable(z, out, *extra, *((b,) if b is not None else ()))
        if sfx is None or out.shape != z.shape or (b is not None and b.size != m) or (
                prelu and slopes.size != m):
            return super().bias_act(z, b, act, out, slopes)
        if n * m == 0:
            return out
        blocks = kernels.grid(n * m)
        nn, mm = np.int64(n), np.int64(m)
        if b is None:  # the PReLU layer, or a Dense layer without bias: f(z) alone
            if prelu:
                self._launch("activations.cu", f"prelu_fwd_{sfx}", blocks,
                             (z, slopes, out, nn, mm))
            elif code == activations.ACT_IDENTITY:
                if out is not z:
                    out[...] = z
            else:
                self._launch(
                    "activations.cu", f"act_fwd_{sfx}", blocks,
                    (z, out, np.int64(n * m), np.int32(code), np.float64(act.alpha)),
                )
        elif code == activations.ACT_RELU:
            self._launch("activations.cu", f"bias_relu_{sfx}", blocks, (z, b, out, nn, mm))
        elif prelu:
            self._launch(
                "activations.cu", f"bias_prelu_{sfx}", blocks, (z, b, slopes, out, nn, mm)
            )
        else:
            self._launch(
                "activations.cu", f"bias_act_{sfx}", blocks,
                (z, b, out, nn, mm, np.int32(code), np.float64(act.alpha)),
            )
        return out

    def act_backward(self, dy, z, y, act, out, slopes=None):
        code = activations.scalar_kernel(act)
        if code is None or code == activations.ACT_IDENTITY:
            return super().act_backward(dy, z, y, act, out, slopes)
        sfx = self._fusable(dy, z, y, out)
        if sfx is None or not (dy.shape == z.shape == y.shape == out.shape):
            return super().act_backward(dy, z, y, act, out, slopes)
        if not act.differentiable:
            act.derivative(self, dy, z, y)  # raises the explanatory error
        size = np.int64(z.size)
        if z.size == 0:
            return out
        blocks = kernels.grid(z.size)
        if code == activations.ACT_RELU:
            self._launch("activations.cu", f"relu_bwd_{sfx}", blocks, (dy, z, out, size))
        else:
            self._launch(
                "activations.cu", f"act_bwd_{sfx}", blocks,
                (dy, z, y, out, size, np.int32(code), np.float64(act.alpha)),
            )
        return out

    def prelu_backward(self, dy, z, slopes, out, dslopes):
        """Fused PReLU derivative and slope gradient: one thread per (chunk of PRELU_CHUNK
        rows, unit) writes the derivative and the chunk's partial sum, then one thread per
        unit adds the chunks in order (the order every backend uses: bitwise equal)."""
        sfx = self._fusable(dy, z, slopes, out, dslopes)
        if sfx is None or z.ndim != 2 or dy.shape != z.shape or out.shape != z.shape:
            return super().prelu_backward(dy, z, slopes, out, dslopes)
        n, m = z.shape
        if slopes.size != m or dslopes.size != m or n * m == 0:
            return super().prelu_backward(dy, z, slopes, out, dslopes)
        chunks = -(-n // activations.PRELU_CHUNK)
        partial = self._scratch_f64("prelu", chunks * m)
        self._launch(
            "activations.cu", f"prelu_bwd_{sfx}", kernels.grid(chunks * m),
            (dy, z, slopes, out, partial, np.int64(n), np.int64(m)),
        )
        self._launch(
            "activations.cu", f"prelu_dslopes_{sfx}", kernels.grid(m),
            (partial, dslopes, np.int64(chunks), np.int64(m)),
        )
        return out

    # ----------------------------------------------------------------------------- losses
    def softmax_cross_entropy(self, logits, labels, grad=None):
        cp = self.xp
        sfx = self._fusable(logits, *((grad,) if grad is not None else ()))
        ok = (
            sfx is not None and logits.ndim == 2 and logits.size > 0
            and isinstance(labels, cp.ndarray) and labels.dtype == np.int64
            and labels.shape == (logits.shape[0],) and labels.flags.c_contiguous
            and (grad is None or grad.shape == logits.shape)
        )
        if not ok:
            return super().softmax_cross_entropy(logits, labels, grad)
        n, m = logits.shape
        rows = self._scratch_f64("rows", n)
        g = grad if grad is not None else logits  # never written when write_grad is 0
        args = (logits, labels, g, rows, np.int64(n), np.int64(m), np.int32(grad is not None))
        if m > kernels.SOFTMAX_WIDE:  # a group of SOFTMAX_WIDE threads per row
            per_block = kernels.BLOCK // kernels.SOFTMAX_WIDE
            blocks = max(1, min(-(-n // per_block), kernels.MAX_BLOCKS))
            self._launch("losses.cu", f"softmax_xent_wide_{sfx}", blocks, args)
        else:  # one thread per row
            self._launch("losses.cu", f"softmax_xent_{sfx}", kernels.grid(n), args)
        return rows.sum() * (1.0 / n)

    def _elementwise_loss(self, kernel: str, y, t, grad, fallback):
        sfx = self._fusable(y, t, *((grad,) if grad is not None else ()))
        if sfx is None or y.shape != t.shape or y.size == 0 or (
            grad is not None and grad.shape != y.shape
        ):
            return fallback(y, t, grad)
        blocks = kernels.grid(y.size)
        partial = self._scratch_f64("partial", blocks)
        g = grad if grad is not None else y
        self._launch(
            "losses.cu", f"{kernel}_{sfx}", blocks,
            (y, t, g, partial, np.int64(y.size), np.int32(grad is not None)),
        )
        return partial.sum() / y.size

    def bce_with_logits(self, logits, targets, grad=None):
        return self._elementwise_loss(
            "bce_logits", logits, targets, grad, super().bce_with_logits
        )

    def mse(self, y, t, grad=None):
        return self._elementwise_loss("mse", y, t, grad, super().mse)

    def l1(self, y, t, grad=None):
        return self._elementwise_loss("l1", y, t, grad, super().l1)

    # ------------------------------------------------------------------------- optimisers
    # Unused state arrays (None in the reference) are replaced by `grad`, which the kernels
    # then neither read nor write: the same convention as the cpu backend.
    def sgd_update(self, param, grad, lr):
        sfx = self._fusable(param, grad)
        if sfx is None or param.shape != grad.shape:
            return super().sgd_update(param, grad, lr)
        if param.size:
            self._launch(
                "optim.cu", f"sgd_update_{sfx}", kernels.grid(param.size),
                (param, grad, np.int64(param.size), np.float64(lr)),
            )
        return param

    def sgd_momentum_update(self, param, grad, buf, lr, momentum, dampening, nesterov,
                            weight_decay):
        b = grad if buf is None or momentum == 0.0 else buf
        sfx = self._fusable(param, grad, b)
        if sfx is None or not (param.shape == grad.shape == b.shape):
            return super().sgd_momentum_update(
                param, grad, buf, lr, momentum, dampening, nesterov, weight_decay
            )
        if param.size:
            self._launch(
                "optim.cu", f"sgd_momentum_update_{sfx}", kernels.grid(param.size),
                (param, grad, b, np.int64(param.size), np.float64(lr), np.float64(momentum),
                 np.float64(dampening), np.int32(bool(nesterov)), np.float64(weight_decay)),
            )
        return param

    def adagrad_update(self, param, grad, sum_sq, clr, weight_decay, eps):
        sfx = self._fusable(param, grad, sum_sq)
        if sfx is None or not (param.shape == grad.shape == sum_sq.shape):
            return super().adagrad_update(param, grad, sum_sq, clr, weight_decay, eps)
        if param.size:
            self._launch(
                "optim.cu", f"adagrad_update_{sfx}", kernels.grid(param.size),
                (param, grad, sum_sq, np.int64(param.size), np.float64(clr),
                 np.float64(weight_decay), np.float64(eps)),
            )
        return param

    def rmsprop_update(self, param, grad, square_avg, grad_avg, buf, lr, alpha, eps,
                       weight_decay, momentum, centered):
        ga = grad_avg if centered and grad_avg is not None else grad
        b = buf if momentum > 0.0 and buf is not None else grad
        sfx = self._fusable(param, grad, square_avg, ga, b)
        if sfx is None or not (param.shape == grad.shape == square_avg.shape == ga.shape
                               == b.shape):
            return super().rmsprop_update(
                param, grad, square_avg, grad_avg, buf, lr, alpha, eps, weight_decay,
                momentum, centered,
            )
        if param.size:
            self._launch(
                "optim.cu", f"rmsprop_update_{sfx}", kernels.grid(param.size),
                (param, grad, square_avg, ga, b, np.int64(param.size), np.float64(lr),
                 np.float64(alpha), np.float64(eps), np.float64(weight_decay),
                 np.float64(momentum), np.int32(bool(centered))),
            )
        return param

    def adam_update(self, param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step,
                    decoupled):
        sfx = self._fusable(param, grad, m, v)
        if sfx is None or not (param.shape == grad.shape == m.shape == v.shape):
            return super().adam_update(
                param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step, decoupled
            )
        # the step-dependent scalars with the reference's own Python expressions
        step_size = lr / (1.0 - beta1**step)
        bc2_sqrt = math.sqrt(1.0 - beta2**step)
        if param.size:
            self._launch(
                "optim.cu", f"adam_update_{sfx}", kernels.grid(param.size),
                (param, grad, m, v, np.int64(param.size), np.float64(lr), np.float64(beta1),
                 np.float64(beta2), np.float64(eps), np.float64(weight_decay),
                 np.float64(step_size), np.float64(bc2_sqrt), np.int32(bool(decoupled))),
            )
        return param

    # ----------------------------------------------------------- regularisation, clipping
    def sum_abs(self, x):
        sfx = self._fusable(x)
        if sfx is None or x.size == 0:
            return super().sum_abs(x)
        blocks = kernels.grid(x.size)
        partial = self._scratch_f64("abs", blocks)
        self._launch("optim.cu", f"sum_abs_{sfx}", blocks, (x, partial, np.int64(x.size)))
        return partial.sum()

    def _sum_squares_into(self, arrays, sfx: str, take_sqrt: bool):
        """One sum_squares launch per array into a shared partials vector, then one
        sum_partials launch: a fresh 0-d float64 device array, no host read."""
        blocks = [kernels.grid(a.size) for a in arrays]
        partial = self._scratch_f64("sumsq", max(1, sum(blocks)))
        offset = 0
        for a, nb in zip(arrays, blocks, strict=True):
            if a.size:
                self._launch(
                    "optim.cu", f"sum_squares_{sfx}", nb,
                    (a, partial[offset : offset + nb], np.int64(a.size)),
                )
                offset += nb
        out = self.empty((), np.float64)
        self._launch(
            "optim.cu", "sum_partials", 1,
            (partial, np.int64(offset), out, np.int32(bool(take_sqrt))),
        )
        return out

    def sum_squares(self, x):
        sfx = self._fusable(x)
        if sfx is None:
            return super().sum_squares(x)
        return self._sum_squares_into([x], sfx, take_sqrt=False)

    def global_norm(self, arrays):
        """sqrt(sum of squares) of every array: len(arrays) + 1 launches, no float64 copies
        of float32 gradients, no host read."""
        arrays = list(arrays)
        sfx = self._fusable(*arrays) if arrays else None
        if sfx is None:
            return super().global_norm(arrays)
        return self._sum_squares_into(arrays, sfx, take_sqrt=True)

    def clip_scale(self, norm, max_norm):
        cp = self.xp
        if (not isinstance(norm, cp.ndarray) or norm.dtype != np.float64 or norm.size != 1
                or not norm.flags.c_contiguous):
            return super().clip_scale(norm, max_norm)
        out = self.empty((), np.float64)
        self._launch("optim.cu", "clip_scale", 1, (norm, np.float64(max_norm), out))
        return out

    def add_penalty_grad(self, param, grad, l1, l2):
        sfx = self._fusable(param, grad)
        if sfx is None or param.shape != grad.shape:
            return super().add_penalty_grad(param, grad, l1, l2)
        if param.size:
            self._launch(
                "optim.cu", f"add_penalty_grad_{sfx}", kernels.grid(param.size),
                (param, grad, np.int64(param.size), np.float64(l1), np.float64(l2)),
            )
        return grad

    def scale_(self, x, factor):
        """x *= factor; a device `factor` (e.g. a clipping scale) is read on the device."""
        cp = self.xp
        sfx = self._fusable(x)
        on_device = isinstance(factor, cp.ndarray)
        if sfx is None or (on_device and factor.size != 1):
            return super().scale_(x, factor)
        if x.size == 0:
            return x
        if on_device:
            f = factor
            on_this_gpu = getattr(getattr(f, "device", None), "id", self.device_id)
            if (f.dtype != np.float64 or not f.flags.c_contiguous
                    or on_this_gpu != self.device_id):
                f = self.asarray(f, dtype=np.float64)  # only then a copy on this GPU
            self._launch(
                "optim.cu", f"scale_dev_{sfx}", kernels.grid(x.size), (x, np.int64(x.size), f)
            )
        else:
            self._launch(
                "optim.cu", f"scale_{sfx}", kernels.grid(x.size),
                (x, np.int64(x.size), np.float64(factor)),
            )
        return x

    def clip_(self, x, lo, hi):
        sfx = self._fusable(x)
        if sfx is None:
            return super().clip_(x, lo, hi)
        if x.size:
            self._launch(
                "optim.cu", f"clip_{sfx}", kernels.grid(x.size),
                (x, np.int64(x.size), np.float64(lo), np.float64(hi)),
            )
        return x

    # ------------------------------------------------------------------------------ dropout
    def dropout_mask(self, seed, stream, step, p, mask, offset=0):
        """Philox-4x32-10 mask, one thread per block of four words (bit-identical to cpu)."""
        from ..random import drop_threshold

        cp = self.xp
        n, offset = mask.size, int(offset)
        end = (offset + n + 3) // 4
        if (not isinstance(mask, cp.ndarray) or mask.dtype != np.uint8
                or not mask.flags.c_contiguous or n == 0 or end > 2**32):
            return super().dropout_mask(seed, stream, step, p, mask, offset)
        m32, u = 0xFFFFFFFF, np.uint32
        seed, step = int(seed), int(step)
        self._launch(
            "random.cu", "dropout_mask", kernels.grid(end - offset // 4),
            (mask, np.int64(n), np.int64(offset), u(seed & m32), u((seed >> 32) & m32),
             u(int(stream) & m32), u(step & m32), u((step >> 32) & m32), u(drop_threshold(p))),
        )
        return mask

    def dropout_apply(self, x, mask, scale, out):
        cp = self.xp
        sfx = self._fusable(x, out)
        if (sfx is None or not isinstance(mask, cp.ndarray) or mask.dtype != np.uint8
                or not mask.flags.c_contiguous or not (x.shape == mask.shape == out.shape)):
            return super().dropout_apply(x, mask, scale, out)
        if x.size:
            self._launch(
                "random.cu", f"dropout_apply_{sfx}", kernels.grid(x.size),
                (x, mask, out, np.int64(x.size), np.float64(scale)),
            )
        return out


def _public_ops() -> list[str]:
    return [
        name for name, _ in inspect.getmembers(Backend, inspect.isfunction)
        if not name.startswith("_")
    ]


# Every public op, overridden here or inherited from the reference, runs on this backend's GPU.
for _name in _public_ops():
    setattr(CUDABackend, _name, _on_device(getattr(CUDABackend, _name)))
del _name
