//! Layer norm over the last dimension, with the statistics kept for the backward.

use super::par;
use super::simd::{self, dispatch, Simd};
use rayon::prelude::*;

/// `y = (x - mean)·rstd·w + b` per row of width `d`; `rstd = 1/sqrt(var + eps)` with the
/// biased variance, as `torch.nn.LayerNorm`. Row statistics accumulate in f64.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_fwd(
    x: &[f32],
    w: &[f32],
    b: &[f32],
    d: usize,
    eps: f32,
    y: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
) {
    if d == 0 {
        return;
    }
    y.par_chunks_mut(d)
        .zip(mean.par_iter_mut().zip(rstd.par_iter_mut()))
        .enumerate()
        .for_each(|(r, (yr, (mu_out, rs_out)))| {
            let xr = &x[r * d..(r + 1) * d];
            let (mu, rs) = dispatch!(s => layernorm_row(s, xr, w, b, eps, yr));
            *mu_out = mu as f32;
            *rs_out = rs as f32;
        });
}

/// One row of [`layernorm_fwd`]; returns (mean, rstd).
#[inline(always)]
fn layernorm_row<S: Simd>(
    s: S,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    eps: f32,
    y: &mut [f32],
) -> (f64, f64) {
    let d = x.len() as f64;
    let mu = simd::sum(s, [x], |[v]| s.widen(v)) / d;
    let mu_v = s.dsplat(mu);
    let var = simd::sum(s, [x], |[v]| {
        let c = s.dsub(s.widen(v), mu_v);
        s.dmul(c, c)
    }) / d;
    let rs = 1.0 / (var + eps as f64).sqrt();
    let rs_v = s.dsplat(rs);
    simd::update(s, y, [x, w, b], |_, [v, w, b]| {
        s.mul_add(s.narrow(s.dmul(s.dsub(s.widen(v), mu_v), rs_v)), w, b)
    });
    (mu, rs)
}

/// The backward's read-only inputs.
pub struct LnBwdIn<'a> {
    pub dy: &'a [f32],
    pub x: &'a [f32],
    pub w: &'a [f32],
    pub mean: &'a [f32],
    pub rstd: &'a [f32],
    pub d: usize,
}

/// `dx = rstd·(g - mean(g) - x̂·mean(g·x̂))` with `g = dy·w` and `x̂ = (x - mean)·rstd`;
/// `dw += Σ_rows dy·x̂`, `db += Σ_rows dy`.
pub fn layernorm_bwd(
    i: LnBwdIn,
    dx: &mut [f32],
    dw: &mut [f32],
    db: &mut [f32],
    accumulate_dx: bool,
) {
    let d = i.d;
    if d == 0 {
        return;
    }
    par::for_rows(dx, d, |r, dxr| {
        let row = r * d..(r + 1) * d;
        let (dy, x) = (&i.dy[row.clone()], &i.x[row]);
        dispatch!(s => layernorm_bwd_row(s, dy, x, i.w, (i.mean[r], i.rstd[r]), dxr, accumulate_dx))
    });
    let rows = i.dy.len() / d;
    par::column_sums(
        rows,
        d,
        |r, acc| {
            let row = r * d..(r + 1) * d;
            let (dy, x) = (&i.dy[row.clone()], &i.x[row]);
            dispatch!(s => {
                let (mean, rstd) = (s.splat(i.mean[r]), s.splat(i.rstd[r]));
                simd::accumulate(s, acc, [dy, x], |[dy, x]| {
                    s.widen(s.mul(dy, s.mul(s.sub(x, mean), rstd)))
                })
            })
        },
        dw,
    );
    super::matmul::bias_grad(i.dy, rows, d, db);
}

/// One row of [`layernorm_bwd`]'s `dx`, from the row's `(mean, rstd)`.
#[inline(always)]
fn layernorm_bwd_row<S: Simd>(
    s: S,
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    (mean, rstd): (f32, f32),
    dx: &mut [f32],
    accumulate: bool,
) {
    let d = dy.len() as f64;
    let (mean_v, rstd_v) = (s.splat(mean), s.splat(rstd));
    let g_mean = s.dsplat(simd::sum(s, [dy, w], |[dy, w]| s.widen(s.mul(dy, w))) / d);
    let gx_mean = s.dsplat(
        simd::sum(s, [dy, w, x], |[dy, w, x]| {
            let xhat = s.mul(s.sub(x, mean_v), rstd_v);
            s.dmul(s.widen(s.mul(dy, w)), s.widen(xhat))
        }) / d,
    );
    let rstd_d = s.dsplat(rstd as f64);
    simd::update(s, dx, [dy, w, x], |o, [dy, w, x]| {
        let g = s.widen(s.mul(dy, w));
        let xhat = s.mul(s.sub(x, mean_v), rstd_v);
        let v = s.narrow(s.dmul(
            rstd_d,
            s.dsub(s.dsub(g, g_mean), s.dmul(s.widen(xhat), gx_mean)),
        ));
        if accumulate {
            s.add(o, v)
        } else {
            v
        }
    });
}
