"""The GPU-specific checks of the verification kit, one subcommand per stage of run_all.py.

    python benchmarks/gpu/stages.py env|compile|reductions|ftz|trace|check|kernels|bf16|bench \
        --json FILE

Each writes its findings as JSON to FILE (key figures under "key", pass/fail under "ok")
and exits 0 when everything it checked holds, 1 when something did not, 3 when it could not
run here (no GPU). run_all.py runs each under its own time limit. Every stage reaches the GPU
only through a `device.Device` (the tests hand it a fake that records the calls).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))  # device.py and sync_trace.py, when run as a script

from device import Device  # noqa: E402

NO_GPU = 3
#: Sizes of the reduction checks (elements); 2**28 float32 is 1 GiB on the GPU.
REDUCTION_SIZES = (1, 255, 256, 257, 262145, 2**28)
#: float32 subnormals near 1e-40 for the flush-to-zero probe.
SUBNORMALS = np.array([1e-40, -1e-40, 3e-39, -5e-42, 1.4e-45, 1e-38], np.float32)


class NoGPU(Exception):
    """The stage cannot run here: the cuda backend is unavailable."""


def _gpu_ops(dev: Device) -> Any:
    reason = dev.unavailable_reason()
    if reason:
        raise NoGPU(reason)
    return dev.backend()


def _events_ms(ops: Any, fn, repeat: int = 10) -> float:
    """Median time of fn() in ms: CUDA events around each call on a GPU backend, the host
    clock on a host backend (the emulation the tests use)."""
    cuda = getattr(ops.xp, "cuda", None)
    fn()
    times = []
    for _ in range(repeat):
        if cuda is None:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
            continue
        a, b = cuda.Event(), cuda.Event()
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(cuda.get_elapsed_time(a, b))
    return float(np.median(times))


def _normal(ops: Any, rng: np.random.Generator, shape: Any, scale: float = 1.0) -> Any:
    """Standard normal float32 values on the backend's device (drawn on the host)."""
    return ops.asarray(rng.standard_normal(shape, dtype=np.float32) * np.float32(scale))


def stage_env(dev: Device) -> dict[str, Any]:
    from sync_trace import environment

    import mlpx

    env = environment(dev)
    env["available_backends"] = mlpx.available_backends()
    smi = shutil.which("nvidia-smi")
    if smi:
        q = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                            "--format=csv,noheader"], capture_output=True, text=True,
                           timeout=20)
        env["nvidia_smi"] = (q.stdout or q.stderr).strip()
    gpu = dev.unavailable_reason() is None
    key = {"gpu": env.get("gpu"), "cuda runtime": env.get("cuda_runtime"),
           "cupy": env.get("cupy"), "torch": env.get("torch"), "jax": env.get("jax")}
    return {"ok": True, "gpu": gpu, "key": key, "environment": env}


def stage_compile(dev: Device) -> dict[str, Any]:
    """Compile every kernel file as the loader does (`compiled_path`: the source with
    common.cuh joined in, the loader's NVRTC options and target, its disk cache), load each
    binary on the GPU, look up every kernel the file defines, and read the PTX's
    flush-to-zero state."""
    _gpu_ops(dev)
    from mlpx.backends import _cuda_kernels as cuda_kernels

    cc = dev.compute_capability()
    target = cuda_kernels.nvrtc_target(cc)
    files, ok = {}, True
    ftz = re.compile(r"[\w.]*\.ftz[\w.]*")
    cache = cuda_kernels.cache_dir()
    cached_before = set(cache.glob("*")) if cache.is_dir() else set()
    for name in cuda_kernels.KERNEL_FILES:
        t0 = time.perf_counter()
        path = cuda_kernels.compiled_path(name, target)
        t1 = time.perf_counter()
        module = dev.load_module(path)
        kernels = cuda_kernels.kernel_names(name)
        missing = []
        for k in kernels:
            try:
                module.get_function(k)
            except Exception as e:  # noqa: BLE001 - a kernel that does not load is a finding
                missing.append(f"{k}: {type(e).__name__}: {e}")
        ptx_target = f"compute_{cc}" if target.startswith("sm_") else target
        source = cuda_kernels.kernel_source(name)
        ptx = cuda_kernels.nvrtc_compile(source, name, ptx_target).decode()
        flushing = sorted(set(ftz.findall(ptx)) - set(cuda_kernels.FTZ_ONLY_INSTRUCTIONS))
        files[name] = {"compile_s": round(t1 - t0, 3), "binary": path.name,
                       "cached": path in cached_before,
                       "kernels": len(kernels), "loaded": len(kernels) - len(missing),
                       "missing": missing, "ptx_flushing_instructions": flushing}
        ok = ok and not missing and not flushing
    total = sum(f["loaded"] for f in files.values())
    wanted = sum(f["kernels"] for f in files.values())
    key = {"target": target, "nvrtc": ".".join(map(str, cuda_kernels.nvrtc_version())),
           "kernels loaded": f"{total} of {wanted}",
           "compile s": round(sum(f["compile_s"] for f in files.values()), 2),
           "from cache": f"{sum(f['cached'] for f in files.values())} of {len(files)} files",
           "ptx ftz": "none" if all(not f["ptx_flushing_instructions"]
                                    for f in files.values()) else "FLUSHES"}
    return {"ok": ok and total > 0, "key": key, "files": files}


def stage_reductions(dev: Device, sizes: tuple[int, ...] = REDUCTION_SIZES,
                     wide: tuple[tuple[int, int], ...] = ((262145, 10), (4097, 1000)),
                     prelu: tuple[int, int] = (4097, 1024)) -> dict[str, Any]:
    """Block reductions (sum of squares, sum of |x|, global norm, MSE, cross-entropy) on the
    GPU against float64 NumPy, at sizes around the block and grid size and at 2**28; each
    repeated once to show it is deterministic. PReLU's slope gradient bitwise vs the cpu."""
    ops = _gpu_ops(dev)
    import mlpx

    cpu = mlpx.get_backend("cpu")
    host = ops.to_numpy
    rng = np.random.default_rng(0)
    checks, worst = [], 0.0

    def record(what: str, n: int, got: Any, want: float, again: Any, rtol: float) -> None:
        nonlocal worst
        g = float(ops.to_float(got))
        err = abs(g - want) / max(abs(want), 1e-300)
        worst = max(worst, err)
        same = float(ops.to_float(again)) == g
        checks.append({"op": what, "n": n, "got": g, "want": want, "rel_err": err,
                       "deterministic": same, "ok": err <= rtol and same})

    for n in sizes:
        x = _normal(ops, rng, n)
        h = host(x).astype(np.float64)
        rtol = 1e-12
        record("sum_squares", n, ops.sum_squares(x), float(np.sum(h * h)), ops.sum_squares(x),
               rtol)
        record("sum_abs", n, ops.sum_abs(x), float(np.sum(np.abs(h))), ops.sum_abs(x), rtol)
        record("global_norm", n, ops.global_norm([x]), float(np.sqrt(np.sum(h * h))),
               ops.global_norm([x]), rtol)
        if n <= 262145:
            t = _normal(ops, rng, n)
            d = h - host(t).astype(np.float64)
            record("mse", n, ops.mse(x, t), float(np.mean(d * d)), ops.mse(x, t), rtol)
        del x, h
    for rows, classes in wide:
        z = _normal(ops, rng, (rows, classes), 3.0)
        lab = ops.asarray(rng.integers(0, classes, rows).astype(np.int64))
        zh, lh = host(z).astype(np.float64), host(lab)
        m = zh.max(axis=1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(zh - m).sum(axis=1))
        want = float(np.mean(lse - zh[np.arange(rows), lh]))
        g = ops.empty(z.shape, z.dtype)
        record(f"softmax_xent {classes} classes", rows, ops.softmax_cross_entropy(z, lab, g),
               want, ops.softmax_cross_entropy(z, lab, g), 1e-11)
    dy, zz = _normal(ops, rng, prelu), _normal(ops, rng, prelu)
    sl = ops.asarray(np.full(prelu[1], 0.25, np.float32))
    out, ds = ops.empty(prelu, np.float32), ops.empty((prelu[1],), np.float32)
    ops.prelu_backward(dy, zz, sl, out, ds)
    h_out, h_ds = np.empty(prelu, np.float32), np.empty(prelu[1], np.float32)
    cpu.prelu_backward(host(dy), host(zz), host(sl), h_out, h_ds)
    prelu_same = bool(np.array_equal(host(ds), h_ds) and np.array_equal(host(out), h_out))
    ok = all(c["ok"] for c in checks) and prelu_same
    key = {"checks": len(checks), "failed": sum(not c["ok"] for c in checks),
           "worst rel err": f"{worst:.1e}", "prelu dslopes vs cpu": "bitwise" if prelu_same
           else "DIFFERS"}
    return {"ok": ok, "key": key, "checks": checks, "prelu_bitwise": prelu_same}


def stage_ftz(dev: Device) -> dict[str, Any]:
    """float32 updates on values near 1e-40 on the GPU and on the cpu backend: kept
    subnormals give bitwise-equal results, flushed ones give zeros where the cpu has none."""
    ops = _gpu_ops(dev)
    import mlpx
    from mlpx import activations

    cpu = mlpx.get_backend("cpu")
    x = np.tile(SUBNORMALS, 64).reshape(8, -1)  # 2-D: the activation kernels want rows
    cases = {
        "sgd_update": lambda o, p, g: o.sgd_update(p, g, 0.5),
        "scale_": lambda o, p, g: o.scale_(p, 0.5),
        "adam_update": lambda o, p, g: o.adam_update(p, g, o.zeros(p.shape, p.dtype),
                                                     o.zeros(p.shape, p.dtype), 1e-3, 0.9,
                                                     0.999, 1e-8, 0.0, 1, False),
        "relu_backward": lambda o, p, g: o.act_backward(g, p, p, activations.get("relu"), p),
        "bias_identity": lambda o, p, g: o.bias_act(p, o.zeros((p.shape[1],), p.dtype),
                                                    activations.get("identity"), g),
    }
    results = {}
    for name, fn in cases.items():
        ph, gh = x.copy(), (x * 3).astype(np.float32)
        pd, gd = ops.asarray(ph.copy()), ops.asarray(gh.copy())
        fn(cpu, ph, gh)
        fn(ops, pd, gd)
        got = np.concatenate([ops.to_numpy(pd), ops.to_numpy(gd)])
        want = np.concatenate([ph, gh])
        flushed = int(np.sum((got == 0) & (want != 0)))
        results[name] = {"bitwise": bool(np.array_equal(got, want)), "flushed": flushed}
    kept = all(r["bitwise"] for r in results.values())
    key = {"float32 subnormals": "kept" if kept else "FLUSHED",
           "flushed values": sum(r["flushed"] for r in results.values())}
    return {"ok": kept, "key": key, "cases": results}


def stage_kernels(dev: Device, prelu: tuple[int, int] = (65536, 1024),
                  softmax: tuple[tuple[int, int], ...] = (
                      (65536, 10), (65536, 100), (16384, 1000), (2048, 32768)),
                  ) -> dict[str, Any]:
    """GPU times of the fused PReLU backward and softmax cross-entropy kernels against the
    reference expressions they replace (the base Backend's, run on CuPy)."""
    ops = _gpu_ops(dev)
    from mlpx.backends.base import Backend

    rng = np.random.default_rng(0)
    rows: dict[str, Any] = {}
    dy, z = _normal(ops, rng, prelu), _normal(ops, rng, prelu)
    sl = ops.asarray(np.full(prelu[1], 0.25, np.float32))
    out, ds = ops.empty(prelu, np.float32), ops.empty((prelu[1],), np.float32)
    fused = _events_ms(ops, lambda: ops.prelu_backward(dy, z, sl, out, ds))
    ref = _events_ms(ops, lambda: Backend.prelu_backward(ops, dy, z, sl, out, ds), repeat=3)
    rows[f"prelu_backward {prelu[0]}x{prelu[1]}"] = {"fused_ms": fused, "reference_ms": ref}
    for n, c in softmax:
        zz = _normal(ops, rng, (n, c))
        lab = ops.asarray(rng.integers(0, c, n).astype(np.int64))
        g = ops.empty(zz.shape, zz.dtype)

        def fused_call(zz=zz, lab=lab, g=g):
            return ops.softmax_cross_entropy(zz, lab, g)

        def ref_call(zz=zz, lab=lab, g=g):
            return Backend.softmax_cross_entropy(ops, zz, lab, g)

        rows[f"softmax_xent {n}x{c}"] = {"fused_ms": _events_ms(ops, fused_call),
                                         "reference_ms": _events_ms(ops, ref_call, repeat=3)}
    for r in rows.values():
        r["speedup"] = r["reference_ms"] / r["fused_ms"] if r["fused_ms"] else None
    key = {k: f"{v['fused_ms']:.3f} ms ({v['speedup'] or 0:.1f}x)" for k, v in rows.items()}
    return {"ok": True, "key": key, "timings": rows}


def _flops_rate(m: int, n: int, k: int, ms: float) -> float:
    """TFLOP/s of an (m, k) @ (k, n) product that took `ms`."""
    return 2.0 * m * n * k / (ms * 1e-3) / 1e12 if ms > 0 else 0.0


def stage_bf16(dev: Device, rows: int = 65536, check_rows: int = 1024,
               sizes: tuple[int, ...] = (784, 1024, 1024, 10), bits: int = 1 << 22,
               steps: int = 4) -> dict[str, Any]:
    """The "mixed_bfloat16" products on the GPU: the to_bfloat16 kernel bitwise against the
    reference on random bit patterns; every product shape of the model (forward, dW, dx) at
    `check_rows` against the contract (float64 product of the rounded operands, bound
    K * ACCUMULATION_UNIT * |a||b|); times of the products at `rows` in bfloat16, FP32 and
    TF32, and of a training step of the model in float32 and in mixed_bfloat16."""
    ops = _gpu_ops(dev)
    import mlpx
    from mlpx.backends._cuda_bf16 import ACCUMULATION_UNIT as unit
    from mlpx.backends._cuda_bf16 import cublas_args
    from mlpx.backends.bfloat16 import round_to_bfloat16, to_bfloat16_bits

    rng = np.random.default_rng(0)
    host = ops.to_numpy
    x = rng.integers(0, 2**32, bits, dtype=np.uint64).astype(np.uint32).view(np.float32)
    conv_same = bool(np.array_equal(host(ops._bfloat16_operand("a", ops.asarray(x))),
                                    to_bfloat16_bits(x)))
    big = _normal(ops, rng, (rows, max(sizes)))
    conv_ms = _events_ms(ops, functools.partial(ops._bfloat16_operand, "a", big), repeat=5)
    del big
    tf32 = None
    if getattr(ops, "allow_tf32", None) is False and hasattr(ops.xp, "cuda"):
        tf32 = type(ops)(ops.device_id, allow_tf32=True)
    checks, timings, ok = [], {}, conv_same
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        # (label, a shape, b shape, trans_a, trans_b) at `r` rows
        def shapes(r, i=fan_in, o=fan_out):
            return [(f"fwd {r}x{i} @ {i}x{o}", (r, i), (i, o), False, False),
                    (f"dW {i}x{r} @ {r}x{o}", (r, i), (r, o), True, False),
                    (f"dx {r}x{o} @ {o}x{i}", (r, o), (i, o), False, True)]

        for label, sa, sb, ta, tb in shapes(check_rows):
            a, b = rng.standard_normal(sa, np.float32), rng.standard_normal(sb, np.float32)
            m, n = (sa[1] if ta else sa[0]), (sb[0] if tb else sb[1])
            out = ops.empty((m, n), np.float32)
            ops.matmul_bf16(ops.asarray(a), ops.asarray(b), out, ta, tb)
            ra = round_to_bfloat16(a).astype(np.float64)
            rb = round_to_bfloat16(b).astype(np.float64)
            ra, rb = (ra.T if ta else ra), (rb.T if tb else rb)
            k = ra.shape[1]
            worst = float(np.max(np.abs(host(out) - ra @ rb)
                                 / (k * unit * (np.abs(ra) @ np.abs(rb)) + 1e-300)))
            checks.append({"product": label, "error/bound": worst, "ok": worst <= 1.0})
            ok = ok and worst <= 1.0
        for label, sa, sb, ta, tb in shapes(rows):
            a, b = _normal(ops, rng, sa), _normal(ops, rng, sb)
            m, n = (sa[1] if ta else sa[0]), (sb[0] if tb else sb[1])
            k = sa[0] if ta else sa[1]
            out = ops.empty((m, n), np.float32)
            row = {}
            for name, fn in (("bf16", ops.matmul_bf16), ("fp32", ops.matmul),
                             ("tf32", tf32.matmul if tf32 is not None else None)):
                if fn is not None:
                    ms = _events_ms(ops, functools.partial(fn, a, b, out, ta, tb), repeat=5)
                    row[f"{name}_ms"] = ms
                    row[f"{name}_tflops"] = _flops_rate(m, n, k, ms)
            # the GEMM alone, on operands already rounded: what fusing the rounding into
            # the elementwise kernels could save is bf16_ms - gemm_only_ms
            a16, b16 = ops._bfloat16_operand("a", a), ops._bfloat16_operand("b", b)
            args = cublas_args(sa, sb, ta, tb)
            row["gemm_only_ms"] = _events_ms(
                ops, functools.partial(ops._gemm_bf16, args, a16, b16, out), repeat=5)
            timings[label] = row
            del a, b, out, a16, b16
    steps_ms = {}
    X = rng.standard_normal((rows * steps, sizes[0]), np.float32)
    y = rng.integers(0, sizes[-1], rows * steps)
    Xd, yd = ops.asarray(X), ops.asarray(y)
    for dtype in ("float32", "mixed_bfloat16"):
        model = mlpx.MLP(list(sizes), backend=ops, dtype=dtype, seed=0)

        fit = functools.partial(model.fit, Xd, yd, loss="cross_entropy", optimizer="sgd",
                                lr=1e-3, epochs=1, batch_size=rows, verbose=0, shuffle=False)
        steps_ms[dtype] = _events_ms(ops, fit, repeat=2) / steps
    speedup = steps_ms["float32"] / steps_ms["mixed_bfloat16"]
    total = sum(t["bf16_ms"] for t in timings.values())
    rounding = total - sum(t["gemm_only_ms"] for t in timings.values())
    key = {"to_bfloat16 vs reference": "bitwise" if conv_same else "DIFFERS",
           "products vs contract": f"{sum(c['ok'] for c in checks)} of {len(checks)}",
           "step ms fp32 / bf16": f"{steps_ms['float32']:.2f} / "
                                  f"{steps_ms['mixed_bfloat16']:.2f} ({speedup:.2f}x)",
           "rounding share of the products": f"{rounding / total:.0%}" if total > 0 else None,
           "to_bfloat16 GB/s": round(6.0 * rows * max(sizes) / (conv_ms * 1e-3) / 1e9, 1)
           if conv_ms > 0 else None}
    return {"ok": ok, "key": key, "conversion_bitwise": conv_same, "checks": checks,
            "product_timings": timings, "step_ms": steps_ms}


def stage_trace(dev: Device, out: Path, batch: int = 65536, batches_per_epoch: int = 4,
                epochs: int = 2, sizes: tuple[int, ...] = (784, 1024, 1024, 10)) -> dict[str, Any]:
    """The no-sync training trace (sync_trace.py) at a large batch, resident and streamed,
    written to `out` (trace.json)."""
    ops = _gpu_ops(dev)
    from sync_trace import environment, trace_runs

    runs = trace_runs(ops, sizes, batch=batch, batches_per_epoch=batches_per_epoch,
                      epochs=epochs)
    out.write_text(json.dumps({"environment": environment(dev), "sizes": list(sizes),
                               "runs": runs, "ok": all(r["ok"] for r in runs.values())},
                              indent=2, default=str) + "\n")
    key = {label: {k: run["summary"][k] for k in
                   ("syncs_inside_steps", "pageable_copies_inside_steps", "copy_waits",
                    "gpu_ms_total", "gather_ms_total")}
           for label, run in runs.items()}
    return {"ok": all(r["ok"] for r in runs.values()), "key": key, "trace": out.name}


def _tail(text: str, lines: int = 1) -> str:
    kept = [ln for ln in text.splitlines() if ln.strip()]
    return " / ".join(kept[-lines:])[:300]


def stage_check(dev: Device, extra: tuple[str, ...] = (), timeout_s: float = 600
                ) -> dict[str, Any]:
    """`mlpx check` on the GPU: every layer's gradients against the reference backend and
    PyTorch (`extra`: more `mlpx check` options)."""
    _gpu_ops(dev)
    cmd = [sys.executable, "-m", "mlpx", "check", "--backend", dev.backend_name, *extra]
    print(" ".join(cmd[1:]), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=REPO)
    print(proc.stdout + proc.stderr, flush=True)
    return {"ok": proc.returncode == 0, "key": {"result": _tail(proc.stdout + proc.stderr)},
            "command": cmd[1:], "returncode": proc.returncode}


def stage_bench(dev: Device, out: Path, batches: str = "1024,65536", peers: str = "torch,jax",
                extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """mlpx bench on the GPU against PyTorch CUDA and JAX (where the peer programs exist),
    one round, written to `out` (bench.json). JAX gets the GPU here, so the stage lets it
    take its memory only as it needs it."""
    _gpu_ops(dev)
    cmd = [sys.executable, "-m", "mlpx", "bench", "--backend", dev.backend_name, "--batches",
           batches, "--rounds", "1", "--no-plot", "--peers", peers, *extra]
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
    env.pop("JAX_PLATFORMS", None)
    with tempfile.TemporaryDirectory() as tmp:
        cmd += ["--out", tmp]
        print(" ".join(cmd[1:]), flush=True)
        proc = subprocess.run(cmd, text=True, env=env, cwd=REPO)
        found = sorted(Path(tmp).glob("*.json"))
        if found:
            shutil.copy(found[0], out)
    data = json.loads(out.read_text()) if out.is_file() else None
    key = {"bench.json": "written" if data is not None else "missing"}
    return {"ok": proc.returncode == 0 and data is not None, "key": key,
            "command": cmd[1:-2], "returncode": proc.returncode}


STAGES = ("env", "compile", "reductions", "ftz", "trace", "check", "kernels", "bf16", "bench")


def run_stage(name: str, dev: Device, json_path: Path, trace_out: Path | None = None,
              bench_out: Path | None = None) -> dict[str, Any]:
    """Run stage `name` on `dev`; its findings (also written to json_path)."""
    if name == "trace":
        result = stage_trace(dev, trace_out or json_path.with_name("trace.json"))
    elif name == "bench":
        result = stage_bench(dev, bench_out or json_path.with_name("bench.json"))
    else:
        result = globals()[f"stage_{name}"](dev)
    json_path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


def main(argv: list[str] | None = None, dev: Device | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("stage", choices=STAGES)
    p.add_argument("--json", required=True, help="where to write the stage's findings")
    p.add_argument("--trace-out", default=None, help="trace: where to write trace.json")
    p.add_argument("--bench-out", default=None, help="bench: where to copy bench.json")
    args = p.parse_args(argv)
    try:
        result = run_stage(args.stage, dev or Device(), Path(args.json),
                           trace_out=Path(args.trace_out) if args.trace_out else None,
                           bench_out=Path(args.bench_out) if args.bench_out else None)
    except NoGPU as e:
        print(f"no GPU: {e}")
        return NO_GPU
    print(json.dumps(result.get("key", {}), default=str))
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
