//! Multi-head attention over packed `qkv [B, N, 3, H, dh]` (the timm/DINOv2 fused layout):
//! softmax attention and Dinomaly's linear attention, forward and backward.
//!
//! Each (image, head) pair is one rayon task working on strided views of qkv, with its
//! results in the task's own scratch (reused across the tasks of a thread), written from
//! there straight into its column block of the token-major output.

use super::math::exp;
use super::matmul::{gemm_with, Product, View, ViewMut};
use super::simd::{self, dispatch, load_part, store_part, Simd, Vectorized};
use super::Precision;
use crate::device::check::AttnDims;
use rayon::prelude::*;
use std::marker::PhantomData;

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

/// A token-major output `[B, N, C]` that the (image, head) tasks fill in parallel, each
/// task its own column block of the rows of its image.
struct TokenOut<'a> {
    ptr: *mut f32,
    len: usize,
    /// Row length `C`.
    width: usize,
    _out: PhantomData<&'a mut [f32]>,
}

// SAFETY: `TokenOut` hands out no references; the writers' contract (`write_head`) keeps
// concurrent writes disjoint, and the borrow it holds keeps everyone else away.
unsafe impl Send for TokenOut<'_> {}
// SAFETY: as above.
unsafe impl Sync for TokenOut<'_> {}

impl<'a> TokenOut<'a> {
    fn new(out: &'a mut [f32], width: usize) -> Self {
        TokenOut {
            ptr: out.as_mut_ptr(),
            len: out.len(),
            width,
            _out: PhantomData,
        }
    }

    /// Row i of `src [N, w]` into columns `col..col + w` of row i of image `b`.
    ///
    /// # Safety
    /// No other thread may write those elements while this runs: each caller must own its
    /// `(b, col..col + w)` block.
    unsafe fn write_head(&self, b: usize, col: usize, src: &[f32], w: usize) {
        assert!(col + w <= self.width, "attention: head block past the row");
        let n = src.len() / w;
        let start = b * n * self.width + col;
        assert!(
            n == 0 || start + (n - 1) * self.width + w <= self.len,
            "attention: head block past the output"
        );
        for (i, row) in src.chunks_exact(w).enumerate() {
            // SAFETY: in bounds (asserted above); the caller guarantees nobody else writes
            // these elements, and `row` is task-local scratch, so the ranges do not overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(row.as_ptr(), self.ptr.add(start + i * self.width), w)
            };
        }
    }
}

/// `scores = scale · q kᵀ` for one head, `[N, N]`.
fn scores(
    prec: Precision,
    qkv: &[f32],
    s: AttnDims,
    b: usize,
    h: usize,
    scale: f32,
    out: &mut [f32],
) {
    let q = head_view(qkv, s, b, 0, h);
    let k = head_view(qkv, s, b, 1, h);
    gemm_with(
        prec,
        Product {
            m: s.n,
            n: s.n,
            k: s.head_dim,
            lhs: q,
            rhs: transposed(k),
            dst: contiguous_mut(out, s.n),
            alpha: scale,
            accumulate: false,
            parallel: false,
        },
    );
}

/// `row = exp(row - max(row))` in place, the unnormalised softmax; returns the row's
/// log-sum-exp and `1/Σ exp` (the sum in f64). Two passes over the row, both in L1: the max,
/// then the exponentials with their sum.
#[inline(always)]
fn exp_row<S: Simd>(s: S, row: &mut [f32]) -> (f32, f32) {
    let n = row.len();
    let full = n - n % S::LANES;
    let mut m = s.splat(f32::NEG_INFINITY);
    for i in (0..full).step_by(S::LANES) {
        m = s.max(s.load(&row[i..]), m);
    }
    // The tail is padded with -∞: neutral for the max, and exp(-∞) = 0 for the sum.
    let tail = load_part(s, &row[full..], f32::NEG_INFINITY);
    m = s.max(tail, m);
    let max = s.reduce_max(m);
    let mx = s.splat(max);
    let mut sum = s.dsplat(0.0);
    for i in (0..full).step_by(S::LANES) {
        let e = exp(s, s.sub(s.load(&row[i..]), mx));
        s.store(e, &mut row[i..]);
        sum = s.dadd(sum, s.widen(e));
    }
    let e = exp(s, s.sub(tail, mx));
    store_part(s, e, &mut row[full..]);
    let sum = s.reduce_sum(s.dadd(sum, s.widen(e)));
    (max + sum.ln() as f32, (1.0 / sum) as f32)
}

// The softmax loops as `Vectorized` bodies rather than `dispatch!` closures: inside the
// per-head closures they were too large for the compiler to inline into the vector entry
// point, and every intrinsic became a call (the attention ran at ~12 GFLOP/s per core).

/// Every row of `p` (width `n`) through [`exp_row`], with its log-sum-exp and 1/Σ.
struct ExpRows<'a> {
    p: &'a mut [f32],
    n: usize,
    lse: &'a mut [f32],
    inv: &'a mut [f32],
}

impl Vectorized for ExpRows<'_> {
    type Output = ();
    #[inline(always)]
    fn apply<S: Simd>(self, sd: S) {
        let rows = self.p.chunks_exact_mut(self.n).zip(self.lse.iter_mut());
        for ((row, l), inv) in rows.zip(self.inv.iter_mut()) {
            (*l, *inv) = exp_row(sd, row);
        }
    }
}

/// Row i of `rows` (width `dh`) times `by[i]`.
struct ScaleRows<'a> {
    rows: &'a mut [f32],
    dh: usize,
    by: &'a [f32],
}

impl Vectorized for ScaleRows<'_> {
    type Output = ();
    #[inline(always)]
    fn apply<S: Simd>(self, sd: S) {
        for (row, &by) in self.rows.chunks_exact_mut(self.dh).zip(self.by) {
            let by = sd.splat(by);
            simd::update(sd, row, [], |x, []| sd.mul(x, by));
        }
    }
}

/// Row i of `p` (width `n`, the scaled scores) becomes `exp(p - lse[i])`: the softmax.
struct ExpMinusLse<'a> {
    p: &'a mut [f32],
    n: usize,
    lse: &'a [f32],
}

impl Vectorized for ExpMinusLse<'_> {
    type Output = ();
    #[inline(always)]
    fn apply<S: Simd>(self, sd: S) {
        for (row, &l) in self.p.chunks_exact_mut(self.n).zip(self.lse) {
            let l = sd.splat(l);
            simd::update(sd, row, [], |x, []| exp(sd, sd.sub(x, l)));
        }
    }
}

/// `ds = P ∘ (ds - rowsum(dO ∘ O))` row by row, `ds` holding dO vᵀ on entry.
struct SoftmaxGrad<'a> {
    ds: &'a mut [f32],
    p: &'a [f32],
    n: usize,
    d_o: View<'a>,
    o: View<'a>,
    dh: usize,
}

impl Vectorized for SoftmaxGrad<'_> {
    type Output = ();
    #[inline(always)]
    fn apply<S: Simd>(self, sd: S) {
        let (d_o, o, dh) = (self.d_o, self.o, self.dh);
        let rows = self
            .ds
            .chunks_exact_mut(self.n)
            .zip(self.p.chunks_exact(self.n));
        for (i, (ds, p)) in rows.enumerate() {
            let (d_o, o) = (&d_o.data[i * d_o.rs..][..dh], &o.data[i * o.rs..][..dh]);
            let delta = simd::sum(sd, [d_o, o], |[a, b]| sd.dmul(sd.widen(a), sd.widen(b)));
            let delta = sd.splat(delta as f32);
            simd::update(sd, ds, [p], |d, [p]| sd.mul(p, sd.sub(d, delta)));
        }
    }
}

/// Softmax attention forward: `out = softmax(scale·q kᵀ) v` per head, `lse` = log-sum-exp
/// of each score row. The rows of P are left unnormalised: the product's `[N, dh]` rows are
/// scaled instead, a quarter of the work at head dim 64 and N = 257.
pub fn softmax_fwd(
    prec: Precision,
    qkv: &[f32],
    s: AttnDims,
    scale: f32,
    out: &mut [f32],
    lse: &mut [f32],
) {
    let (n, dh) = (s.n, s.head_dim);
    if n == 0 || dh == 0 {
        return;
    }
    let out = TokenOut::new(out, s.dim);
    lse.par_chunks_mut(n).enumerate().for_each_init(
        || (vec![0.0f32; n * n], vec![0.0f32; n * dh], vec![0.0f32; n]),
        |(p, o, inv), (bh, lse_h)| {
            let (b, h) = (bh / s.heads, bh % s.heads);
            scores(prec, qkv, s, b, h, scale, p);
            simd::run(ExpRows {
                p,
                n,
                lse: lse_h,
                inv,
            });
            let v = head_view(qkv, s, b, 2, h);
            gemm_with(
                prec,
                Product {
                    m: n,
                    n: dh,
                    k: n,
                    lhs: contiguous(p, n),
                    rhs: v,
                    dst: contiguous_mut(o, dh),
                    alpha: 1.0,
                    accumulate: false,
                    parallel: false,
                },
            );
            simd::run(ScaleRows {
                rows: o,
                dh,
                by: inv,
            });
            // SAFETY: this task is the only one with image b and head h.
            unsafe { out.write_head(b, h * dh, o, dh) };
        },
    );
}

/// Softmax attention backward with `P = exp(scale·q kᵀ - lse)` recomputed:
/// `dv = Pᵀ dO`, `dS = P ∘ (dO vᵀ - rowsum(dO ∘ O))`, `dq = scale·dS k`, `dk = scale·dSᵀ q`.
#[allow(clippy::too_many_arguments)]
pub fn softmax_bwd(
    prec: Precision,
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
    let dqkv = TokenOut::new(dqkv, 3 * s.dim);
    (0..s.batch * s.heads).into_par_iter().for_each_init(
        || {
            (
                vec![0.0f32; n * n],
                vec![0.0f32; n * n],
                vec![0.0f32; 3 * n * dh],
            )
        },
        |(p, ds, g), bh| {
            let (b, h) = (bh / s.heads, bh % s.heads);
            let (q, k, v) = (
                head_view(qkv, s, b, 0, h),
                head_view(qkv, s, b, 1, h),
                head_view(qkv, s, b, 2, h),
            );
            let (d_o, o) = (token_view(dout, s, b, h), token_view(out, s, b, h));
            let lse_h = &lse[bh * n..(bh + 1) * n];
            scores(prec, qkv, s, b, h, scale, p);
            simd::run(ExpMinusLse { p, n, lse: lse_h });
            gemm_with(
                prec,
                Product {
                    m: n,
                    n,
                    k: dh,
                    lhs: d_o,
                    rhs: transposed(v),
                    dst: contiguous_mut(ds, n),
                    alpha: 1.0,
                    accumulate: false,
                    parallel: false,
                },
            );
            simd::run(SoftmaxGrad {
                ds,
                p,
                n,
                d_o,
                o,
                dh,
            });
            let (gq, rest) = g.split_at_mut(n * dh);
            let (gk, gv) = rest.split_at_mut(n * dh);
            gemm_with(
                prec,
                Product {
                    m: n,
                    n: dh,
                    k: n,
                    lhs: contiguous(ds, n),
                    rhs: k,
                    dst: contiguous_mut(gq, dh),
                    alpha: scale,
                    accumulate: false,
                    parallel: false,
                },
            );
            gemm_with(
                prec,
                Product {
                    m: n,
                    n: dh,
                    k: n,
                    lhs: transposed(contiguous(ds, n)),
                    rhs: q,
                    dst: contiguous_mut(gk, dh),
                    alpha: scale,
                    accumulate: false,
                    parallel: false,
                },
            );
            gemm_with(
                prec,
                Product {
                    m: n,
                    n: dh,
                    k: n,
                    lhs: transposed(contiguous(p, n)),
                    rhs: d_o,
                    dst: contiguous_mut(gv, dh),
                    alpha: 1.0,
                    accumulate: false,
                    parallel: false,
                },
            );
            write_qkv_grads(&dqkv, s, b, h, g);
        },
    );
}

/// A task's `[3, N, dh]` gradients of q, k and v of head h of image b into `dqkv`.
fn write_qkv_grads(dqkv: &TokenOut, s: AttnDims, b: usize, h: usize, g: &[f32]) {
    let dh = s.head_dim;
    for (which, g) in g.chunks_exact(s.n * dh).enumerate() {
        // SAFETY: only the task of image b and head h writes these columns.
        unsafe { dqkv.write_head(b, which * s.dim + h * dh, g, dh) };
    }
}

/// φ(t) = elu(t) + 1, the positive feature map of Dinomaly's linear attention.
#[inline(always)]
fn phi<S: Simd>(s: S, t: S::V) -> S::V {
    s.select_lt(s.splat(0.0), t, s.add(t, s.splat(1.0)), exp(s, t))
}

/// φ'(t).
#[inline(always)]
fn dphi<S: Simd>(s: S, t: S::V) -> S::V {
    s.select_lt(s.splat(0.0), t, s.splat(1.0), exp(s, t))
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

fn linear_head(
    prec: Precision,
    qkv: &[f32],
    s: AttnDims,
    b: usize,
    h: usize,
    eps: f32,
) -> LinearHead {
    let (n, dh) = (s.n, s.head_dim);
    let mapped = |which| {
        let view = head_view(qkv, s, b, which, h);
        let mut out = vec![0.0f32; n * dh];
        dispatch!(sd => {
            for (i, o) in out.chunks_exact_mut(dh).enumerate() {
                let t = &view.data[i * view.rs..][..dh];
                simd::update(sd, o, [t], |_, [t]| phi(sd, t));
            }
        });
        out
    };
    let (fq, fk) = (mapped(0), mapped(1));
    let mut kv = vec![0.0f32; dh * dh];
    let v = head_view(qkv, s, b, 2, h);
    gemm_with(
        prec,
        Product {
            m: dh,
            n: dh,
            k: n,
            lhs: transposed(contiguous(&fk, dh)),
            rhs: v,
            dst: contiguous_mut(&mut kv, dh),
            alpha: 1.0,
            accumulate: false,
            parallel: false,
        },
    );
    let ksum: Vec<f32> = (0..dh)
        .map(|j| (0..n).map(|i| fk[i * dh + j] as f64).sum::<f64>() as f32)
        .collect();
    let mut num = vec![0.0f32; n * dh];
    gemm_with(
        prec,
        Product {
            m: n,
            n: dh,
            k: dh,
            lhs: contiguous(&fq, dh),
            rhs: contiguous(&kv, dh),
            dst: contiguous_mut(&mut num, dh),
            alpha: 1.0,
            accumulate: false,
            parallel: false,
        },
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
pub fn linear_fwd(prec: Precision, qkv: &[f32], s: AttnDims, eps: f32, out: &mut [f32]) {
    let (n, dh) = (s.n, s.head_dim);
    if n == 0 || dh == 0 {
        return;
    }
    let out = TokenOut::new(out, s.dim);
    (0..s.batch * s.heads).into_par_iter().for_each(|bh| {
        let (b, h) = (bh / s.heads, bh % s.heads);
        let mut lh = linear_head(prec, qkv, s, b, h, eps);
        for (num, &den) in lh.num.chunks_exact_mut(dh).zip(&lh.den) {
            num.iter_mut().for_each(|x| *x /= den);
        }
        // SAFETY: this task is the only one with image b and head h.
        unsafe { out.write_head(b, h * dh, &lh.num, dh) };
    });
}

/// Linear attention backward. With `dnum = dO / den` and `dden_s = -(dO_s·num_s)/den_s²`:
/// `dφq = dnum KVᵀ + dden ⊗ ksum`, `dKV = φqᵀ dnum`, `dksum = Σ_s dden_s φq_s`,
/// `dφk = v dKVᵀ + dksum`, `dv = φk dKV`; then `dq = dφq·φ'(q)`, `dk = dφk·φ'(k)`.
pub fn linear_bwd(
    prec: Precision,
    dout: &[f32],
    qkv: &[f32],
    s: AttnDims,
    eps: f32,
    dqkv: &mut [f32],
) {
    let (n, dh) = (s.n, s.head_dim);
    if n == 0 || dh == 0 {
        return;
    }
    let dqkv = TokenOut::new(dqkv, 3 * s.dim);
    (0..s.batch * s.heads).into_par_iter().for_each_init(
        || vec![0.0f32; 3 * n * dh],
        |g, bh| {
            let (b, h) = (bh / s.heads, bh % s.heads);
            let lh = linear_head(prec, qkv, s, b, h, eps);
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
            gemm_with(
                prec,
                Product {
                    m: n,
                    n: dh,
                    k: dh,
                    lhs: contiguous(&dnum, dh),
                    rhs: transposed(contiguous(&lh.kv, dh)),
                    dst: contiguous_mut(gq, dh),
                    alpha: 1.0,
                    accumulate: false,
                    parallel: false,
                },
            );
            for i in 0..n {
                for j in 0..dh {
                    gq[i * dh + j] += dden[i] * lh.ksum[j];
                }
            }
            let mut dkv = vec![0.0f32; dh * dh];
            gemm_with(
                prec,
                Product {
                    m: dh,
                    n: dh,
                    k: n,
                    lhs: transposed(contiguous(&lh.fq, dh)),
                    rhs: contiguous(&dnum, dh),
                    dst: contiguous_mut(&mut dkv, dh),
                    alpha: 1.0,
                    accumulate: false,
                    parallel: false,
                },
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
            gemm_with(
                prec,
                Product {
                    m: n,
                    n: dh,
                    k: dh,
                    lhs: v,
                    rhs: transposed(contiguous(&dkv, dh)),
                    dst: contiguous_mut(gk, dh),
                    alpha: 1.0,
                    accumulate: false,
                    parallel: false,
                },
            );
            for i in 0..n {
                for j in 0..dh {
                    gk[i * dh + j] += dksum[j];
                }
            }
            gemm_with(
                prec,
                Product {
                    m: n,
                    n: dh,
                    k: dh,
                    lhs: contiguous(&lh.fk, dh),
                    rhs: contiguous(&dkv, dh),
                    dst: contiguous_mut(gv, dh),
                    alpha: 1.0,
                    accumulate: false,
                    parallel: false,
                },
            );
            // Through φ: the raw q and k are read back from qkv.
            for (which, gx) in [(0, &mut *gq), (1, &mut *gk)] {
                let x = head_view(qkv, s, b, which, h);
                dispatch!(sd => {
                    for (i, gx) in gx.chunks_exact_mut(dh).enumerate() {
                        let t = &x.data[i * x.rs..][..dh];
                        simd::update(sd, gx, [t], |g, [t]| sd.mul(g, dphi(sd, t)));
                    }
                });
            }
            write_qkv_grads(&dqkv, s, b, h, g);
        },
    );
}
