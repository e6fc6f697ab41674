/*
Embedding lookup (tensorlite.functional.Embedding):

    y[n, :] = w[ids[n], :]                     w (V, C), ids (N,) int64 -> y (N, C)
    dw[v, :] = sum of dy[n, :] over the positions n with ids[n] == v, in increasing n

An id outside 0..V-1 sets *error = 1 (read later by backend.defer_check, so nothing waits for
the GPU now); its output row is NaN and backward skips it.

Backward is deterministic with no floating-point atomics: the positions of each id are first
listed in increasing order (a stable counting sort done in integers, where the order of atomic
increments cannot change a result), then each (id, channel) adds its positions' gradients in
that order. Four launches, on tiles of TILE consecutive positions:

  1. embedding_backward_count    counts[tile][v]: how often id v occurs in the tile (int atomics)
  2. embedding_backward_offsets  one block: before[tile][v], the occurrences of v in earlier
                                 tiles, and start[v], the occurrences of smaller ids (a scan)
  3. embedding_backward_fill     order[start[v] + before[tile][v] + rank] = n, where rank is
                                 the number of earlier positions of the same id in n's tile
  4. embedding_backward_sum      dw[v, c] = sum over order[start[v] .. start[v + 1]) of dy[., c]

Scratch: counts and before (tiles, V) int32, start (V + 1,) int32, order (N,) int32.
*/
#include "common.cuh"

#define TILE 1024           // positions per tile; the count and fill kernels run TILE / blockDim.x per thread

// w (V, C), ids (N,) -> y (N, C); one thread per output element, grid-stride
extern "C" __global__ void embedding_forward(floatX* __restrict__ y, int* __restrict__ error,
                                             const floatX* __restrict__ w, const long long* __restrict__ ids,
                                             long long N, int C, int V) {
    GRID_STRIDE_LOOP(i, N * C) {
        const long long n = i / C;
        const int c = (int)(i - n * C);
        const long long id = ids[n];
        if (id < 0 || id >= V) {
            if (c == 0) atomicOr(error, 1);
            y[i] = tl_nan();
        } else {
            y[i] = w[id * C + c];
        }
    }
}

// ids (N,) -> counts (tiles, V), zeroed by the caller; block b counts tile b
extern "C" __global__ void embedding_backward_count(int* __restrict__ counts, int* __restrict__ error,
                                                    const long long* __restrict__ ids, long long N, int V) {
    const long long tile = blockIdx.x;
    for (int k = threadIdx.x; k < TILE; k += blockDim.x) {
        const long long n = tile * TILE + k;
        if (n >= N) break;
        const long long id = ids[n];
        if (id < 0 || id >= V) atomicOr(error, 1);
        else atomicAdd(&counts[tile * V + id], 1);
    }
}

// counts (tiles, V) -> before (tiles, V), start (V + 1,); one block of any multiple of 32 threads.
// Thread j first takes ids j, j + blockDim.x, ...: it runs over the tiles of each, writing the
// running count (before) and leaving the id's total in start[v]. Then the block turns the totals
// into an exclusive scan: thread j sums a contiguous chunk of ids, thread 0 scans the chunk
// sums, and each thread rewrites its chunk.
extern "C" __global__ void embedding_backward_offsets(int* __restrict__ before, int* __restrict__ start,
                                                      const int* __restrict__ counts, int tiles, int V) {
    extern __shared__ int chunk_sums[];            // (blockDim.x,)
    for (int v = threadIdx.x; v < V; v += blockDim.x) {
        int running = 0;
        for (int t = 0; t < tiles; ++t) {
            before[(long long)t * V + v] = running;
            running += counts[(long long)t * V + v];
        }
        start[v] = running;
    }
    __syncthreads();

    const int per = (V + blockDim.x - 1) / blockDim.x;
    const int lo = min(V, (int)threadIdx.x * per), hi = min(V, lo + per);
    int s = 0;
    for (int v = lo; v < hi; ++v) s += start[v];
    chunk_sums[threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        int running = 0;
        for (int j = 0; j < (int)blockDim.x; ++j) {
            int c = chunk_sums[j];
            chunk_sums[j] = running;
            running += c;
        }
        start[V] = running;
    }
    __syncthreads();
    int running = chunk_sums[threadIdx.x];
    for (int v = lo; v < hi; ++v) {
        int c = start[v];
        start[v] = running;
        running += c;
    }
}

// ids (N,), before (tiles, V), start (V + 1,) -> order (N valid positions); block b fills tile b
extern "C" __global__ void embedding_backward_fill(int* __restrict__ order, const long long* __restrict__ ids,
                                                   const int* __restrict__ before, const int* __restrict__ start,
                                                   long long N, int V) {
    __shared__ long long tile_ids[TILE];
    const long long tile = blockIdx.x;
    const int len = (int)min((long long)TILE, N - tile * TILE);
    for (int k = threadIdx.x; k < len; k += blockDim.x) tile_ids[k] = ids[tile * TILE + k];
    __syncthreads();
    for (int k = threadIdx.x; k < len; k += blockDim.x) {
        const long long id = tile_ids[k];
        if (id < 0 || id >= V) continue;
        int rank = 0;                              // earlier positions of the same id in this tile
        for (int j = 0; j < k; ++j) rank += tile_ids[j] == id;
        order[start[id] + before[tile * V + id] + rank] = (int)(tile * TILE + k);
    }
}

// dy (N, C), order, start -> dw (V, C); grid (V, ceil(C / blockDim.x)): block (v, cy) adds the
// positions of id v, in increasing order, for channels cy * blockDim.x + threadIdx.x
extern "C" __global__ void embedding_backward_sum(floatX* __restrict__ dw, const floatX* __restrict__ dy,
                                                  const int* __restrict__ order, const int* __restrict__ start,
                                                  int V, int C) {
    const int v = blockIdx.x;
    const int c = blockIdx.y * blockDim.x + threadIdx.x;
    if (v >= V || c >= C) return;
    floatX s = 0;
#pragma unroll 8                                   // loads in flight; the adds stay in order
    for (int k = start[v]; k < start[v + 1]; ++k) s += dy[(long long)order[k] * C + c];
    dw[(long long)v * C + c] = s;
}
