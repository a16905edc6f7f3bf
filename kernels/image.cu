// Image and token-layout kernels, one thread per output element in a grid-stride loop
// (grid_1d: up to 4096 blocks of 256; the last argument is the output element count n). The
// resizes and the blur take f32 tensors (images and anomaly maps, which the backend keeps
// f32); the token kernels take In/Out operands (common.cuh), f32 or bf16 each (s = 4 or
// 2 B per element), f32 arithmetic.
//
//   resize_bilinear       PyTorch interpolate(mode="bilinear"), align_corners either way:
//                         4 taps, 16 B read (from cache) + 4 B written, ~12 FLOP per output.
//   resize_bicubic        PyTorch interpolate(mode="bicubic", align_corners=False), a = -0.75,
//                         border-clamped taps: 16 taps, 64 B read (cache), ~70 FLOP/output.
//   gaussian_blur         normalised ksize×ksize Gaussian, zero padding, direct 2-D sum (the
//                         weights are recomputed per output: 2·ksize expf, cheap next to the
//                         ksize² taps read from cache). ~2·ksize² FLOP per output.
//   patchify              [B, C, H, W] -> [B, P, C·p·p] gather: 4 B read (an f32 image) +
//                         s written (a bf16 activation).
//   embed_tokens_fwd      [cls + pos0, registers, emb + pos]: s + 4 B read (emb, pos),
//                         s written.
//   embed_tokens_bwd_params  dcls, dpos (, dregs) += Σ_b dout over the batch: one thread per
//                         (token slot, channel), B reads of s each.
//   slice_tokens / unslice_tokens_add  token-range copy / add: s (2s) B read, s written.
// The scales of the resizes come from the host (PyTorch's area_pixel_compute_scale, f32).
#include "common.cuh"

namespace image {

constexpr float kCubicA = -0.75f;

// PyTorch's cubic_convolution1 (|x| <= 1) and cubic_convolution2 (1 < |x| < 2).
__device__ __forceinline__ float cubic1(float x) { return ((kCubicA + 2.0f) * x - (kCubicA + 3.0f)) * x * x + 1.0f; }
__device__ __forceinline__ float cubic2(float x) {
    return ((kCubicA * x - 5.0f * kCubicA) * x + 8.0f * kCubicA) * x - 4.0f * kCubicA;
}

__device__ __forceinline__ float cubic_interp(float x0, float x1, float x2, float x3, float t) {
    return x0 * cubic2(t + 1.0f) + x1 * cubic1(t) + x2 * cubic1(1.0f - t) + x3 * cubic2(2.0f - t);
}

__device__ __forceinline__ int clampi(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

}  // namespace image

#define GRID_STRIDE(i, n) for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += blockDim.x * gridDim.x)

extern "C" __global__ void resize_bilinear(const float* x, float* out, int h, int w, int h2, int w2, float sh,
                                           float sw, int align_corners, int n) {
    GRID_STRIDE(i, n) {
        const int ox = i % w2, oy = (i / w2) % h2;
        const float* src = x + static_cast<size_t>(i / (w2 * h2)) * h * w;
        const float fy = align_corners ? sh * oy : fmaxf(sh * (oy + 0.5f) - 0.5f, 0.0f);
        const float fx = align_corners ? sw * ox : fmaxf(sw * (ox + 0.5f) - 0.5f, 0.0f);
        const int y0 = static_cast<int>(fy), x0 = static_cast<int>(fx);
        const int y1 = y0 < h - 1 ? y0 + 1 : y0, x1 = x0 < w - 1 ? x0 + 1 : x0;
        const float ly = fy - y0, lx = fx - x0;
        out[i] = (1.0f - ly) * ((1.0f - lx) * src[y0 * w + x0] + lx * src[y0 * w + x1]) +
                 ly * ((1.0f - lx) * src[y1 * w + x0] + lx * src[y1 * w + x1]);
    }
}
KDAD_KERNEL(resize_bilinear)

extern "C" __global__ void resize_bicubic(const float* x, float* out, int h, int w, int h2, int w2, float sh,
                                          float sw, int n) {
    GRID_STRIDE(i, n) {
        const int ox = i % w2, oy = (i / w2) % h2;
        const float* src = x + static_cast<size_t>(i / (w2 * h2)) * h * w;
        const float fy = sh * (oy + 0.5f) - 0.5f, fx = sw * (ox + 0.5f) - 0.5f;
        const int iy = static_cast<int>(floorf(fy)), ix = static_cast<int>(floorf(fx));
        const float ty = fy - iy, tx = fx - ix;
        float rows[4];
        for (int k = 0; k < 4; ++k) {
            const float* r = src + image::clampi(iy - 1 + k, 0, h - 1) * w;
            rows[k] = image::cubic_interp(r[image::clampi(ix - 1, 0, w - 1)], r[image::clampi(ix, 0, w - 1)],
                                          r[image::clampi(ix + 1, 0, w - 1)], r[image::clampi(ix + 2, 0, w - 1)], tx);
        }
        out[i] = image::cubic_interp(rows[0], rows[1], rows[2], rows[3], ty);
    }
}
KDAD_KERNEL(resize_bicubic)

extern "C" __global__ void gaussian_blur(const float* x, float* out, int h, int w, int ksize, float sigma, int n) {
    const int half = ksize / 2;
    const float inv2s2 = 1.0f / (2.0f * sigma * sigma);
    float norm = 0.0f;
    for (int k = -half; k <= half; ++k) norm += expf(-k * k * inv2s2);
    GRID_STRIDE(i, n) {
        const int ox = i % w, oy = (i / w) % h;
        const float* src = x + static_cast<size_t>(i / (w * h)) * h * w;
        float acc = 0.0f;
        for (int dy = -half; dy <= half; ++dy) {
            const int y = oy + dy;
            if (y < 0 || y >= h) continue;
            float row = 0.0f;
            for (int dx = -half; dx <= half; ++dx) {
                const int xx = ox + dx;
                if (xx >= 0 && xx < w) row += expf(-dx * dx * inv2s2) * src[y * w + xx];
            }
            acc += expf(-dy * dy * inv2s2) * row;
        }
        out[i] = acc / (norm * norm);
    }
}
KDAD_KERNEL(gaussian_blur)

extern "C" __global__ void patchify(In img, Out out, int c, int h, int w, int p, int n) {
    const int per_patch = c * p * p, grid_w = w / p, patches = (h / p) * grid_w;
    GRID_STRIDE(i, n) {
        const int within = i % per_patch, patch = (i / per_patch) % patches, b = i / (per_patch * patches);
        const int ch = within / (p * p), yy = (within / p) % p, xx = within % p;
        const int y = (patch / grid_w) * p + yy, x = (patch % grid_w) * p + xx;
        out.set(i, img[((static_cast<size_t>(b) * c + ch) * h + y) * w + x]);
    }
}
KDAD_KERNEL(patchify)

extern "C" __global__ void embed_tokens_fwd(In emb, In cls, In pos, In regs, Out out, int np, int nr, int d, int n) {
    const int tokens = 1 + nr + np;
    GRID_STRIDE(i, n) {
        const int ch = i % d, tok = (i / d) % tokens, b = i / (d * tokens);
        float v;
        if (tok == 0) {
            v = cls[ch] + pos[ch];
        } else if (tok <= nr) {
            v = regs[(tok - 1) * d + ch];
        } else {
            const int patch = tok - 1 - nr;
            v = emb[(static_cast<size_t>(b) * np + patch) * d + ch] + pos[(1 + patch) * d + ch];
        }
        out.set(i, v);
    }
}
KDAD_KERNEL(embed_tokens_fwd)

extern "C" __global__ void embed_tokens_bwd_params(In dout, Out dcls, Out dpos, Out dregs, int batch, int np, int nr,
                                                   int d, int n) {
    const int tokens = 1 + nr + np;
    GRID_STRIDE(j, n) {
        const int ch = j % d, tok = j / d;
        float s = 0.0f;
        for (int b = 0; b < batch; ++b) s += dout[(static_cast<size_t>(b) * tokens + tok) * d + ch];
        if (tok == 0) {
            dcls.set(ch, dcls[ch] + s);
            dpos.set(ch, dpos[ch] + s);
        } else if (tok <= nr) {
            if (dregs) dregs.set((tok - 1) * d + ch, dregs[(tok - 1) * d + ch] + s);
        } else {
            dpos.set((tok - nr) * d + ch, dpos[(tok - nr) * d + ch] + s);
        }
    }
}
KDAD_KERNEL(embed_tokens_bwd_params)

extern "C" __global__ void slice_tokens(In big, Out small, int nb, int ns, int d, int start, int n) {
    GRID_STRIDE(i, n) {
        const int ch = i % d, t = (i / d) % ns, b = i / (d * ns);
        small.set(i, big[(static_cast<size_t>(b) * nb + start + t) * d + ch]);
    }
}
KDAD_KERNEL(slice_tokens)

extern "C" __global__ void unslice_tokens_add(Out big, In small, int nb, int ns, int d, int start, int n) {
    GRID_STRIDE(i, n) {
        const int ch = i % d, t = (i / d) % ns, b = i / (d * ns);
        const size_t j = (static_cast<size_t>(b) * nb + start + t) * d + ch;
        big.set(j, big[j] + small[i]);
    }
}
KDAD_KERNEL(unslice_tokens_add)

#undef GRID_STRIDE
