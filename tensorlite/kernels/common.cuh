/*
What every tensorlite CUDA kernel shares: the element type, float/double math overloads, and
deterministic warp and block reductions.

floatX is set by the compile option -DfloatX=float or -DfloatX=double, so each .cu compiles to
a float32 and a float64 module; sums are taken in floatX, as the reference ops take them.
Token ids are int64 (long long).

Determinism: a reduction here combines values in an order fixed by the thread layout alone (a
butterfly of xor-shuffles, then warps in index order), never by which thread comes first. The
same launch on the same inputs gives the same bits, and no kernel uses floating-point atomics.
*/
#ifndef TENSORLITE_COMMON_CUH
#define TENSORLITE_COMMON_CUH

#ifndef floatX
#error "compile with -DfloatX=float or -DfloatX=double"
#endif

#define WARP_SIZE 32
#define FULL_MASK 0xffffffffu

__device__ __forceinline__ float tl_exp(float x) { return expf(x); }
__device__ __forceinline__ double tl_exp(double x) { return exp(x); }
__device__ __forceinline__ float tl_log(float x) { return logf(x); }
__device__ __forceinline__ double tl_log(double x) { return log(x); }
__device__ __forceinline__ float tl_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double tl_tanh(double x) { return tanh(x); }
__device__ __forceinline__ float tl_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double tl_sqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float tl_max(float a, float b) { return fmaxf(a, b); }
__device__ __forceinline__ double tl_max(double a, double b) { return fmax(a, b); }
__device__ __forceinline__ float tl_lowest(float) { return -__int_as_float(0x7f800000); }          // -inf
__device__ __forceinline__ double tl_lowest(double) { return -__longlong_as_double(0x7ff0000000000000LL); }
__device__ __forceinline__ floatX tl_nan() {
    return sizeof(floatX) == 4 ? (floatX)__int_as_float(0x7fc00000)
                               : (floatX)__longlong_as_double(0x7ff8000000000000LL);
}

// sum / max over the 32 lanes of a warp; every lane gets the same bits (a + b == b + a)
__device__ __forceinline__ floatX warp_sum(floatX v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(FULL_MASK, v, offset);
    return v;
}
__device__ __forceinline__ floatX warp_max(floatX v) {
    for (int offset = 16; offset > 0; offset >>= 1) v = tl_max(v, __shfl_xor_sync(FULL_MASK, v, offset));
    return v;
}

// Sum over a block whose blockDim.x is a multiple of 32 (1-D); every thread gets the result.
// Warp sums go to shared memory, then every warp adds them in warp order. The trailing
// __syncthreads lets the caller call it again (the shared array is reused).
__device__ __forceinline__ floatX block_sum(floatX v) {
    __shared__ floatX warp_sums[WARP_SIZE];
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    const int num_warps = blockDim.x / WARP_SIZE;
    v = warp_sum(v);
    if (lane == 0) warp_sums[warp] = v;
    __syncthreads();
    v = lane < num_warps ? warp_sums[lane] : (floatX)0;
    v = warp_sum(v);
    __syncthreads();
    return v;
}

__device__ __forceinline__ floatX block_max(floatX v) {
    __shared__ floatX warp_maxes[WARP_SIZE];
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    const int num_warps = blockDim.x / WARP_SIZE;
    v = warp_max(v);
    if (lane == 0) warp_maxes[warp] = v;
    __syncthreads();
    v = lane < num_warps ? warp_maxes[lane] : tl_lowest(v);
    v = warp_max(v);
    __syncthreads();
    return v;
}

// grid-stride loop over n elements, 64-bit indices
#define GRID_STRIDE_LOOP(i, n) \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (long long)gridDim.x * blockDim.x)

#endif  // TENSORLITE_COMMON_CUH
