// Reductions over f32 tensors.
//
//   sum_squares_partial  Σ x² of n values into per-block f64 partials (the host adds the
//                        ≤ 256 partials): grid-stride, up to 256 blocks × 256 threads.
//                        4 B read, 2 FLOP (f64) per element.
//   col_sum              out[c] += Σ_r a[r,c]·b[r,c] (b may be null: bias gradients, and
//                        LayerScale's dgamma with b = y). One block of 32×8 threads per 32
//                        columns: each warp reads 128 contiguous bytes of a row, the 8 warps
//                        take every 8th row, then a shared-memory sum. Deterministic (no
//                        atomics). 4 or 8 B read, 2 FLOP per element.
//   topk_mean            out[r] = mean of the k largest of row r of x [rows, m]: one block of
//                        256 threads per row, radix select (select.cuh) then one summing pass:
//                        5 reads of 4 B per element, ~10 integer ops per element and pass.
#include "common.cuh"
#include "select.cuh"

extern "C" __global__ void sum_squares_partial(const float* x, int n, double* partial) {
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

extern "C" __global__ void col_sum(const float* a, const float* b, float* out, int rows, int cols) {
    __shared__ float part[8][33];
    const int c = blockIdx.x * 32 + threadIdx.x;
    float acc = 0.0f;
    if (c < cols) {
        for (int r = threadIdx.y; r < rows; r += 8) {
            const size_t i = static_cast<size_t>(r) * cols + c;
            acc += b ? a[i] * b[i] : a[i];
        }
    }
    part[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && c < cols) {
        float total = 0.0f;
        for (int y = 0; y < 8; ++y) total += part[y][threadIdx.x];
        out[c] += total;
    }
}
KDAD_KERNEL(col_sum)

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
