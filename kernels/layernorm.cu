// Layer norm over the last dimension of x [rows, d]. x, w, b, y, dy and dx are In/Out
// (common.cuh): f32 or bf16 storage each, f32 arithmetic; mean and rstd are f32 (row
// statistics stay f32, they scale a whole row). Bytes below are for the model's storage: x
// and y bf16 (2 B), dy and dx f32 gradients (4 B).
//
//   layernorm_fwd        y = (x - mean)·rstd·w + b, saves mean[r] and rstd[r]. One warp
//                        per row, 8 rows per block of 256 threads (grid = ceil(rows / 8)).
//                        Two passes over the row (mean, then the centred variance, which
//                        is exact where E[x²] - mean² cancels), the second from L1;
//                        4-element loads (16 B f32, 8 B bf16) when d % 4 == 0 (a tensor of
//                        rows·d elements then starts aligned to that, on CUDA and on the
//                        emulator, and so does each row). DRAM: 2 B read,
//                        2 B written per element (+ w, b from cache); ~8 FLOP per element.
//   layernorm_bwd_dx     dx (=, or += when accumulate) = rstd·(g - mean(g) - x̂·mean(g·x̂))
//                        with g = dy·w: one warp per row as above. 6 B read, 4 B written,
//                        ~10 FLOP per element.
//   layernorm_bwd_params partial sums of dy·x̂ and dy per slice of rows, as reduce.cu's
//                        col_sum (grid (ceil(d / 32), slices) of 32×8 threads); col_sum_finish
//                        adds them into dw and db. 6 B read, 5 FLOP per element.
#include "common.cuh"

namespace layernorm {

// Σ f(x[i], i) over one row, split over the 32 lanes of a warp; every lane gets the sum.
template <class F>
__device__ __forceinline__ float row_sum(In r, int d, int lane, F f) {
    float s = 0.0f;
    if ((d & 3) == 0) {
        for (int i = lane; i < d / 4; i += 32) {
            const float4 v = r.load4(4 * i);
            s += f(v.x, 4 * i) + f(v.y, 4 * i + 1) + f(v.z, 4 * i + 2) + f(v.w, 4 * i + 3);
        }
    } else {
        for (int i = lane; i < d; i += 32) s += f(r[i], i);
    }
    return warp_sum(s);
}

__device__ __forceinline__ int warp_row() { return blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; }

}  // namespace layernorm

extern "C" __global__ void layernorm_fwd(In x, In w, In b, Out y, float* mean, float* rstd, int rows, int d,
                                         float eps) {
    const int row = layernorm::warp_row(), lane = threadIdx.x % 32;
    if (row >= rows) return;  // whole warps leave; only warp collectives follow
    const In xr = x.at(static_cast<size_t>(row) * d);
    const Out yr = y.at(static_cast<size_t>(row) * d);
    const float mu = layernorm::row_sum(xr, d, lane, [](float v, int) { return v; }) / d;
    const float var = layernorm::row_sum(xr, d, lane, [mu](float v, int) { return (v - mu) * (v - mu); }) / d;
    const float rs = rsqrtf(var + eps);
    if ((d & 3) == 0) {
        for (int i = lane; i < d / 4; i += 32) {
            const float4 v = xr.load4(4 * i), wv = w.load4(4 * i), bv = b.load4(4 * i);
            yr.store4(4 * i, make_float4((v.x - mu) * rs * wv.x + bv.x, (v.y - mu) * rs * wv.y + bv.y,
                                         (v.z - mu) * rs * wv.z + bv.z, (v.w - mu) * rs * wv.w + bv.w));
        }
    } else {
        for (int i = lane; i < d; i += 32) yr.set(i, (xr[i] - mu) * rs * w[i] + b[i]);
    }
    if (lane == 0) {
        mean[row] = mu;
        rstd[row] = rs;
    }
}
KDAD_KERNEL(layernorm_fwd)

extern "C" __global__ void layernorm_bwd_dx(In dy, In x, In w, const float* mean, const float* rstd, Out dx,
                                            int rows, int d, int accumulate) {
    const int row = layernorm::warp_row(), lane = threadIdx.x % 32;
    if (row >= rows) return;
    const size_t off = static_cast<size_t>(row) * d;
    const In dyr = dy.at(off), xr = x.at(off);
    const Out dxr = dx.at(off);
    const float mu = mean[row], rs = rstd[row];
    const float g_mean = layernorm::row_sum(dyr, d, lane, [w](float g, int i) { return g * w[i]; }) / d;
    const float gx_mean =
        layernorm::row_sum(dyr, d, lane, [=](float g, int i) { return g * w[i] * (xr[i] - mu) * rs; }) / d;
    for (int i = lane; i < d; i += 32) {
        const float xhat = (xr[i] - mu) * rs;
        const float v = rs * (dyr[i] * w[i] - g_mean - xhat * gx_mean);
        dxr.set(i, accumulate ? dxr[i] + v : v);
    }
}
KDAD_KERNEL(layernorm_bwd_dx)

extern "C" __global__ void layernorm_bwd_params(In dy, In x, const float* mean, const float* rstd, float* part_dw, float* part_db, int rows, int d, int rows_per_slice) {
    __shared__ float part_w[8][33];
    __shared__ float part_b[8][33];
    const int c = blockIdx.x * 32 + threadIdx.x;
    const int r0 = blockIdx.y * rows_per_slice, r1 = min(rows, r0 + rows_per_slice);
    float aw = 0.0f, ab = 0.0f;
    if (c < d) {
        for (int r = r0 + threadIdx.y; r < r1; r += 8) {
            const size_t i = static_cast<size_t>(r) * d + c;
            aw += dy[i] * (x[i] - mean[r]) * rstd[r];
            ab += dy[i];
        }
    }
    part_w[threadIdx.y][threadIdx.x] = aw;
    part_b[threadIdx.y][threadIdx.x] = ab;
    __syncthreads();
    if (threadIdx.y == 0 && c < d) {
        float tw = 0.0f, tb = 0.0f;
        for (int y = 0; y < 8; ++y) {
            tw += part_w[y][threadIdx.x];
            tb += part_b[y][threadIdx.x];
        }
        part_dw[static_cast<size_t>(blockIdx.y) * d + c] = tw;
        part_db[static_cast<size_t>(blockIdx.y) * d + c] = tb;
    }
}
KDAD_KERNEL(layernorm_bwd_params)
