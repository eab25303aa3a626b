// bfloat16 operands of the `cuda` backend's mixed products ("mixed_bfloat16" policy).
//
// Numba twins in mlpx/backends/numba_bfloat16.py, named at each function. Reference: mlpx/backends/bfloat16.py (the
// rounding contract). The rounding is written with integer operations on the float32 bits,
// not with the cvt instruction behind __float2bfloat16_rn: the same formula as the reference
// and the Numba twin, so the operands cuBLAS reads are bit for bit the ones the cpu backend
// multiplies (a NaN keeps its sign and upper payload, where cvt gives one canonical NaN).
//
// A stored value is the 16-bit pattern of a __nv_bfloat16 (cuda_bf16.h), which cuBLAS reads
// as CUDA_R_16BF. The header is not included: NVRTC has no copy of it and the CUDA wheels
// that CuPy loads do not ship it, so the patterns are written as unsigned short.

#include "common.cuh"

// Numba twin: bfloat16_bits. float32 -> bfloat16, round half to even; overflow goes to inf,
// inf stays inf, subnormals round like any other value, NaN stays a quiet NaN of its sign.
__device__ __forceinline__ unsigned short mlpx_bfloat16_bits(float v) {
    unsigned int u = __float_as_uint(v);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) {  // NaN: the add below could carry into the sign
        return (unsigned short)((u | 0x00400000u) >> 16);
    }
    return (unsigned short)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

// Numba twin: to_bfloat16. out[k] = bfloat16 bits of x[k], for `size` elements.
extern "C" __global__ void to_bfloat16(const float* x, unsigned short* out, long long size) {
    MLPX_GRID_LOOP(k, size) {
        out[k] = mlpx_bfloat16_bits(x[k]);
    }
}
