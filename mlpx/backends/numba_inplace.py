"""In-place twins of the activation kernels, for Dense's shared work arrays.

When y = f(z) overwrites z, or delta overwrites dy, the out-of-place kernels would be called
with aliased arguments; LLVM's runtime overlap check then fails and the loop runs scalar
(measured on a 4096x1024 float32 array: bias_relu 0.74 -> 3.5 ms, relu_backward 1.3 ->
19 ms). These kernels write the array they read, element by element, so they vectorise. They
compute exactly the expressions of `numba_kernels` (same float64 evaluation, one rounding).
"""

from __future__ import annotations

from .._numba_cache import configure_cache

configure_cache()

import numba as nb  # noqa: E402
import numpy as np  # noqa: E402

from .numba_kernels import act_scalar, dact_scalar  # noqa: E402

_jit = nb.njit(cache=True, nogil=True, error_model="numpy")


@_jit
def bias_relu_(z, b):
    """z = max(z + b, 0) in place (bias_relu with out = z)."""
    n, m = z.shape
    for i in range(n):
        for j in range(m):
            v = np.float64(z[i, j]) + np.float64(b[j])
            z[i, j] = v if v > 0.0 else 0.0


@_jit
def bias_act_(z, b, code, alpha):
    """z = f(z + b) in place; z + b is rounded to the storage dtype first, as in bias_act."""
    n, m = z.shape
    for i in range(n):
        for j in range(m):
            z[i, j] = np.float64(z[i, j]) + np.float64(b[j])
            z[i, j] = act_scalar(code, np.float64(z[i, j]), alpha)


@_jit
def relu_backward_(dy, z):
    """dy = z > 0 ? dy : 0 in place (relu_backward with out = dy)."""
    n, m = z.shape
    for i in range(n):
        for j in range(m):
            dy[i, j] = dy[i, j] if z[i, j] > 0 else 0.0


@_jit
def act_backward_(dy, z, y, code, alpha):
    """dy = dy * f'(z) in place (act_backward with out = dy); z and y may be one array."""
    n, m = z.shape
    for i in range(n):
        for j in range(m):
            dy[i, j] = dact_scalar(code, np.float64(dy[i, j]), np.float64(z[i, j]),
                                   np.float64(y[i, j]), alpha)
