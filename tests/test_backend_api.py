"""Every backend class offers the same ops with the same signatures; the registry's errors.

Runs without a GPU and without CuPy: `mlpx.backends.cuda` imports CuPy only when a
CUDABackend is constructed.
"""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest
from conftest import cuda_skip_reason

import mlpx
from mlpx.backends import VALID_NAMES, Backend, CPUBackend, get_backend
from mlpx.backends.cuda import CUDABackend
from mlpx.errors import BackendUnavailableError

CLASSES = [Backend, CPUBackend, CUDABackend]


def _public_methods(cls) -> dict[str, inspect.Signature]:
    out = {}
    for name, member in inspect.getmembers(cls):
        if name.startswith("_") or not callable(member) or isinstance(member, type):
            continue
        out[name] = inspect.signature(member)
    return out


def _shape(sig: inspect.Signature) -> list[tuple]:
    """Names, kinds and defaults (annotations may be omitted in overrides)."""
    return [(p.name, p.kind, p.default) for p in sig.parameters.values()]


@pytest.mark.parametrize("cls", [CPUBackend, CUDABackend], ids=lambda c: c.__name__)
def test_same_public_methods_and_signatures(cls):
    ref = _public_methods(Backend)
    got = _public_methods(cls)
    assert set(got) == set(ref), (
        f"{cls.__name__} adds {sorted(set(got) - set(ref))} / lacks {sorted(set(ref) - set(got))}"
    )
    for name, sig in ref.items():
        assert _shape(got[name]) == _shape(sig), f"{cls.__name__}.{name}{got[name]} != {sig}"


def test_overrides_return_what_the_reference_returns():
    """An override must not forget its `return` (a fallback that returns None)."""
    import ast
    from pathlib import Path

    for cls in (CPUBackend, CUDABackend):
        tree = ast.parse(Path(inspect.getsourcefile(cls)).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name == cls.__name__:
                for fn in node.body:
                    if not isinstance(fn, ast.FunctionDef) or fn.name.startswith("_"):
                        continue
                    ref = getattr(Backend, fn.name, None)
                    if ref is None or fn.name in ("warmup", "synchronize"):
                        continue
                    returns = [n for n in ast.walk(fn) if isinstance(n, ast.Return)]
                    ref_src = inspect.getsource(ref)
                    if "return" in ref_src and fn.name != "copy_into":
                        assert returns and all(r.value is not None for r in returns), (
                            f"{cls.__name__}.{fn.name} has a return without a value"
                        )


def test_cuda_module_imports_without_cupy():
    code = (
        "import sys, mlpx.backends.cuda as c; "
        "assert 'cupy' not in sys.modules, 'importing the cuda module imported cupy'; "
        "print(c.CUDABackend.name)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "cuda"


@pytest.mark.skipif(cuda_skip_reason() is None, reason="this machine has a usable CUDA GPU")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "CUDA:1"])
def test_cuda_unavailable_error_names_the_fix(name):
    with pytest.raises(BackendUnavailableError) as e:
        get_backend(name)
    msg = str(e.value)
    assert isinstance(e.value, RuntimeError)
    if not mlpx._compat.has_cupy():
        assert "CuPy" in msg and 'pip install "mlpx[cuda12]"' in msg and "mlpx[cuda13]" in msg
    else:
        assert "GPU" in msg and "backend='cpu'" in msg


@pytest.mark.skipif(cuda_skip_reason() is None, reason="this machine has a usable CUDA GPU")
def test_model_on_cuda_without_gpu_fails_before_building():
    with pytest.raises(BackendUnavailableError, match="cuda"):
        mlpx.MLP([4, 3, 2], backend="cuda")


@pytest.mark.skipif(cuda_skip_reason() is None, reason="this machine has a usable CUDA GPU")
def test_cuda_backend_constructed_directly_gives_the_same_clear_error():
    from mlpx.backends.cuda import CUDABackend

    with pytest.raises(BackendUnavailableError, match="cuda"):
        CUDABackend(0, allow_tf32=True)


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "tpu", "cuda:-1", ""])
def test_unknown_backend_name_lists_valid_names(bad):
    with pytest.raises(ValueError) as e:
        get_backend(bad)
    for valid in VALID_NAMES:
        assert valid in str(e.value)


def test_auto_and_cpu():
    expected = "cuda" if cuda_skip_reason() is None else "cpu"
    assert get_backend("auto").name == expected
    assert get_backend("cpu") is get_backend("CPU")
    assert isinstance(get_backend("cpu"), CPUBackend)
    assert mlpx.available_backends()[0] == "cpu"
    ops = get_backend("cpu")
    assert get_backend(ops) is ops
    with pytest.raises(TypeError):
        get_backend(3)


def test_cuda_constructor_is_documented():
    sig = inspect.signature(CUDABackend.__init__)
    assert list(sig.parameters) == ["self", "device", "allow_tf32"]
    assert sig.parameters["allow_tf32"].default is False  # plain FP32 unless asked
