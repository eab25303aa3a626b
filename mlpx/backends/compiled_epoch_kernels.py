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
from .numba_common import jit

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


# One function per loss kernel, as in compiled_step_kernels (a kernel passed as an argument
# would make it uncacheable). Arguments: the full X and targets Y, the epoch's order (empty:
# in order), steps s0..s1-1 of batch size bs, the batch buffers, then the compiled step's
# arguments from ws on (step0: the optimiser's step count before s0), the running loss sum
# and what to count for the accuracy. Each returns (loss sum, correct count).

@jit
def steps_softmax_xent(X, Y, order, s0, s1, bs, xbuf, ybuf, ws, bs_, wgrads, bgrads, zs, ys,
                       deltas, dxs, pads, codes, alphas, in_place, routes, gbuf, opt_kind,
                       w_s1, w_s2, b_s1, b_s2, lr, h1, h2, h3, flag, wd, step0, total, count):
    correct = 0
    top = len(ys) - 1
    for s in range(s0, s1):
        x, t = _batch(X, Y, order, s, bs, xbuf, ybuf)
        loss = step_softmax_xent(x, t, ws, bs_, wgrads, bgrads, zs, ys, deltas, dxs, pads,
                                 codes, alphas, in_place, routes, gbuf, opt_kind, w_s1, w_s2,
                                 b_s1, b_s2, lr, h1, h2, h3, flag, wd,
                                 float(step0 + s - s0 + 1))
        total = total + np.float64(loss) * bs
        if count == COUNT_ARGMAX:
            correct += _argmax_correct(ys[top], t)
    return total, correct


@jit
def steps_mse(X, Y, order, s0, s1, bs, xbuf, ybuf, ws, bs_, wgrads, bgrads, zs, ys, deltas,
              dxs, pads, codes, alphas, in_place, routes, gbuf, opt_kind, w_s1, w_s2, b_s1,
              b_s2, lr, h1, h2, h3, flag, wd, step0, total, count):
    for s in range(s0, s1):
        x, t = _batch(X, Y, order, s, bs, xbuf, ybuf)
        loss = step_mse(x, t, ws, bs_, wgrads, bgrads, zs, ys, deltas, dxs, pads, codes,
                        alphas, in_place, routes, gbuf, opt_kind, w_s1, w_s2, b_s1, b_s2, lr,
                        h1, h2, h3, flag, wd, float(step0 + s - s0 + 1))
        total = total + np.float64(loss) * bs
    return total, 0


@jit
def steps_bce_logits(X, Y, order, s0, s1, bs, xbuf, ybuf, ws, bs_, wgrads, bgrads, zs, ys,
                     deltas, dxs, pads, codes, alphas, in_place, routes, gbuf, opt_kind, w_s1,
                     w_s2, b_s1, b_s2, lr, h1, h2, h3, flag, wd, step0, total, count):
    correct = 0
    top = len(ys) - 1
    for s in range(s0, s1):
        x, t = _batch(X, Y, order, s, bs, xbuf, ybuf)
        loss = step_bce_logits(x, t, ws, bs_, wgrads, bgrads, zs, ys, deltas, dxs, pads,
                               codes, alphas, in_place, routes, gbuf, opt_kind, w_s1, w_s2,
                               b_s1, b_s2, lr, h1, h2, h3, flag, wd,
                               float(step0 + s - s0 + 1))
        total = total + np.float64(loss) * bs
        if count == COUNT_SIGN:
            correct += _sign_correct(ys[top], t)
    return total, correct


#: the steps function of each loss kernel
STEPS = {"softmax_xent": steps_softmax_xent, "mse": steps_mse, "bce_logits": steps_bce_logits}

step_kernels.stamp_with_callees(
    (_batch, _argmax_correct, _sign_correct, *STEPS.values()),
    (*step_kernels._callee_modules(), step_kernels))
