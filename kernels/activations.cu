// Fused activation kernels of the `cuda` backend.
//
// Every kernel mirrors a Numba kernel in mlpx/backends/numba_activations.py (named in its header
// comment): values are loaded as double, the same expression is evaluated in double, and the
// result is rounded once when stored. Compiled with -fmad=false so that no multiply-add is
// contracted into an FMA (the Numba kernels do not contract either).
//
// Activation codes: the `code` of each built-in declaration in mlpx/activations.py, checked
// against these #defines when the file is loaded (and in CI). A new built-in activation adds
// its #define here and a case to act_scalar and dact_scalar.

#include "common.cuh"

#define ACT_IDENTITY 0
#define ACT_STEP 1
#define ACT_SIGMOID 2
#define ACT_TANH 3
#define ACT_RELU 4
#define ACT_LEAKY_RELU 5
#define ACT_ELU 6
#define ACT_GELU 7
#define ACT_SILU 8
#define ACT_SOFTPLUS 9

#define MLPX_SQRT_HALF 0.7071067811865476
#define MLPX_INV_SQRT_2PI 0.3989422804014327

// Numba twin: act_scalar. f(v) for one double value.
__device__ double act_scalar(int code, double v, double alpha) {
    switch (code) {
        case ACT_RELU: return v > 0.0 ? v : 0.0;
        case ACT_IDENTITY: return v;
        case ACT_LEAKY_RELU: return v > 0.0 ? v : alpha * v;
        case ACT_SIGMOID: return mlpx_sigmoid(v);
        case ACT_TANH: return tanh(v);
        case ACT_STEP: return v >= 0.0 ? 1.0 : 0.0;
        // Python's min(v, 0.0) is `0.0 if 0.0 < v else v`
        case ACT_ELU: return v > 0.0 ? v : alpha * expm1((0.0 < v) ? 0.0 : v);
        case ACT_GELU: return 0.5 * v * (1.0 + erf(v * MLPX_SQRT_HALF));
        case ACT_SILU: return v * mlpx_sigmoid(v);
        // Python's max(v, 0.0) is `0.0 if 0.0 > v else v`
        case ACT_SOFTPLUS: return ((0.0 > v) ? 0.0 : v) + log1p(exp(-fabs(v)));
        default: return MLPX_NAN;  // like Numba
    }
}

// Numba twin: dact_scalar. g * f'(v) given the output y = f(v).
__device__ double dact_scalar(int code, double g, double v, double y, double alpha) {
    switch (code) {
        case ACT_RELU: return v > 0.0 ? g : 0.0;
        case ACT_IDENTITY: return g;
        case ACT_LEAKY_RELU: return v > 0.0 ? g : alpha * g;
        case ACT_SIGMOID: return g * (y * (1.0 - y));
        case ACT_TANH: return g * (1.0 - y * y);
        case ACT_ELU: return v > 0.0 ? g : g * (y + alpha);
        case ACT_GELU: {
            double cdf = 0.5 * (1.0 + erf(v * MLPX_SQRT_HALF));
            double pdf = MLPX_INV_SQRT_2PI * exp(-0.5 * v * v);
            return g * (cdf + v * pdf);
        }
        case ACT_SILU: {
            double s = mlpx_sigmoid(v);
            return g * (s * (1.0 + v * (1.0 - s)));
        }
        case ACT_SOFTPLUS: return g * mlpx_sigmoid(v);
        default: return MLPX_NAN;
    }
}

// Numba twin: bias_relu. z += b; out = max(z, 0).
template <typename T>
__device__ void bias_relu_impl(T* z, const T* b, T* out, long long n, long long m) {
    MLPX_GRID_LOOP(k, n * m) {
        double v = (double)z[k] + (double)b[k % m];
        z[k] = (T)v;
        out[k] = (T)(v > 0.0 ? v : 0.0);
    }
}

// Numba twin: relu_backward. out = z > 0 ? dy : 0 (compared in the storage type).
template <typename T>
__device__ void relu_bwd_impl(const T* dy, const T* z, T* out, long long size) {
    MLPX_GRID_LOOP(k, size) {
        out[k] = z[k] > (T)0 ? dy[k] : (T)0;
    }
}

// Numba twin: bias_act. z += b; out = f(z), f applied to the stored (rounded) z.
template <typename T>
__device__ void bias_act_impl(T* z, const T* b, T* out, long long n, long long m, int code,
                              double alpha) {
    MLPX_GRID_LOOP(k, n * m) {
        double v = (double)z[k] + (double)b[k % m];
        T zr = (T)v;
        z[k] = zr;
        out[k] = (T)act_scalar(code, (double)zr, alpha);
    }
}

// Numba twin: act_forward. out = f(z) without a bias.
template <typename T>
__device__ void act_fwd_impl(const T* z, T* out, long long size, int code, double alpha) {
    MLPX_GRID_LOOP(k, size) {
        out[k] = (T)act_scalar(code, (double)z[k], alpha);
    }
}

// Numba twin: act_backward. out = dy * f'(z).
template <typename T>
__device__ void act_bwd_impl(const T* dy, const T* z, const T* y, T* out, long long size,
                             int code, double alpha) {
    MLPX_GRID_LOOP(k, size) {
        out[k] = (T)dact_scalar(code, (double)dy[k], (double)z[k], (double)y[k], alpha);
    }
}

// Numba twin: bias_prelu. z += b; out = z > 0 ? z : a_j z.
template <typename T>
__device__ void bias_prelu_impl(T* z, const T* b, const T* slopes, T* out, long long n,
                                long long m) {
    MLPX_GRID_LOOP(k, n * m) {
        long long j = k % m;
        double v = (double)z[k] + (double)b[j];
        T zr = (T)v;
        z[k] = zr;
        v = (double)zr;
        out[k] = (T)(v > 0.0 ? v : (double)slopes[j] * v);
    }
}

// Numba twin: prelu_forward. out = z > 0 ? z : a_j z (no bias: z is read only).
template <typename T>
__device__ void prelu_fwd_impl(const T* z, const T* slopes, T* out, long long n, long long m) {
    MLPX_GRID_LOOP(k, n * m) {
        double v = (double)z[k];
        out[k] = (T)(v > 0.0 ? v : (double)slopes[k % m] * v);
    }
}

#ifndef PRELU_CHUNK
#define PRELU_CHUNK 64  // rows per partial sum of the slope gradient (activations.PRELU_CHUNK)
#endif

// Numba twin: prelu_backward. out = dy * f'(z), and the first stage of the slope gradient:
// partial[c * m + j] = sum over the rows of chunk c (PRELU_CHUNK rows, in order) of
// dy[i,j] * min(z[i,j], 0), in double. One thread per (chunk, column): consecutive threads
// take consecutive columns (coalesced), and n / PRELU_CHUNK * m threads fill the GPU.
template <typename T>
__device__ void prelu_bwd_impl(const T* dy, const T* z, const T* slopes, T* out,
                               double* partial, long long n, long long m) {
    const long long chunks = (n + PRELU_CHUNK - 1) / PRELU_CHUNK;
    MLPX_GRID_LOOP(t, chunks * m) {
        long long c = t / m;
        long long j = t - c * m;
        double a = (double)slopes[j];
        double acc = 0.0;
        long long stop = (c + 1) * PRELU_CHUNK < n ? (c + 1) * PRELU_CHUNK : n;
        for (long long i = c * PRELU_CHUNK; i < stop; ++i) {
            long long k = i * m + j;
            double g = (double)dy[k];
            double v = (double)z[k];
            if (v > 0.0) {
                out[k] = (T)g;
            } else {
                out[k] = (T)(a * g);
                acc += g * v;
            }
        }
        partial[t] = acc;
    }
}

// Numba twin: prelu_backward. Second stage: dslopes[j] = the chunks' partial sums added in
// chunk order (the order of the Numba kernel and of the reference, so the result is bitwise
// the same on every backend), rounded once.
template <typename T>
__device__ void prelu_dslopes_impl(const double* partial, T* dslopes, long long chunks,
                                   long long m) {
    MLPX_GRID_LOOP(j, m) {
        double acc = 0.0;
        for (long long c = 0; c < chunks; ++c) {
            acc += partial[c * m + j];
        }
        dslopes[j] = (T)acc;
    }
}

// --- "mixed_bfloat16": saved activations as bfloat16 bits (mlpx/layers/bf16_chain.py) ---
// float32 storage only (the policy keeps float32 arrays); the bits are those of
// mlpx_bfloat16_bits (common.cuh), the contract's rounding. The derivative writes the
// unrounded delta: the product that reads it rounds it (to_bfloat16 in bfloat16.cu) and the
// bias gradient sums it (sum_rows), as the Numba twin does in one pass.

// z[k] + b[k % m] rounded to float32 first (z[k] without with_bias), as the float32 path
// stores it: what both kernels below apply the activation to.
__device__ inline double biased_float32(const float* z, const float* b, long long k,
                                        long long m, int with_bias) {
    double v = (double)z[k];
    return with_bias ? (double)(float)(v + (double)b[k % m]) : v;
}

// Numba twin: numba_bfloat16.bias_act_bits. ybits = bfloat16(f(z + b)) (f(z) without
// with_bias, b then unread); z + b rounded to float32 first, as the float32 path stores it.
extern "C" __global__ void bias_act_bf16(const float* z, const float* b, unsigned short* ybits,
                                         long long n, long long m, int code, double alpha,
                                         int with_bias) {
    MLPX_GRID_LOOP(k, n * m) {
        double v = biased_float32(z, b, k, m, with_bias);
        ybits[k] = mlpx_bfloat16_bits((float)act_scalar(code, v, alpha));
    }
}

// Numba twin: numba_bfloat16.bias_act_z_bits. bias_act_bf16 that keeps zbits = bfloat16(z + b)
// too, for a derivative that reads z (GELU, SiLU, softplus).
extern "C" __global__ void bias_act_z_bf16(const float* z, const float* b,
                                           unsigned short* zbits, unsigned short* ybits,
                                           long long n, long long m, int code, double alpha,
                                           int with_bias) {
    MLPX_GRID_LOOP(k, n * m) {
        double v = biased_float32(z, b, k, m, with_bias);
        zbits[k] = mlpx_bfloat16_bits((float)v);
        ybits[k] = mlpx_bfloat16_bits((float)act_scalar(code, v, alpha));
    }
}

// Numba twin: numba_bfloat16.act_backward_bits_. dy = dy * f'(z) in place, f' evaluated at
// the bfloat16 z and y kept by the forward pass (zbits may be ybits: sigmoid, tanh and ELU
// read y; ReLU-like ones the sign of y, which is z's).
// Numba twin: numba_bfloat16.sign_backward_bits_ for ReLU-like ones, with zbits = ybits
// (v > 0 exactly where 0 < bits <= 0x7F80, the test that kernel makes).
extern "C" __global__ void act_bwd_bf16(float* dy, const unsigned short* zbits,
                                        const unsigned short* ybits, long long size, int code,
                                        double alpha) {
    MLPX_GRID_LOOP(k, size) {
        double v = (double)mlpx_bfloat16_float(zbits[k]);
        double y = (double)mlpx_bfloat16_float(ybits[k]);
        dy[k] = (float)dact_scalar(code, (double)dy[k], v, y, alpha);
    }
}

// Explicit instantiations with C names: NVRTC (through cupy.RawModule) looks them up by
// name, and nvcc in CI compiles every one of them.
#define MLPX_INSTANTIATE(T, S)                                                                 \
    extern "C" __global__ void bias_relu_##S(T* z, const T* b, T* out, long long n,            \
                                              long long m) {                                   \
        bias_relu_impl<T>(z, b, out, n, m);                                                    \
    }                                                                                          \
    extern "C" __global__ void relu_bwd_##S(const T* dy, const T* z, T* out, long long size) { \
        relu_bwd_impl<T>(dy, z, out, size);                                                    \
    }                                                                                          \
    extern "C" __global__ void bias_act_##S(T* z, const T* b, T* out, long long n,             \
                                             long long m, int code, double alpha) {            \
        bias_act_impl<T>(z, b, out, n, m, code, alpha);                                        \
    }                                                                                          \
    extern "C" __global__ void act_fwd_##S(const T* z, T* out, long long size, int code,       \
                                            double alpha) {                                    \
        act_fwd_impl<T>(z, out, size, code, alpha);                                            \
    }                                                                                          \
    extern "C" __global__ void act_bwd_##S(const T* dy, const T* z, const T* y, T* out,        \
                                            long long size, int code, double alpha) {          \
        act_bwd_impl<T>(dy, z, y, out, size, code, alpha);                                     \
    }                                                                                          \
    extern "C" __global__ void bias_prelu_##S(T* z, const T* b, const T* slopes, T* out,       \
                                               long long n, long long m) {                     \
        bias_prelu_impl<T>(z, b, slopes, out, n, m);                                           \
    }                                                                                          \
    extern "C" __global__ void prelu_fwd_##S(const T* z, const T* slopes, T* out, long long n,  \
                                              long long m) {                                   \
        prelu_fwd_impl<T>(z, slopes, out, n, m);                                               \
    }                                                                                          \
    extern "C" __global__ void prelu_bwd_##S(const T* dy, const T* z, const T* slopes, T* out, \
                                              double* partial, long long n, long long m) {     \
        prelu_bwd_impl<T>(dy, z, slopes, out, partial, n, m);                                  \
    }                                                                                          \
    extern "C" __global__ void prelu_dslopes_##S(const double* partial, T* dslopes,            \
                                                  long long chunks, long long m) {             \
        prelu_dslopes_impl<T>(partial, dslopes, chunks, m);                                    \
    }

MLPX_INSTANTIATE(float, f32)
MLPX_INSTANTIATE(double, f64)
