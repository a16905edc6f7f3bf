// Element-wise kernels, one thread per element in a grid-stride loop: launch grid_1d(n) = up
// to 4096 blocks of 256 threads; every kernel's last argument is the element count n. The
// hot ones of the ViT (gelu_fwd, gelu_bwd, residual_fwd) take four elements per thread when
// the sizes and alignments allow (elementwise::vec4): 8- or 16-byte accesses instead of 2- or
// 4-byte ones, and one column index per four elements.
// Tensor operands are In/Out (common.cuh): each is stored as f32 (4 B per element) or bf16
// (2 B), as the backend chose for that tensor; all arithmetic is f32.
//
// Memory traffic per element, where s is the operand's storage (2 B for a bf16 activation,
// 4 B for an f32 tensor) and fixed sizes are those of the models' use (activations bf16;
// parameters, gradients and optimiser state f32); FLOPs per element (all are bandwidth-bound:
// at most ~5 FLOP per byte, far below the ~20 the SMs sustain):
//   fill            s written                        0 FLOP
//   scale           s read, s written                1 FLOP
//   axpy            2s read, s written               2 FLOP
//   scaled_copy     s read, s' written               1 FLOP (copies between tensors of
//                                                    different storage, group means)
//   cast_f32_bf16   4 B read, 2 B written            0 FLOP (an f32 GEMM operand to bf16)
//   gelu_fwd        2 B read, 2 B written            ~20 FLOP (erff)
//   gelu_bwd        2 B (x) + 4 B (dy) read, 4 B written (activation gradients are f32)
//                                                    ~30 FLOP (erff, expf)
//   residual_fwd    4 B read (x, y), 2 B written     2 FLOP
//   mul_cols        4 B read, 4 B written (gradients)                1 FLOP
//   dropout         s read, s written                ~12 integer ops (SplitMix64 finaliser)
// Column-indexed operands (bias, gamma) are [cols] vectors reused by every row; they stay in
// L1/L2, so DRAM traffic is that of the row-major operands. Rounding happens once per
// stored value: a bf16 output is the f32 result rounded to nearest even.
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

// Whether the four-wide paths below may run: n and the column count multiples of 4 (every
// ViT width is) and every operand (a null one aside) on a 16-byte boundary, so that four
// consecutive elements from a multiple of 4 are one aligned 16-byte (f32) or 8-byte (bf16)
// access; then a thread also computes its column index once per four elements.
__device__ __forceinline__ bool aligned16(unsigned long long bits) { return ((bits & ~1ull) & 15ull) == 0; }
template <class... Op>
__device__ __forceinline__ bool vec4(int cols, int n, Op... ops) {
    return cols % 4 == 0 && n % 4 == 0 && (aligned16(ops.bits) && ...);
}

__device__ __forceinline__ float4 add4(float4 a, float4 b) { return make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w); }
__device__ __forceinline__ float4 mul4(float4 a, float4 b) { return make_float4(a.x * b.x, a.y * b.y, a.z * b.z, a.w * b.w); }

}  // namespace elementwise

#define GRID_STRIDE(i, n) for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += blockDim.x * gridDim.x)
// Four consecutive elements per thread, i a multiple of 4.
#define GRID_STRIDE4(i, n) \
    for (int i = 4 * (blockIdx.x * blockDim.x + threadIdx.x); i < (n); i += 4 * blockDim.x * gridDim.x)

extern "C" __global__ void fill(Out x, float v, int n) {
    GRID_STRIDE(i, n) x.set(i, v);
}
KDAD_KERNEL(fill)

extern "C" __global__ void scale(Out x, float a, int n) {
    GRID_STRIDE(i, n) x.set(i, x[i] * a);
}
KDAD_KERNEL(scale)

extern "C" __global__ void axpy(float a, In x, Out y, int n) {
    GRID_STRIDE(i, n) y.set(i, y[i] + a * x[i]);
}
KDAD_KERNEL(axpy)

// y = a·x, where x and y may differ in storage (copies between an f32 and a bf16 tensor; a
// bf16 bias widened for the GEMM epilogue; the last step of a group mean summed in f32).
extern "C" __global__ void scaled_copy(In x, float a, Out y, int n) {
    GRID_STRIDE(i, n) y.set(i, a * x[i]);
}
KDAD_KERNEL(scaled_copy)

extern "C" __global__ void cast_f32_bf16(const float* x, __nv_bfloat16* y, int n) {
    GRID_STRIDE(i, n) y[i] = __float2bfloat16(x[i]);
}
KDAD_KERNEL(cast_f32_bf16)

// y = gelu(x + bias[col]); bias may be null (plain GELU).
extern "C" __global__ void gelu_fwd(In x, In bias, Out y, int cols, int n) {
    using namespace elementwise;
    if (vec4(cols, n, x, bias, y)) {
        GRID_STRIDE4(i, n) {
            const float4 v = bias ? add4(x.load4(i), bias.load4(i % cols)) : x.load4(i);
            y.store4(i, make_float4(gelu(v.x), gelu(v.y), gelu(v.z), gelu(v.w)));
        }
        return;
    }
    GRID_STRIDE(i, n) {
        const float v = bias ? x[i] + bias[i % cols] : x[i];
        y.set(i, elementwise::gelu(v));
    }
}
KDAD_KERNEL(gelu_fwd)

// dx = dy · gelu'(x + bias[col]); bias may be null.
extern "C" __global__ void gelu_bwd(In dy, In x, In bias, Out dx, int cols, int n) {
    using namespace elementwise;
    if (vec4(cols, n, dy, x, bias, dx)) {
        GRID_STRIDE4(i, n) {
            const float4 v = bias ? add4(x.load4(i), bias.load4(i % cols)) : x.load4(i);
            const float4 g = make_float4(gelu_grad(v.x), gelu_grad(v.y), gelu_grad(v.z), gelu_grad(v.w));
            dx.store4(i, mul4(dy.load4(i), g));
        }
        return;
    }
    GRID_STRIDE(i, n) {
        const float v = bias ? x[i] + bias[i % cols] : x[i];
        dx.set(i, dy[i] * elementwise::gelu_grad(v));
    }
}
KDAD_KERNEL(gelu_bwd)

// out = x + gamma[col] · y (LayerScale residual); gamma may be null (= 1).
extern "C" __global__ void residual_fwd(In x, In y, In gamma, Out out, int cols, int n) {
    using namespace elementwise;
    if (vec4(cols, n, x, y, gamma, out)) {
        GRID_STRIDE4(i, n) {
            const float4 yv = y.load4(i);
            out.store4(i, add4(x.load4(i), gamma ? mul4(gamma.load4(i % cols), yv) : yv));
        }
        return;
    }
    GRID_STRIDE(i, n) out.set(i, gamma ? x[i] + gamma[i % cols] * y[i] : x[i] + y[i]);
}
KDAD_KERNEL(residual_fwd)

// out = x · v[col].
extern "C" __global__ void mul_cols(In x, In v, Out out, int cols, int n) {
    GRID_STRIDE(i, n) out.set(i, x[i] * v[i % cols]);
}
KDAD_KERNEL(mul_cols)

// Inverted dropout, forward and backward alike: out = x · keep / (1 - p).
extern "C" __global__ void dropout(In x, Out out, float p, unsigned long long seed, int n) {
    const float keep_scale = 1.0f / (1.0f - p);
    GRID_STRIDE(i, n) {
        out.set(i, elementwise::dropout_keep(seed, static_cast<unsigned long long>(i), p) ? x[i] * keep_scale : 0.0f);
    }
}
KDAD_KERNEL(dropout)

#undef GRID_STRIDE
#undef GRID_STRIDE4
