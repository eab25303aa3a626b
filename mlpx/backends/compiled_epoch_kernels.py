"""Several training steps of an epoch as one Numba call (mlpx.backends.compiled_epoch).

`steps_<loss>` runs steps s0..s1-1 of an epoch: for each it takes the batch's rows of the
full X and targets (gathered by the epoch's order into the batch buffers, or a slice of
them in order, as mlpx.backends.batches.ResidentBatches yields them), runs the compiled step
of mlpx.backends.compiled_step_kernels on it, adds the batch's loss to the running sum as
the training loop does (`total + float64(mean) * rows`) and counts the correct predictions
the accuracy metric would count (`Loss.correct`). Importing this module imports
compiled_step_kernels: `bind_gemms` must have succeeded first.
"""

from __future__ import annotations

import numpy as np

from . import compiled_step_kernels as step_kernels
from .compiled_step_kernels import step_bce_logits, step_mse, step_softmax_xent
from .numba_common import jit, jit_inline

# what the correct count is for (none: no accuracy metric to feed)
COUNT_NONE, COUNT_ARGMAX, COUNT_SIGN = 0, 1, 2


@jit
def _batch(X, Y, order, s, bs, xbuf, ybuf):
    """Batch s: its rows gathered by `order` into the buffers, or (no order) the slices."""
    lo = s * bs
    if order.shape[0] == 0:
        return X[lo:lo + bs], Y[lo:lo + bs]
    for i in range(bs):
        j = order[lo + i]
        xbuf[i] = X[j]
        ybuf[i] = Y[j]
    return xbuf, ybuf


@jit
def _argmax_correct(out, labels):
    """(out.argmax(axis=1) == labels).sum(): NumPy's argmax, whose first NaN is the max."""
    n, c = out.shape
    correct = 0
    for i in range(n):
        best = out[i, 0]
        arg = 0
        if best == best:
            for j in range(1, c):
                v = out[i, j]
                if v != v:
                    arg = j
                    break
                if v > best:
                    best = v
                    arg = j
        if arg == labels[i]:
            correct += 1
    return correct


@jit
def _sign_correct(out, target):
    """((out > 0) == (target > 0.5)).sum(): the bce accuracy's count."""
    n, c = out.shape
    correct = 0
    for i in range(n):
        for j in range(c):
            if (out[i, j] > 0) == (target[i, j] > 0.5):
                correct += 1
    return correct


@jit
def _no_count(out, target):
    """The count of a loss whose accuracy the kernel does not reproduce (mse): none."""
    return 0


@jit_inline
def _steps(step, correct_of, X, Y, order, s0, s1, bs, xbuf, ybuf, step_args, step0, total,
           count):
    """Steps s0..s1-1 of the epoch with `step`, the loss's compiled step, counting the correct
    predictions with `correct_of` unless `count` is COUNT_NONE; the other arguments are
    those of the entry points below."""
    correct = 0
    ys = step_args[5]  # the layers' outputs (ws, bs, wgrads, bgrads, zs, ys, ...)
    top = len(ys) - 1
    for s in range(s0, s1):
        x, t = _batch(X, Y, order, s, bs, xbuf, ybuf)
        loss = step(x, t, *step_args, float(step0 + s - s0 + 1))
        total = total + np.float64(loss) * bs
        if count != COUNT_NONE:
            correct += correct_of(ys[top], t)
    return total, correct


# One entry point per loss kernel: `_steps` with that loss's step and count. A function
# passed as an argument to compiled code that calls it has its address compiled in, which
# makes the code uncacheable (hence one step per loss in compiled_step_kernels); Numba
# inlines `_steps` into each entry point, where its two function arguments become direct
# calls, and the entry points are cached as before.
# Arguments: the full X and targets Y, the epoch's order (empty: in order), steps s0..s1-1 of
# batch size bs, the batch buffers, the compiled step's arguments between the batch and the
# step count (CompiledStep.step_args), the optimiser's step count before s0, the running loss
# sum and what to count for the accuracy. Each returns (loss sum, correct count).

@jit
def steps_softmax_xent(X, Y, order, s0, s1, bs, xbuf, ybuf, step_args, step0, total, count):
    return _steps(step_softmax_xent, _argmax_correct, X, Y, order, s0, s1, bs, xbuf, ybuf,
                  step_args, step0, total, count)


@jit
def steps_mse(X, Y, order, s0, s1, bs, xbuf, ybuf, step_args, step0, total, count):
    return _steps(step_mse, _no_count, X, Y, order, s0, s1, bs, xbuf, ybuf, step_args, step0,
                  total, count)


@jit
def steps_bce_logits(X, Y, order, s0, s1, bs, xbuf, ybuf, step_args, step0, total, count):
    return _steps(step_bce_logits, _sign_correct, X, Y, order, s0, s1, bs, xbuf, ybuf,
                  step_args, step0, total, count)


#: the steps function of each loss kernel
STEPS = {"softmax_xent": steps_softmax_xent, "mse": steps_mse, "bce_logits": steps_bce_logits}

step_kernels.stamp_with_callees(
    (_batch, _argmax_correct, _sign_correct, _no_count, _steps, *STEPS.values()),
    (*step_kernels._callee_modules(), step_kernels))
