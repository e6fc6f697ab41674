/*
Layer norm over the last axis (tensorlite.functional.LayerNorm); w and b are optional:

    y  = xh w + b,     xh = (x - mean) rstd,     rstd = 1 / sqrt(var + eps)
    dx = rstd (dxh - mean(dxh) - xh mean(dxh xh)),     dxh = dy w
    dw = sum_n dy xh,   db = sum_n dy                  (sums over the N rows)

x, y, dx, dy are (N, C) (every axis but the last folded into N); w, b, dw, db are (C,).
Saved for backward: mean and rstd, (N,) each, beside the input x the op keeps anyway; backward
recomputes xh = (x - mean) rstd instead of keeping an (N, C) copy of it.

Forward: one warp per row (two reductions: the mean, then the variance about it).
Backward: one warp per row computes the row's dx in one pass over it (two row reductions, then
the three terms), and adds the row's dy xh and dy into its own shared-memory row of dw and db
accumulators. Lane l owns channels l, l + 32, ... of its warp's row: no two threads ever touch
one accumulator. At the end the block adds its warps' rows in warp order and writes one partial
row per block; layernorm_backward_reduce adds the partial rows in block order. Every sum has a
fixed order, so dw and db are deterministic, with no atomics.
*/
#include "common.cuh"

// x (N, C), w, b (C,) or null -> y (N, C), mean, rstd (N,); one warp per row
extern "C" __global__ void layernorm_forward(floatX* __restrict__ y, floatX* __restrict__ mean,
                                             floatX* __restrict__ rstd, const floatX* __restrict__ x,
                                             const floatX* __restrict__ w, const floatX* __restrict__ b,
                                             long long N, int C, floatX eps) {
    const int lane = threadIdx.x % WARP_SIZE;
    const long long row = (long long)blockIdx.x * (blockDim.x / WARP_SIZE) + threadIdx.x / WARP_SIZE;
    if (row >= N) return;                          // whole warps leave together
    const floatX* xr = x + row * C;
    floatX* yr = y + row * C;

    floatX sum = 0;
    for (int c = lane; c < C; c += WARP_SIZE) sum += xr[c];
    const floatX m = warp_sum(sum) / (floatX)C;

    floatX sq = 0;                                 // variance about the mean: no cancellation
    for (int c = lane; c < C; c += WARP_SIZE) {
        floatX d = xr[c] - m;
        sq += d * d;
    }
    const floatX r = (floatX)1 / tl_sqrt(warp_sum(sq) / (floatX)C + eps);

    for (int c = lane; c < C; c += WARP_SIZE) {
        floatX v = (xr[c] - m) * r;
        if (w) v = v * w[c];
        if (b) v = v + b[c];
        yr[c] = v;
    }
    if (lane == 0) {
        mean[row] = m;
        rstd[row] = r;
    }
}

// dy, x (N, C), w (C,) or null, mean, rstd (N,) -> dx (N, C), partial (gridDim.x, 2, C)
// partial[g][0] = sum of dy xh and partial[g][1] = sum of dy over the rows of block g.
// Rows: warp k of block g takes rows g * W + k, then every gridDim.x * W further (W warps per
// block). Dynamic shared memory: W * 2 * C elements.
extern "C" __global__ void layernorm_backward(floatX* __restrict__ dx, floatX* __restrict__ partial,
                                              const floatX* __restrict__ dy, const floatX* __restrict__ x,
                                              const floatX* __restrict__ w, const floatX* __restrict__ mean,
                                              const floatX* __restrict__ rstd, long long N, int C) {
    extern __shared__ floatX acc[];                // (W, 2, C): per warp, sums of dy xh and of dy
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    const int W = blockDim.x / WARP_SIZE;
    floatX* acc_dw = acc + (long long)warp * 2 * C;
    floatX* acc_db = acc_dw + C;
    for (int c = lane; c < C; c += WARP_SIZE) {    // this lane's own accumulators: no sync needed
        acc_dw[c] = 0;
        acc_db[c] = 0;
    }

    for (long long row = (long long)blockIdx.x * W + warp; row < N; row += (long long)gridDim.x * W) {
        const floatX* dyr = dy + row * C;
        const floatX* xr = x + row * C;
        floatX* dxr = dx + row * C;
        const floatX m = mean[row], r = rstd[row];

        floatX s1 = 0, s2 = 0;                     // sum(dxh), sum(dxh xh)
        for (int c = lane; c < C; c += WARP_SIZE) {
            floatX xh = (xr[c] - m) * r;
            floatX dxh = w ? dyr[c] * w[c] : dyr[c];
            s1 += dxh;
            s2 += dxh * xh;
        }
        const floatX mean_dxh = warp_sum(s1) / (floatX)C;
        const floatX mean_dxh_xh = warp_sum(s2) / (floatX)C;

        for (int c = lane; c < C; c += WARP_SIZE) {
            floatX xh = (xr[c] - m) * r;
            floatX g = dyr[c];
            floatX dxh = w ? g * w[c] : g;
            dxr[c] = (dxh - mean_dxh - xh * mean_dxh_xh) * r;
            acc_dw[c] += g * xh;
            acc_db[c] += g;
        }
    }
    __syncthreads();                               // every warp's accumulators are complete

    floatX* out = partial + (long long)blockIdx.x * 2 * C;
    for (int i = threadIdx.x; i < 2 * C; i += blockDim.x) {
        floatX s = 0;
        for (int k = 0; k < W; ++k) s += acc[(long long)k * 2 * C + i];   // warps in order
        out[i] = s;
    }
}

// partial (G, 2, C) -> dw, db (C,) (either may be null); one thread per channel, blocks in order
extern "C" __global__ void layernorm_backward_reduce(floatX* __restrict__ dw, floatX* __restrict__ db,
                                                     const floatX* __restrict__ partial, int G, int C) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= 2 * C) return;
    floatX s = 0;
    for (int g = 0; g < G; ++g) s += partial[(long long)g * 2 * C + i];
    if (i < C) {
        if (dw) dw[i] = s;
    } else if (db) {
        db[i - C] = s;
    }
}
