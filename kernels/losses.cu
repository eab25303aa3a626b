// Fused loss kernels of the `cuda` backend: mean loss and its gradient in one pass.
//
// Every kernel mirrors a Numba kernel in mlpx/backends/numba_kernels.py (named in its header
// comment): the same expression per element, evaluated in double, rounded once on store.
// The loss is never read back here: kernels write per-row or per-block partial sums (double)
// that the backend adds up on the device, so a training step does not synchronise with the
// host. Compiled with -fmad=false (no FMA contraction), like the other kernel files.
// Self-contained on purpose (no #include): NVRTC compiles it at run time and nvcc in CI.

#ifndef MLPX_BLOCK
#define MLPX_BLOCK 256  // the backend launches every reduction kernel with this block size
#endif

// Numba twin: _sigmoid (the same function as in activations.cu).
__device__ __forceinline__ double mlpx_sigmoid(double v) {
    if (v >= 0.0) {
        return 1.0 / (1.0 + exp(-v));
    }
    double e = exp(v);
    return e / (1.0 + e);
}

// Numba twin: softmax_xent. One thread per row walks the row in order, exactly like the
// Numba loop (max, sum of exp, log-sum-exp, gradient); row_loss[i] = lse - z[i, label]. The
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
            row_loss[i] = __longlong_as_double(0x7ff8000000000000LL);
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

// Block reduction of one double per thread into partial[blockIdx.x] (a fixed tree, so the
// result is deterministic for a given launch configuration).
__device__ void mlpx_block_sum(double v, double* partial) {
    __shared__ double sh[MLPX_BLOCK];
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int s = MLPX_BLOCK / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            sh[threadIdx.x] += sh[threadIdx.x + s];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        partial[blockIdx.x] = sh[0];
    }
}

#define MLPX_GRID_LOOP(k, size) \
    for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x; k < (size); \
         k += (long long)blockDim.x * gridDim.x)

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
