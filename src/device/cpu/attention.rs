//! Multi-head attention over packed `qkv [B, N, 3, H, dh]` (the timm/DINOv2 fused layout):
//! softmax attention and Dinomaly's linear attention, forward and backward.
//!
//! Each (image, head) pair is one rayon task working on strided views of qkv, with its
//! results in a head-major scratch buffer (`[B, H, …]`, so tasks own disjoint slices) that
//! is scattered into the token-major output afterwards.

use super::math::exp;
use super::matmul::{gemm_strided, View, ViewMut};
use crate::device::check::AttnDims;
use rayon::prelude::*;

/// Offset of q, k or v (`which` = 0, 1, 2) of head `h` of token 0 of image `b`.
fn qkv_offset(s: AttnDims, b: usize, which: usize, h: usize) -> usize {
    b * s.n * 3 * s.dim + which * s.dim + h * s.head_dim
}

/// q, k or v of one head as an `[N, dh]` view of qkv.
fn head_view(qkv: &[f32], s: AttnDims, b: usize, which: usize, h: usize) -> View<'_> {
    View {
        data: &qkv[qkv_offset(s, b, which, h)..],
        rs: 3 * s.dim,
        cs: 1,
    }
}

/// One head of a `[B, N, D]` tensor (out, dout) as an `[N, dh]` view.
fn token_view(t: &[f32], s: AttnDims, b: usize, h: usize) -> View<'_> {
    View {
        data: &t[b * s.n * s.dim + h * s.head_dim..],
        rs: s.dim,
        cs: 1,
    }
}

/// The transpose of a view.
fn transposed(v: View) -> View {
    View {
        data: v.data,
        rs: v.cs,
        cs: v.rs,
    }
}

fn contiguous(data: &[f32], cols: usize) -> View<'_> {
    View {
        data,
        rs: cols,
        cs: 1,
    }
}

fn contiguous_mut(data: &mut [f32], cols: usize) -> ViewMut<'_> {
    ViewMut {
        data,
        rs: cols,
        cs: 1,
    }
}

/// Write head-major `src [B, H, N, dh]` into token-major `out [B, N, D]`.
fn heads_to_tokens(src: &[f32], s: AttnDims, out: &mut [f32]) {
    let (n, dh) = (s.n, s.head_dim);
    super::par::for_rows(out, s.dim, |row, o| {
        let (b, i) = (row / n, row % n);
        for h in 0..s.heads {
            let from = ((b * s.heads + h) * n + i) * dh;
            o[h * dh..(h + 1) * dh].copy_from_slice(&src[from..from + dh]);
        }
    });
}

/// Write head-major `src [B, H, 3, N, dh]` into packed `dqkv [B, N, 3·D]`.
fn heads_to_qkv(src: &[f32], s: AttnDims, dqkv: &mut [f32]) {
    let (n, dh) = (s.n, s.head_dim);
    super::par::for_rows(dqkv, 3 * s.dim, |row, o| {
        let (b, i) = (row / n, row % n);
        for h in 0..s.heads {
            for which in 0..3 {
                let from = (((b * s.heads + h) * 3 + which) * n + i) * dh;
                let to = which * s.dim + h * dh;
                o[to..to + dh].copy_from_slice(&src[from..from + dh]);
            }
        }
    });
}

/// `scores = scale · q kᵀ` for one head, `[N, N]`.
fn scores(qkv: &[f32], s: AttnDims, b: usize, h: usize, scale: f32, out: &mut [f32]) {
    let q = head_view(qkv, s, b, 0, h);
    let k = head_view(qkv, s, b, 1, h);
    gemm_strided(
        s.n,
        s.n,
        s.head_dim,
        q,
        transposed(k),
        contiguous_mut(out, s.n),
        scale,
        false,
        false,
    );
}

/// Lanes of the row reductions below: independent accumulators, so the max and the sum are
/// not one long chain of dependent adds (a 257-long f64 chain costs ~1000 cycles per row).
const LANES: usize = 8;

/// `row = softmax(row)` in place; returns the row's log-sum-exp. The sum is in f64.
fn softmax_row(row: &mut [f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; LANES];
    for c in row.chunks(LANES) {
        for (m, &v) in m.iter_mut().zip(c) {
            *m = m.max(v);
        }
    }
    let mx = m.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    row.iter_mut().for_each(|v| *v = exp(*v - mx));
    let mut sum = [0.0f64; LANES];
    for c in row.chunks(LANES) {
        for (s, &v) in sum.iter_mut().zip(c) {
            *s += v as f64;
        }
    }
    let sum: f64 = sum.iter().sum();
    let inv = (1.0 / sum) as f32;
    row.iter_mut().for_each(|v| *v *= inv);
    mx + sum.ln() as f32
}

/// Softmax attention forward: `out = softmax(scale·q kᵀ) v` per head, `lse` = log-sum-exp
/// of each score row.
pub fn softmax_fwd(qkv: &[f32], s: AttnDims, scale: f32, out: &mut [f32], lse: &mut [f32]) {
    let (n, dh) = (s.n, s.head_dim);
    if n == 0 || dh == 0 {
        return;
    }
    let mut heads_out = vec![0.0f32; s.batch * s.heads * n * dh];
    heads_out
        .par_chunks_mut(n * dh)
        .zip(lse.par_chunks_mut(n))
        .enumerate()
        .for_each(|(bh, (o, lse_h))| {
            let (b, h) = (bh / s.heads, bh % s.heads);
            let mut p = vec![0.0f32; n * n];
            scores(qkv, s, b, h, scale, &mut p);
            for (row, l) in p.chunks_mut(n).zip(lse_h.iter_mut()) {
                *l = softmax_row(row);
            }
            let v = head_view(qkv, s, b, 2, h);
            gemm_strided(
                n,
                dh,
                n,
                contiguous(&p, n),
                v,
                contiguous_mut(o, dh),
                1.0,
                false,
                false,
            );
        });
    heads_to_tokens(&heads_out, s, out);
}

/// Softmax attention backward with `P = exp(scale·q kᵀ - lse)` recomputed:
/// `dv = Pᵀ dO`, `dS = P ∘ (dO vᵀ - rowsum(dO ∘ O))`, `dq = scale·dS k`, `dk = scale·dSᵀ q`.
#[allow(clippy::too_many_arguments)]
pub fn softmax_bwd(
    dout: &[f32],
    qkv: &[f32],
    out: &[f32],
    lse: &[f32],
    s: AttnDims,
    scale: f32,
    dqkv: &mut [f32],
) {
    let (n, dh) = (s.n, s.head_dim);
    if n == 0 || dh == 0 {
        return;
    }
    let mut grads = vec![0.0f32; s.batch * s.heads * 3 * n * dh];
    grads
        .par_chunks_mut(3 * n * dh)
        .enumerate()
        .for_each(|(bh, g)| {
            let (b, h) = (bh / s.heads, bh % s.heads);
            let (q, k, v) = (
                head_view(qkv, s, b, 0, h),
                head_view(qkv, s, b, 1, h),
                head_view(qkv, s, b, 2, h),
            );
            let (d_o, o) = (token_view(dout, s, b, h), token_view(out, s, b, h));
            let lse_h = &lse[bh * n..(bh + 1) * n];
            let mut p = vec![0.0f32; n * n];
            scores(qkv, s, b, h, scale, &mut p);
            for (row, &l) in p.chunks_mut(n).zip(lse_h) {
                row.iter_mut().for_each(|x| *x = exp(*x - l));
            }
            let mut ds = vec![0.0f32; n * n];
            gemm_strided(
                n,
                n,
                dh,
                d_o,
                transposed(v),
                contiguous_mut(&mut ds, n),
                1.0,
                false,
                false,
            );
            for i in 0..n {
                let delta: f64 = (0..dh)
                    .map(|j| d_o.data[i * d_o.rs + j] as f64 * o.data[i * o.rs + j] as f64)
                    .sum();
                let delta = delta as f32;
                for j in 0..n {
                    ds[i * n + j] = p[i * n + j] * (ds[i * n + j] - delta);
                }
            }
            let (gq, rest) = g.split_at_mut(n * dh);
            let (gk, gv) = rest.split_at_mut(n * dh);
            gemm_strided(
                n,
                dh,
                n,
                contiguous(&ds, n),
                k,
                contiguous_mut(gq, dh),
                scale,
                false,
                false,
            );
            gemm_strided(
                n,
                dh,
                n,
                transposed(contiguous(&ds, n)),
                q,
                contiguous_mut(gk, dh),
                scale,
                false,
                false,
            );
            gemm_strided(
                n,
                dh,
                n,
                transposed(contiguous(&p, n)),
                d_o,
                contiguous_mut(gv, dh),
                1.0,
                false,
                false,
            );
        });
    heads_to_qkv(&grads, s, dqkv);
}

/// φ(t) = elu(t) + 1, the positive feature map of Dinomaly's linear attention.
fn phi(t: f32) -> f32 {
    if t > 0.0 {
        t + 1.0
    } else {
        t.exp()
    }
}

/// φ'(t).
fn dphi(t: f32) -> f32 {
    if t > 0.0 {
        1.0
    } else {
        t.exp()
    }
}

/// Per-head quantities both passes of linear attention need.
struct LinearHead {
    /// φ(q) and φ(k), `[N, dh]`.
    fq: Vec<f32>,
    fk: Vec<f32>,
    /// `KV = φ(k)ᵀ v`, `[dh, dh]`.
    kv: Vec<f32>,
    /// `Σ_s φ(k_s)`, `[dh]`.
    ksum: Vec<f32>,
    /// `num = φ(q) KV`, `[N, dh]`, and `den_s = φ(q_s)·ksum + eps`, `[N]`.
    num: Vec<f32>,
    den: Vec<f32>,
}

fn linear_head(qkv: &[f32], s: AttnDims, b: usize, h: usize, eps: f32) -> LinearHead {
    let (n, dh) = (s.n, s.head_dim);
    let mapped = |which| {
        let view = head_view(qkv, s, b, which, h);
        let mut out = vec![0.0f32; n * dh];
        for i in 0..n {
            for j in 0..dh {
                out[i * dh + j] = phi(view.data[i * view.rs + j]);
            }
        }
        out
    };
    let (fq, fk) = (mapped(0), mapped(1));
    let mut kv = vec![0.0f32; dh * dh];
    let v = head_view(qkv, s, b, 2, h);
    gemm_strided(
        dh,
        dh,
        n,
        transposed(contiguous(&fk, dh)),
        v,
        contiguous_mut(&mut kv, dh),
        1.0,
        false,
        false,
    );
    let ksum: Vec<f32> = (0..dh)
        .map(|j| (0..n).map(|i| fk[i * dh + j] as f64).sum::<f64>() as f32)
        .collect();
    let mut num = vec![0.0f32; n * dh];
    gemm_strided(
        n,
        dh,
        dh,
        contiguous(&fq, dh),
        contiguous(&kv, dh),
        contiguous_mut(&mut num, dh),
        1.0,
        false,
        false,
    );
    let den = (0..n)
        .map(|i| {
            (0..dh)
                .map(|j| fq[i * dh + j] as f64 * ksum[j] as f64)
                .sum::<f64>() as f32
                + eps
        })
        .collect();
    LinearHead {
        fq,
        fk,
        kv,
        ksum,
        num,
        den,
    }
}

/// Linear attention forward: `out_s = φ(q_s)ᵀ KV / (φ(q_s)·Σ φ(k) + eps)` per head.
pub fn linear_fwd(qkv: &[f32], s: AttnDims, eps: f32, out: &mut [f32]) {
    let (n, dh) = (s.n, s.head_dim);
    if n == 0 || dh == 0 {
        return;
    }
    let mut heads_out = vec![0.0f32; s.batch * s.heads * n * dh];
    heads_out
        .par_chunks_mut(n * dh)
        .enumerate()
        .for_each(|(bh, o)| {
            let lh = linear_head(qkv, s, bh / s.heads, bh % s.heads, eps);
            for i in 0..n {
                for j in 0..dh {
                    o[i * dh + j] = lh.num[i * dh + j] / lh.den[i];
                }
            }
        });
    heads_to_tokens(&heads_out, s, out);
}

/// Linear attention backward. With `dnum = dO / den` and `dden_s = -(dO_s·num_s)/den_s²`:
/// `dφq = dnum KVᵀ + dden ⊗ ksum`, `dKV = φqᵀ dnum`, `dksum = Σ_s dden_s φq_s`,
/// `dφk = v dKVᵀ + dksum`, `dv = φk dKV`; then `dq = dφq·φ'(q)`, `dk = dφk·φ'(k)`.
pub fn linear_bwd(dout: &[f32], qkv: &[f32], s: AttnDims, eps: f32, dqkv: &mut [f32]) {
    let (n, dh) = (s.n, s.head_dim);
    if n == 0 || dh == 0 {
        return;
    }
    let mut grads = vec![0.0f32; s.batch * s.heads * 3 * n * dh];
    grads
        .par_chunks_mut(3 * n * dh)
        .enumerate()
        .for_each(|(bh, g)| {
            let (b, h) = (bh / s.heads, bh % s.heads);
            let lh = linear_head(qkv, s, b, h, eps);
            let d_o = token_view(dout, s, b, h);
            let mut dnum = vec![0.0f32; n * dh];
            let mut dden = vec![0.0f32; n];
            for i in 0..n {
                let mut dot = 0.0f64;
                for j in 0..dh {
                    let go = d_o.data[i * d_o.rs + j];
                    dnum[i * dh + j] = go / lh.den[i];
                    dot += go as f64 * lh.num[i * dh + j] as f64;
                }
                dden[i] = (-dot / (lh.den[i] as f64).powi(2)) as f32;
            }
            let (gq, rest) = g.split_at_mut(n * dh);
            let (gk, gv) = rest.split_at_mut(n * dh);
            // dφq
            gemm_strided(
                n,
                dh,
                dh,
                contiguous(&dnum, dh),
                transposed(contiguous(&lh.kv, dh)),
                contiguous_mut(gq, dh),
                1.0,
                false,
                false,
            );
            for i in 0..n {
                for j in 0..dh {
                    gq[i * dh + j] += dden[i] * lh.ksum[j];
                }
            }
            let mut dkv = vec![0.0f32; dh * dh];
            gemm_strided(
                dh,
                dh,
                n,
                transposed(contiguous(&lh.fq, dh)),
                contiguous(&dnum, dh),
                contiguous_mut(&mut dkv, dh),
                1.0,
                false,
                false,
            );
            let dksum: Vec<f32> = (0..dh)
                .map(|j| {
                    (0..n)
                        .map(|i| dden[i] as f64 * lh.fq[i * dh + j] as f64)
                        .sum::<f64>() as f32
                })
                .collect();
            // dφk
            let v = head_view(qkv, s, b, 2, h);
            gemm_strided(
                n,
                dh,
                dh,
                v,
                transposed(contiguous(&dkv, dh)),
                contiguous_mut(gk, dh),
                1.0,
                false,
                false,
            );
            for i in 0..n {
                for j in 0..dh {
                    gk[i * dh + j] += dksum[j];
                }
            }
            gemm_strided(
                n,
                dh,
                dh,
                contiguous(&lh.fk, dh),
                contiguous(&dkv, dh),
                contiguous_mut(gv, dh),
                1.0,
                false,
                false,
            );
            // Through φ: the raw q and k are read back from qkv.
            for (which, gx) in [(0, &mut *gq), (1, &mut *gk)] {
                let x = head_view(qkv, s, b, which, h);
                for i in 0..n {
                    for j in 0..dh {
                        gx[i * dh + j] *= dphi(x.data[i * x.rs + j]);
                    }
                }
            }
        });
    heads_to_qkv(&grads, s, dqkv);
}
