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
    let mut onehot = HostTensor::zeros([g2, g, g]);
    for j in 0..g2 {
        onehot.data[j * g2 + j] = 1.0;
    }
    let scale = match cfg.pos_interp {
        PosInterp::Size => None,
        PosInterp::ScaleFactor { offset } => Some((
            (gh as f64 + offset) / g as f64,
            (gw as f64 + offset) / g as f64,
        )),
    };
    let src = backend.upload(&onehot)?;
    let mut dst = backend.zeros(&[g2, gh, gw])?;
    backend.resize(&src, Interp::Bicubic { scale }, &mut dst)?;
    let rows = backend.download(&dst)?;
    let mut mt = HostTensor::zeros([1 + g2, 1 + p]);
    mt.data[0] = 1.0;
    for j in 0..g2 {
        let at = (1 + j) * (1 + p) + 1;
        mt.data[at..at + p].copy_from_slice(&rows.data[j * p..(j + 1) * p]);
    }
    backend.upload(&mt).map(Some)
}
