"""Precision policies: which dtype a model keeps its variables in and computes in.

A policy is named by the `dtype=` argument of `Sequential`/`MLP` (Keras's policy names):

- "float32" (the default) and "float64": variables and every op in that dtype;
- "mixed_bfloat16": variables (parameters, gradients, optimiser state) stay float32, and
  matrix products take bfloat16 operands with float32 accumulation (see
  mlpx.backends.bfloat16 for the rounding contract). Bias, activation, loss and softmax stay
  float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Policy:
    """A named precision policy: `variable_dtype` for the stored arrays, `compute_dtype`
    (a name, since NumPy has no bfloat16) for the matrix products' operands."""

    name: str
    variable_dtype: np.dtype
    compute_dtype: str

    @property
    def mixed(self) -> bool:
        return self.compute_dtype != self.variable_dtype.name


POLICIES: dict[str, Policy] = {
    "float32": Policy("float32", np.dtype(np.float32), "float32"),
    "float64": Policy("float64", np.dtype(np.float64), "float64"),
    "mixed_bfloat16": Policy("mixed_bfloat16", np.dtype(np.float32), "bfloat16"),
}


def get_policy(dtype: Any) -> Policy:
    """The Policy named by `dtype`: a policy name, a Policy, or a NumPy float dtype.

    Raises ValueError listing the valid names for anything else.
    """
    if isinstance(dtype, Policy):
        return dtype
    if isinstance(dtype, str):
        key = dtype.strip().lower()
    else:
        try:
            key = np.dtype(dtype).name
        except TypeError:
            key = None
    if key not in POLICIES:
        plain = " or ".join(repr(k) for k, p in POLICIES.items() if not p.mixed)
        mixed = ", ".join(repr(k) for k, p in POLICIES.items() if p.mixed)
        raise ValueError(
            f"dtype must be {plain}, or the mixed precision policy {mixed} (float32 weights, "
            f"bfloat16 matrix products); got {dtype!r}"
        )
    return POLICIES[key]


def ops_for(backend: Any, policy: Policy) -> Any:
    """The ops object a model under `policy` computes with: the backend itself, or for a
    mixed policy the backend behind mlpx.backends.bfloat16's rounding products."""
    if policy.compute_dtype != "bfloat16":
        return backend
    from .backends.bfloat16 import MixedBFloat16Ops

    return MixedBFloat16Ops(unwrap(backend))


def unwrap(ops: Any) -> Any:
    """The backend under a policy's ops object (the object itself when it is a backend)."""
    return getattr(ops, "wrapped", ops)
