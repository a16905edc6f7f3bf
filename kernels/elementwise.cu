// Element-wise kernels over f32 tensors in global memory (see src/device/gpu/mod.rs for the
// storage), one thread per element in a grid-stride loop: launch grid_1d(n) = up to 4096
// blocks of 256 threads; every kernel's last argument is the element count n.
//
// Memory traffic and FLOPs per element (all are bandwidth-bound: < 1 FLOP per byte):
//   fill_f32        4 B written                      0 FLOP
//   scale_f32       4 B read, 4 B written            1 FLOP
//   axpy_f32        8 B read, 4 B written            2 FLOP
//   cast_f32_bf16   4 B read, 2 B written            0 FLOP (round to nearest even)
//   add_bias        8 B read (bias from L1/L2), 4 B written          1 FLOP
//   gelu_fwd        8 B read (x, bias), 4 B written  ~20 FLOP (erff)
//   gelu_bwd        12 B read, 4 B written           ~30 FLOP (erff, expf)
//   residual_fwd    12 B read (x, y, gamma), 4 B written             2 FLOP
//   mul_cols        8 B read, 4 B written            1 FLOP
//   dropout         4 B read, 4 B written            ~12 integer ops (SplitMix64 finaliser)
// Column-indexed operands (bias, gamma) are [cols] vectors reused by every row; they stay in
// L1/L2, so DRAM traffic is that of the row-major operands.
#include "common.cuh"

namespace elementwise {

// Exact (erf) GELU and its derivative, in f32.
__device__ __forceinline__ float gelu(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }

__device__ __forceinline__ float gelu_grad(float x) {
    const float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
    const float pdf = 0.39894228040143268f * expf(-0.5f * x * x);
    return cdf + x * pdf;
}

// src/device/rng.rs, bit for bit: SplitMix64's finaliser of seed ^ index·φ, top 24 bits as a
// uniform in [0, 1); the element is kept when the uniform is >= p.
__device__ __forceinline__ unsigned long long mix64(unsigned long long z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

__device__ __forceinline__ bool dropout_keep(unsigned long long seed, unsigned long long index, float p) {
    const unsigned long long z = mix64(seed ^ (index * 0x9E3779B97F4A7C15ull));
    return static_cast<float>(z >> 40) * (1.0f / 16777216.0f) >= p;
}

}  // namespace elementwise

#define GRID_STRIDE(i, n) for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += blockDim.x * gridDim.x)

extern "C" __global__ void fill_f32(float* x, float v, int n) {
    GRID_STRIDE(i, n) x[i] = v;
}
KDAD_KERNEL(fill_f32)

extern "C" __global__ void scale_f32(float* x, float a, int n) {
    GRID_STRIDE(i, n) x[i] *= a;
}
KDAD_KERNEL(scale_f32)

extern "C" __global__ void axpy_f32(float a, const float* x, float* y, int n) {
    GRID_STRIDE(i, n) y[i] += a * x[i];
}
KDAD_KERNEL(axpy_f32)

extern "C" __global__ void cast_f32_bf16(const float* x, __nv_bfloat16* y, int n) {
    GRID_STRIDE(i, n) y[i] = __float2bfloat16(x[i]);
}
KDAD_KERNEL(cast_f32_bf16)

// y[r, c] += bias[c] over y [n / cols, cols].
extern "C" __global__ void add_bias(float* y, const float* bias, int cols, int n) {
    GRID_STRIDE(i, n) y[i] += bias[i % cols];
}
KDAD_KERNEL(add_bias)

// y = gelu(x + bias[col]); bias may be null (plain GELU).
extern "C" __global__ void gelu_fwd(const float* x, const float* bias, float* y, int cols, int n) {
    GRID_STRIDE(i, n) {
        const float v = bias ? x[i] + bias[i % cols] : x[i];
        y[i] = elementwise::gelu(v);
    }
}
KDAD_KERNEL(gelu_fwd)

// dx = dy · gelu'(x + bias[col]); bias may be null.
extern "C" __global__ void gelu_bwd(const float* dy, const float* x, const float* bias, float* dx, int cols, int n) {
    GRID_STRIDE(i, n) {
        const float v = bias ? x[i] + bias[i % cols] : x[i];
        dx[i] = dy[i] * elementwise::gelu_grad(v);
    }
}
KDAD_KERNEL(gelu_bwd)

// out = x + gamma[col] · y (LayerScale residual); gamma may be null (= 1).
extern "C" __global__ void residual_fwd(const float* x, const float* y, const float* gamma, float* out, int cols,
                                        int n) {
    GRID_STRIDE(i, n) out[i] = gamma ? x[i] + gamma[i % cols] * y[i] : x[i] + y[i];
}
KDAD_KERNEL(residual_fwd)

// out = x · v[col].
extern "C" __global__ void mul_cols(const float* x, const float* v, float* out, int cols, int n) {
    GRID_STRIDE(i, n) out[i] = x[i] * v[i % cols];
}
KDAD_KERNEL(mul_cols)

// Inverted dropout, forward and backward alike: out = x · keep / (1 - p).
extern "C" __global__ void dropout(const float* x, float* out, float p, unsigned long long seed, int n) {
    const float keep_scale = 1.0f / (1.0f - p);
    GRID_STRIDE(i, n) {
        out[i] = elementwise::dropout_keep(seed, static_cast<unsigned long long>(i), p) ? x[i] * keep_scale : 0.0f;
    }
}
KDAD_KERNEL(dropout)

#undef GRID_STRIDE
