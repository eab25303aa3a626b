// Dropout kernels of the `cuda` backend: Philox-4x32-10 masks and their application.
//
// Each kernel mirrors a Numba kernel in mlpx/backends/numba_random.py (named in its header
// comment). The mask is pure integer arithmetic (uint64 holding 32-bit values, exactly as
// mlpx.random.philox4x32), so the same (seed, stream, step) drops the same units on the CPU
// and on the GPU. Layout (see mlpx/random.py): key = (seed lo, seed hi), counter = (block,
// stream, step lo, step hi); block b gives the words of elements 4b .. 4b+3.
// Shared helpers (the grid loop) come from common.cuh.

#include "common.cuh"

#define PHILOX_M0 0xD2511F53ULL
#define PHILOX_M1 0xCD9E8D57ULL
#define PHILOX_W0 0x9E3779B9ULL
#define PHILOX_W1 0xBB67AE85ULL
#define MLPX_LO32 0xFFFFFFFFULL

// Numba twin: dropout_mask. mask[k] = 1 (kept) iff word offset + k >= threshold (a shard of
// a data-parallel batch starts at its first row's word). One thread per Philox block; the host
// guarantees fewer than 2**32 blocks (mlpx.random.random_bits).
extern "C" __global__ void dropout_mask(unsigned char* mask, long long n, long long offset,
                                        unsigned int key0, unsigned int key1,
                                        unsigned int stream, unsigned int step_lo,
                                        unsigned int step_hi, unsigned int threshold) {
    const long long first = offset / 4;
    const long long blocks = (offset + n + 3) / 4 - first;
    const unsigned long long t = threshold;
    MLPX_GRID_LOOP(i, blocks) {
        const long long b = first + i;
        unsigned long long c0 = (unsigned long long)b;
        unsigned long long c1 = stream;
        unsigned long long c2 = step_lo;
        unsigned long long c3 = step_hi;
        unsigned long long k0 = key0;
        unsigned long long k1 = key1;
        for (int r = 0; r < 10; ++r) {
            if (r > 0) {
                k0 = (k0 + PHILOX_W0) & MLPX_LO32;
                k1 = (k1 + PHILOX_W1) & MLPX_LO32;
            }
            unsigned long long p0 = c0 * PHILOX_M0;  // 32x32 -> 64 bits, exact
            unsigned long long p1 = c2 * PHILOX_M1;
            unsigned long long n0 = (p1 >> 32) ^ c1 ^ k0;
            unsigned long long n1 = p1 & MLPX_LO32;
            unsigned long long n2 = (p0 >> 32) ^ c3 ^ k1;
            unsigned long long n3 = p0 & MLPX_LO32;
            c0 = n0;
            c1 = n1;
            c2 = n2;
            c3 = n3;
        }
        const long long base = 4 * b - offset;  // element of word 4b (>= -3)
        if (base >= 0) mask[base] = c0 >= t ? 1 : 0;
        if (base + 1 >= 0 && base + 1 < n) mask[base + 1] = c1 >= t ? 1 : 0;
        if (base + 2 >= 0 && base + 2 < n) mask[base + 2] = c2 >= t ? 1 : 0;
        if (base + 3 < n) mask[base + 3] = c3 >= t ? 1 : 0;
    }
}

// Numba twin: dropout_apply. out = mask ? x * scale : 0, in double, rounded once.
template <typename T>
__device__ void dropout_apply_impl(const T* x, const unsigned char* mask, T* out,
                                   long long size, double scale) {
    MLPX_GRID_LOOP(k, size) {
        out[k] = mask[k] != 0 ? (T)((double)x[k] * scale) : (T)0;
    }
}

#define MLPX_INSTANTIATE(T, S)                                                                 \
    extern "C" __global__ void dropout_apply_##S(const T* x, const unsigned char* mask,        \
                                                  T* out, long long size, double scale) {      \
        dropout_apply_impl<T>(x, mask, out, size, scale);                                      \
    }

MLPX_INSTANTIATE(float, f32)
MLPX_INSTANTIATE(double, f64)
