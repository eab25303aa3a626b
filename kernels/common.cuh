// Helpers shared by every kernel file of the `cuda` backend; each .cu file includes it.
//
// nvcc resolves the #include itself; at run time mlpx/backends/_cuda_kernels.py joins this
// file into each source in place of the #include before handing it to NVRTC, so every file
// compiles alone either way. Numba twin: mlpx/backends/numba_common.py.

#ifndef MLPX_COMMON_CUH
#define MLPX_COMMON_CUH

#ifndef MLPX_BLOCK
#define MLPX_BLOCK 256  // the backend launches every reduction kernel with this block size
#endif

// A quiet NaN, like the NaN a Numba kernel returns for an unknown code.
#define MLPX_NAN __longlong_as_double(0x7ff8000000000000LL)

// Grid-stride loops: any grid size covers any array (sizes are 64-bit).
#define MLPX_GRID_LOOP(k, size) \
    for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x; k < (size); \
         k += (long long)blockDim.x * gridDim.x)

// Numba twin: sigmoid. Both branches avoid overflow of exp.
__device__ __forceinline__ double mlpx_sigmoid(double v) {
    if (v >= 0.0) {
        return 1.0 / (1.0 + exp(-v));
    }
    double e = exp(v);
    return e / (1.0 + e);
}

// Numba twin: numba_bfloat16.bfloat16_bits. float32 -> bfloat16 bits, round half to even;
// overflow goes to inf, inf stays inf, subnormals round like any other value, NaN stays a
// quiet NaN of its sign. Integer operations on the float32 bits, not the cvt instruction
// behind __float2bfloat16_rn: the reference's formula (mlpx/backends/bfloat16.py), so the
// bits are the cpu backend's (a NaN keeps its sign and upper payload, where cvt gives one
// canonical NaN). A pattern is that of a __nv_bfloat16, kept as unsigned short (NVRTC has
// no cuda_bf16.h).
__device__ __forceinline__ unsigned short mlpx_bfloat16_bits(float v) {
    unsigned int u = __float_as_uint(v);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) {  // NaN: the add below could carry into the sign
        return (unsigned short)((u | 0x00400000u) >> 16);
    }
    return (unsigned short)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

// Numba twin: numba_bfloat16.from_bf16. The float32 value of bfloat16 bits (exact).
__device__ __forceinline__ float mlpx_bfloat16_float(unsigned short h) {
    return __uint_as_float(((unsigned int)h) << 16);
}

// Tree sum of one double per thread over the block, in a fixed order (deterministic for a
// given launch configuration); every thread gets the total.
__device__ double mlpx_block_total(double v) {
    __shared__ double sh[MLPX_BLOCK];
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int s = MLPX_BLOCK / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            sh[threadIdx.x] += sh[threadIdx.x + s];
        }
        __syncthreads();
    }
    return sh[0];
}

// The block's sum of one double per thread into partial[blockIdx.x].
__device__ void mlpx_block_sum(double v, double* partial) {
    double total = mlpx_block_total(v);
    if (threadIdx.x == 0) {
        partial[blockIdx.x] = total;
    }
}

#endif  // MLPX_COMMON_CUH
