// Included first by every kernels/*.cu. One source, two compilers:
//  - nvcc (__CUDACC__): cuda_bf16.h, and the tensor-core / async-copy instructions as inline
//    PTX. This is the only file of the project allowed to contain inline asm.
//  - g++ (the emulated device, see kernels/emu/): the same names, emulated on the CPU.
// Also defines the helpers every kernel shares: warp and block reductions, the one dynamic
// shared memory name (smem_raw), and KDAD_KERNEL, which registers a kernel by name for the
// emulator's launcher (it expands to nothing under nvcc).
//
// Fragment layouts (PTX ISA, mma.m16n8k16 with .bf16, g = lane / 4, t = lane % 4):
//   A 16x16 row-major, a[4] of bf16x2: a[0] = A[g][2t..2t+1], a[1] = A[g+8][2t..2t+1],
//                                       a[2] = A[g][2t+8..2t+9], a[3] = A[g+8][2t+8..2t+9]
//   B 16x8 (k x n), b[2] of bf16x2:     b[0] = B[2t..2t+1][g], b[1] = B[2t+8..2t+9][g]
//   C, D 16x8 f32:                      c[0..1] = C[g][2t..2t+1], c[2..3] = C[g+8][2t..2t+1]
//   (the lower column / row index sits in the low 16 bits of each bf16x2 register)
// ldmatrix .x4: lanes 8i..8i+7 give the 16-byte-aligned row addresses of 8x8 b16 matrix i;
// register i of lane l receives row l/4, columns 2(l%4)..2(l%4)+1 of matrix i (.trans: rows
// 2(l%4) and 2(l%4)+1 of column l/4). .x2 uses lanes 0..15, .x1 lanes 0..7.
#pragma once

#ifdef __CUDACC__

#include <cuda_bf16.h>
#include <stdint.h>

#define KDAD_KERNEL(name)
#define KDAD_DYN_SMEM extern __shared__ __align__(16) unsigned char smem_raw[]

__device__ __forceinline__ void mma_m16n8k16_bf16(float d[4], const uint32_t a[4], const uint32_t b[2],
                                                  const float c[4]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%10,%11,%12,%13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
          "f"(c[3]));
}

__device__ __forceinline__ unsigned kdad_smem_addr(const void* p) {
    return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// The "memory" clobbers keep the compiler from moving shared-memory stores past the loads.
__device__ __forceinline__ void ldmatrix_x1(uint32_t r[1], const void* smem_ptr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n"
                 : "=r"(r[0])
                 : "r"(kdad_smem_addr(smem_ptr))
                 : "memory");
}
__device__ __forceinline__ void ldmatrix_x2(uint32_t r[2], const void* smem_ptr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(kdad_smem_addr(smem_ptr))
                 : "memory");
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const void* smem_ptr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(kdad_smem_addr(smem_ptr))
                 : "memory");
}
__device__ __forceinline__ void ldmatrix_x1_trans(uint32_t r[1], const void* smem_ptr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n"
                 : "=r"(r[0])
                 : "r"(kdad_smem_addr(smem_ptr))
                 : "memory");
}
__device__ __forceinline__ void ldmatrix_x2_trans(uint32_t r[2], const void* smem_ptr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(kdad_smem_addr(smem_ptr))
                 : "memory");
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const void* smem_ptr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(kdad_smem_addr(smem_ptr))
                 : "memory");
}

// 16 bytes global -> shared, asynchronously. Both addresses must be 16-byte aligned.
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(kdad_smem_addr(smem)), "l"(gmem) : "memory");
}
// Reads only src_bytes (0..16) and zero-fills the rest: the tail of a tile that ends past a
// tensor's edge. With src_bytes = 0 the global address is not read at all.
__device__ __forceinline__ void cp_async_16_zfill(void* smem, const void* gmem, unsigned src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(kdad_smem_addr(smem)), "l"(gmem),
                 "r"(src_bytes)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Waits until at most N of the most recently committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }

#else  // the emulated device

#include "emu/cuda_emu.h"

#define KDAD_KERNEL(name) KDAD_EMU_REGISTER(name)
// The emulator defines smem_raw once, as a per-OS-thread array; a using-declaration makes it
// visible in any scope (a block-scope extern declaration inside a namespace would not).
#define KDAD_DYN_SMEM using ::smem_raw

inline void mma_m16n8k16_bf16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
    ::kdad_emu::mma_m16n8k16_bf16(d, a, b, c);
}
inline void ldmatrix_x1(uint32_t r[1], const void* smem_ptr) { ::kdad_emu::ldmatrix(r, smem_ptr, 1, false); }
inline void ldmatrix_x2(uint32_t r[2], const void* smem_ptr) { ::kdad_emu::ldmatrix(r, smem_ptr, 2, false); }
inline void ldmatrix_x4(uint32_t r[4], const void* smem_ptr) { ::kdad_emu::ldmatrix(r, smem_ptr, 4, false); }
inline void ldmatrix_x1_trans(uint32_t r[1], const void* smem_ptr) { ::kdad_emu::ldmatrix(r, smem_ptr, 1, true); }
inline void ldmatrix_x2_trans(uint32_t r[2], const void* smem_ptr) { ::kdad_emu::ldmatrix(r, smem_ptr, 2, true); }
inline void ldmatrix_x4_trans(uint32_t r[4], const void* smem_ptr) { ::kdad_emu::ldmatrix(r, smem_ptr, 4, true); }
inline void cp_async_16(void* smem, const void* gmem) { ::kdad_emu::cp_async_16(smem, gmem, 16); }
inline void cp_async_16_zfill(void* smem, const void* gmem, unsigned src_bytes) {
    ::kdad_emu::cp_async_16(smem, gmem, src_bytes);
}
inline void cp_async_commit() { ::kdad_emu::cp_async_commit(); }
template <int N>
inline void cp_async_wait() {
    ::kdad_emu::cp_async_wait(N);
}
inline void cp_async_wait_all() {
    ::kdad_emu::cp_async_commit();
    ::kdad_emu::cp_async_wait(0);
}

#endif

// ---- Shared helpers (identical on both compilers) ------------------------------------------

__device__ __forceinline__ float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

// Sum over the whole block, returned to every thread. `scratch` is a __shared__ float[32] of
// the caller's; the block size must be a multiple of 32. Ends with a barrier, so the caller
// may reuse `scratch` right away.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = blockDim.x / 32;
    v = warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < n_warps ? scratch[lane] : 0.0f;
    v = warp_sum(v);
    __syncthreads();
    return v;
}

// Maximum over the whole block, returned to every thread; same contract as block_sum.
__device__ __forceinline__ float block_max(float v, float* scratch) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = blockDim.x / 32;
    v = warp_max(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < n_warps ? scratch[lane] : -INFINITY;
    v = warp_max(v);
    __syncthreads();
    return v;
}

// ---- Tensor operands stored as f32 or bf16 -------------------------------------------------
// The GPU backend picks each tensor's storage when it allocates it (src/device/gpu/mod.rs):
// activations in bf16, parameters, gradients, optimiser state and row statistics in f32.
// Kernels take a tensor as In (read) or Out (read and written): its address with bit 0 set
// when it holds bf16. Device allocations have even addresses (256-byte aligned on CUDA, at
// least 4 bytes long and so even on the emulator), so the bit is free, and one kernel serves every mix of f32 and bf16 operands without more arguments. Loads widen to
// f32, all arithmetic is f32, stores round to nearest even. The dtype test gives the same
// answer in every thread of a launch: a predictable branch, never divergence. bits = 0 is an
// absent optional operand (a null pointer).
struct In {
    unsigned long long bits;

    __device__ __forceinline__ bool bf16() const { return (bits & 1ull) != 0; }
    __device__ __forceinline__ explicit operator bool() const { return bits != 0; }
    __device__ __forceinline__ const float* f32p() const { return reinterpret_cast<const float*>(bits); }
    __device__ __forceinline__ const __nv_bfloat16* bf16p() const {
        return reinterpret_cast<const __nv_bfloat16*>(bits & ~1ull);
    }
    __device__ __forceinline__ float operator[](size_t i) const {
        return bf16() ? __bfloat162float(bf16p()[i]) : f32p()[i];
    }
    // Elements i..i+3 in one 16-byte (f32) or 8-byte (bf16) load: the address of element i
    // must be aligned to that size (i % 4 == 0 in a tensor, or a row of one, whose start is).
    __device__ __forceinline__ float4 load4(size_t i) const {
        if (!bf16()) return *reinterpret_cast<const float4*>(f32p() + i);
        const uint2 u = *reinterpret_cast<const uint2*>(bf16p() + i);
        __nv_bfloat162 lo, hi;
        memcpy(&lo, &u.x, 4);
        memcpy(&hi, &u.y, 4);
        const float2 a = __bfloat1622float2(lo), b = __bfloat1622float2(hi);
        return make_float4(a.x, a.y, b.x, b.y);
    }
    // The same tensor from element `off` on (a row of it); keeps the dtype bit.
    __device__ __forceinline__ In at(size_t off) const { return In{bits + off * (bf16() ? 2u : 4u)}; }
};

struct Out {
    unsigned long long bits;

    __device__ __forceinline__ bool bf16() const { return (bits & 1ull) != 0; }
    __device__ __forceinline__ explicit operator bool() const { return bits != 0; }
    __device__ __forceinline__ float* f32p() const { return reinterpret_cast<float*>(bits); }
    __device__ __forceinline__ __nv_bfloat16* bf16p() const { return reinterpret_cast<__nv_bfloat16*>(bits & ~1ull); }
    __device__ __forceinline__ operator In() const { return In{bits}; }
    __device__ __forceinline__ float operator[](size_t i) const { return In{bits}[i]; }
    __device__ __forceinline__ void set(size_t i, float v) const {
        if (bf16())
            bf16p()[i] = __float2bfloat16_rn(v);
        else
            f32p()[i] = v;
    }
    // Elements i..i+3, as In::load4.
    __device__ __forceinline__ void store4(size_t i, float4 v) const {
        if (!bf16()) {
            *reinterpret_cast<float4*>(f32p() + i) = v;
            return;
        }
        const __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y), hi = __floats2bfloat162_rn(v.z, v.w);
        uint2 u;
        memcpy(&u.x, &lo, 4);
        memcpy(&u.y, &hi, 4);
        *reinterpret_cast<uint2*>(bf16p() + i) = u;
    }
    __device__ __forceinline__ Out at(size_t off) const { return Out{bits + off * (bf16() ? 2u : 4u)}; }
};
