// Test kernels of the emulator itself, launched by name from tests/emu_selftest.rs. Each one
// exercises one mechanism (fragment layouts, shuffles, barriers, atomics, shared memory,
// error detection); the expected results are computed independently on the Rust side.
// Compiled into the emulator library only (build.rs), never by nvcc: the "emu_selftest_"
// prefix keeps them apart from the product's kernels in the registry.
#include "../common.cuh"

namespace emu_selftest {
// Same address layout as the GEMM test's tiles: row r of an 8x8 b16 matrix is 16 bytes.
constexpr int kTileM = 32, kTileN = 32, kTileK = 16;
}  // namespace emu_selftest

// One warp: d[lane][0..4] = mma(a[lane][0..4], b[lane][0..2], c[lane][0..4]). The fragments
// are built by the test from its own reading of the PTX tables; this kernel does no layout.
extern "C" __global__ void emu_selftest_mma(const uint32_t* a, const uint32_t* b, const float* c, float* d) {
    const int lane = threadIdx.x;
    float out[4];
    mma_m16n8k16_bf16(out, a + 4 * lane, b + 2 * lane, c + 4 * lane);
    for (int i = 0; i < 4; ++i) d[4 * lane + i] = out[i];
}
KDAD_KERNEL(emu_selftest_mma)

// One warp: copies `rows` rows of 8 b16 values into shared memory, lane l points at row
// row_of_lane[l], and ldmatrix with `count` matrices (1, 2, 4), transposed or not, writes
// lane l's registers to out[4 l ..].
extern "C" __global__ void emu_selftest_ldmatrix(const uint16_t* src, int rows, const int* row_of_lane, int count,
                                                 int trans, uint32_t* out) {
    KDAD_DYN_SMEM;
    uint16_t* s = reinterpret_cast<uint16_t*>(smem_raw);
    const int lane = threadIdx.x;
    for (int i = lane; i < rows * 8; i += 32) s[i] = src[i];
    __syncwarp();
    const void* row = s + 8 * row_of_lane[lane];
    uint32_t r[4] = {0, 0, 0, 0};
    if (count == 1) trans ? ldmatrix_x1_trans(r, row) : ldmatrix_x1(r, row);
    if (count == 2) trans ? ldmatrix_x2_trans(r, row) : ldmatrix_x2(r, row);
    if (count == 4) trans ? ldmatrix_x4_trans(r, row) : ldmatrix_x4(r, row);
    for (int i = 0; i < 4; ++i) out[4 * lane + i] = r[i];
}
KDAD_KERNEL(emu_selftest_ldmatrix)

// C[M,N] = A[M,K] B, bf16 in, f32 out, on the tensor-core path: cp.async tiles into dynamic
// shared memory, ldmatrix fragments, mma.m16n8k16. B is [N,K] (b_is_kn = 0, plain ldmatrix)
// or [K,N] (b_is_kn = 1, ldmatrix .trans). Block 128 threads = 4 warps on a 32x32 tile, each
// warp 16x16 (two n8 mma tiles); M, N multiples of 32, K of 16. Shared: 2 KB.
extern "C" __global__ void emu_selftest_gemm(const __nv_bfloat16* A, const __nv_bfloat16* B, float* C, int M,
                                             int N, int K, int b_is_kn) {
    using namespace emu_selftest;
    KDAD_DYN_SMEM;
    __nv_bfloat16* As = reinterpret_cast<__nv_bfloat16*>(smem_raw);  // [32][16]
    __nv_bfloat16* Bs = As + kTileM * kTileK;                          // [32 n][16 k] or [16 k][32 n]
    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
    const int m0 = blockIdx.y * kTileM, n0 = blockIdx.x * kTileN;
    const int wm = 16 * (warp / 2), wn = 16 * (warp % 2);
    float acc[2][4] = {};
    for (int k0 = 0; k0 < K; k0 += kTileK) {
        // 64 16-byte chunks per tile: threads 0..63 load A, 64..127 load B.
        const int chunk = tid % 64;
        if (tid < 64) {
            const int r = chunk / 2, c = 8 * (chunk % 2);
            cp_async_16(As + r * kTileK + c, A + (m0 + r) * K + k0 + c);
        } else if (!b_is_kn) {
            const int r = chunk / 2, c = 8 * (chunk % 2);
            cp_async_16(Bs + r * kTileK + c, B + (n0 + r) * K + k0 + c);
        } else {
            const int r = chunk / 4, c = 8 * (chunk % 4);
            cp_async_16(Bs + r * kTileN + c, B + (k0 + r) * N + n0 + c);
        }
        cp_async_commit();
        cp_async_wait<0>();
        __syncthreads();
        uint32_t a[4];
        // Matrices 0..3: rows 0-7/8-15 at k 0-7, then the same at k 8-15.
        ldmatrix_x4(a, As + (wm + lane % 8 + 8 * ((lane / 8) % 2)) * kTileK + 8 * (lane / 16));
        for (int j = 0; j < 2; ++j) {
            uint32_t b[2];
            const int n = wn + 8 * j;
            if (!b_is_kn)
                ldmatrix_x2(b, Bs + (n + lane % 8) * kTileK + 8 * ((lane / 8) % 2));
            else
                ldmatrix_x2_trans(b, Bs + (lane % 16) * kTileN + n);
            mma_m16n8k16_bf16(acc[j], a, b, acc[j]);
        }
        __syncthreads();
    }
    const int g = lane / 4, t = lane % 4;
    for (int j = 0; j < 2; ++j)
        for (int i = 0; i < 4; ++i)
            C[(m0 + wm + g + 8 * (i / 2)) * N + n0 + wn + 8 * j + 2 * t + i % 2] = acc[j][i];
}
KDAD_KERNEL(emu_selftest_gemm)

// Every warp collective variant on in[thread]; results in out[kind * n + thread] (n threads),
// ballot-style results as bit patterns in bits[kind * n + thread].
extern "C" __global__ void emu_selftest_shuffles(const float* in, float* out, unsigned* bits) {
    const int tid = threadIdx.x, n = blockDim.x, lane = tid % 32;
    const float v = in[tid];
    const unsigned full = 0xffffffffu;
    out[0 * n + tid] = __shfl_sync(full, v, (lane * 7 + 3) % 32);
    out[1 * n + tid] = __shfl_sync(full, v, 5, 8);
    out[2 * n + tid] = __shfl_xor_sync(full, v, 5);
    out[3 * n + tid] = __shfl_xor_sync(full, v, 12, 8);
    out[4 * n + tid] = __shfl_down_sync(full, v, 3);
    out[5 * n + tid] = __shfl_down_sync(full, v, 3, 16);
    out[6 * n + tid] = __shfl_up_sync(full, v, 2);
    out[7 * n + tid] = __shfl_up_sync(full, v, 2, 8);
    out[8 * n + tid] = warp_sum(v);
    out[9 * n + tid] = warp_max(v);
    bits[0 * n + tid] = __ballot_sync(full, v > 0.0f);
    bits[1 * n + tid] = __any_sync(full, v > 100.0f);
    bits[2 * n + tid] = __all_sync(full, v > -100.0f);
    bits[3 * n + tid] = __activemask();
}
KDAD_KERNEL(emu_selftest_shuffles)

// sums[block] and maxes[block] over x[block * blockDim.x + thread] (1-D blocks).
extern "C" __global__ void emu_selftest_block_reduce(const float* x, float* sums, float* maxes) {
    __shared__ float scratch[32];
    const float v = x[blockIdx.x * blockDim.x + threadIdx.x];
    const float s = block_sum(v, scratch);
    const float m = block_max(v, scratch);
    if (threadIdx.x == 0) {
        sums[blockIdx.x] = s;
        maxes[blockIdx.x] = m;
    }
}
KDAD_KERNEL(emu_selftest_block_reduce)

// Every thread of every block hits the same global counters, from several OS threads.
extern "C" __global__ void emu_selftest_atomics(int* count, float* fsum, unsigned* usum, int* imax, int* imin,
                                                unsigned* cas_count, int* exch) {
    const int gid = blockIdx.x * blockDim.x + threadIdx.x;
    atomicAdd(count, 1);
    atomicAdd(fsum, 0.5f);
    atomicAdd(usum, static_cast<unsigned>(gid));
    atomicMax(imax, gid);
    atomicMin(imin, -gid);
    // Increment through a compare-and-swap loop.
    unsigned old = *cas_count, seen;
    while ((seen = atomicCAS(cas_count, old, old + 1)) != old) old = seen;
    atomicExch(exch, 7);
}
KDAD_KERNEL(emu_selftest_atomics)

// Dynamic shared memory: poison[t] = word t as found at block start, then out = in reversed
// within each block through shared memory.
extern "C" __global__ void emu_selftest_dyn_smem(const float* in, float* out, unsigned* poison) {
    KDAD_DYN_SMEM;
    float* s = reinterpret_cast<float*>(smem_raw);
    const int t = threadIdx.x, n = blockDim.x, base = blockIdx.x * n;
    unsigned first;
    memcpy(&first, s + t, 4);
    poison[base + t] = first;
    __syncthreads();
    s[t] = in[base + t];
    __syncthreads();
    out[base + t] = s[n - 1 - t];
}
KDAD_KERNEL(emu_selftest_dyn_smem)

// Threads 0..15 wait at a barrier the others never reach.
extern "C" __global__ void emu_selftest_divergent_exit(float* out) {
    if (threadIdx.x < 16) __syncthreads();
    out[threadIdx.x] = 1.0f;
}
KDAD_KERNEL(emu_selftest_divergent_exit)

// Odd and even threads wait at two different barriers.
extern "C" __global__ void emu_selftest_divergent_sites(float* out) {
    if (threadIdx.x % 2)
        __syncthreads();
    else
        __syncthreads();
    out[threadIdx.x] = 1.0f;
}
KDAD_KERNEL(emu_selftest_divergent_sites)

// Half a warp enters a full-mask reduction; the other half leaves.
extern "C" __global__ void emu_selftest_divergent_warp(float* out) {
    if (threadIdx.x % 32 < 16) out[threadIdx.x] = warp_sum(1.0f);
}
KDAD_KERNEL(emu_selftest_divergent_warp)

// out[i + write_offset] = in[i + read_offset] for i < blockDim.x: offsets of 1 step one
// element past the end of buffers of blockDim.x elements.
extern "C" __global__ void emu_selftest_copy(const float* in, float* out, int read_offset, int write_offset) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    out[i + write_offset] = in[i + read_offset];
}
KDAD_KERNEL(emu_selftest_copy)

// out[t] = value thread t - 1 stored in shared memory (0 for t = 0). Without the barrier
// (sync = 0) this is a race: correct only if thread t - 1 happens to run first.
extern "C" __global__ void emu_selftest_race(float* out, int sync) {
    KDAD_DYN_SMEM;
    float* s = reinterpret_cast<float*>(smem_raw);
    const int t = threadIdx.x;
    s[t] = static_cast<float>(t);
    if (sync) __syncthreads();
    out[t] = t > 0 ? s[t - 1] : 0.0f;
}
KDAD_KERNEL(emu_selftest_race)

// Each thread cp.asyncs 4 floats into shared memory; with wait = 0 it reads them back
// without waiting for the copy.
extern "C" __global__ void emu_selftest_cp_async(const float* in, float* out, int wait) {
    KDAD_DYN_SMEM;
    float* s = reinterpret_cast<float*>(smem_raw);
    const int t = threadIdx.x;
    cp_async_16(s + 4 * t, in + 4 * t);
    cp_async_commit();
    if (wait) cp_async_wait<0>();
    __syncthreads();
    for (int i = 0; i < 4; ++i) out[4 * t + i] = s[4 * t + i];
}
KDAD_KERNEL(emu_selftest_cp_async)

// y = a x + y: a kernel without barriers, for timing the emulator's per-thread cost.
extern "C" __global__ void emu_selftest_axpy(float* y, const float* x, float a, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = a * x[i] + y[i];
}
KDAD_KERNEL(emu_selftest_axpy)

// A 128 KB local array: twice the stack of an emulated thread.
extern "C" __global__ void emu_selftest_stack_overflow(float* out, int n) {
    float local[32 * 1024];
    for (int i = 0; i < n; ++i) local[i] = static_cast<float>(i);
    out[threadIdx.x] = local[n - 1];
}
KDAD_KERNEL(emu_selftest_stack_overflow)

// A device assert that fails when n <= 0.
extern "C" __global__ void emu_selftest_assert(int n) { assert(n > 0); }
KDAD_KERNEL(emu_selftest_assert)

// Half of each warp waits at the block barrier, the other half at a warp barrier: neither
// can ever complete.
extern "C" __global__ void emu_selftest_deadlock(float* out) {
    if (threadIdx.x % 32 < 16)
        __syncthreads();
    else
        __syncwarp();
    out[threadIdx.x] = 1.0f;
}
KDAD_KERNEL(emu_selftest_deadlock)

// Per thread t of a 1-D block: out[4t..4t+3] = __syncthreads_count(t % 3 == 0),
// __syncthreads_and(t < n_true), __syncthreads_or(t == one), and a second count (t odd) right
// after the first, which must not disturb threads still reading the first.
extern "C" __global__ void emu_selftest_sync_count(int* out, int n_true, int one) {
    const int t = threadIdx.x;
    const int c = __syncthreads_count(t % 3 == 0);
    const int odd = __syncthreads_count(t % 2);
    out[4 * t + 0] = c;
    out[4 * t + 1] = __syncthreads_and(t < n_true);
    out[4 * t + 2] = __syncthreads_or(t == one);
    out[4 * t + 3] = odd;
}
KDAD_KERNEL(emu_selftest_sync_count)
