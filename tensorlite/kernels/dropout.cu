/*
Inverted dropout with the mask drawn inside the kernel (tensorlite.functional.Dropout):

    y  = x keep scale,     keep_i = [u_i >= p],   scale = 1 / (1 - p)
    dx = dy keep scale

u_i is element i of the counter-based draw with the given key (random.cuh): the same numbers
backend.uniform draws for the reference op, so both keep the same elements. Nothing is saved for
backward but the key: backward draws keep again, so no mask is stored and each pass reads one
array and writes one (the reference keeps a boolean mask and makes three passes forward).
Element i is computed by one thread from its own input: deterministic.
*/
#include "random.cuh"

// x (n,) -> y (n,); one thread per element, grid-stride
extern "C" __global__ void dropout_forward(floatX* __restrict__ y, const floatX* __restrict__ x,
                                           unsigned long long key, floatX p, floatX scale, long long n) {
    GRID_STRIDE_LOOP(i, n) {
        const floatX keep = tl_uniform(key, (unsigned long long)i, p) >= p ? (floatX)1 : (floatX)0;
        y[i] = x[i] * keep * scale;                // x * 0 keeps the sign of zero, as the reference
    }
}

// dy (n,) -> dx (n,): the same mask, drawn again from the key
extern "C" __global__ void dropout_backward(floatX* __restrict__ dx, const floatX* __restrict__ dy,
                                            unsigned long long key, floatX p, floatX scale, long long n) {
    GRID_STRIDE_LOOP(i, n) {
        const floatX keep = tl_uniform(key, (unsigned long long)i, p) >= p ? (floatX)1 : (floatX)0;
        dx[i] = dy[i] * keep * scale;
    }
}
