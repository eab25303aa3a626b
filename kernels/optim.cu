// Optimiser, penalty and clipping kernels of the `cuda` backend (one pass per parameter).
//
// Every kernel mirrors a Numba kernel (named in its header comment) in
// mlpx/backends/numba_optim.py:
// values are loaded as double, a new state value is used unrounded in the same step's update,
// and every store rounds once to the array's type. Scalars that depend only on the step
// (Adam's bias corrections) are computed once on the host by the backend, with the same
// Python expressions as the reference. Compiled with -fmad=false (no FMA contraction), so the
// results are bitwise equal to the Numba kernels'.
// Unused state arrays are passed as `g` by the backend and then neither read nor written.
// Shared helpers (grid loop, block sums) come from common.cuh.

#include "common.cuh"

// Numba twin: sgd_update. p = p - lr g.
template <typename T>
__device__ void sgd_update_impl(T* p, const T* g, long long size, double lr) {
    MLPX_GRID_LOOP(k, size) {
        p[k] = (T)((double)p[k] - lr * (double)g[k]);
    }
}

// Numba twin: sgd_momentum_update. Weight decay, then (Nesterov) momentum.
template <typename T>
__device__ void sgd_momentum_impl(T* p, const T* g, T* buf, long long size, double lr,
                                  double momentum, double dampening, int nesterov,
                                  double weight_decay) {
    MLPX_GRID_LOOP(k, size) {
        double w = (double)p[k];
        double d = (double)g[k];
        if (weight_decay != 0.0) {
            d = d + weight_decay * w;
        }
        if (momentum != 0.0) {
            double b = momentum * (double)buf[k] + (1.0 - dampening) * d;
            buf[k] = (T)b;
            if (nesterov) {
                d = d + momentum * b;
            } else {
                d = b;
            }
        }
        p[k] = (T)(w - lr * d);
    }
}

// Numba twin: adagrad_update. sum_sq += g^2; p -= clr g / (sqrt(sum_sq) + eps).
template <typename T>
__device__ void adagrad_impl(T* p, const T* g, T* sum_sq, long long size, double clr,
                             double weight_decay, double eps) {
    MLPX_GRID_LOOP(k, size) {
        double w = (double)p[k];
        double d = (double)g[k];
        if (weight_decay != 0.0) {
            d = d + weight_decay * w;
        }
        double s = (double)sum_sq[k] + d * d;
        sum_sq[k] = (T)s;
        p[k] = (T)(w - clr * d / (sqrt(s) + eps));
    }
}

// Numba twin: rmsprop_update. Optionally centered, optionally with momentum.
template <typename T>
__device__ void rmsprop_impl(T* p, const T* g, T* square_avg, T* grad_avg, T* buf,
                             long long size, double lr, double alpha, double eps,
                             double weight_decay, double momentum, int centered) {
    MLPX_GRID_LOOP(k, size) {
        double w = (double)p[k];
        double d = (double)g[k];
        if (weight_decay != 0.0) {
            d = d + weight_decay * w;
        }
        double sq = alpha * (double)square_avg[k] + (1.0 - alpha) * d * d;
        square_avg[k] = (T)sq;
        double avg;
        if (centered) {
            double ga = alpha * (double)grad_avg[k] + (1.0 - alpha) * d;
            grad_avg[k] = (T)ga;
            avg = sqrt(sq - ga * ga) + eps;
        } else {
            avg = sqrt(sq) + eps;
        }
        if (momentum > 0.0) {
            double b = momentum * (double)buf[k] + d / avg;
            buf[k] = (T)b;
            p[k] = (T)(w - lr * b);
        } else {
            p[k] = (T)(w - lr * (d / avg));
        }
    }
}

// Numba twin: adam_update. Adam (L2 in the gradient) or AdamW (decoupled decay).
// step_size = lr / (1 - beta1**step) and bc2_sqrt = sqrt(1 - beta2**step) come from the host.
template <typename T>
__device__ void adam_impl(T* p, const T* g, T* m, T* v, long long size, double lr,
                          double beta1, double beta2, double eps, double weight_decay,
                          double step_size, double bc2_sqrt, int decoupled) {
    MLPX_GRID_LOOP(k, size) {
        double w = (double)p[k];
        double d = (double)g[k];
        if (weight_decay != 0.0) {
            if (decoupled) {
                w = w * (1.0 - lr * weight_decay);
            } else {
                d = d + weight_decay * w;
            }
        }
        double mm = beta1 * (double)m[k] + (1.0 - beta1) * d;
        double vv = beta2 * (double)v[k] + (1.0 - beta2) * d * d;
        m[k] = (T)mm;
        v[k] = (T)vv;
        p[k] = (T)(w - step_size * mm / (sqrt(vv) / bc2_sqrt + eps));
    }
}

// Numba twin: add_penalty_grad. g += l1 sign(p) + l2 p (sign(0) = 0, NaN propagates).
template <typename T>
__device__ void add_penalty_grad_impl(const T* p, T* g, long long size, double l1,
                                      double l2) {
    MLPX_GRID_LOOP(k, size) {
        double w = (double)p[k];
        double s = 0.0;
        if (w > 0.0) {
            s = 1.0;
        } else if (w < 0.0) {
            s = -1.0;
        } else if (w != w) {
            s = w;
        }
        g[k] = (T)((double)g[k] + l1 * s + l2 * w);
    }
}

// Numba twin: scale_. x = x * factor; `factor` is a host double (scale_) or a device double
// (scale_dev: a clipping factor computed on the device, never read back to the host).
template <typename T>
__device__ void scale_impl(T* x, long long size, double factor) {
    MLPX_GRID_LOOP(k, size) {
        x[k] = (T)((double)x[k] * factor);
    }
}

// Numba twin: clip_. x = min(max(x, lo), hi), compared in double; NaN stays NaN.
template <typename T>
__device__ void clip_impl(T* x, long long size, double lo, double hi) {
    MLPX_GRID_LOOP(k, size) {
        double v = (double)x[k];
        if (v < lo) {
            x[k] = (T)lo;
        } else if (v > hi) {
            x[k] = (T)hi;
        }
    }
}

// Numba twin: sum_abs. partial[block] = the block's sum of |x| (the backend adds the blocks).
template <typename T>
__device__ void sum_abs_impl(const T* x, double* partial, long long size) {
    double acc = 0.0;
    MLPX_GRID_LOOP(k, size) {
        acc += fabs((double)x[k]);
    }
    double total = mlpx_block_total(acc);
    if (threadIdx.x == 0) {
        partial[blockIdx.x] = total;
    }
}

// Numba twin: sum_squares. partial[block] = the block's sum of x^2, squared in double. The
// Numba kernel sums in four interleaved lanes, the GPU per thread and block: the totals agree
// within a few float64 ulps (the order of the additions differs), not bitwise.
template <typename T>
__device__ void sum_squares_impl(const T* x, double* partial, long long size) {
    double acc = 0.0;
    MLPX_GRID_LOOP(k, size) {
        double v = (double)x[k];
        acc += v * v;
    }
    double total = mlpx_block_total(acc);
    if (threadIdx.x == 0) {
        partial[blockIdx.x] = total;
    }
}

// Finishes sum_squares (Numba twin: sum_squares; cpu.py's global_norm adds its results and
// takes the square root, as this kernel does on the device). Adds the
// `count` partial sums of sum_squares launches in a fixed order (one block, a tree over
// MLPX_BLOCK threads: deterministic) and writes the total, or its square root, to out[0].
extern "C" __global__ void sum_partials(const double* partial, long long count, double* out,
                                        int take_sqrt) {
    double acc = 0.0;
    for (long long k = threadIdx.x; k < count; k += blockDim.x) {
        acc += partial[k];
    }
    double total = mlpx_block_total(acc);
    if (threadIdx.x == 0 && blockIdx.x == 0) {
        out[0] = take_sqrt ? sqrt(total) : total;
    }
}

// Reference twin: Backend.clip_scale. out = min(1, max_norm / (norm + 1e-6)) in double, from
// a norm that stays on the device; NaN propagates, as np.minimum does. One thread.
extern "C" __global__ void clip_scale(const double* norm, double max_norm, double* out) {
    if (threadIdx.x == 0 && blockIdx.x == 0) {
        double s = max_norm / (norm[0] + 1e-6);
        out[0] = (s < 1.0 || s != s) ? s : 1.0;
    }
}

#define MLPX_INSTANTIATE(T, S)                                                                 \
    extern "C" __global__ void sgd_update_##S(T* p, const T* g, long long size, double lr) {   \
        sgd_update_impl<T>(p, g, size, lr);                                                    \
    }                                                                                          \
    extern "C" __global__ void sgd_momentum_update_##S(                                        \
        T* p, const T* g, T* buf, long long size, double lr, double momentum,                  \
        double dampening, int nesterov, double weight_decay) {                                 \
        sgd_momentum_impl<T>(p, g, buf, size, lr, momentum, dampening, nesterov,               \
                             weight_decay);                                                    \
    }                                                                                          \
    extern "C" __global__ void adagrad_update_##S(T* p, const T* g, T* sum_sq,                 \
                                                   long long size, double clr,                 \
                                                   double weight_decay, double eps) {          \
        adagrad_impl<T>(p, g, sum_sq, size, clr, weight_decay, eps);                           \
    }                                                                                          \
    extern "C" __global__ void rmsprop_update_##S(                                             \
        T* p, const T* g, T* square_avg, T* grad_avg, T* buf, long long size, double lr,       \
        double alpha, double eps, double weight_decay, double momentum, int centered) {        \
        rmsprop_impl<T>(p, g, square_avg, grad_avg, buf, size, lr, alpha, eps, weight_decay,   \
                        momentum, centered);                                                   \
    }                                                                                          \
    extern "C" __global__ void adam_update_##S(                                                \
        T* p, const T* g, T* m, T* v, long long size, double lr, double beta1, double beta2,   \
        double eps, double weight_decay, double step_size, double bc2_sqrt, int decoupled) {   \
        adam_impl<T>(p, g, m, v, size, lr, beta1, beta2, eps, weight_decay, step_size,         \
                     bc2_sqrt, decoupled);                                                     \
    }                                                                                          \
    extern "C" __global__ void add_penalty_grad_##S(const T* p, T* g, long long size,          \
                                                     double l1, double l2) {                   \
        add_penalty_grad_impl<T>(p, g, size, l1, l2);                                          \
    }                                                                                          \
    extern "C" __global__ void scale_##S(T* x, long long size, double factor) {                \
        scale_impl<T>(x, size, factor);                                                        \
    }                                                                                          \
    extern "C" __global__ void scale_dev_##S(T* x, long long size, const double* factor) {     \
        scale_impl<T>(x, size, *factor);                                                       \
    }                                                                                          \
    extern "C" __global__ void clip_##S(T* x, long long size, double lo, double hi) {          \
        clip_impl<T>(x, size, lo, hi);                                                         \
    }                                                                                          \
    extern "C" __global__ void sum_abs_##S(const T* x, double* partial, long long size) {      \
        sum_abs_impl<T>(x, partial, size);                                                     \
    }                                                                                          \
    extern "C" __global__ void sum_squares_##S(const T* x, double* partial, long long size) {  \
        sum_squares_impl<T>(x, partial, size);                                                 \
    }

MLPX_INSTANTIATE(float, f32)
MLPX_INSTANTIATE(double, f64)
