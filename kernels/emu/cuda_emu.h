// Host emulation of the CUDA execution model, so that g++ compiles the same kernels/*.cu that
// nvcc compiles and runs them on the CPU.
//
// Each CUDA thread is a fiber (its own stack, switched by a hand-written x86-64 routine in
// runtime.cpp). A block runs on one OS thread; blocks are spread over OS threads. Barriers,
// warp collectives and the tensor-core instructions are exchanges between the fibers of a
// block. Everything device code may name lives here; the scheduler, the launch entry points
// and the device allocator are in runtime.cpp. kernels/emu/README.md says what this catches
// and what it cannot.
#pragma once

#if !defined(__x86_64__)
#error "kdad emulator: the fiber context switch (runtime.cpp) exists for x86-64 SysV only; port it first"
#endif

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

// ---- CUDA keywords -------------------------------------------------------------------------

#define __global__
#define __device__
#define __host__
#define __constant__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// A block-scope thread_local is implicitly static: one copy per OS thread, and an OS thread
// runs one block at a time, so this is exactly one copy per running block.
#define __shared__ thread_local

// ---- Vector types and the built-in indices -------------------------------------------------

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
// Alignments are CUDA's: kernels rely on them for 8- and 16-byte vector loads.
struct __attribute__((aligned(8))) float2 {
    float x, y;
};
struct __attribute__((aligned(16))) float4 {
    float x, y, z, w;
};
struct __attribute__((aligned(8))) int2 {
    int x, y;
};
struct __attribute__((aligned(16))) int4 {
    int x, y, z, w;
};
struct __attribute__((aligned(8))) uint2 {
    unsigned x, y;
};
struct __attribute__((aligned(16))) uint4 {
    unsigned x, y, z, w;
};
struct __attribute__((aligned(4))) uchar4 {
    unsigned char x, y, z, w;
};
struct __attribute__((aligned(4))) ushort2 {
    unsigned short x, y;
};
struct __attribute__((aligned(8))) ushort4 {
    unsigned short x, y, z, w;
};
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline int2 make_int2(int x, int y) { return {x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
inline uchar4 make_uchar4(unsigned char x, unsigned char y, unsigned char z, unsigned char w) {
    return {x, y, z, w};
}

namespace kdad_emu {
// Rewritten by the scheduler before every switch to a fiber. External linkage on purpose:
// the compiler must assume the opaque context switch may change them, so kernel code reloads
// them after every barrier instead of caching a stale value.
extern thread_local uint3 thread_idx;
extern thread_local uint3 block_idx;
extern thread_local dim3 block_dim;
extern thread_local dim3 grid_dim;
}  // namespace kdad_emu

#define threadIdx (::kdad_emu::thread_idx)
#define blockIdx (::kdad_emu::block_idx)
#define blockDim (::kdad_emu::block_dim)
#define gridDim (::kdad_emu::grid_dim)
constexpr int warpSize = 32;

// Dynamic shared memory: every kernel names it `smem_raw` (common.cuh). The largest block
// allocation an H100 allows (227 KB); a launch asking for more is refused, and each block
// starts with its requested bytes poisoned to 0xFF (NaN as f32 and bf16).
constexpr unsigned kMaxDynamicSmem = 227 * 1024;
extern thread_local __attribute__((aligned(128))) unsigned char smem_raw[kMaxDynamicSmem];

// ---- Runtime interface used by device code (runtime.cpp) ----------------------------------

namespace kdad_emu {
// Ends the current block with an error; the launch returns it, naming the kernel.
[[noreturn]] void fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
// __syncthreads; the call site is recorded so that two different barriers are told apart.
void sync_block(const char* file, int line);
// __syncthreads_count: the barrier, returning how many threads passed a nonzero predicate.
int sync_block_count(int predicate, const char* file, int line);
// Waits for every lane of the calling warp (the warp barrier under all warp collectives).
void sync_warp();
// Lane of the calling thread and the lanes that exist in its warp (fewer than 32 in the last
// warp of a block whose size is not a multiple of 32).
unsigned lane_id();
unsigned warp_lane_count();
// Start of a warp collective: checks the mask and returns this warp's exchange area for this
// round, kExchangeWords 32-bit words per lane. Double-buffered by barrier generation, so a
// lane may publish into the next round while slower lanes still read this one.
constexpr unsigned kExchangeWords = 16;
uint32_t* exchange_begin(unsigned mask, const char* what);
// Fails unless `lane` exists in the calling warp (a partial warp reading a missing lane).
void check_source_lane(unsigned lane, const char* what);

// One collective: publish `value`, wait for the warp, return the value lane `src(lane)`
// published (or the caller's own where src returns a negative lane).
template <class T, class Src>
inline T warp_exchange(unsigned mask, T value, const char* what, Src src) {
    static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= kExchangeWords * 4,
                  "warp exchange of a type that is not plain data of at most 64 bytes");
    uint32_t* ex = exchange_begin(mask, what);
    const unsigned lane = lane_id();
    std::memcpy(ex + lane * kExchangeWords, &value, sizeof(T));
    sync_warp();
    const int from = src(lane);
    if (from < 0) return value;
    check_source_lane(static_cast<unsigned>(from), what);
    T out;
    std::memcpy(&out, ex + static_cast<unsigned>(from) * kExchangeWords, sizeof(T));
    return out;
}

inline void check_width(int width, const char* what) {
    if (width < 1 || width > 32 || (width & (width - 1)) != 0)
        fail("%s: width %d is not a power of two in 1..32", what, width);
}
}  // namespace kdad_emu

// ---- Barriers, warp collectives ------------------------------------------------------------

#define __syncthreads() ::kdad_emu::sync_block(__FILE__, __LINE__)
#define __syncthreads_count(predicate) ::kdad_emu::sync_block_count((predicate), __FILE__, __LINE__)
#define __syncthreads_and(predicate)                                      \
    (::kdad_emu::sync_block_count((predicate), __FILE__, __LINE__) ==     \
     static_cast<int>(blockDim.x * blockDim.y * blockDim.z))
#define __syncthreads_or(predicate) (::kdad_emu::sync_block_count((predicate), __FILE__, __LINE__) != 0)

inline void __syncwarp(unsigned mask = 0xffffffffu) {
    ::kdad_emu::exchange_begin(mask, "__syncwarp");
    ::kdad_emu::sync_warp();
}

// Which lanes are converged cannot be known here: this is the lanes that exist in the warp.
inline unsigned __activemask() {
    const unsigned n = ::kdad_emu::warp_lane_count();
    return n == 32 ? 0xffffffffu : ((1u << n) - 1u);
}

template <class T>
inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize) {
    ::kdad_emu::check_width(width, "__shfl_sync");
    return ::kdad_emu::warp_exchange(mask, var, "__shfl_sync", [&](unsigned lane) {
        return static_cast<int>((lane & ~unsigned(width - 1)) | (unsigned(src_lane) & unsigned(width - 1)));
    });
}

template <class T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize) {
    ::kdad_emu::check_width(width, "__shfl_xor_sync");
    return ::kdad_emu::warp_exchange(mask, var, "__shfl_xor_sync", [&](unsigned lane) {
        // A lane may read from earlier width-groups, never from later ones (CUDA guide).
        const unsigned src = lane ^ unsigned(lane_mask);
        const unsigned group_end = (lane & ~unsigned(width - 1)) + unsigned(width);
        return src >= group_end ? -1 : static_cast<int>(src);
    });
}

template <class T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
    ::kdad_emu::check_width(width, "__shfl_down_sync");
    return ::kdad_emu::warp_exchange(mask, var, "__shfl_down_sync", [&](unsigned lane) {
        return (lane & unsigned(width - 1)) + delta >= unsigned(width) ? -1 : static_cast<int>(lane + delta);
    });
}

template <class T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
    ::kdad_emu::check_width(width, "__shfl_up_sync");
    return ::kdad_emu::warp_exchange(mask, var, "__shfl_up_sync", [&](unsigned lane) {
        return (lane & unsigned(width - 1)) < delta ? -1 : static_cast<int>(lane - delta);
    });
}

inline unsigned __ballot_sync(unsigned mask, int predicate) {
    uint32_t* ex = ::kdad_emu::exchange_begin(mask, "__ballot_sync");
    ex[::kdad_emu::lane_id() * ::kdad_emu::kExchangeWords] = predicate != 0;
    ::kdad_emu::sync_warp();
    unsigned bits = 0;
    for (unsigned l = 0; l < ::kdad_emu::warp_lane_count(); ++l)
        bits |= ex[l * ::kdad_emu::kExchangeWords] << l;
    return bits;
}
inline int __any_sync(unsigned mask, int predicate) { return __ballot_sync(mask, predicate) != 0; }
inline int __all_sync(unsigned mask, int predicate) {
    return __ballot_sync(mask, predicate) == __activemask();
}

// ---- Loads and stores with cache hints: plain accesses on the CPU ---------------------------

template <class T>
inline T __ldg(const T* p) { return *p; }
template <class T>
inline T __ldcg(const T* p) { return *p; }
template <class T>
inline T __ldca(const T* p) { return *p; }
template <class T>
inline T __ldcs(const T* p) { return *p; }
template <class T>
inline T __ldlu(const T* p) { return *p; }
template <class T>
inline T __ldcv(const T* p) { return *p; }
template <class T>
inline void __stcg(T* p, T v) { *p = v; }
template <class T>
inline void __stcs(T* p, T v) { *p = v; }
template <class T>
inline void __stwb(T* p, T v) { *p = v; }
template <class T>
inline void __stwt(T* p, T v) { *p = v; }

// ---- Memory fences and atomics -------------------------------------------------------------

inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_signal_fence(std::memory_order_seq_cst); }

// Blocks run concurrently on OS threads, so global atomics must be real atomics.
template <class T>
inline T atomicAdd(T* address, std::type_identity_t<T> val) {
    return std::atomic_ref<T>(*address).fetch_add(val);
}
template <class T>
inline T atomicSub(T* address, std::type_identity_t<T> val) {
    return std::atomic_ref<T>(*address).fetch_sub(val);
}
template <class T>
inline T atomicExch(T* address, std::type_identity_t<T> val) {
    return std::atomic_ref<T>(*address).exchange(val);
}
template <class T>
inline T atomicCAS(T* address, std::type_identity_t<T> compare, std::type_identity_t<T> val) {
    std::atomic_ref<T>(*address).compare_exchange_strong(compare, val);
    return compare;  // on failure compare_exchange stored the value it found
}
template <class T>
inline T atomicMax(T* address, std::type_identity_t<T> val) {
    std::atomic_ref<T> a(*address);
    T old = a.load();
    while (old < val && !a.compare_exchange_weak(old, val)) {
    }
    return old;
}
template <class T>
inline T atomicMin(T* address, std::type_identity_t<T> val) {
    std::atomic_ref<T> a(*address);
    T old = a.load();
    while (val < old && !a.compare_exchange_weak(old, val)) {
    }
    return old;
}

// ---- Math intrinsics -----------------------------------------------------------------------
// The GPU's fast approximations (__expf, rsqrtf, ...) are computed at full precision here:
// compare kernels with tolerances, never bit for bit.

inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __log2f(float x) { return std::log2(x); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __tanf(float x) { return std::tan(x); }
inline float __powf(float x, float y) { return std::pow(x, y); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return std::sqrt(x); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __int_as_float(int x) {
    float f;
    std::memcpy(&f, &x, 4);
    return f;
}
inline int __float_as_int(float x) {
    int i;
    std::memcpy(&i, &x, 4);
    return i;
}
inline float __uint_as_float(unsigned x) {
    float f;
    std::memcpy(&f, &x, 4);
    return f;
}
inline unsigned __float_as_uint(float x) {
    unsigned u;
    std::memcpy(&u, &x, 4);
    return u;
}
inline int __float2int_rn(float x) { return static_cast<int>(std::nearbyint(x)); }
inline int __float2int_rz(float x) { return static_cast<int>(x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline unsigned __brev(unsigned x) {
    unsigned r = 0;
    for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
    return r;
}
inline unsigned __umulhi(unsigned a, unsigned b) {
    return static_cast<unsigned>((uint64_t(a) * uint64_t(b)) >> 32);
}
inline long long clock64() { return static_cast<long long>(__builtin_ia32_rdtsc()); }
[[noreturn]] inline void __trap() { ::kdad_emu::fail("__trap() called"); }

// A failed device assert ends the launch with an error instead of aborting the process.
#include <cassert>
#undef assert
#define assert(cond) \
    ((cond) ? (void)0 : ::kdad_emu::fail("assertion failed: %s (%s:%d)", #cond, __FILE__, __LINE__))

// CUDA's global min/max overloads, including the mixed signed/unsigned ones it defines.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline unsigned min(int a, unsigned b) { return min(unsigned(a), b); }
inline unsigned max(int a, unsigned b) { return max(unsigned(a), b); }
inline unsigned min(unsigned a, int b) { return min(a, unsigned(b)); }
inline unsigned max(unsigned a, int b) { return max(a, unsigned(b)); }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }

// ---- bf16 ----------------------------------------------------------------------------------
// Trivial types (no initialisation guard when used in thread_local shared arrays), with the
// conversions and operators of cuda_bf16.h that kernels use.

namespace kdad_emu {
inline uint16_t f32_to_bf16_bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
    return static_cast<uint16_t>(u >> 16);
}
inline float bf16_bits_to_f32(uint16_t b) {
    const uint32_t u = uint32_t(b) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
}  // namespace kdad_emu

struct __attribute__((aligned(2))) __nv_bfloat16 {
    uint16_t x;
    __nv_bfloat16() = default;
    __nv_bfloat16(float f) : x(::kdad_emu::f32_to_bf16_bits(f)) {}
    __nv_bfloat16(double f) : x(::kdad_emu::f32_to_bf16_bits(static_cast<float>(f))) {}
    __nv_bfloat16(int i) : x(::kdad_emu::f32_to_bf16_bits(static_cast<float>(i))) {}
    operator float() const { return ::kdad_emu::bf16_bits_to_f32(x); }
};
struct __attribute__((aligned(4))) __nv_bfloat162 {
    __nv_bfloat16 x, y;
};
static_assert(std::is_trivial_v<__nv_bfloat16> && sizeof(__nv_bfloat16) == 2);
static_assert(std::is_trivial_v<__nv_bfloat162> && sizeof(__nv_bfloat162) == 4);

inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short b) {
    __nv_bfloat16 h;
    h.x = b;
    return h;
}
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.x; }
inline __nv_bfloat16 __float2bfloat16(float f) { return __ushort_as_bfloat16(::kdad_emu::f32_to_bf16_bits(f)); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __float2bfloat16(f); }
inline float __bfloat162float(__nv_bfloat16 h) { return ::kdad_emu::bf16_bits_to_f32(h.x); }
inline __nv_bfloat162 __floats2bfloat162_rn(float lo, float hi) {
    return {__float2bfloat16(lo), __float2bfloat16(hi)};
}
inline __nv_bfloat162 __float22bfloat162_rn(float2 f) { return __floats2bfloat162_rn(f.x, f.y); }
inline __nv_bfloat162 __float2bfloat162_rn(float f) { return __floats2bfloat162_rn(f, f); }
inline float2 __bfloat1622float2(__nv_bfloat162 h) { return {__bfloat162float(h.x), __bfloat162float(h.y)}; }
inline float __low2float(__nv_bfloat162 h) { return __bfloat162float(h.x); }
inline float __high2float(__nv_bfloat162 h) { return __bfloat162float(h.y); }
inline __nv_bfloat16 __low2bfloat16(__nv_bfloat162 h) { return h.x; }
inline __nv_bfloat16 __high2bfloat16(__nv_bfloat162 h) { return h.y; }
inline __nv_bfloat162 __halves2bfloat162(__nv_bfloat16 lo, __nv_bfloat16 hi) { return {lo, hi}; }
inline __nv_bfloat162 __bfloat162bfloat162(__nv_bfloat16 h) { return {h, h}; }

// bf16 arithmetic rounds once, like the hardware: sums and products of two bf16 values are
// exact in f32 (or far below half an ulp), and the fused multiply-add is computed in f64,
// where a product of two 8-bit significands plus a third is exact.
inline __nv_bfloat16 __hadd(__nv_bfloat16 a, __nv_bfloat16 b) { return __float2bfloat16(float(a) + float(b)); }
inline __nv_bfloat16 __hsub(__nv_bfloat16 a, __nv_bfloat16 b) { return __float2bfloat16(float(a) - float(b)); }
inline __nv_bfloat16 __hmul(__nv_bfloat16 a, __nv_bfloat16 b) { return __float2bfloat16(float(a) * float(b)); }
inline __nv_bfloat16 __hdiv(__nv_bfloat16 a, __nv_bfloat16 b) { return __float2bfloat16(float(a) / float(b)); }
inline __nv_bfloat16 __hneg(__nv_bfloat16 a) { return __ushort_as_bfloat16(a.x ^ 0x8000u); }
inline __nv_bfloat16 __hmax(__nv_bfloat16 a, __nv_bfloat16 b) { return __float2bfloat16(std::fmax(float(a), float(b))); }
inline __nv_bfloat16 __hmin(__nv_bfloat16 a, __nv_bfloat16 b) { return __float2bfloat16(std::fmin(float(a), float(b))); }
namespace kdad_emu {
// Round an f64 to bf16 once: keep 8 significant bits (ties to even) in f64, where the
// rounded value is then exact in f32. bf16 subnormals round at the wrong bit; no kernel
// produces them on purpose.
inline __nv_bfloat16 f64_to_bf16(double d) {
    if (std::isnan(d)) return __float2bfloat16(static_cast<float>(d));
    uint64_t u;
    std::memcpy(&u, &d, 8);
    u += 0x1fffffffffffull + ((u >> 45) & 1u);
    u &= ~0x1fffffffffffull;
    std::memcpy(&d, &u, 8);
    return __float2bfloat16(static_cast<float>(d));
}
}  // namespace kdad_emu
inline __nv_bfloat16 __hfma(__nv_bfloat16 a, __nv_bfloat16 b, __nv_bfloat16 c) {
    return ::kdad_emu::f64_to_bf16(std::fma(double(float(a)), double(float(b)), double(float(c))));
}
inline __nv_bfloat162 __hadd2(__nv_bfloat162 a, __nv_bfloat162 b) { return {__hadd(a.x, b.x), __hadd(a.y, b.y)}; }
inline __nv_bfloat162 __hsub2(__nv_bfloat162 a, __nv_bfloat162 b) { return {__hsub(a.x, b.x), __hsub(a.y, b.y)}; }
inline __nv_bfloat162 __hmul2(__nv_bfloat162 a, __nv_bfloat162 b) { return {__hmul(a.x, b.x), __hmul(a.y, b.y)}; }
inline __nv_bfloat162 __hfma2(__nv_bfloat162 a, __nv_bfloat162 b, __nv_bfloat162 c) {
    return {__hfma(a.x, b.x, c.x), __hfma(a.y, b.y, c.y)};
}
inline __nv_bfloat162 __hmax2(__nv_bfloat162 a, __nv_bfloat162 b) { return {__hmax(a.x, b.x), __hmax(a.y, b.y)}; }
inline __nv_bfloat162 __hneg2(__nv_bfloat162 a) { return {__hneg(a.x), __hneg(a.y)}; }
inline __nv_bfloat16 operator+(__nv_bfloat16 a, __nv_bfloat16 b) { return __hadd(a, b); }
inline __nv_bfloat16 operator-(__nv_bfloat16 a, __nv_bfloat16 b) { return __hsub(a, b); }
inline __nv_bfloat16 operator*(__nv_bfloat16 a, __nv_bfloat16 b) { return __hmul(a, b); }
inline __nv_bfloat16 operator/(__nv_bfloat16 a, __nv_bfloat16 b) { return __hdiv(a, b); }
inline __nv_bfloat16 operator-(__nv_bfloat16 a) { return __hneg(a); }
inline __nv_bfloat162 operator+(__nv_bfloat162 a, __nv_bfloat162 b) { return __hadd2(a, b); }
inline __nv_bfloat162 operator*(__nv_bfloat162 a, __nv_bfloat162 b) { return __hmul2(a, b); }

// ---- Tensor cores and asynchronous copies (behind the wrappers of common.cuh) --------------

namespace kdad_emu {
// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, fragment layouts of the PTX ISA.
void mma_m16n8k16_bf16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]);
// ldmatrix.sync.aligned.m8n8.{x1,x2,x4}{,.trans}.shared.b16: `count` 8x8 matrices.
void ldmatrix(uint32_t* r, const void* row_ptr, unsigned count, bool trans);
// cp.async.cg of 16 bytes (src_bytes of them read, the rest zero-filled). The copy is queued
// and done only when a wait covers its group, so a kernel that reads the destination without
// waiting reads the 0xFF poison of dynamic shared memory, as it could read stale data on a GPU.
void cp_async_16(void* smem, const void* gmem, unsigned src_bytes);
void cp_async_commit();
// Completes the copies of every committed group except the `newest_pending` most recent.
void cp_async_wait(unsigned newest_pending);

// ---- Kernel registry -------------------------------------------------------------------------
// KDAD_KERNEL (common.cuh) records each kernel with a thunk that unpacks the argument array
// exactly as cuLaunchKernel takes it: args[i] points at the value of parameter i.

struct Kernel {
    const char* name;
    void (*fn)();
    void (*thunk)(void (*fn)(), void** args);
    unsigned n_args;
};
std::vector<Kernel>& registry();

template <class... A, size_t... I>
inline void call_kernel(void (*k)(A...), [[maybe_unused]] void** args, std::index_sequence<I...>) {
    k(*static_cast<A*>(args[I])...);
}
template <class... A>
inline void kernel_thunk(void (*fn)(), void** args) {
    call_kernel(reinterpret_cast<void (*)(A...)>(fn), args, std::index_sequence_for<A...>{});
}
struct Registrar {
    template <class... A>
    Registrar(const char* name, void (*k)(A...)) {
        registry().push_back({name, reinterpret_cast<void (*)()>(k), &kernel_thunk<A...>, sizeof...(A)});
    }
};
}  // namespace kdad_emu

#define KDAD_EMU_REGISTER(name) static ::kdad_emu::Registrar kdad_emu_registrar_##name(#name, name);
