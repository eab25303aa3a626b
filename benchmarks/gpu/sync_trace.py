"""GPU verification helpers: the environment record and a step-by-step training trace.

    python benchmarks/gpu/sync_trace.py env                     # JSON on stdout
    python benchmarks/gpu/sync_trace.py trace --out trace.json  # batch 65536 by default

`trace` warms up (every kernel compiled and loaded, one untraced fit of the same shapes), then
runs `fit` with large batches (resident data, then streamed from host memory) and proves that
no host synchronisation happens inside a training step:

- a step's window opens when the training loop asks the batch source for its batch and closes
  when it asks for the next one (or the epoch ends): it holds the batch gather (and, streamed,
  the host gather and copy of the batch), forward, loss, backward, clipping, the optimiser
  step and the on-device loss accumulation;
- every call that makes the host wait for the GPU is counted: the backend's host reads
  (`to_float`, `to_numpy`, `all_finite`, `synchronize`) and CuPy's Python-level waits
  (`cupy.asnumpy`, `Stream.synchronize`, `Event.synchronize`, `cupy.cuda.runtime.*Synchronize`,
  where CuPy lets them be wrapped: the JSON lists which were). The count inside each step must
  be 0. Copies of NumPy arrays to the GPU (`cupy.asarray` / `cupy.array` of host memory, which
  is pageable: the host waits while the driver stages it) are counted apart, per step, as
  `pageable_copies` (e.g. the batch order uploaded at an epoch's first step). The one wait
  the streamed path is designed to make, on the copy event of a pinned buffer before the host
  refills it (issued a whole step earlier), is counted apart as `copy_waits`;
- a CUDA event is recorded at each window's start and end: the GPU time of a step is the time
  between them, and the host's time in the window and in the gather are measured alongside.
  Right after a window closes its end event is queried (without waiting):
  "gpu_busy_after_enqueue" true means the host went on before the GPU finished the step,
  which a synchronising step cannot do.

On a host backend (cpu, or the host-emulated cuda backend in the tests) the same trace runs
with host clocks instead of CUDA events.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

SYNC_OPS = ("to_float", "to_numpy", "all_finite", "synchronize")


def environment(dev: Any = None) -> dict[str, Any]:
    """GPU, driver, CUDA runtime and library versions, and the date (what a run records).
    `dev` is the kit's `device.Device` (a fake in the tests); by default GPU 0."""
    env: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": np.__version__,
    }
    try:
        import mlpx

        env["mlpx"] = mlpx.__version__
    except Exception as e:  # noqa: BLE001 - a broken checkout is recorded, not fatal
        env["mlpx"] = f"unavailable: {type(e).__name__}: {e}"
    # versions from the installed metadata, without importing the packages: importing torch
    # takes seconds, and importing JAX would start its GPU client
    providers = metadata.packages_distributions()
    for module in ("numba", "cupy", "torch", "jax", "jaxlib"):
        dists = providers.get(module, [])
        try:
            env[module] = metadata.version(dists[0] if dists else module)
        except metadata.PackageNotFoundError:
            env[module] = "unavailable: not installed"
    for dist in _jax_plugins():
        env[dist] = metadata.version(dist)
    if dev is None:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from device import Device

        dev = Device()
    try:
        env.update(dev.properties())
    except Exception as e:  # noqa: BLE001
        env["gpu"] = f"unavailable: {type(e).__name__}: {e}"
    return env


def _jax_plugins() -> list[str]:
    """Installed JAX CUDA plugins (jax-cuda13-plugin, jax-cuda13-pjrt, ...)."""
    names = {(d.metadata["Name"] or "").lower().replace("_", "-")
             for d in metadata.distributions()}
    return sorted(n for n in names if n.startswith("jax-cuda"))


class SyncCounter:
    """Counts host-synchronising calls; `inside` is True while a training step runs."""

    def __init__(self) -> None:
        self.inside = False
        self.in_prefetch = False
        self.inside_calls: list[str] = []
        self.copy_waits = 0
        self.outside = 0
        self.pageable_inside: list[str] = []
        self.pageable_outside = 0
        self.patched: list[str] = []
        self._undo: list[Any] = []

    def _hit(self, name: str) -> None:
        if self.inside and self.in_prefetch and name.endswith("Event.synchronize"):
            self.copy_waits += 1  # the streamed path's pinned-buffer wait (see the module doc)
        elif self.inside:
            self.inside_calls.append(name)
        else:
            self.outside += 1

    def _upload(self, name: str) -> None:
        if self.inside:
            self.pageable_inside.append(name)
        else:
            self.pageable_outside += 1

    def wrap(self, owner: Any, attr: str, label: str, counted: Any = None) -> None:
        """Replace owner.attr by `counted` (default: count the call, then make it); silently
        skipped where it cannot be set."""
        orig = getattr(owner, attr, None)
        if orig is None:
            return
        if counted is None:
            def counted(*a, **k):
                self._hit(label)
                return orig(*a, **k)

        had_own = attr in getattr(owner, "__dict__", {})
        try:
            setattr(owner, attr, counted)
        except (AttributeError, TypeError):  # C extension types cannot be patched
            return
        if label:
            self.patched.append(label)
        self._undo.append((owner, attr, orig, had_own))

    def restore(self) -> None:
        for owner, attr, orig, had_own in reversed(self._undo):
            if had_own:
                setattr(owner, attr, orig)
            else:
                delattr(owner, attr)  # shadowed an inherited or class attribute: unshadow
        self._undo.clear()


def _patch_cupy(counter: SyncCounter, cupy: Any = None) -> None:
    """Count CuPy's host waits and its copies of NumPy arrays to the GPU (`cupy` defaults
    to the installed module; the tests pass a fake)."""
    if cupy is None:
        try:
            import cupy
        except ImportError:
            return
    for fn in ("asarray", "array"):
        _count_uploads(counter, cupy, fn)
    cuda = getattr(cupy, "cuda", None)
    counter.wrap(cupy, "asnumpy", "cupy.asnumpy")
    counter.wrap(getattr(cuda, "Stream", None), "synchronize", "cupy.cuda.Stream.synchronize")
    counter.wrap(getattr(cuda, "Event", None), "synchronize", "cupy.cuda.Event.synchronize")
    for fn in ("deviceSynchronize", "streamSynchronize", "eventSynchronize"):
        counter.wrap(getattr(cuda, "runtime", None), fn, f"cupy.cuda.runtime.{fn}")
    # a C type: usually not patchable
    counter.wrap(getattr(cupy, "ndarray", None), "get", "cupy.ndarray.get")


def _count_uploads(counter: SyncCounter, cupy: Any, fn: str) -> None:
    """cupy.asarray / cupy.array of a NumPy array copies it from pageable host memory: the
    host waits until the data is staged. Counted apart from the syncs (it does not wait for
    the GPU's queue), per step."""
    orig = getattr(cupy, fn, None)
    if orig is None:
        return
    label = f"cupy.{fn}(numpy array)"

    def counted(obj, *a, **k):
        if isinstance(obj, np.ndarray):
            counter._upload(label)
        return orig(obj, *a, **k)

    counter.wrap(cupy, fn, label, counted)


class _Clock:
    """CUDA events on a GPU backend, host clocks elsewhere."""

    def __init__(self, ops: Any) -> None:
        cuda = getattr(getattr(ops, "xp", None), "cuda", None)
        self.cuda = cuda if cuda is not None and hasattr(cuda, "Event") else None

    def mark(self) -> Any:
        if self.cuda is None:
            return time.perf_counter()
        ev = self.cuda.Event()
        ev.record()
        return ev

    def busy(self, mark: Any) -> bool | None:
        """Whether the GPU has not reached `mark` yet (a query, not a wait)."""
        return None if self.cuda is None else not mark.done

    def elapsed_ms(self, start: Any, end: Any) -> float:
        if self.cuda is None:
            return (end - start) * 1e3
        return float(self.cuda.get_elapsed_time(start, end))


def warm_up(ops: Any) -> None:
    """Compile and load every kernel now, so compilation never lands in a traced step."""
    if hasattr(ops, "warmup"):
        ops.warmup()


def trace_fit(
    model: Any, X: Any, y: Any, *, epochs: int = 2, batch_size: int = 65536,
    stream_data: bool | None = None, loss: str = "cross_entropy", optimizer: str = "adam",
    cupy: Any = None,
) -> dict[str, Any]:
    """Run model.fit(X, y) and return the per-step trace (see the module doc)."""
    ops = model.ops
    model.compile(loss=loss, optimizer=optimizer)
    counter = SyncCounter()
    clock = _Clock(ops)
    steps: list[dict[str, Any]] = []
    marks: list[tuple[Any, Any]] = []
    sources: list[Any] = []
    window: dict[str, Any] = {}

    def open_window() -> None:
        counter.inside = True
        window.clear()
        window.update(calls=len(counter.inside_calls),
                      uploads=len(counter.pageable_inside), host0=time.perf_counter(),
                      start=clock.mark(), gather_ms=0.0)

    def close_window(rows: int | None) -> None:
        end = clock.mark()
        host1 = time.perf_counter()
        counter.inside = False
        calls = counter.inside_calls[window["calls"]:]
        uploads = counter.pageable_inside[window["uploads"]:]
        if rows is None:  # the epoch's tail after its last batch: charged to the last step
            if steps:
                steps[-1]["syncs_inside"] += calls
                steps[-1]["pageable_copies"] += uploads
            return
        marks.append((window["start"], end))
        steps.append({
            "step": len(steps), "rows": rows,
            "host_ms": (host1 - window["host0"]) * 1e3,
            "gather_ms": window["gather_ms"],
            "syncs_inside": calls,
            "pageable_copies": uploads,
            "gpu_busy_after_enqueue": clock.busy(end),
        })

    class TracedSource:
        """The fit loop's batch source, with a step window around each batch."""

        def __init__(self, inner: Any) -> None:
            self._inner = inner
            prefetch = getattr(inner, "_prefetch", None)
            if prefetch is not None:
                def traced_prefetch(*a, **k):
                    counter.in_prefetch = True
                    try:
                        return prefetch(*a, **k)
                    finally:
                        counter.in_prefetch = False

                inner._prefetch = traced_prefetch

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

        def epoch(self, order: Any):
            it = self._inner.epoch(order)
            rows = None
            while True:
                open_window()
                t0 = time.perf_counter()
                try:
                    xb, yb = next(it)
                except StopIteration:
                    close_window(None)
                    return
                window["gather_ms"] = (time.perf_counter() - t0) * 1e3
                rows = int(xb.shape[0])
                yield xb, yb
                close_window(rows)

    def traced_batch_source(*a, **k):
        src = TracedSource(orig_batch_source(*a, **k))
        sources.append(src)
        return src

    orig_batch_source = ops.batch_source
    counter.wrap(ops, "batch_source", "", traced_batch_source)
    for name in SYNC_OPS:
        counter.wrap(ops, name, f"ops.{name}")
    _patch_cupy(counter, cupy)
    t0 = time.perf_counter()
    try:
        history = model.fit(X, y, epochs=epochs, batch_size=batch_size, verbose=0,
                            stream_data=stream_data)
        ops.synchronize()
    finally:
        counter.inside = False
        counter.restore()
    wall = time.perf_counter() - t0
    for rec, (start, end) in zip(steps, marks, strict=True):
        rec["gpu_ms"] = clock.elapsed_ms(start, end)
    inside = sum(len(s["syncs_inside"]) for s in steps)
    busy = [s["gpu_busy_after_enqueue"] for s in steps if s["gpu_busy_after_enqueue"] is not None]
    streamed = [bool(getattr(src, "streamed", False)) for src in sources]
    return {
        "backend": repr(ops),
        "timing": "cuda events" if clock.cuda is not None else "host clock",
        "rows": int(X.shape[0]), "features": int(X.shape[1]), "batch_size": batch_size,
        "epochs": epochs, "stream_data": stream_data, "streamed": any(streamed),
        "patched": counter.patched,
        "steps": steps,
        "summary": {
            "steps": len(steps),
            "syncs_inside_steps": inside,
            "copy_waits": counter.copy_waits,
            "pageable_copies_inside_steps": sum(len(s["pageable_copies"]) for s in steps),
            "pageable_copies_outside_steps": counter.pageable_outside,
            "syncs_outside_steps": counter.outside,
            "host_ms_total": sum(s["host_ms"] for s in steps),
            "gather_ms_total": sum(s["gather_ms"] for s in steps),
            "gpu_ms_total": sum(s["gpu_ms"] for s in steps),
            "steps_gpu_busy_after_enqueue": sum(busy) if busy else None,
            "wall_s": wall,
            "final_loss": history["loss"][-1] if len(history["loss"]) else None,
        },
        "ok": inside == 0 and len(steps) > 0,
    }


def _cmd_env(args: argparse.Namespace) -> int:
    text = json.dumps(environment(), indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


MODES = {"resident": False, "streamed": True}


def trace_runs(backend: Any, sizes: Any, *, batch: int = 65536, batches_per_epoch: int = 4,
               epochs: int = 2, modes: tuple[str, ...] = tuple(MODES)) -> dict[str, Any]:
    """{mode: trace_fit result} for models of `sizes` on `backend` (a name or a backend
    object), each after a warm-up fit of the same shapes."""
    import mlpx

    sizes = [int(s) for s in sizes]
    rng = np.random.default_rng(0)
    n = batch * batches_per_epoch
    X = rng.standard_normal((n, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], n)
    runs = {}
    for label in modes:
        model = mlpx.MLP(sizes, activation="relu", backend=backend, seed=0)
        warm_up(model.ops)
        # one untraced fit of the same shapes: cuBLAS handles, memory pool, pinned buffers
        spare = mlpx.MLP(sizes, activation="relu", backend=backend, seed=1)
        spare.fit(X[:batch], y[:batch], loss="cross_entropy", optimizer="adam",
                  epochs=1, batch_size=batch, verbose=0, stream_data=MODES[label])
        del spare
        runs[label] = trace_fit(model, X, y, epochs=epochs, batch_size=batch,
                                stream_data=MODES[label])
        s = runs[label]["summary"]
        print(f"{label}: {s['steps']} steps, syncs inside steps {s['syncs_inside_steps']}, "
              f"pageable copies inside steps {s['pageable_copies_inside_steps']}, "
              f"GPU {s['gpu_ms_total']:.1f} ms, host {s['host_ms_total']:.1f} ms (gather "
              f"{s['gather_ms_total']:.1f}), copy waits {s['copy_waits']},"
              f" GPU still busy after enqueue in {s['steps_gpu_busy_after_enqueue']} steps",
              flush=True)
    return runs


def _cmd_trace(args: argparse.Namespace) -> int:
    runs = trace_runs(args.backend, args.sizes.split(","), batch=args.batch,
                      batches_per_epoch=args.batches_per_epoch, epochs=args.epochs,
                      modes=tuple(args.modes.split(",")))
    result = {"environment": environment(), "sizes": [int(s) for s in args.sizes.split(",")],
              "runs": runs, "ok": all(r["ok"] for r in runs.values())}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"trace written to {args.out}; ok={result['ok']}")
    return 0 if result["ok"] else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("env", help="print (and --out: write) the environment as JSON")
    e.add_argument("--out", default=None)
    e.set_defaults(func=_cmd_env)
    t = sub.add_parser("trace", help="large-batch training trace: host syncs inside steps")
    t.add_argument("--out", default="trace.json")
    t.add_argument("--backend", default="cuda")
    t.add_argument("--batch", type=int, default=65536)
    t.add_argument("--batches-per-epoch", type=int, default=4)
    t.add_argument("--epochs", type=int, default=2)
    t.add_argument("--sizes", default="784,1024,1024,10")
    t.add_argument("--modes", default="resident,streamed",
                   help="resident, streamed or both (comma-separated)")
    t.set_defaults(func=_cmd_trace)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
