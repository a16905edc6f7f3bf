// Cosine-distance losses. a, b, dd, d and db are In/Out (common.cuh): f32 or bf16 storage each
// (bytes below: features a, b in bf16, 2 B; the gradient db in f32, 4 B), f32 arithmetic
// (f64 sums in the global loss); point distances, stats, the threshold and the loss are
// f32. cos(a, b) = a·b / max(|a|·|b|, 1e-8) (torch's
// cosine_similarity); distances are 1 - cos.
//
//   cosine_fwd            d[r] = 1 - cos(a_r, b_r) for rows of [rows, c]: one warp per row, 8
//                         rows per block of 256. 4 B read, 6 FLOP per element.
//   cosine_bwd            db = dd[r] · ∂d/∂b = -dd·(a - (a·b / |b|²)·b) / (|a||b|): one warp
//                         per row, a second pass from L1. 4 B read (twice), 4 B written,
//                         ~10 FLOP per element.
//   global_cosine_stats   f64 partial sums of (a·b, |a|², |b|²) over slices of image i's T·C
//                         values (~6·10^5 for ViT-B at 392 px): grid (slices, B) of 256
//                         threads, so a small batch still fills the GPU. 4 B read, 6 FLOP
//                         per element.
//   global_cosine_loss    one warp: each image's partials added in order into stats[i], then
//                         loss = mean_i (1 - cos_i).
//   kth_largest           the hard-mining threshold, the k-th largest of the B·T point
//                         distances, into thr[0]: one block of 1024 threads, radix select
//                         (select.cuh) on the device, so the backward needs no host round
//                         trip.
//   global_cosine_bwd     db = scale·∂(1 - cos_i)/∂b per element, times `factor` where the
//                         token's distance lies below thr (thr null: no mining): grid-stride.
//                         4 B read + stats from cache, 4 B written, ~8 FLOP per element.
#include "common.cuh"
#include "select.cuh"

namespace cosine {

constexpr float kEps = 1e-8f;

__device__ __forceinline__ int warp_row() { return blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; }

struct Dots {
    float ab, aa, bb;
};

__device__ __forceinline__ Dots row_dots(In a, In b, int c, int lane) {
    Dots s{0.0f, 0.0f, 0.0f};
    for (int i = lane; i < c; i += 32) {
        s.ab += a[i] * b[i];
        s.aa += a[i] * a[i];
        s.bb += b[i] * b[i];
    }
    return Dots{warp_sum(s.ab), warp_sum(s.aa), warp_sum(s.bb)};
}

// ∂(1 - cos)/∂b_i for one element, given the row's dots.
__device__ __forceinline__ float dist_grad_b(float ai, float bi, float ab, float aa, float bb) {
    const float norm = sqrtf(aa) * sqrtf(bb);
    if (norm <= kEps) return -ai / kEps;
    return -(ai - (ab / bb) * bi) / norm;
}

}  // namespace cosine

extern "C" __global__ void cosine_fwd(In a, In b, Out d, int rows, int c) {
    const int row = cosine::warp_row(), lane = threadIdx.x % 32;
    if (row >= rows) return;
    const size_t off = static_cast<size_t>(row) * c;
    const cosine::Dots s = cosine::row_dots(a.at(off), b.at(off), c, lane);
    if (lane == 0) d.set(row, 1.0f - s.ab / fmaxf(sqrtf(s.aa) * sqrtf(s.bb), cosine::kEps));
}
KDAD_KERNEL(cosine_fwd)

extern "C" __global__ void cosine_bwd(In dd, In a, In b, Out db, int rows, int c) {
    const int row = cosine::warp_row(), lane = threadIdx.x % 32;
    if (row >= rows) return;
    const size_t off = static_cast<size_t>(row) * c;
    const In ar = a.at(off), br = b.at(off);
    const cosine::Dots s = cosine::row_dots(ar, br, c, lane);
    const float g = dd[row];
    for (int i = lane; i < c; i += 32) db.set(off + i, g * cosine::dist_grad_b(ar[i], br[i], s.ab, s.aa, s.bb));
}
KDAD_KERNEL(cosine_bwd)

extern "C" __global__ void global_cosine_stats(In a, In b, double* partial, int per_image, int per_slice) {
    __shared__ double red[3][256];
    const size_t off = static_cast<size_t>(blockIdx.y) * per_image;
    const int i0 = blockIdx.x * per_slice, i1 = min(per_image, i0 + per_slice);
    double ab = 0.0, aa = 0.0, bb = 0.0;
    for (int i = i0 + threadIdx.x; i < i1; i += blockDim.x) {
        const double x = a[off + i], y = b[off + i];
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    red[0][threadIdx.x] = ab;
    red[1][threadIdx.x] = aa;
    red[2][threadIdx.x] = bb;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (static_cast<int>(threadIdx.x) < s) {
            for (int j = 0; j < 3; ++j) red[j][threadIdx.x] += red[j][threadIdx.x + s];
        }
        __syncthreads();
    }
    if (threadIdx.x < 3) partial[(static_cast<size_t>(blockIdx.y) * gridDim.x + blockIdx.x) * 3 + threadIdx.x] = red[threadIdx.x][0];
}
KDAD_KERNEL(global_cosine_stats)

extern "C" __global__ void global_cosine_loss(const double* partial, float* stats, float* loss, int images,
                                              int slices) {
    double acc = 0.0;
    for (int i = threadIdx.x; i < images; i += 32) {
        double s[3] = {0.0, 0.0, 0.0};
        for (int k = 0; k < slices; ++k) {
            for (int j = 0; j < 3; ++j) s[j] += partial[(static_cast<size_t>(i) * slices + k) * 3 + j];
        }
        for (int j = 0; j < 3; ++j) stats[3 * i + j] = static_cast<float>(s[j]);
        acc += 1.0 - s[0] / fmax(sqrt(s[1]) * sqrt(s[2]), static_cast<double>(cosine::kEps));
    }
    acc += __shfl_xor_sync(0xffffffffu, acc, 16);
    acc += __shfl_xor_sync(0xffffffffu, acc, 8);
    acc += __shfl_xor_sync(0xffffffffu, acc, 4);
    acc += __shfl_xor_sync(0xffffffffu, acc, 2);
    acc += __shfl_xor_sync(0xffffffffu, acc, 1);
    if (threadIdx.x == 0) loss[0] = static_cast<float>(acc / images);
}
KDAD_KERNEL(global_cosine_loss)

extern "C" __global__ void kth_largest(const float* x, int n, int k, float* thr) {
    __shared__ unsigned hist[256];
    __shared__ unsigned state[2];
    const select_kth::Kth kth = select_kth::kth_largest(x, n, k, hist, state);
    if (threadIdx.x == 0) thr[0] = select_kth::value_of(kth.key);
}
KDAD_KERNEL(kth_largest)

extern "C" __global__ void global_cosine_bwd(In a, In b, const float* point_dist, const float* stats, const float* thr,
                                             Out db, int per_image, int c, float factor, float scale, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
        const float* s = stats + 3 * (i / per_image);
        float g = scale * cosine::dist_grad_b(a[i], b[i], s[0], s[1], s[2]);
        if (thr && point_dist[i / c] < thr[0]) g *= factor;
        db.set(i, g);
    }
}
KDAD_KERNEL(global_cosine_bwd)
