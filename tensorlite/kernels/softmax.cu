/*
Causal softmax of attention scores, with the 1/sqrt(hs) scale fused
(tensorlite.functional.CausalSoftmax):

    y[r, j] = exp(scale x[r, j] - m_r) / sum_{k <= t} exp(scale x[r, k] - m_r)    for j <= t
    y[r, j] = 0                                                                    for j >  t
    m_r = max_{k <= t} scale x[r, k]
    dx[r, j] = scale y[r, j] (dy[r, j] - sum_k dy[r, k] y[r, k])      (0 above the diagonal)

x, y, dy, dx are (..., T, T), seen as rows of length T: row r is query position t = r % T and may
attend to keys 0..t. Saved for backward: y only (its zeros above the diagonal make the sum run
over the causal part by itself).

Layout: one warp per row, a block of blockDim.x / 32 rows. The lanes stride over the row's
t + 1 valid columns; the columns above the diagonal are only written (zeros), never read.
Determinism: a lane's partial max/sum runs over its columns in order, then the warp combines
lanes by a fixed xor-butterfly.
*/
#include "common.cuh"

// x (rows, T) -> y (rows, T); one warp per row
extern "C" __global__ void causal_softmax_forward(floatX* __restrict__ y, const floatX* __restrict__ x,
                                                  floatX scale, long long rows, int T) {
    const int lane = threadIdx.x % WARP_SIZE;
    const long long row = (long long)blockIdx.x * (blockDim.x / WARP_SIZE) + threadIdx.x / WARP_SIZE;
    if (row >= rows) return;                      // whole warps leave together
    const int t = (int)(row % T);                 // the query position: columns 0..t are visible
    const floatX* xr = x + row * T;
    floatX* yr = y + row * T;

    floatX m = tl_lowest(scale);                  // pass 1: the row's max of scale * x
    for (int j = lane; j <= t; j += WARP_SIZE) m = tl_max(m, xr[j] * scale);
    m = warp_max(m);                              // finite: column t is always visible

    floatX sum = 0;                               // pass 2: the normalizer
    for (int j = lane; j <= t; j += WARP_SIZE) sum += tl_exp(xr[j] * scale - m);
    sum = warp_sum(sum);

    for (int j = lane; j < T; j += WARP_SIZE)     // pass 3: write the row, zeros in the future
        yr[j] = j <= t ? tl_exp(xr[j] * scale - m) / sum : (floatX)0;
}

// y, dy (rows, T) -> dx (rows, T); one warp per row
extern "C" __global__ void causal_softmax_backward(floatX* __restrict__ dx, const floatX* __restrict__ y,
                                                   const floatX* __restrict__ dy, floatX scale,
                                                   long long rows, int T) {
    const int lane = threadIdx.x % WARP_SIZE;
    const long long row = (long long)blockIdx.x * (blockDim.x / WARP_SIZE) + threadIdx.x / WARP_SIZE;
    if (row >= rows) return;
    const int t = (int)(row % T);
    const floatX* yr = y + row * T;
    const floatX* dyr = dy + row * T;
    floatX* dxr = dx + row * T;

    floatX dot = 0;                               // sum_k dy_k y_k over the visible columns
    for (int j = lane; j <= t; j += WARP_SIZE) dot += dyr[j] * yr[j];
    dot = warp_sum(dot);

    for (int j = lane; j < T; j += WARP_SIZE)
        dxr[j] = j <= t ? scale * yr[j] * (dyr[j] - dot) : (floatX)0;
}
