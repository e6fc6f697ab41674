/*
AdamW over one parameter group's flat buffers, and the gradients' global L2 norm
(tensorlite.optim.adamw_update and optim.grad_norm):

    param      <- param (1 - lr wd)
    exp_avg    <- beta1 exp_avg + (1 - beta1) grad
    exp_avg_sq <- beta2 exp_avg_sq + (1 - beta2) grad^2
    param      <- param - lr / (1 - beta1^t) exp_avg / (sqrt(exp_avg_sq) / sqrt(1 - beta2^t) + eps)

    norm = sqrt(sum over arrays k of sum_i g_k[i]^2)     (each array's sum in floatX, the
                                                          arrays' sums added in float64)

AdamW is one launch for the whole group: every element is updated by one thread from its own
values (deterministic). The host turns the step's Python floats into the constants below once.

The norm takes two launches and no host synchronisation, whatever the number of arrays: the
arrays are given as a table of pointers and lengths. grad_norm_squares: block (g, k) sums the
squares of its grid-stride share of array k (block_sum order) into partial[k][g];
grad_norm_finish: one warp adds each array's G partials by a butterfly, then lane 0 adds the
arrays' sums in array order in float64 and takes the square root. Fixed orders throughout.
*/
#include "common.cuh"

// param, exp_avg, exp_avg_sq, grad (n,); one thread per element, grid-stride.
// decay = 1 - lr wd, step_size = lr / (1 - beta1^t), bc2_sqrt = sqrt(1 - beta2^t)
extern "C" __global__ void adamw_update(floatX* __restrict__ param, floatX* __restrict__ exp_avg,
                                        floatX* __restrict__ exp_avg_sq, const floatX* __restrict__ grad,
                                        long long n, floatX decay, floatX beta1, floatX one_minus_beta1,
                                        floatX beta2, floatX one_minus_beta2, floatX bc2_sqrt,
                                        floatX eps, floatX step_size) {
    GRID_STRIDE_LOOP(i, n) {
        const floatX g = grad[i];
        const floatX m = exp_avg[i] * beta1 + one_minus_beta1 * g;
        const floatX v = exp_avg_sq[i] * beta2 + one_minus_beta2 * g * g;
        const floatX denom = tl_sqrt(v) / bc2_sqrt + eps;
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        param[i] = param[i] * decay - step_size * m / denom;
    }
}

// ptrs, lengths (count,): the arrays (pointers as 64-bit integers) -> partial (count, gridDim.x)
// grid (G, count); blockDim.x a multiple of 32
extern "C" __global__ void grad_norm_squares(floatX* __restrict__ partial, const unsigned long long* __restrict__ ptrs,
                                             const long long* __restrict__ lengths, int count) {
    const int k = blockIdx.y;
    if (k >= count) return;                        // whole blocks leave together
    const floatX* g = reinterpret_cast<const floatX*>(ptrs[k]);
    const long long n = lengths[k];
    floatX s = 0;
    GRID_STRIDE_LOOP(i, n) s += g[i] * g[i];
    s = block_sum(s);
    if (threadIdx.x == 0) partial[(long long)k * gridDim.x + blockIdx.x] = s;
}

// partial (count, G) -> norm (1,) float64; one block of one warp
extern "C" __global__ void grad_norm_finish(double* __restrict__ norm, const floatX* __restrict__ partial,
                                            int G, int count) {
    const int lane = threadIdx.x;
    double total = 0;
    for (int k = 0; k < count; ++k) {
        floatX s = 0;
        for (int g = lane; g < G; g += WARP_SIZE) s += partial[(long long)k * G + g];
        s = warp_sum(s);
        total += (double)s;                        // every lane adds the same values in order
    }
    if (lane == 0) norm[0] = sqrt(total);
}
