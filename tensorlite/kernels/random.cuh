/*
Counter-based random numbers, the same ones tensorlite.backend draws for device "cuda".

A draw (one dropout call) has a 64-bit key, key = mix64(seed + GOLDEN * (counter + 1)), made on
the host by backend.next_key(), which advances the counter. Its element i is splitmix64's
output at position i + 1 of the stream started at the key:

    bits_i = mix64(key + GOLDEN * (i + 1))                                   (mod 2^64)
    u_i    = (bits_i >> 40) * 2^-24     (float32)    or    (bits_i >> 11) * 2^-53     (float64)

u_i is exactly backend.counter_uniform(xp, n, key, dtype)[i]: no state but (seed, counter), so a
checkpoint restores it and a resumed run draws the same masks; any kernel can draw element i
without the others, so dropout needs no mask in memory (backward draws it again).
*/
#ifndef TENSORLITE_RANDOM_CUH
#define TENSORLITE_RANDOM_CUH

#include "common.cuh"

#define TL_GOLDEN 0x9E3779B97F4A7C15ULL

// splitmix64's output function (Stafford's mix 13)
__device__ __forceinline__ unsigned long long tl_mix64(unsigned long long z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

__device__ __forceinline__ unsigned long long tl_random_bits(unsigned long long key, unsigned long long i) {
    return tl_mix64(key + TL_GOLDEN * (i + 1));
}

// u_i in [0, 1) in the element type: 24 random bits for float, 53 for double
__device__ __forceinline__ float tl_uniform(unsigned long long key, unsigned long long i, float) {
    return (float)(unsigned int)(tl_random_bits(key, i) >> 40) * 5.9604644775390625e-08f;   // 2^-24
}
__device__ __forceinline__ double tl_uniform(unsigned long long key, unsigned long long i, double) {
    return (double)(tl_random_bits(key, i) >> 11) * 1.1102230246251565e-16;                 // 2^-53
}

#endif  // TENSORLITE_RANDOM_CUH
