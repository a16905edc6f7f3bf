//! Layer norm over the last dimension, with the statistics kept for the backward.

use super::par;
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
            let mu = xr.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
            let var = xr.iter().map(|&v| (v as f64 - mu).powi(2)).sum::<f64>() / d as f64;
            let rs = 1.0 / (var + eps as f64).sqrt();
            for (((o, &v), &wj), &bj) in yr.iter_mut().zip(xr).zip(w).zip(b) {
                *o = ((v as f64 - mu) * rs) as f32 * wj + bj;
            }
            *mu_out = mu as f32;
            *rs_out = rs as f32;
        });
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
    let xhat = |r: usize, j: usize| (i.x[r * d + j] - i.mean[r]) * i.rstd[r];
    par::for_rows(dx, d, |r, dxr| {
        let dyr = &i.dy[r * d..(r + 1) * d];
        let (mut g_mean, mut gx_mean) = (0.0f64, 0.0f64);
        for (j, (&dy, &w)) in dyr.iter().zip(i.w).enumerate() {
            let g = (dy * w) as f64;
            g_mean += g;
            gx_mean += g * xhat(r, j) as f64;
        }
        g_mean /= d as f64;
        gx_mean /= d as f64;
        for (j, ((o, &dy), &w)) in dxr.iter_mut().zip(dyr).zip(i.w).enumerate() {
            let g = (dy * w) as f64;
            let v = (i.rstd[r] as f64 * (g - g_mean - xhat(r, j) as f64 * gx_mean)) as f32;
            *o = if accumulate_dx { *o + v } else { v };
        }
    });
    let rows = i.dy.len() / d;
    par::column_sums(
        rows,
        d,
        |r, acc| {
            for (j, a) in acc.iter_mut().enumerate() {
                *a += (i.dy[r * d + j] * xhat(r, j)) as f64;
            }
        },
        dw,
    );
    super::matmul::bias_grad(i.dy, rows, d, db);
}
