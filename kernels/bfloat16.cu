// bfloat16 operands of the `cuda` backend's mixed products ("mixed_bfloat16" policy).
//
// Numba twins in mlpx/backends/numba_bfloat16.py, named at each function. Reference: mlpx/backends/bfloat16.py (the
// rounding contract). The rounding, mlpx_bfloat16_bits (common.cuh, shared with the fused
// bfloat16 activation kernels of activations.cu), is written with integer operations on the
// float32 bits: the operands cuBLAS reads are bit for bit the ones the cpu backend multiplies.
//
// A stored value is the 16-bit pattern of a __nv_bfloat16 (cuda_bf16.h), which cuBLAS reads
// as CUDA_R_16BF. The header is not included: NVRTC has no copy of it and the CUDA wheels
// that CuPy loads do not ship it, so the patterns are written as unsigned short.

#include "common.cuh"

// Numba twin: to_bfloat16. out[k] = bfloat16 bits of x[k], for `size` elements.
extern "C" __global__ void to_bfloat16(const float* x, unsigned short* out, long long size) {
    MLPX_GRID_LOOP(k, size) {
        out[k] = mlpx_bfloat16_bits(x[k]);
    }
}
