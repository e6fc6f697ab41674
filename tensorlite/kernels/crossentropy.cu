/*
Softmax cross-entropy, mean over rows (tensorlite.functional.CrossEntropy):

    loss   = (1/N) sum_n (log s_n - (x[n, t_n] - m_n)),   m_n = max_v x[n, v],  s_n = sum_v exp(x[n, v] - m_n)
    dx[n, v] = (exp(x[n, v] - m_n) / s_n - [v == t_n]) * dloss / N     (softmax and log fused)

logits x (N, V), targets t (N,) int64. Saved for backward: stats (N, 2) = (m_n, s_n) beside the
logits the op keeps, so backward recomputes the softmax in the same pass that writes dx, instead
of keeping an (N, V) array of probabilities.

A target outside 0..V-1 sets *error = 1 (read later by backend.defer_check, so nothing waits for
the GPU now) and makes that row's loss NaN; no out-of-range logit is read.

Determinism: each row by one block (thread-strided partial sums, then block_sum's fixed order);
the mean by one block in the same way; dx element by element.
*/
#include "common.cuh"

// x (N, V), t (N,) -> losses (N,), stats (N, 2); one block per row (blockDim.x a multiple of 32)
extern "C" __global__ void crossentropy_forward(floatX* __restrict__ losses, floatX* __restrict__ stats,
                                                int* __restrict__ error, const floatX* __restrict__ x,
                                                const long long* __restrict__ targets, long long N, int V) {
    const long long row = blockIdx.x;
    if (row >= N) return;                          // the whole block leaves together
    const floatX* xr = x + row * V;

    floatX m = tl_lowest((floatX)0);
    for (int v = threadIdx.x; v < V; v += blockDim.x) m = tl_max(m, xr[v]);
    m = block_max(m);

    floatX s = 0;
    for (int v = threadIdx.x; v < V; v += blockDim.x) s += tl_exp(xr[v] - m);
    s = block_sum(s);

    if (threadIdx.x == 0) {
        const long long t = targets[row];
        stats[2 * row] = m;
        stats[2 * row + 1] = s;
        if (t < 0 || t >= V) {
            atomicOr(error, 1);                    // an int flag: no order matters
            losses[row] = tl_nan();
        } else {
            losses[row] = tl_log(s) - (xr[t] - m);
        }
    }
}

// losses (N,) -> loss (1,) = their mean; one block, threads take strided partial sums
extern "C" __global__ void crossentropy_mean(floatX* __restrict__ loss, const floatX* __restrict__ losses, long long N) {
    floatX s = 0;
    for (long long i = threadIdx.x; i < N; i += blockDim.x) s += losses[i];
    s = block_sum(s);
    if (threadIdx.x == 0) loss[0] = s / (floatX)N;
}

// x (N, V), stats (N, 2), t (N,), dloss (1,) -> dx (N, V); one thread per element, grid-stride.
// dloss is read on the device: no host synchronisation for the upstream gradient.
extern "C" __global__ void crossentropy_backward(floatX* __restrict__ dx, const floatX* __restrict__ x,
                                                 const floatX* __restrict__ stats,
                                                 const long long* __restrict__ targets,
                                                 const floatX* __restrict__ dloss, long long N, int V) {
    const floatX g = dloss[0] / (floatX)N;
    GRID_STRIDE_LOOP(i, N * V) {
        const long long row = i / V;
        const int v = (int)(i - row * V);
        const floatX p = tl_exp(x[i] - stats[2 * row]) / stats[2 * row + 1];
        dx[i] = (v == targets[row] ? p - (floatX)1 : p) * g;
    }
}
