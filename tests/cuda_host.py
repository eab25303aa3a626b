"""Run the CUDA kernel sources (kernels/*.cu) on the host, to test them without a GPU.

Each .cu file is compiled as C++ with g++ after a prelude that maps the CUDA keywords to plain
C++ and runs a launch the way a GPU does, at the real block size: every block has
`blockDim.x == 256` (`cuda_kernels.BLOCK`, `MLPX_BLOCK` in the sources) threads, run as 256 real OS
threads (a pool kept per kernel file) with `threadIdx`/`blockIdx` thread-local,
`__syncthreads()` a barrier across the block's threads and `__shared__` memory shared by
them. Blocks run one after the other (a barrier ends each block that used one, so the next
starts with all threads out of the shared memory). So the grid-stride loops, the per-block
partial sums and the shared-memory reduction trees run exactly as written, with the GPU's
thread count; a barrier that not every thread reaches is reported as an error instead of
hanging. The math
library is the host's (the same libm the Numba kernels call), and FMA contraction is off, as
on the GPU (-fmad=false).

`HostEmulatedCUDABackend` is the real `CUDABackend` class with NumPy as its array module and
kernel launches routed here; every launch is checked against the kernel's C signature (array
dtypes, 64-bit sizes, int flags, double scalars), as a mismatch would corrupt a GPU launch.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import numpy as np

from mlpx.backends import _cuda_kernels as cuda_kernels
from mlpx.backends.base import Backend
from mlpx.backends.cuda import CUDABackend

#: Seconds a thread waits at a barrier before the launch is declared broken (a barrier in
#: divergent code: some threads never arrive). A real GPU would hang or misbehave.
BARRIER_TIMEOUT_S = 20

PRELUDE = r"""
#include <limits.h>
#include <linux/futex.h>
#include <math.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <atomic>
#include <functional>
#include <thread>
#include <vector>
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
struct mlpx_idx { unsigned int x; };
static thread_local mlpx_idx threadIdx = {0};
static thread_local mlpx_idx blockIdx = {0};
static mlpx_idx gridDim = {1};
static mlpx_idx blockDim = {1};
static inline double __longlong_as_double(long long v) {
    double d;
    memcpy(&d, &v, sizeof d);
    return d;
}
static inline unsigned int __float_as_uint(float v) {
    unsigned int u;
    memcpy(&u, &v, sizeof u);
    return u;
}
static inline float __uint_as_float(unsigned int u) {
    float v;
    memcpy(&v, &u, sizeof v);
    return v;
}

namespace mlpx_host {
// Futex waits: a woken thread does not have to take a lock, so waking 256 threads is cheap.
static void futex_wait(std::atomic<unsigned>* word, unsigned value) {
    struct timespec ts = {1, 0};  // wake up once a second to check the deadline
    syscall(SYS_futex, reinterpret_cast<unsigned*>(word), FUTEX_WAIT_PRIVATE, value, &ts,
            nullptr, 0);
}
static void futex_wake(std::atomic<unsigned>* word) {
    syscall(SYS_futex, reinterpret_cast<unsigned*>(word), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr,
            nullptr, 0);
}
static double seconds() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static thread_local bool synced = false;  // this thread reached a barrier in this block

// __syncthreads: every thread of the block waits until all have arrived.
struct Barrier {
    std::atomic<unsigned> count{0}, generation{0};
    std::atomic<bool> broken{false};
    unsigned total = 1;
    void wait() {
        synced = true;
        if (broken.load()) return;
        unsigned g = generation.load(std::memory_order_acquire);
        if (count.fetch_add(1, std::memory_order_acq_rel) + 1 == total) {
            count.store(0, std::memory_order_relaxed);
            generation.fetch_add(1, std::memory_order_release);
            futex_wake(&generation);
            return;
        }
        double deadline = seconds() + MLPX_BARRIER_TIMEOUT_S;
        while (generation.load(std::memory_order_acquire) == g) {
            if (broken.load()) return;
            if (seconds() > deadline) {  // not every thread reached this barrier
                broken.store(true);
                generation.fetch_add(1, std::memory_order_release);
                futex_wake(&generation);
                return;
            }
            futex_wait(&generation, g);
        }
    }
};
static Barrier barrier;

// One worker thread per threadIdx.x, kept between launches; each runs every block in turn.
struct Pool {
    std::vector<std::thread> workers;
    unsigned size = 0, blocks = 0;
    const std::function<void()>* body = nullptr;
    std::atomic<unsigned> launch{0}, done{0};
    void run(unsigned t) {
        threadIdx.x = t;
        unsigned seen = 0;
        for (;;) {
            unsigned l;
            while ((l = launch.load(std::memory_order_acquire)) == seen) futex_wait(&launch, seen);
            seen = l;
            for (unsigned b = 0; b < blocks; ++b) {
                blockIdx.x = b;
                synced = false;
                (*body)();
                // A block that synchronised (in a correct kernel all its threads did) ends
                // with a barrier, so the next block finds its shared memory free. Blocks
                // without barriers share nothing and run on without waiting.
                if (synced) barrier.wait();
            }
            if (done.fetch_add(1, std::memory_order_acq_rel) + 1 == size) futex_wake(&done);
        }
    }
};
static Pool* pool = nullptr;  // never destroyed: idle workers end with the process

// Runs body() on `blocks` blocks of `threads` threads; 0, or 1 for a broken barrier.
static int run_grid(unsigned blocks, unsigned threads, const std::function<void()>& body) {
    if (pool == nullptr) {
        pool = new Pool();
        pool->size = threads;
        for (unsigned t = 0; t < threads; ++t) {
            pool->workers.emplace_back([t] { pool->run(t); });
            pool->workers.back().detach();
        }
    }
    if (threads != pool->size) return 2;  // one block size per library
    gridDim.x = blocks;
    blockDim.x = threads;
    barrier.total = threads;
    barrier.count.store(0);
    barrier.broken.store(false);
    pool->body = &body;
    pool->blocks = blocks;
    pool->done.store(0);
    pool->launch.fetch_add(1, std::memory_order_release);
    futex_wake(&pool->launch);
    unsigned d;
    while ((d = pool->done.load(std::memory_order_acquire)) != threads) futex_wait(&pool->done, d);
    return barrier.broken.load() ? 1 : 0;
}
}  // namespace mlpx_host
#define __syncthreads() mlpx_host::barrier.wait()
"""

_CTYPES = {
    "long long": ctypes.c_longlong, "int": ctypes.c_int, "double": ctypes.c_double,
    "unsigned int": ctypes.c_uint,
}
_SCALARS = {"long long": np.int64, "int": np.int32, "double": np.float64, "unsigned int": np.uint32}


def have_compiler() -> bool:
    return shutil.which("g++") is not None


def parse_signatures(source: str) -> dict[str, list[str]]:
    """{kernel name: [C parameter types]} of the extern "C" kernels, for f32 and f64."""
    text = source.replace("\\\n", " ")
    sigs: dict[str, list[str]] = {}
    pattern = re.compile(r'extern "C" __global__ void (\w+)##S\s*\((.*?)\)\s*\{', re.S)
    for name, params in pattern.findall(text):
        types = _param_types(params)
        for sfx, t in (("f32", "float"), ("f64", "double")):
            sigs[f"{name}{sfx}"] = [re.sub(r"\bT\b", t, ty) for ty in types]
    plain = re.compile(r'extern "C" __global__ void (\w+)\s*\(([^#]*?)\)\s*\{', re.S)
    for name, params in plain.findall(text):  # kernels without a dtype template
        sigs[name] = _param_types(params)
    return sigs


def _param_types(params: str) -> list[str]:
    types = []
    for p in params.split(","):
        words = " ".join(p.split()).replace(" *", "*")
        ty = words.rsplit(" ", 1)[0] if "*" not in words else words.rsplit("*", 1)[0] + "*"
        types.append(ty)
    return types


def launcher_source(sigs: dict[str, list[str]]) -> str:
    """C++ entry points `mlpx_launch_<kernel>(blocks, threads, args...)` that run a kernel on
    a grid of host threads (see the module doc)."""
    out = []
    for name, types in sigs.items():
        params = ", ".join(f"{t} a{i}" for i, t in enumerate(types))
        args = ", ".join(f"a{i}" for i in range(len(types)))
        out.append(
            f'extern "C" int mlpx_launch_{name}(unsigned int blocks, unsigned int threads, '
            f"{params}) {{\n"
            f"    return mlpx_host::run_grid(blocks, threads, [=]() {{ {name}({args}); }});\n"
            "}\n"
        )
    return "\n".join(out)


def build(outdir: Path) -> dict[str, tuple[ctypes.CDLL, dict[str, list[str]]]]:
    """Compile every kernel file for the host (in parallel); {file: (library, signatures)}."""
    prelude = outdir / "prelude.h"
    prelude.write_text(PRELUDE)
    jobs = {}
    for name, path in cuda_kernels.kernel_sources().items():
        sigs = parse_signatures(path.read_text())
        unit = outdir / (name + ".host.cpp")
        unit.write_text(f'#include "{path}"\n\n{launcher_source(sigs)}')
        lib = outdir / (name + ".so")
        cmd = [
            "g++", "-std=c++14", "-O2", "-ffp-contract=off", "-fPIC", "-shared", "-pthread",
            f"-DMLPX_BARRIER_TIMEOUT_S={BARRIER_TIMEOUT_S}", "-include", str(prelude),
            str(unit), "-o", str(lib),
        ]
        jobs[name] = (subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True), lib, sigs)
    out = {}
    for name, (proc, lib, sigs) in jobs.items():
        _, err = proc.communicate(timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"host compile of {name} failed:\n{err}")
        out[name] = (ctypes.CDLL(str(lib)), sigs)
    return out


def _check_arg(kernel: str, i: int, ctype: str, value: Any) -> Any:
    if ctype.endswith("*"):
        base = ctype.replace("const ", "").rstrip("*").strip()
        want = {
            "float": np.float32, "double": np.float64, "long long": np.int64,
            "unsigned char": np.uint8, "unsigned short": np.uint16,
        }[base]
        if not isinstance(value, np.ndarray) or value.dtype != want:
            raise TypeError(f"{kernel} argument {i} must be a {base} array, got {value!r}")
        if not value.flags.c_contiguous:
            raise TypeError(f"{kernel} argument {i} must be C-contiguous")
        return ctypes.c_void_p(value.ctypes.data)
    if type(value) is not _SCALARS[ctype]:
        raise TypeError(
            f"{kernel} argument {i} must be {_SCALARS[ctype].__name__} (C {ctype}), "
            f"got {type(value).__name__}"
        )
    return _CTYPES[ctype](value.item())


class HostEmulatedCUDABackend(CUDABackend):
    """CUDABackend with NumPy arrays and kernels run on the host (see the module doc)."""

    name = "cuda-host-emulation"

    def __init__(self, libs: dict) -> None:  # no CuPy, no GPU: set what the ops use
        self.xp = np
        self.device_id = 0
        self.device = "host"
        self._single_gpu = True
        self.allow_tf32 = False
        self._scratch = {}
        self._compute_types = None
        self.compute_capability = "90"
        self._bf16_local = threading.local()
        self._libs = libs
        self.launches: list[str] = []
        self.gemm_calls: list = []  # the GemmEx arguments of each bfloat16 product
        self.threads = cuda_kernels.BLOCK  # threads per block, as on the GPU
        self.free_bytes = 80 * 1024**3  # what fits_on_device sees as free GPU memory
        self.runtime: FakeStreamRuntime | None = None  # the last streamed fit's runtime

    asarray = Backend.asarray
    to_numpy = Backend.to_numpy
    to_float = Backend.to_float
    empty = Backend.empty
    zeros = Backend.zeros
    copy_into = Backend.copy_into
    erf = Backend.erf
    synchronize = Backend.synchronize

    def _free_bytes(self) -> int:
        return self.free_bytes

    def _gemm_bf16(self, args, a16: np.ndarray, b16: np.ndarray, out: np.ndarray) -> None:
        """cublasGemmEx's column-major semantics, from the same buffers and arguments: the
        operands decoded from their bfloat16 bits, products summed in float64, out float32."""
        self.gemm_calls.append(args)
        op_a = _column_major(b16, args.m if args.transa == 0 else args.k, args.lda, args.transa)
        op_b = _column_major(a16, args.k if args.transb == 0 else args.n, args.ldb, args.transb)
        c = op_a @ op_b  # (m, n), column-major into out's memory
        out.reshape(-1)[: args.n * args.ldc].reshape(args.n, args.ldc)[:, : args.m] = c.T

    def _stream_runtime(self) -> FakeStreamRuntime:
        self.runtime = FakeStreamRuntime()
        return self.runtime

    def _launch(self, filename: str, name: str, blocks: int, args: tuple) -> None:
        lib, sigs = self._libs[filename]
        if name not in sigs:
            raise AttributeError(f"{filename} has no kernel {name}")
        pairs = enumerate(zip(sigs[name], args, strict=True))
        ctypes_args = [_check_arg(name, i, ct, a) for i, (ct, a) in pairs]
        if not 1 <= blocks < 2**31:
            raise ValueError(f"{name}: a grid of {blocks} blocks cannot be launched")
        launch = getattr(lib, f"mlpx_launch_{name}")
        rc = launch(ctypes.c_uint(blocks), ctypes.c_uint(self.threads), *ctypes_args)
        if rc == 1:
            raise RuntimeError(
                f"{name}: a __syncthreads() barrier was not reached by all {self.threads} "
                f"threads of a block within {BARRIER_TIMEOUT_S} s (a barrier in divergent code)"
            )
        if rc != 0:
            raise RuntimeError(f"{name}: launched with {self.threads} threads per block, "
                               "but this library's thread pool has another size")
        self.launches.append(name)


def _column_major(bits: np.ndarray, rows: int, ld: int, trans: int) -> np.ndarray:
    """op(X) in float64 for the column-major `rows` x cols matrix X stored in the bfloat16
    `bits` with leading dimension `ld` (element (i, j) at bits[i + j * ld])."""
    from mlpx.backends.bfloat16 import from_bfloat16_bits

    values = from_bfloat16_bits(bits.reshape(-1)).astype(np.float64)
    cols = values.size // ld
    x = values[: cols * ld].reshape(cols, ld)[:, :rows].T
    return x.T if trans == 1 else x


class FakeEvent:
    """A CUDA event: marks a point in one stream's queue."""

    def __init__(self, rt: FakeStreamRuntime, name: str) -> None:
        self.rt, self.name = rt, name
        self.stream: FakeStream | None = None
        self.mark = 0

    def record(self, stream: FakeStream) -> None:
        self.rt.log.append(("record", self.name, stream.name))
        self.stream, self.mark = stream, stream.queued

    def synchronize(self) -> None:
        """Host wait: everything queued on the stream before the record has run."""
        self.rt.log.append(("host_wait", self.name))
        if self.stream is not None:
            self.stream.run_until(self.mark)


class FakeStream:
    """A stream. The compute stream runs work at once (NumPy is eager); the copy stream
    runs its queued copies only when something waits for them, as late as a GPU could, so
    a batch used without waiting for its copy holds stale data and the results change."""

    def __init__(self, rt: FakeStreamRuntime, name: str, eager: bool) -> None:
        self.rt, self.name, self.eager = rt, name, eager
        self.pending: list[tuple[int, Any]] = []
        self.queued = 0

    def enqueue(self, work) -> None:
        self.queued += 1
        if self.eager:
            work()
        else:
            self.pending.append((self.queued, work))

    def run_until(self, mark: int) -> None:
        while self.pending and self.pending[0][0] <= mark:
            self.pending.pop(0)[1]()

    def wait_event(self, event: FakeEvent) -> None:
        self.rt.log.append(("wait", self.name, event.name))
        if self.eager and event.stream is not None:  # an eager stream runs after the event
            event.stream.run_until(event.mark)
        # a lazy stream runs its later work after the event anyway: events recorded on the
        # eager compute stream are complete when recorded

    def synchronize(self) -> None:
        self.rt.log.append(("sync", self.name))
        self.run_until(self.queued)


class FakeStreamRuntime:
    """What StreamedBatches needs from CUDA (pinned memory, streams, events, async copies),
    logging every call so tests can check the order of copies, waits and uses."""

    def __init__(self) -> None:
        self.log: list[tuple] = []
        self.compute = FakeStream(self, "compute", eager=True)
        self._events = 0

    def pinned_empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        self.log.append(("pinned", tuple(shape)))
        return np.full(shape, -7, dtype=dtype)  # garbage, as fresh pinned memory would be

    def new_stream(self) -> FakeStream:
        return FakeStream(self, "copy", eager=False)

    def current_stream(self) -> FakeStream:
        return self.compute

    def event(self) -> FakeEvent:
        self._events += 1
        return FakeEvent(self, f"e{self._events}")

    def copy_async(self, dst: np.ndarray, src: np.ndarray, stream: FakeStream) -> None:
        if not isinstance(src, np.ndarray) or not src.flags.c_contiguous:
            raise TypeError("an async host-to-device copy needs a contiguous pinned source")
        self.log.append(("copy", stream.name, dst.__array_interface__["data"][0], dst.shape))

        def work(dst=dst, src=src):
            dst[...] = src  # reads the pinned buffer when the copy runs, not when queued

        stream.enqueue(work)
