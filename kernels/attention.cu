// Attention over packed qkv [B, N, 3·D] (q, k, v each [H, dh] per token, the timm layout).
// qkv, out, dout and (for the linear attention) dqkv are In/Out (common.cuh): f32 or bf16
// storage each, s = 4 or 2 B per element; lse and delta are f32, and flash attention's dqkv
// is f32 (dq is accumulated with f32 atomics).
//
// Softmax attention (flash attention, FlashAttention-2 style, bf16 tensor cores, f32
// accumulation; head dims up to 64: a smaller head is zero-padded to 64 in shared memory,
// which leaves q·k and the stored outputs unchanged):
//   flash_attn_fwd        grid (ceil(N / 64), B·H), 4 warps; each warp owns 16 query rows;
//                         at most 128 registers (4 blocks per SM); 45 KB dynamic smem (Q and
//                         two K/V buffers). Q (64×64) is loaded as bf16 into shared memory
//                         once (bf16 storage is copied, f32 is rounded); K and V of the next
//                         64-key block stream in with cp.async while the current one is
//                         computed on (bf16 storage with dh = 64; otherwise they are loaded
//                         synchronously), and S = Q·Kᵀ and O += P·V run as
//                         mma.m16n8k16 with ldmatrix-fed fragments (V through .trans), and
//                         the online softmax rescales O; keys ≥ N are masked to -inf, query
//                         rows ≥ N are computed but not stored. Writes out [B, N, D] and
//                         lse [B, H, N]. FLOPs: 4·N²·dh per head; DRAM: q, k, v read (s per
//                         element, ceil(N/64) times for k, v, from L2 in practice), out
//                         written once (s per element).
//
// Linear attention (Dinomaly's, φ(t) = elu(t) + 1), f32 on CUDA cores (its cost is O(N·dh²),
// small next to the GEMMs around it):
//   linear_attn_fwd       grid B·H, 256 threads, dynamic smem (dh² + 73·dh floats, 35 KB at
//                         dh = 64): KV = Σ φ(k)ᵀv and Σ φ(k) over 32-token tiles, then one
//                         warp per token: out = φ(q)·KV / (φ(q)·Σφ(k) + eps). 2·N·dh²·2 FLOPs.
//   linear_attn_bwd       grid B·H, 256 threads, dynamic smem (2·dh² + 82·dh + 32 floats,
//                         54 KB at dh = 64): recomputes KV, then per token dq and the sums dKV,
//                         dΣφ(k) (32-token tiles), then per token dk, dv. ~4× the forward.
#include "common.cuh"

namespace attn {

__device__ __forceinline__ float phi(float t) { return t > 0.0f ? t + 1.0f : expf(t); }
__device__ __forceinline__ float dphi(float t) { return t > 0.0f ? 1.0f : expf(t); }

constexpr int kTile = 32;  // tokens per shared-memory tile of the linear attention

struct Heads {
    int n, dim, dh;
    // Element j of q (which = 0), k (1) or v (2) of token s, head h, image b.
    __device__ __forceinline__ size_t qkv(int b, int s, int which, int h, int j) const {
        return (static_cast<size_t>(b) * n + s) * 3 * dim + which * dim + h * dh + j;
    }
    // Element j of token s, head h, image b of a [B, N, D] tensor.
    __device__ __forceinline__ size_t tok(int b, int s, int h, int j) const {
        return (static_cast<size_t>(b) * n + s) * dim + h * dh + j;
    }
};

// KV[i][j] = Σ_s φ(k_s)_i v_s,j and ksum[i] = Σ_s φ(k_s)_i for head (b, h), into shared
// memory; tile_a and tile_b are kTile·dh floats of scratch. Ends with a barrier.
__device__ void linear_kv(In qkv, const Heads& hd, int b, int h, float* kv, float* ksum, float* tile_a,
                          float* tile_b) {
    const int dh = hd.dh;
    for (int e = threadIdx.x; e < dh * dh; e += blockDim.x) kv[e] = 0.0f;
    for (int i = threadIdx.x; i < dh; i += blockDim.x) ksum[i] = 0.0f;
    for (int s0 = 0; s0 < hd.n; s0 += kTile) {
        __syncthreads();  // the previous tile is consumed
        for (int e = threadIdx.x; e < kTile * dh; e += blockDim.x) {
            const int s = s0 + e / dh, j = e % dh;
            const bool in = s < hd.n;
            tile_a[e] = in ? phi(qkv[hd.qkv(b, s, 1, h, j)]) : 0.0f;
            tile_b[e] = in ? qkv[hd.qkv(b, s, 2, h, j)] : 0.0f;
        }
        __syncthreads();
        for (int e = threadIdx.x; e < dh * dh; e += blockDim.x) {
            const int i = e / dh, j = e % dh;
            float acc = 0.0f;
            for (int t = 0; t < kTile; ++t) acc += tile_a[t * dh + i] * tile_b[t * dh + j];
            kv[e] += acc;
        }
        for (int i = threadIdx.x; i < dh; i += blockDim.x) {
            float acc = 0.0f;
            for (int t = 0; t < kTile; ++t) acc += tile_a[t * dh + i];
            ksum[i] += acc;
        }
    }
    __syncthreads();
}

}  // namespace attn

extern "C" __global__ void linear_attn_fwd(In qkv, Out out, int n, int dim, int heads, int dh, float eps) {
    KDAD_DYN_SMEM;
    float* kv = reinterpret_cast<float*>(smem_raw);
    float* ksum = kv + dh * dh;
    float* tile_a = ksum + dh;
    float* tile_b = tile_a + attn::kTile * dh;
    float* fq_all = tile_b + attn::kTile * dh;  // one dh-vector per warp
    const attn::Heads hd{n, dim, dh};
    const int b = blockIdx.x / heads, h = blockIdx.x % heads;
    attn::linear_kv(qkv, hd, b, h, kv, ksum, tile_a, tile_b);
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    float* fq = fq_all + warp * dh;
    for (int s = warp; s < n; s += warps) {
        float den = 0.0f;
        for (int i = lane; i < dh; i += 32) {
            fq[i] = attn::phi(qkv[hd.qkv(b, s, 0, h, i)]);
            den += fq[i] * ksum[i];
        }
        den = warp_sum(den) + eps;  // warp_sum's shuffles also order fq's writes for the warp
        __syncwarp();
        for (int j = lane; j < dh; j += 32) {
            float num = 0.0f;
            for (int i = 0; i < dh; ++i) num += fq[i] * kv[i * dh + j];
            out.set(hd.tok(b, s, h, j), num / den);
        }
        __syncwarp();  // fq is rewritten for the next token
    }
}
KDAD_KERNEL(linear_attn_fwd)

extern "C" __global__ void linear_attn_bwd(In dout, In qkv, Out dqkv, int n, int dim, int heads, int dh, float eps) {
    KDAD_DYN_SMEM;
    float* kv = reinterpret_cast<float*>(smem_raw);
    float* dkv = kv + dh * dh;
    float* ksum = dkv + dh * dh;
    float* dksum = ksum + dh;
    float* tile_a = dksum + dh;                 // φ(k) tiles, then φ(q) tiles
    float* tile_b = tile_a + attn::kTile * dh;  // v tiles, then dnum tiles
    float* dden = tile_b + attn::kTile * dh;    // kTile values
    float* vec_all = dden + attn::kTile;        // two dh-vectors per warp
    const attn::Heads hd{n, dim, dh};
    const int b = blockIdx.x / heads, h = blockIdx.x % heads;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    attn::linear_kv(qkv, hd, b, h, kv, ksum, tile_a, tile_b);
    for (int e = threadIdx.x; e < dh * dh; e += blockDim.x) dkv[e] = 0.0f;
    for (int i = threadIdx.x; i < dh; i += blockDim.x) dksum[i] = 0.0f;

    // Pass 1, 32 tokens at a time: dq per token, and the tile's share of dKV and dksum.
    for (int s0 = 0; s0 < n; s0 += attn::kTile) {
        __syncthreads();  // previous tile consumed; dkv/dksum zeroed
        for (int t = warp; t < attn::kTile; t += warps) {
            const int s = s0 + t;
            float* fq = tile_a + t * dh;
            float* dnum = tile_b + t * dh;
            if (s >= n) {
                for (int i = lane; i < dh; i += 32) fq[i] = dnum[i] = 0.0f;
                if (lane == 0) dden[t] = 0.0f;
                continue;
            }
            float den = 0.0f;
            for (int i = lane; i < dh; i += 32) {
                fq[i] = attn::phi(qkv[hd.qkv(b, s, 0, h, i)]);
                den += fq[i] * ksum[i];
            }
            den = warp_sum(den) + eps;
            __syncwarp();
            float dot = 0.0f;
            for (int j = lane; j < dh; j += 32) {
                float num = 0.0f;
                for (int i = 0; i < dh; ++i) num += fq[i] * kv[i * dh + j];
                const float go = dout[hd.tok(b, s, h, j)];
                dot += go * num;
                dnum[j] = go / den;
            }
            const float dd = -warp_sum(dot) / (den * den);
            __syncwarp();
            if (lane == 0) dden[t] = dd;
            for (int i = lane; i < dh; i += 32) {
                float g = dd * ksum[i];
                for (int j = 0; j < dh; ++j) g += dnum[j] * kv[i * dh + j];
                const float q = qkv[hd.qkv(b, s, 0, h, i)];
                dqkv.set(hd.qkv(b, s, 0, h, i), g * attn::dphi(q));
            }
        }
        __syncthreads();
        for (int e = threadIdx.x; e < dh * dh; e += blockDim.x) {
            const int i = e / dh, j = e % dh;
            float acc = 0.0f;
            for (int t = 0; t < attn::kTile; ++t) acc += tile_a[t * dh + i] * tile_b[t * dh + j];
            dkv[e] += acc;
        }
        for (int i = threadIdx.x; i < dh; i += blockDim.x) {
            float acc = 0.0f;
            for (int t = 0; t < attn::kTile; ++t) acc += dden[t] * tile_a[t * dh + i];
            dksum[i] += acc;
        }
    }
    __syncthreads();

    // Pass 2, one warp per token: dv = φ(k)·dKV, dk = (v·dKVᵀ + dksum) ∘ φ'(k).
    float* fk = vec_all + warp * 2 * dh;
    float* v = fk + dh;
    for (int s = warp; s < n; s += warps) {
        for (int i = lane; i < dh; i += 32) {
            fk[i] = attn::phi(qkv[hd.qkv(b, s, 1, h, i)]);
            v[i] = qkv[hd.qkv(b, s, 2, h, i)];
        }
        __syncwarp();
        for (int j = lane; j < dh; j += 32) {
            float gv = 0.0f, gk = dksum[j];
            for (int i = 0; i < dh; ++i) {
                gv += fk[i] * dkv[i * dh + j];
                gk += v[i] * dkv[j * dh + i];
            }
            dqkv.set(hd.qkv(b, s, 2, h, j), gv);
            dqkv.set(hd.qkv(b, s, 1, h, j), gk * attn::dphi(qkv[hd.qkv(b, s, 1, h, j)]));
        }
        __syncwarp();
    }
}
KDAD_KERNEL(linear_attn_bwd)

namespace flash {

constexpr int kD = 64;           // head dim of the tiles (the real one, hd.dh, is <= kD)
constexpr int kRows = 64;        // query rows per block (16 per warp) and keys per step
constexpr int kStride = kD + 8;  // bf16 per shared-memory row: 144-byte rows keep ldmatrix's
                                 // 16-byte alignment and put the 8 rows of a matrix in
                                 // different banks

__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    uint32_t u;
    memcpy(&u, &v, 4);
    return u;
}

// Rows [row0, row0 + 64) of a [n, dh] operand whose element (s, c) is src[idx(s, c)], as bf16
// into dst [64][kStride] (bf16 storage is copied exactly, f32 is rounded); rows past the
// sequence and columns past dh are zero. 4-element loads when dh % 4 == 0 (every row then
// starts aligned, as dim = heads·dh).
template <class Index>
__device__ __forceinline__ void load_rows(__nv_bfloat16* dst, In src, int n, int dh, int row0, Index idx) {
    if ((dh & 3) == 0) {
        for (int e = threadIdx.x; e < kRows * (kD / 4); e += blockDim.x) {
            const int r = e / (kD / 4), c = (e % (kD / 4)) * 4, s = row0 + r;
            const float4 v = s < n && c < dh ? src.load4(idx(s, c)) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            __nv_bfloat162* d = reinterpret_cast<__nv_bfloat162*>(dst + r * kStride + c);
            d[0] = __floats2bfloat162_rn(v.x, v.y);
            d[1] = __floats2bfloat162_rn(v.z, v.w);
        }
    } else {
        for (int e = threadIdx.x; e < kRows * kD; e += blockDim.x) {
            const int r = e / kD, c = e % kD, s = row0 + r;
            dst[r * kStride + c] = __float2bfloat16(s < n && c < dh ? src[idx(s, c)] : 0.0f);
        }
    }
}

// Rows of q, k or v (which = 0, 1, 2) of head (b, h).
__device__ __forceinline__ void load_tile(__nv_bfloat16* dst, In qkv, const attn::Heads& hd, int b, int h,
                                          int which, int row0) {
    load_rows(dst, qkv, hd.n, hd.dh, row0, [&](int s, int c) { return hd.qkv(b, s, which, h, c); });
}

// load_tile, but asynchronous where it can be: bf16 storage with dh = 64 (every DINOv2 ViT)
// has 16-byte-aligned 8-element chunks, copied with cp.async (rows past the sequence are
// zero-filled) so that the next tile streams in while the current one is computed on; other
// operands are converted through registers, synchronously. Either way the tile is ready after
// the caller's cp_async_wait and __syncthreads.
__device__ __forceinline__ void stage_tile(__nv_bfloat16* dst, In qkv, const attn::Heads& hd, int b, int h,
                                           int which, int row0) {
    if (!qkv.bf16() || hd.dh != kD) {
        load_tile(dst, qkv, hd, b, h, which, row0);
        return;
    }
    const __nv_bfloat16* src = qkv.bf16p();
    for (int e = threadIdx.x; e < kRows * (kD / 8); e += blockDim.x) {
        const int r = e / (kD / 8), c = (e % (kD / 8)) * 8, s = row0 + r;
        // A row past the end reads nothing (0 source bytes); its address only has to be valid.
        const int s_safe = s < hd.n ? s : hd.n - 1;
        cp_async_16_zfill(dst + r * kStride + c, src + hd.qkv(b, s_safe, which, h, c), s < hd.n ? 16u : 0u);
    }
}

// The A fragments (16 rows × 64) of rows [r0, r0 + 16) of a [64][kStride] tile, one per
// 16-wide k step: ldmatrix.x4 matrices (rows 0-7 | 8-15) × (cols 0-7 | 8-15) are a0..a3.
__device__ __forceinline__ void a_frags(uint32_t a[kD / 16][4], const __nv_bfloat16* tile, int r0, int lane) {
    for (int ks = 0; ks < kD / 16; ++ks)
        ldmatrix_x4(a[ks], tile + (r0 + lane % 16) * kStride + ks * 16 + (lane / 16) * 8);
}

// Maximum and sum over the 4 lanes (t = 0..3) that hold one accumulator row.
__device__ __forceinline__ float quad_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

}  // namespace flash

// __launch_bounds__: at most 128 registers, so that 4 blocks (16 warps) fit an SM and hide
// the latency the tile copies leave.
extern "C" __global__ void __launch_bounds__(128, 4)
    flash_attn_fwd(In qkv, Out out, float* lse, int n, int dim, int heads, float scale) {
    using flash::kD;
    using flash::kRows;
    using flash::kStride;
    KDAD_DYN_SMEM;
    // Q, then two buffers of (K, V): block k0 is computed on while block k0 + 64 streams in.
    __nv_bfloat16* sq = reinterpret_cast<__nv_bfloat16*>(smem_raw);
    constexpr int kTile = kRows * kStride;
    const attn::Heads hd{n, dim, dim / heads};
    const int b = blockIdx.y / heads, h = blockIdx.y % heads, q0 = blockIdx.x * kRows;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;

    flash::stage_tile(sq, qkv, hd, b, h, 0, q0);
    cp_async_commit();
    flash::stage_tile(sq + kTile, qkv, hd, b, h, 1, 0);
    flash::stage_tile(sq + 2 * kTile, qkv, hd, b, h, 2, 0);
    cp_async_commit();
    cp_async_wait<1>();  // Q has landed (K and V of the first block may still fly)
    __syncthreads();
    uint32_t qa[kD / 16][4];
    flash::a_frags(qa, sq, warp * 16, lane);

    // Scores live in the log2 domain: p = 2^(s·scale·log2 e - m).
    const float sl2 = scale * 1.4426950408889634f;
    float o[kD / 8][4] = {};
    float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.0f, 0.0f};
    for (int k0 = 0, buf = 0; k0 < n; k0 += kRows, buf ^= 1) {
        const __nv_bfloat16* sk = sq + (1 + 2 * buf) * kTile;
        const __nv_bfloat16* sv = sk + kTile;
        if (k0 + kRows < n) {
            // The other buffer was last read in the previous step, which ended in a barrier.
            __nv_bfloat16* nk = sq + (1 + 2 * (buf ^ 1)) * kTile;
            flash::stage_tile(nk, qkv, hd, b, h, 1, k0 + kRows);
            flash::stage_tile(nk + kTile, qkv, hd, b, h, 2, k0 + kRows);
            cp_async_commit();
            cp_async_wait<1>();  // this step's tiles have landed; the next ones may still fly
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();

        // S = Q·Kᵀ: 8 tiles of 8 keys. K rows are the B operand's columns, so ldmatrix
        // without .trans gives b0/b1; one x4 covers two 16-wide k steps.
        float s[kRows / 8][4];
        for (int nt = 0; nt < kRows / 8; ++nt) {
            for (int e = 0; e < 4; ++e) s[nt][e] = 0.0f;
            for (int ks = 0; ks < kD / 16; ks += 2) {
                uint32_t kb[4];
                ldmatrix_x4(kb, sk + (nt * 8 + lane % 8) * kStride + ks * 16 + (lane / 8) * 8);
                mma_m16n8k16_bf16(s[nt], qa[ks], kb, s[nt]);
                mma_m16n8k16_bf16(s[nt], qa[ks + 1], kb + 2, s[nt]);
            }
        }

        // Online softmax over this block; element e of a tile is row g + 8·(e / 2), key
        // 2t + (e % 2). Keys past the sequence are masked.
        float mx[2] = {-INFINITY, -INFINITY};
        for (int nt = 0; nt < kRows / 8; ++nt) {
            for (int e = 0; e < 4; ++e) {
                const int key = k0 + nt * 8 + 2 * t + (e & 1);
                s[nt][e] = key < n ? s[nt][e] * sl2 : -INFINITY;
                mx[e / 2] = fmaxf(mx[e / 2], s[nt][e]);
            }
        }
        float alpha[2], m_new[2], rs[2] = {0.0f, 0.0f};
        for (int r = 0; r < 2; ++r) {
            m_new[r] = fmaxf(m_run[r], flash::quad_max(mx[r]));  // finite: key k0 is valid
            alpha[r] = exp2f(m_run[r] - m_new[r]);
        }
        for (int nt = 0; nt < kRows / 8; ++nt) {
            for (int e = 0; e < 4; ++e) {
                s[nt][e] = exp2f(s[nt][e] - m_new[e / 2]);
                rs[e / 2] += s[nt][e];
            }
        }
        for (int r = 0; r < 2; ++r) {
            l_run[r] = l_run[r] * alpha[r] + flash::quad_sum(rs[r]);
            m_run[r] = m_new[r];
        }
        for (int dt = 0; dt < kD / 8; ++dt) {
            for (int e = 0; e < 4; ++e) o[dt][e] *= alpha[e / 2];
        }

        // O += P·V. P's accumulator tiles 2kk and 2kk+1 are exactly the A fragment of key
        // step kk; V (keys × dims, row-major) feeds B through ldmatrix .trans, two 8-dim
        // tiles per x4.
        for (int kk = 0; kk < kRows / 16; ++kk) {
            const uint32_t pa[4] = {flash::pack_bf16x2(s[2 * kk][0], s[2 * kk][1]),
                                    flash::pack_bf16x2(s[2 * kk][2], s[2 * kk][3]),
                                    flash::pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                    flash::pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
            for (int dt = 0; dt < kD / 8; dt += 2) {
                uint32_t vb[4];
                const int row = kk * 16 + lane % 8 + ((lane / 8) % 2) * 8;
                ldmatrix_x4_trans(vb, sv + row * kStride + dt * 8 + (lane / 16) * 8);
                mma_m16n8k16_bf16(o[dt], pa, vb, o[dt]);
                mma_m16n8k16_bf16(o[dt + 1], pa, vb + 2, o[dt + 1]);
            }
        }
        __syncthreads();  // every warp is done with this buffer before it is refilled
    }

    for (int r = 0; r < 2; ++r) {
        const int row = q0 + warp * 16 + g + 8 * r;
        if (row >= n) continue;
        const float inv = 1.0f / l_run[r];
        for (int dt = 0; dt < kD / 8; ++dt) {
            for (int e = 0; e < 2; ++e) {
                const int c = dt * 8 + 2 * t + e;
                if (c < hd.dh) out.set(hd.tok(b, row, h, c), o[dt][2 * r + e] * inv);
            }
        }
        // Natural log: ln Σ e^(scale·s) = (m + log2 l)·ln 2 in the log2 domain.
        if (t == 0) lse[(static_cast<size_t>(b) * heads + h) * n + row] = (m_run[r] + log2f(l_run[r])) * 0.6931471805599453f;
    }
}
KDAD_KERNEL(flash_attn_fwd)

// delta[b, h, i] = Σ_j dO·O over head h of token i (the softmax backward's row correction):
// one thread per (b, h, i), grid-stride; 2·dh·s B read per row (dO f32, O bf16: 384 B at
// dh = 64).
extern "C" __global__ void flash_attn_bwd_delta(In dout, In out, float* delta, int n, int dim, int heads, int rows) {
    const attn::Heads hd{n, dim, dim / heads};
    for (int r = blockIdx.x * blockDim.x + threadIdx.x; r < rows; r += blockDim.x * gridDim.x) {
        const int i = r % n, h = (r / n) % heads, b = r / (n * heads);
        const size_t off = hd.tok(b, i, h, 0);
        float acc = 0.0f;
        for (int j = 0; j < hd.dh; ++j) acc += dout[off + j] * out[off + j];
        delta[r] = acc;
    }
}
KDAD_KERNEL(flash_attn_bwd_delta)

// Flash attention backward (FlashAttention-2): grid (ceil(N / 64) key blocks, B·H), 4 warps,
// each owning 16 keys; the loop runs over 64-query blocks. With P recomputed from lse:
//   Pᵀ = exp(scale·K·Qᵀ - lse), dV += Pᵀ·dO, dPᵀ = V·dOᵀ, dSᵀ = Pᵀ∘(dPᵀ - delta),
//   dK += scale·dSᵀ·Q, dQ += scale·dS·K.
// Keys are the accumulator rows, so Pᵀ and dSᵀ feed the next mma as A fragments directly;
// dQ needs dS with queries as rows: dSᵀ goes through shared memory and ldmatrix .trans, and
// the 16×64 partial dQ of every warp is added to global memory atomically (dq is zeroed
// first). dqkv's k and v parts are written once at the end. Shared memory: Q, dO, K, V and
// dSᵀ tiles (5 × 9 KB) + lse and delta of the query block. FLOPs: 10·N²·dh per head
// (2.5× the forward), all on tensor cores.
extern "C" __global__ void flash_attn_bwd(In dout, In qkv, const float* lse, const float* delta, float* dqkv, int n,
                                          int dim, int heads, float scale) {
    using flash::kD;
    using flash::kRows;
    using flash::kStride;
    KDAD_DYN_SMEM;
    __nv_bfloat16* sk = reinterpret_cast<__nv_bfloat16*>(smem_raw);
    __nv_bfloat16* sv = sk + kRows * kStride;
    __nv_bfloat16* sq = sv + kRows * kStride;
    __nv_bfloat16* sdo = sq + kRows * kStride;
    __nv_bfloat16* sds = sdo + kRows * kStride;  // dSᵀ [keys][queries]
    float* s_lse = reinterpret_cast<float*>(sds + kRows * kStride);
    float* s_delta = s_lse + kRows;
    const attn::Heads hd{n, dim, dim / heads};
    const int b = blockIdx.y / heads, h = blockIdx.y % heads, k0 = blockIdx.x * kRows;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
    const size_t row_stats = (static_cast<size_t>(b) * heads + h) * n;

    flash::load_tile(sk, qkv, hd, b, h, 1, k0);
    flash::load_tile(sv, qkv, hd, b, h, 2, k0);
    __syncthreads();
    uint32_t ka[kD / 16][4], va[kD / 16][4];
    flash::a_frags(ka, sk, warp * 16, lane);
    flash::a_frags(va, sv, warp * 16, lane);

    const float sl2 = scale * 1.4426950408889634f;
    float dk[kD / 8][4] = {}, dv[kD / 8][4] = {};
    for (int q0 = 0; q0 < n; q0 += kRows) {
        __syncthreads();  // the previous block's Q, dO and dSᵀ are consumed
        flash::load_tile(sq, qkv, hd, b, h, 0, q0);
        flash::load_rows(sdo, dout, n, hd.dh, q0, [&](int s, int c) { return hd.tok(b, s, h, c); });
        for (int r = threadIdx.x; r < kRows; r += blockDim.x) {
            const bool in = q0 + r < n;
            // A query past the sequence gets P = 0 through lse = +inf.
            s_lse[r] = in ? lse[row_stats + q0 + r] * 1.4426950408889634f : INFINITY;
            s_delta[r] = in ? delta[row_stats + q0 + r] : 0.0f;
        }
        __syncthreads();

        // Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ, 8 tiles of 8 queries each; Q and dO rows are the B
        // operands' columns (ldmatrix without .trans).
        float p[kRows / 8][4], dp[kRows / 8][4];
        for (int nt = 0; nt < kRows / 8; ++nt) {
            for (int e = 0; e < 4; ++e) p[nt][e] = dp[nt][e] = 0.0f;
            for (int ks = 0; ks < kD / 16; ks += 2) {
                uint32_t qb[4], ob[4];
                const int off = (nt * 8 + lane % 8) * kStride + ks * 16 + (lane / 8) * 8;
                ldmatrix_x4(qb, sq + off);
                ldmatrix_x4(ob, sdo + off);
                mma_m16n8k16_bf16(p[nt], ka[ks], qb, p[nt]);
                mma_m16n8k16_bf16(p[nt], ka[ks + 1], qb + 2, p[nt]);
                mma_m16n8k16_bf16(dp[nt], va[ks], ob, dp[nt]);
                mma_m16n8k16_bf16(dp[nt], va[ks + 1], ob + 2, dp[nt]);
            }
            // Element e: key row g + 8·(e / 2), query column nt·8 + 2t + (e % 2).
            for (int e = 0; e < 4; ++e) {
                const int qc = nt * 8 + 2 * t + (e & 1);
                p[nt][e] = exp2f(p[nt][e] * sl2 - s_lse[qc]);
                dp[nt][e] = p[nt][e] * (dp[nt][e] - s_delta[qc]);  // now dSᵀ
            }
        }

        // dV += Pᵀ·dO and dK += dSᵀ·Q: the accumulators are A fragments, dO and Q feed B
        // through ldmatrix .trans (queries × dims, row-major).
        for (int kk = 0; kk < kRows / 16; ++kk) {
            const uint32_t pa[4] = {flash::pack_bf16x2(p[2 * kk][0], p[2 * kk][1]),
                                    flash::pack_bf16x2(p[2 * kk][2], p[2 * kk][3]),
                                    flash::pack_bf16x2(p[2 * kk + 1][0], p[2 * kk + 1][1]),
                                    flash::pack_bf16x2(p[2 * kk + 1][2], p[2 * kk + 1][3])};
            const uint32_t sa[4] = {flash::pack_bf16x2(dp[2 * kk][0], dp[2 * kk][1]),
                                    flash::pack_bf16x2(dp[2 * kk][2], dp[2 * kk][3]),
                                    flash::pack_bf16x2(dp[2 * kk + 1][0], dp[2 * kk + 1][1]),
                                    flash::pack_bf16x2(dp[2 * kk + 1][2], dp[2 * kk + 1][3])};
            for (int dt = 0; dt < kD / 8; dt += 2) {
                uint32_t ob[4], qb[4];
                const int off = (kk * 16 + lane % 8 + ((lane / 8) % 2) * 8) * kStride + dt * 8 + (lane / 16) * 8;
                ldmatrix_x4_trans(ob, sdo + off);
                ldmatrix_x4_trans(qb, sq + off);
                mma_m16n8k16_bf16(dv[dt], pa, ob, dv[dt]);
                mma_m16n8k16_bf16(dv[dt + 1], pa, ob + 2, dv[dt + 1]);
                mma_m16n8k16_bf16(dk[dt], sa, qb, dk[dt]);
                mma_m16n8k16_bf16(dk[dt + 1], sa, qb + 2, dk[dt + 1]);
            }
        }

        // dSᵀ to shared memory, then dQ = dS·K with each warp taking 16 queries: A = dS comes
        // from dSᵀ through ldmatrix .trans, B = K (keys × dims) through .trans as well.
        for (int nt = 0; nt < kRows / 8; ++nt) {
            for (int r = 0; r < 2; ++r) {
                const int key = warp * 16 + g + 8 * r, qc = nt * 8 + 2 * t;
                *reinterpret_cast<__nv_bfloat162*>(sds + key * kStride + qc) =
                    __floats2bfloat162_rn(dp[nt][2 * r], dp[nt][2 * r + 1]);
            }
        }
        __syncthreads();
        float dq[kD / 8][4] = {};
        for (int kk = 0; kk < kRows / 16; ++kk) {
            uint32_t da[4];
            const int i = lane / 8;
            ldmatrix_x4_trans(da, sds + (kk * 16 + lane % 8 + (i / 2) * 8) * kStride + warp * 16 + (i % 2) * 8);
            for (int dt = 0; dt < kD / 8; dt += 2) {
                uint32_t kb[4];
                ldmatrix_x4_trans(kb, sk + (kk * 16 + lane % 8 + ((lane / 8) % 2) * 8) * kStride + dt * 8 +
                                          (lane / 16) * 8);
                mma_m16n8k16_bf16(dq[dt], da, kb, dq[dt]);
                mma_m16n8k16_bf16(dq[dt + 1], da, kb + 2, dq[dt + 1]);
            }
        }
        for (int r = 0; r < 2; ++r) {
            const int q = q0 + warp * 16 + g + 8 * r;
            if (q >= n) continue;
            for (int dt = 0; dt < kD / 8; ++dt) {
                for (int e = 0; e < 2; ++e) {
                    const int c = dt * 8 + 2 * t + e;
                    if (c < hd.dh) atomicAdd(dqkv + hd.qkv(b, q, 0, h, c), scale * dq[dt][2 * r + e]);
                }
            }
        }
    }

    for (int r = 0; r < 2; ++r) {
        const int key = k0 + warp * 16 + g + 8 * r;
        if (key >= n) continue;
        for (int dt = 0; dt < kD / 8; ++dt) {
            for (int e = 0; e < 2; ++e) {
                const int c = dt * 8 + 2 * t + e;
                if (c >= hd.dh) continue;
                dqkv[hd.qkv(b, key, 1, h, c)] = scale * dk[dt][2 * r + e];
                dqkv[hd.qkv(b, key, 2, h, c)] = dv[dt][2 * r + e];
            }
        }
    }
}
KDAD_KERNEL(flash_attn_bwd)
