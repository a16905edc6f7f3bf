// Optimiser steps and gradient clipping on f32 tensors (master weights, gradients, moments),
// over many tensors in one launch: the host passes a table of Slots, one per tensor, and each
// tensor gets its own range of the grid's blocks (at most 256, each a grid-stride share of its
// elements), so a model's ~100 parameters take two launches instead of two per parameter.
// torch AdamW:
//   p *= 1 - lr·wd;  m = β1·m + (1-β1)·g;  v = β2·v + (1-β2)·g²;  v̂ = max(vmax, v) if AMSGrad
//   p -= (lr / bc1) · m / (sqrt(v̂) / sqrt(bc2) + eps),   bc_i = 1 - β_i^t (host, f64)
// vmax is null without AMSGrad.
//
//   adam_rms            StableAdamW pass 1: Σ (g / denom)² with the updated moments, into one
//                       f64 partial per block. Reads g, v (, vmax): 8–12 B, ~8 FLOP per
//                       element; writes nothing per element.
//   adam_step           the update above; for StableAdamW every block first sums its tensor's
//                       partials (≤ 256 values, from L2) in block order, r = max(1, sqrt(Σ / n)),
//                       and divides the step by r. DRAM: 16 B read + 12 B written per element
//                       (20 + 16 with vmax); ~15 FLOP.
//   grad_sum_squares    Σ g² of each tensor into one f64 partial per block (4 B read per element).
//   grad_scale          g *= a (4 B read, 4 B written per element).
#include "common.cuh"

namespace optim {

struct Hyper {
    float lr, wd, bc1, b1, b2, eps, bc2_sqrt;
};

// Moments of element i after this step; writes m, v, vmax and returns the denominator.
__device__ __forceinline__ float moments(const Hyper& h, float g, float* m, float* v, float* vmax, int i, float* m_out) {
    const float mi = h.b1 * m[i] + (1.0f - h.b1) * g;
    const float vi = h.b2 * v[i] + (1.0f - h.b2) * g * g;
    m[i] = mi;
    v[i] = vi;
    float vh = vi;
    if (vmax) {
        vh = fmaxf(vmax[i], vi);
        vmax[i] = vh;
    }
    *m_out = mi;
    return sqrtf(vh) / h.bc2_sqrt + h.eps;
}

__device__ __forceinline__ void update(const Hyper& h, float step_div, float* param, const float* grad, float* m,
                                       float* v, float* vmax, int i) {
    const float g = grad[i];
    float mi;
    const float denom = moments(h, g, m, v, vmax, i, &mi);
    const float p = param[i] * (1.0f - h.lr * h.wd);
    param[i] = p - (h.lr / h.bc1 / step_div) * mi / denom;
}

// One tensor of a multi-tensor launch, mirrored byte for byte by `Slot` in
// src/device/gpu/ops_optim.rs: its blocks are [block0, block0 + blocks) of the grid; pointers
// the launch does not use are null.
struct Slot {
    float* param;
    float* grad;
    float* m;
    float* v;
    float* vmax;
    int n, block0, blocks, pad;
};
static_assert(sizeof(Slot) == 56, "Slot is mirrored in ops_optim.rs");

// The index of the slot owning this block (the last one whose block0 <= blockIdx.x): found by
// thread 0 and handed to the block through `found`. Ends with a barrier.
__device__ __forceinline__ int slot_of_block(const Slot* slots, int count, int* found) {
    if (threadIdx.x == 0) {
        int lo = 0, hi = count - 1;
        while (lo < hi) {
            const int mid = (lo + hi + 1) / 2;
            if (slots[mid].block0 <= static_cast<int>(blockIdx.x))
                lo = mid;
            else
                hi = mid - 1;
        }
        *found = lo;
    }
    __syncthreads();
    return *found;
}

// Block-wide sum of `acc` (256 threads) into partial[blockIdx.x]; red is 256 doubles of shared
// memory.
__device__ __forceinline__ void block_sum(double acc, double* red, double* partial) {
    red[threadIdx.x] = acc;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (static_cast<int>(threadIdx.x) < s) red[threadIdx.x] += red[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) partial[blockIdx.x] = red[0];
}

}  // namespace optim

// Element i of slot s, for this block's grid-stride share of it.
#define SLOT_STRIDE(i, s) \
    for (int i = (static_cast<int>(blockIdx.x) - (s).block0) * blockDim.x + threadIdx.x; i < (s).n; i += (s).blocks * blockDim.x)

extern "C" __global__ void adam_rms(const optim::Slot* slots, int count, float b2, float eps, float bc2_sqrt,
                                    double* partial) {
    __shared__ int found;
    __shared__ double red[256];
    const optim::Slot& s = slots[optim::slot_of_block(slots, count, &found)];
    double acc = 0.0;
    SLOT_STRIDE(i, s) {
        const float g = s.grad[i];
        const float vi = b2 * s.v[i] + (1.0f - b2) * g * g;
        const float vh = s.vmax ? fmaxf(s.vmax[i], vi) : vi;
        const double u = g / (sqrtf(vh) / bc2_sqrt + eps);
        acc += u * u;
    }
    optim::block_sum(acc, red, partial);
}
KDAD_KERNEL(adam_rms)

// partial is null for plain AdamW (no RMS division).
extern "C" __global__ void adam_step(const optim::Slot* slots, int count, float lr, float wd, float bc1, float b1,
                                     float b2, float eps, float bc2_sqrt, const double* partial) {
    __shared__ int found;
    __shared__ float r;
    const optim::Slot& s = slots[optim::slot_of_block(slots, count, &found)];
    if (threadIdx.x == 0) {
        r = 1.0f;
        if (partial) {
            double sum = 0.0;
            for (int j = 0; j < s.blocks; ++j) sum += partial[s.block0 + j];
            r = fmaxf(1.0f, static_cast<float>(sqrt(sum / s.n)));
        }
    }
    __syncthreads();
    const optim::Hyper h{lr, wd, bc1, b1, b2, eps, bc2_sqrt};
    SLOT_STRIDE(i, s) optim::update(h, r, s.param, s.grad, s.m, s.v, s.vmax, i);
}
KDAD_KERNEL(adam_step)

extern "C" __global__ void grad_sum_squares(const optim::Slot* slots, int count, double* partial) {
    __shared__ int found;
    __shared__ double red[256];
    const optim::Slot& s = slots[optim::slot_of_block(slots, count, &found)];
    double acc = 0.0;
    SLOT_STRIDE(i, s) {
        const double g = s.grad[i];
        acc += g * g;
    }
    optim::block_sum(acc, red, partial);
}
KDAD_KERNEL(grad_sum_squares)

extern "C" __global__ void grad_scale(const optim::Slot* slots, int count, float a) {
    __shared__ int found;
    const optim::Slot& s = slots[optim::slot_of_block(slots, count, &found)];
    SLOT_STRIDE(i, s) s.grad[i] *= a;
}
KDAD_KERNEL(grad_scale)

#undef SLOT_STRIDE
