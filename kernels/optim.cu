// Optimiser steps on f32 parameters with f32 state (master weights and moments), one thread
// per element in a grid-stride loop (grid_1d: up to 4096 blocks of 256). torch AdamW:
//   p *= 1 - lr·wd;  m = β1·m + (1-β1)·g;  v = β2·v + (1-β2)·g²;  v̂ = max(vmax, v) if AMSGrad
//   p -= (lr / bc1) · m / (sqrt(v̂) / sqrt(bc2) + eps),   bc_i = 1 - β_i^t (host, f64)
// vmax is null without AMSGrad.
//
//   adamw_step          the update above. DRAM: 16 B read + 12 B written per element
//                       (20 + 16 with vmax); ~15 FLOP.
//   stable_adamw_rms    StableAdamW pass 1: Σ (g / denom)² with the updated moments, into
//                       per-block f64 partials (≤ 256 blocks). Reads g, v (, vmax): 8–12 B,
//                       ~8 FLOP per element; writes nothing per element.
//   stable_adamw_step   pass 2: every block sums the partials (≤ 256 values, from L2) in the
//                       same order, r = max(1, sqrt(Σ / n)), then the AdamW update with the
//                       step divided by r. Same traffic as adamw_step.
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

}  // namespace optim

extern "C" __global__ void adamw_step(float* param, const float* grad, float* m, float* v, float* vmax, float lr,
                                      float wd, float bc1, float b1, float b2, float eps, float bc2_sqrt, int n) {
    const optim::Hyper h{lr, wd, bc1, b1, b2, eps, bc2_sqrt};
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x)
        optim::update(h, 1.0f, param, grad, m, v, vmax, i);
}
KDAD_KERNEL(adamw_step)

extern "C" __global__ void stable_adamw_rms(const float* grad, const float* v, const float* vmax, float b2, float eps,
                                            float bc2_sqrt, int n, double* partial) {
    __shared__ double red[256];
    double acc = 0.0;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
        const float g = grad[i];
        const float vi = b2 * v[i] + (1.0f - b2) * g * g;
        const float vh = vmax ? fmaxf(vmax[i], vi) : vi;
        const double u = g / (sqrtf(vh) / bc2_sqrt + eps);
        acc += u * u;
    }
    red[threadIdx.x] = acc;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (static_cast<int>(threadIdx.x) < s) red[threadIdx.x] += red[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) partial[blockIdx.x] = red[0];
}
KDAD_KERNEL(stable_adamw_rms)

extern "C" __global__ void stable_adamw_step(float* param, const float* grad, float* m, float* v, float* vmax,
                                             float lr, float wd, float bc1, float b1, float b2, float eps,
                                             float bc2_sqrt, const double* partial, int n_partial, int n) {
    __shared__ float r;
    if (threadIdx.x == 0) {
        double sum = 0.0;
        for (int j = 0; j < n_partial; ++j) sum += partial[j];
        r = fmaxf(1.0f, static_cast<float>(sqrt(sum / n)));
    }
    __syncthreads();
    const optim::Hyper h{lr, wd, bc1, b1, b2, eps, bc2_sqrt};
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x)
        optim::update(h, r, param, grad, m, v, vmax, i);
}
KDAD_KERNEL(stable_adamw_step)
