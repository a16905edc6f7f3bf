// Block-wide selection of the k-th largest of n floats, by radix select on order-preserving
// 32-bit keys: four passes of an 8-bit histogram in shared memory, each narrowing the prefix
// of the wanted key. Exact, deterministic, no sort and no host round trip; every thread of
// the block must call it. Cost: 4 reads of the n values per block (plus a 256-bin scan by
// one thread per pass), so it suits rows of up to ~10^5 values per block.
#pragma once

#include "common.cuh"

namespace select_kth {

// Monotone map float -> unsigned: a > b as floats (for non-NaN) iff key(a) > key(b).
__device__ __forceinline__ unsigned key_of(float f) {
    const unsigned u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ float value_of(unsigned key) {
    return __uint_as_float((key & 0x80000000u) ? (key & 0x7fffffffu) : ~key);
}

struct Kth {
    unsigned key;   // key of the k-th largest value
    int ties_in_k;  // how many values equal to it are among the k largest (>= 1)
};

// `hist` is a __shared__ unsigned[256] and `state` a __shared__ unsigned[2] of the caller's;
// 1 <= k <= n. Ends with a barrier.
__device__ __forceinline__ Kth kth_largest(const float* x, int n, int k, unsigned* hist, unsigned* state) {
    unsigned prefix = 0, mask = 0;
    int remaining = k;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int i = threadIdx.x; i < 256; i += blockDim.x) hist[i] = 0;
        __syncthreads();
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            const unsigned key = key_of(x[i]);
            if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1u);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            // Walk the digits from the largest down to the bin holding the remaining-th
            // largest of the candidates.
            int r = remaining;
            unsigned digit = 0;
            for (int d = 255; d >= 0; --d) {
                const int c = static_cast<int>(hist[d]);
                if (c >= r) {
                    digit = static_cast<unsigned>(d);
                    break;
                }
                r -= c;
            }
            state[0] = prefix | (digit << shift);
            state[1] = static_cast<unsigned>(r);
        }
        __syncthreads();
        prefix = state[0];
        remaining = static_cast<int>(state[1]);
        mask |= 255u << shift;
        __syncthreads();  // everyone has read state before the next pass rewrites it
    }
    return Kth{prefix, remaining};
}

}  // namespace select_kth
