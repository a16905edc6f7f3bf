//! Position-embedding interpolation as a matrix.
//!
//! DINOv2 resizes its `G×G` position grid to the input's `gh×gw` grid with a bicubic resize.
//! The resize is linear in the grid, so it is a matrix `M` with `pos_full = M · pos_embed`
//! (`pos_embed [1+G², D]`, class position first and kept as is). We build `Mᵀ` once per
//! resolution by resizing one-hot planes with [`Backend::resize`] (so the convention is the
//! backend's bicubic, the one verified against PyTorch), then the forward is one GEMM and the
//! backward of a trainable `pos_embed` is its transpose, with no channel-first copy of the
//! grid in either direction.

use super::config::{PosInterp, VitConfig};
use crate::device::{Backend, Interp, Tensor};
use crate::error::Result;
use crate::tensor::HostTensor;

/// `Mᵀ [1+G², 1+gh·gw]`, or `None` when the grids are equal and DINOv2 uses the table as is.
pub fn interp_matrix<B: Backend>(
    backend: &B,
    cfg: &VitConfig,
    gh: usize,
    gw: usize,
) -> Result<Option<Tensor<B>>> {
    let g = cfg.pos_grid;
    if (gh, gw) == (g, g) {
        return Ok(None);
    }
    let (g2, p) = (g * g, gh * gw);
    let scale = match cfg.pos_interp {
        PosInterp::Size => None,
        PosInterp::ScaleFactor { offset } => Some((
            (gh as f64 + offset) / g as f64,
            (gw as f64 + offset) / g as f64,
        )),
        PosInterp::SizeAntialiased => return backend.upload(&antialiased(g, gh, gw)).map(Some),
    };
    let mut onehot = HostTensor::zeros([g2, g, g]);
    for j in 0..g2 {
        onehot.data[j * g2 + j] = 1.0;
    }
    let src = backend.upload(&onehot)?;
    let mut dst = backend.zeros(&[g2, gh, gw])?;
    backend.resize(&src, Interp::Bicubic { scale }, &mut dst)?;
    let rows = backend.download(&dst)?;
    backend.upload(&with_class_row(g2, p, &rows.data)).map(Some)
}

/// `Mᵀ [1+G², 1+P]` from the grid part `rows [G², P]`: the class position maps to itself.
fn with_class_row(g2: usize, p: usize, rows: &[f32]) -> HostTensor {
    let mut mt = HostTensor::zeros([1 + g2, 1 + p]);
    mt.data[0] = 1.0;
    for j in 0..g2 {
        let at = (1 + j) * (1 + p) + 1;
        mt.data[at..at + p].copy_from_slice(&rows[j * p..(j + 1) * p]);
    }
    mt
}

/// PyTorch's antialiased bicubic (`interpolate(size, mode="bicubic", antialias=True)`, as
/// Hugging Face's `Dinov2WithRegistersModel` resizes): Keys' kernel with a = -0.5, its
/// support widened by the downscale factor, taps outside the grid dropped and the weights
/// renormalised. The op set has no antialiased resize, and this runs once per resolution on
/// a small grid, so the matrix is built here.
fn antialiased(g: usize, gh: usize, gw: usize) -> HostTensor {
    let wy = aa_weights(g, gh);
    let wx = aa_weights(g, gw);
    let rows: Vec<f32> = (0..g * g)
        .flat_map(|j| {
            let (iy, ix) = (j / g, j % g);
            let (wy, wx) = (&wy, &wx);
            (0..gh * gw).map(move |o| (wy[o / gw][iy] * wx[o % gw][ix]) as f32)
        })
        .collect();
    with_class_row(g * g, gh * gw, &rows)
}

/// `w[o][i]`: weight of input `i` in output `o` along one axis (ATen's
/// `_compute_indices_min_size_weights_aa` with the bicubic `aa_filter`).
fn aa_weights(inp: usize, out: usize) -> Vec<Vec<f64>> {
    let filter = |x: f64| {
        let (a, x) = (-0.5, x.abs());
        if x < 1.0 {
            ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
        } else if x < 2.0 {
            (((x - 5.0) * x + 8.0) * x - 4.0) * a
        } else {
            0.0
        }
    };
    let scale = inp as f64 / out as f64;
    let support = if scale >= 1.0 { 2.0 * scale } else { 2.0 };
    let invscale = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
    (0..out)
        .map(|o| {
            let center = scale * (o as f64 + 0.5);
            // ATen truncates toward zero, then clamps to the grid.
            let lo = ((center - support + 0.5) as i64).max(0) as usize;
            let hi = ((center + support + 0.5) as i64).min(inp as i64) as usize;
            let mut w = vec![0.0; inp];
            for (i, wi) in w.iter_mut().enumerate().take(hi).skip(lo) {
                *wi = filter((i as f64 - center + 0.5) * invscale);
            }
            let total: f64 = w.iter().sum();
            if total != 0.0 {
                w.iter_mut().for_each(|v| *v /= total);
            }
            w
        })
        .collect()
}
