//! Element-wise ops: BLAS-1 helpers, GELU, LayerScale residuals and dropout.

use super::math::{exp, normal_cdf};
use super::par;
use super::simd::{self, dispatch, Simd};
use crate::device::rng::dropout_keep;
use rayon::prelude::*;

/// Elements per rayon task for the cheap element-wise loops.
const ELEMS_PER_TASK: usize = 1 << 14;

pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    y.par_iter_mut()
        .zip(x.par_iter())
        .with_min_len(ELEMS_PER_TASK)
        .for_each(|(y, &x)| *y += alpha * x);
}

pub fn scale(x: &mut [f32], alpha: f32) {
    x.par_iter_mut()
        .with_min_len(ELEMS_PER_TASK)
        .for_each(|v| *v *= alpha);
}

/// Σ x² in f64, summed per chunk in a fixed order so the result is reproducible.
pub fn sum_squares(x: &[f32]) -> f64 {
    let partial: Vec<f64> = x
        .par_chunks(ELEMS_PER_TASK)
        .map(|c| {
            dispatch!(s => simd::sum(s, [c], |[v]| {
                let v = s.widen(v);
                s.dmul(v, v)
            }))
        })
        .collect();
    partial.iter().sum()
}

/// Exact GELU `x·Φ(x)`.
#[inline(always)]
fn gelu<S: Simd>(s: S, x: S::V) -> S::V {
    s.mul(x, normal_cdf(s, x))
}

/// `d/dx x·Φ(x) = Φ(x) + x·φ(x)`.
#[inline(always)]
fn gelu_grad<S: Simd>(s: S, x: S::V) -> S::V {
    let pdf = s.mul(
        exp(s, s.mul(s.mul(s.splat(-0.5), x), x)),
        s.splat(0.5 * std::f32::consts::FRAC_2_SQRT_PI * std::f32::consts::FRAC_1_SQRT_2),
    );
    s.mul_add(x, pdf, normal_cdf(s, x))
}

/// Runs `f(row of a, row of b, row of out)` over the `width`-wide rows of `out` in parallel,
/// in tasks of about `ELEMS_PER_TASK` elements.
fn rows3(
    a: &[f32],
    b: &[f32],
    out: &mut [f32],
    width: usize,
    f: impl Fn(&[f32], &[f32], &mut [f32]) + Sync + Send,
) {
    let rows_per_task = (ELEMS_PER_TASK / width.max(1)).max(1);
    out.par_chunks_mut(rows_per_task * width)
        .enumerate()
        .for_each(|(t, o)| {
            let at = t * rows_per_task * width;
            for ((o, a), b) in o
                .chunks_mut(width)
                .zip(a[at..].chunks(width))
                .zip(b[at..].chunks(width))
            {
                f(a, b, o);
            }
        });
}

/// `y = gelu(x + bias)` (bias per column, optional).
pub fn bias_gelu_fwd(x: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    match bias {
        Some(b) => rows3(x, x, y, b.len(), |x, _, y| {
            dispatch!(s => {
                simd::update(s, y, [x, b], |_, [x, b]| gelu(s, s.add(x, b)))
            })
        }),
        None => rows3(
            x,
            x,
            y,
            ELEMS_PER_TASK,
            |x, _, y| dispatch!(s => simd::update(s, y, [x], |_, [x]| gelu(s, x))),
        ),
    }
}

/// `dx = dy · gelu'(x + bias)`.
pub fn bias_gelu_bwd(dy: &[f32], x: &[f32], bias: Option<&[f32]>, dx: &mut [f32]) {
    match bias {
        Some(b) => rows3(dy, x, dx, b.len(), |dy, x, dx| {
            dispatch!(s => {
                simd::update(s, dx, [dy, x, b], |_, [g, x, b]| {
                    s.mul(g, gelu_grad(s, s.add(x, b)))
                })
            })
        }),
        None => rows3(dy, x, dx, ELEMS_PER_TASK, |dy, x, dx| {
            dispatch!(s => {
                simd::update(s, dx, [dy, x], |_, [g, x]| s.mul(g, gelu_grad(s, x)))
            })
        }),
    }
}

/// `out = x + gamma ⊙ y` (gamma per column; 1 when absent). Row-wise, so the column of an
/// element is its index in the row, not an integer division per element.
pub fn residual_fwd(x: &[f32], y: &[f32], gamma: Option<&[f32]>, out: &mut [f32]) {
    match gamma {
        // `x + g·y` in two roundings, not one FMA: the GPU kernel is held to this op exactly.
        Some(g) => rows3(x, y, out, g.len(), |x, y, o| {
            dispatch!(s => {
                simd::update(s, o, [x, y, g], |_, [x, y, g]| s.add(x, s.mul(g, y)))
            })
        }),
        None => rows3(x, y, out, ELEMS_PER_TASK, |x, y, o| {
            dispatch!(s => {
                simd::update(s, o, [x, y], |_, [x, y]| s.add(x, y))
            })
        }),
    }
}

/// `dy = gamma ⊙ dout`, `dgamma += Σ_rows dout ⊙ y`.
pub fn residual_bwd(
    dout: &[f32],
    y: &[f32],
    gamma: Option<&[f32]>,
    rows: usize,
    dy: &mut [f32],
    dgamma: Option<&mut [f32]>,
) {
    match gamma {
        Some(g) => rows3(
            dout,
            dout,
            dy,
            g.len(),
            |dout, _, dy| dispatch!(s => simd::update(s, dy, [dout, g], |_, [o, g]| s.mul(g, o))),
        ),
        None => dy.copy_from_slice(dout),
    }
    if let Some(dg) = dgamma {
        let d = dg.len();
        par::column_sums(
            rows,
            d,
            |r, acc| {
                let row = r * d..(r + 1) * d;
                dispatch!(s => simd::accumulate(s, acc, [&dout[row.clone()], &y[row]], |[o, y]| {
                    s.widen(s.mul(o, y))
                }))
            },
            dg,
        );
    }
}

/// `out[i] = x[i] · keep(seed, i) / (1 - p)`: the mask of element i depends only on
/// (seed, i), so the backward applies the same map to the gradient.
pub fn dropout(x: &[f32], p: f32, seed: u64, out: &mut [f32]) {
    let inv_keep = 1.0 / (1.0 - p);
    out.par_iter_mut()
        .enumerate()
        .with_min_len(ELEMS_PER_TASK)
        .for_each(|(i, o)| {
            *o = if dropout_keep(seed, i as u64, p) {
                x[i] * inv_keep
            } else {
                0.0
            };
        });
}
