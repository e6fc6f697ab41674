/*
GELU, GPT-2's tanh approximation (tensorlite.functional.GELU):

    y  = x s,   s = (1 + tanh(u)) / 2,   u = sqrt(2/pi) (x + 0.044715 x^3)
    dx = dy s (1 + d (1 - s)),           d = 2 sqrt(2/pi) x (1 + 3 * 0.044715 x^2)

One pass each way. Forward saves nothing but its input x; backward recomputes s from x with the
same instructions, so it needs no second (B, T, 4C) array in memory and reads two arrays, writes
one. Every element is computed by one thread from its own inputs: deterministic.
*/
#include "common.cuh"

#define GELU_C 0.7978845608028654      // sqrt(2 / pi)
#define GELU_A 0.044715

// s = (1 + tanh(u)) / 2, computed as the reference computes it: u = (x^2 * (C a) + C) * x
__device__ __forceinline__ floatX gelu_s(floatX x) {
    floatX u = (x * x * (floatX)(GELU_C * GELU_A) + (floatX)GELU_C) * x;
    return tl_tanh(u) * (floatX)0.5 + (floatX)0.5;
}

// x (n,) -> y (n,); one thread per element, grid-stride loop
extern "C" __global__ void gelu_forward(floatX* __restrict__ y, const floatX* __restrict__ x, long long n) {
    GRID_STRIDE_LOOP(i, n) {
        floatX xi = x[i];
        y[i] = xi * gelu_s(xi);
    }
}

// x, dy (n,) -> dx (n,); one thread per element, grid-stride loop
extern "C" __global__ void gelu_backward(floatX* __restrict__ dx, const floatX* __restrict__ x,
                                         const floatX* __restrict__ dy, long long n) {
    GRID_STRIDE_LOOP(i, n) {
        floatX xi = x[i];
        floatX s = gelu_s(xi);
        floatX d = (xi * xi * (floatX)(6 * GELU_C * GELU_A) + (floatX)(2 * GELU_C)) * xi;
        dx[i] = (d * (s - s * s) + s) * dy[i];
    }
}
