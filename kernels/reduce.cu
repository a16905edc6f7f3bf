// Reductions. x, a, b and out are In/Out (common.cuh): f32 or bf16 storage each (s = 4 or
// 2 B per element), f32 arithmetic (f64 for sum_squares); topk_mean takes f32 only (anomaly
// maps, which the backend keeps f32).
//
//   sum_squares_partial  Σ x² of n values into per-block f64 partials (the host adds the
//                        ≤ 256 partials): grid-stride, up to 256 blocks × 256 threads.
//                        s read, 2 FLOP (f64) per element.
//   col_sum              partial[s, c] = Σ_r a[r,c]·b[r,c] over slice s of the rows (b may be
//                        null: bias gradients, and LayerScale's dgamma with b = y). Grid
//                        (ceil(cols / 32), slices) of 32×8 threads: each warp reads 128
//                        contiguous bytes of a row, the 8 warps take every 8th row of the
//                        slice, then a shared-memory sum. s or 2s read (a: an f32 gradient;
//                        b: a bf16 activation), 2 FLOP per element.
//   col_sum_finish       out[c] += Σ_s partial[s, c], in slice order: the two passes keep
//                        column reductions deterministic (no atomics) while the row slices
//                        fill the GPU. Grid-stride over the columns.
//   topk_mean            out[r] = mean of the k largest of row r of x [rows, m]: one block of
//                        256 threads per row, radix select (select.cuh) then one summing pass:
//                        5 reads of 4 B per element, ~10 integer ops per element and pass.
#include "common.cuh"
#include "select.cuh"

extern "C" __global__ void sum_squares_partial(In x, int n, double* partial) {
    __shared__ double red[256];
    double acc = 0.0;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
        const double v = x[i];
        acc += v * v;
    }
    red[threadIdx.x] = acc;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (static_cast<int>(threadIdx.x) < s) red[threadIdx.x] += red[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) partial[blockIdx.x] = red[0];
}
KDAD_KERNEL(sum_squares_partial)

extern "C" __global__ void col_sum(In a, In b, float* partial, int rows, int cols, int rows_per_slice) {
    __shared__ float part[8][33];
    const int c = blockIdx.x * 32 + threadIdx.x;
    const int r0 = blockIdx.y * rows_per_slice, r1 = min(rows, r0 + rows_per_slice);
    float acc = 0.0f;
    if (c < cols) {
        for (int r = r0 + threadIdx.y; r < r1; r += 8) {
            const size_t i = static_cast<size_t>(r) * cols + c;
            acc += b ? a[i] * b[i] : a[i];
        }
    }
    part[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && c < cols) {
        float total = 0.0f;
        for (int y = 0; y < 8; ++y) total += part[y][threadIdx.x];
        partial[static_cast<size_t>(blockIdx.y) * cols + c] = total;
    }
}
KDAD_KERNEL(col_sum)

extern "C" __global__ void col_sum_finish(const float* partial, Out out, int slices, int cols) {
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < cols; c += blockDim.x * gridDim.x) {
        float total = 0.0f;
        for (int s = 0; s < slices; ++s) total += partial[static_cast<size_t>(s) * cols + c];
        out.set(c, out[c] + total);
    }
}
KDAD_KERNEL(col_sum_finish)

extern "C" __global__ void topk_mean(const float* x, float* out, int rows, int m, int k) {
    __shared__ unsigned hist[256];
    __shared__ unsigned state[2];
    __shared__ float red[32];
    if (static_cast<int>(blockIdx.x) >= rows) return;
    const float* row = x + static_cast<size_t>(blockIdx.x) * m;
    const select_kth::Kth kth = select_kth::kth_largest(row, m, k, hist, state);
    float acc = 0.0f;
    for (int i = threadIdx.x; i < m; i += blockDim.x) {
        if (select_kth::key_of(row[i]) > kth.key) acc += row[i];
    }
    const float sum = block_sum(acc, red);
    if (threadIdx.x == 0) out[blockIdx.x] = (sum + kth.ties_in_k * select_kth::value_of(kth.key)) / k;
}
KDAD_KERNEL(topk_mean)
