// Fused loss kernels of the `cuda` backend: mean loss and its gradient in one pass.
//
// Every kernel mirrors a Numba kernel in mlpx/backends/numba_losses.py (named in its header
// comment): the same expression per element, evaluated in double, rounded once on store.
// The loss is never read back here: kernels write per-row or per-block partial sums (double)
// that the backend adds up on the device, so a training step does not synchronise with the
// host. Compiled with -fmad=false (no FMA contraction), like the other kernel files.
// Shared helpers (grid loop, block sums, sigmoid) come from common.cuh.

#include "common.cuh"

// Numba twin: softmax_xent. For up to SOFTMAX_WIDE classes (softmax_xent_wide above that):
// one thread per row walks the row in order, exactly like the Numba loop (max, sum of exp,
// log-sum-exp, gradient); row_loss[i] = lse - z[i, label]. The
// backend sums row_loss and multiplies by 1/n. A label outside [0, m) gives NaN instead of
// reading out of bounds (labels are validated before training, so this never triggers).
template <typename T>
__device__ void softmax_xent_impl(const T* z, const long long* labels, T* grad,
                                  double* row_loss, long long n, long long m, int write_grad) {
    const double inv_n = 1.0 / (double)n;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        const T* row = z + i * m;
        double mx = -__longlong_as_double(0x7ff0000000000000LL);  // -inf
        for (long long j = 0; j < m; ++j) {
            double x = (double)row[j];
            mx = (x > mx) ? x : mx;  // Python's max(mx, x)
        }
        double s = 0.0;
        for (long long j = 0; j < m; ++j) {
            s += exp((double)row[j] - mx);
        }
        double lse = mx + log(s);
        long long k = labels[i];
        if (k < 0 || k >= m) {
            row_loss[i] = MLPX_NAN;
            continue;
        }
        row_loss[i] = lse - (double)row[k];
        if (write_grad) {
            T* grow = grad + i * m;
            for (long long j = 0; j < m; ++j) {
                double p = exp((double)row[j] - lse);
                if (j == k) {
                    p -= 1.0;
                }
                grow[j] = (T)(p * inv_n);
            }
        }
    }
}

#ifndef SOFTMAX_WIDE
#define SOFTMAX_WIDE 32  // threads per row of softmax_xent_wide (_cuda_kernels.SOFTMAX_WIDE)
#endif

// Tree over each group of SOFTMAX_WIDE consecutive threads: the group's sum (is_max 0) or
// maximum (is_max 1, Python's max: a NaN never replaces a number), returned to every thread
// of the group. Every thread of the block must call it (it has barriers).
__device__ double mlpx_group_reduce(double v, double* sh, int is_max) {
    const int lane = threadIdx.x % SOFTMAX_WIDE;
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int s = SOFTMAX_WIDE / 2; s > 0; s >>= 1) {
        if (lane < s) {
            double a = sh[threadIdx.x];
            double b = sh[threadIdx.x + s];
            sh[threadIdx.x] = is_max ? ((b > a) ? b : a) : a + b;
        }
        __syncthreads();
    }
    double r = sh[threadIdx.x - lane];
    __syncthreads();  // sh is rewritten by the next call
    return r;
}

// Numba twin: softmax_xent, for rows wider than SOFTMAX_WIDE classes: one group of
// SOFTMAX_WIDE threads per row (MLPX_BLOCK / SOFTMAX_WIDE rows per block). Lane l takes
// classes l, l + SOFTMAX_WIDE, ...; the row's maximum and sum of exp are trees over the
// lanes, a fixed order (deterministic, but not the Numba kernel's sequential order: the loss
// and gradient agree within float64 ulps). Every thread runs the same number of row
// iterations, so the barriers stay uniform.
template <typename T>
__device__ void softmax_xent_wide_impl(const T* z, const long long* labels, T* grad,
                                       double* row_loss, long long n, long long m,
                                       int write_grad) {
    __shared__ double sh[MLPX_BLOCK];
    const long long groups = MLPX_BLOCK / SOFTMAX_WIDE;
    const int lane = threadIdx.x % SOFTMAX_WIDE;
    const double inv_n = 1.0 / (double)n;
    for (long long first = (long long)blockIdx.x * groups; first < n;
         first += (long long)gridDim.x * groups) {
        const long long i = first + threadIdx.x / SOFTMAX_WIDE;
        const bool active = i < n;
        const T* row = z + (active ? i : 0) * m;
        double mx = -__longlong_as_double(0x7ff0000000000000LL);  // -inf
        if (active) {
            for (long long j = lane; j < m; j += SOFTMAX_WIDE) {
                double x = (double)row[j];
                mx = (x > mx) ? x : mx;
            }
        }
        mx = mlpx_group_reduce(mx, sh, 1);
        double s = 0.0;
        if (active) {
            for (long long j = lane; j < m; j += SOFTMAX_WIDE) {
                s += exp((double)row[j] - mx);
            }
        }
        s = mlpx_group_reduce(s, sh, 0);
        if (!active) {
            continue;
        }
        double lse = mx + log(s);
        long long k = labels[i];
        if (k < 0 || k >= m) {
            if (lane == 0) {
                row_loss[i] = MLPX_NAN;
            }
            continue;
        }
        if (lane == 0) {
            row_loss[i] = lse - (double)row[k];
        }
        if (write_grad) {
            T* grow = grad + i * m;
            for (long long j = lane; j < m; j += SOFTMAX_WIDE) {
                double p = exp((double)row[j] - lse);
                if (j == k) {
                    p -= 1.0;
                }
                grow[j] = (T)(p * inv_n);
            }
        }
    }
}

// Numba twin: bce_logits. term = max(v, 0) - v t + log1p(exp(-|v|)); grad = (sigmoid(v) - t)
// / size. partial[block] holds the block's sum of terms; the backend divides by size.
template <typename T>
__device__ void bce_logits_impl(const T* x, const T* t, T* grad, double* partial,
                                long long size, int write_grad) {
    double acc = 0.0;
    MLPX_GRID_LOOP(k, size) {
        double v = (double)x[k];
        double tt = (double)t[k];
        acc += ((0.0 > v) ? 0.0 : v) - v * tt + log1p(exp(-fabs(v)));
        if (write_grad) {
            grad[k] = (T)((mlpx_sigmoid(v) - tt) / (double)size);
        }
    }
    mlpx_block_sum(acc, partial);
}

// Numba twin: mse. term = d * d with d = y - t; grad = (2 / size) * d.
template <typename T>
__device__ void mse_impl(const T* y, const T* t, T* grad, double* partial, long long size,
                         int write_grad) {
    double acc = 0.0;
    MLPX_GRID_LOOP(k, size) {
        double d = (double)y[k] - (double)t[k];
        acc += d * d;
        if (write_grad) {
            grad[k] = (T)((2.0 / (double)size) * d);
        }
    }
    mlpx_block_sum(acc, partial);
}

// Numba twin: l1. term = |d|; grad = sign(d) / size (sign(0) = 0).
template <typename T>
__device__ void l1_impl(const T* y, const T* t, T* grad, double* partial, long long size,
                        int write_grad) {
    double acc = 0.0;
    MLPX_GRID_LOOP(k, size) {
        double d = (double)y[k] - (double)t[k];
        acc += fabs(d);
        if (write_grad) {
            double s = 0.0;
            if (d > 0.0) {
                s = 1.0;
            } else if (d < 0.0) {
                s = -1.0;
            }
            grad[k] = (T)(s / (double)size);
        }
    }
    mlpx_block_sum(acc, partial);
}

#define MLPX_INSTANTIATE(T, S)                                                                 \
    extern "C" __global__ void softmax_xent_##S(const T* z, const long long* labels, T* grad,  \
                                                 double* row_loss, long long n, long long m,   \
                                                 int write_grad) {                             \
        softmax_xent_impl<T>(z, labels, grad, row_loss, n, m, write_grad);                     \
    }                                                                                          \
    extern "C" __global__ void softmax_xent_wide_##S(const T* z, const long long* labels,      \
                                                      T* grad, double* row_loss, long long n,  \
                                                      long long m, int write_grad) {           \
        softmax_xent_wide_impl<T>(z, labels, grad, row_loss, n, m, write_grad);                \
    }                                                                                          \
    extern "C" __global__ void bce_logits_##S(const T* x, const T* t, T* grad,                 \
                                               double* partial, long long size,                \
                                               int write_grad) {                               \
        bce_logits_impl<T>(x, t, grad, partial, size, write_grad);                             \
    }                                                                                          \
    extern "C" __global__ void mse_##S(const T* y, const T* t, T* grad, double* partial,       \
                                        long long size, int write_grad) {                      \
        mse_impl<T>(y, t, grad, partial, size, write_grad);                                    \
    }                                                                                          \
    extern "C" __global__ void l1_##S(const T* y, const T* t, T* grad, double* partial,        \
                                       long long size, int write_grad) {                       \
        l1_impl<T>(y, t, grad, partial, size, write_grad);                                     \
    }

MLPX_INSTANTIATE(float, f32)
MLPX_INSTANTIATE(double, f64)
