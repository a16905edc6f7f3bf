//! Dinomaly's anomaly maps and image scores (research/methods.md §2.11) on the backend:
//! per group `1 - cos` over channels on the patch grid, bilinear upsampling with
//! align_corners = True to the crop, mean over groups, Gaussian blur (5×5, σ = 4), and the
//! image score as the mean of the top 1 % of pixels.

use super::config::DualStudentConfig;
use crate::device::{Backend, Interp, Tensor};
use crate::error::{Error, Result};
use crate::tensor::HostTensor;

struct Bufs<B: Backend> {
    key: (usize, usize, usize),
    dist: Tensor<B>,
    up: Tensor<B>,
    acc: Tensor<B>,
    blurred: Tensor<B>,
    top: Tensor<B>,
}

pub struct MapScorer<B: Backend> {
    crop: usize,
    ksize: usize,
    sigma: f32,
    top_ratio: f32,
    bufs: Option<Bufs<B>>,
}

/// Maps `[B, crop, crop]` and image scores of one batch.
pub struct Maps {
    pub maps: HostTensor,
    pub scores: Vec<f64>,
}

impl<B: Backend> MapScorer<B> {
    pub fn new(cfg: &DualStudentConfig) -> Self {
        MapScorer {
            crop: cfg.crop,
            ksize: cfg.blur_ksize,
            sigma: cfg.blur_sigma,
            top_ratio: cfg.top_ratio,
            bufs: None,
        }
    }

    /// Pixels averaged into the image score: Dinomaly's `int(H·W·ratio)`, the maximum for 0.
    pub fn top_k(&self) -> usize {
        ((self.crop * self.crop) as f64 * self.top_ratio as f64)
            .floor()
            .max(1.0) as usize
    }

    /// `teacher[g]`, `student[g]` are `[B, P, D]` group features on a `grid × grid` patch grid.
    pub fn score(
        &mut self,
        backend: &B,
        teacher: &[&Tensor<B>],
        student: &[&Tensor<B>],
        grid: usize,
    ) -> Result<Maps> {
        if teacher.len() != student.len() || teacher.is_empty() {
            return Err(Error::Invalid(format!(
                "anomaly maps: {} teacher and {} student groups",
                teacher.len(),
                student.len()
            )));
        }
        let batch = teacher[0].dims().first().copied().unwrap_or(0);
        let (c, k) = (self.crop, self.top_k());
        let key = (batch, grid, c);
        if self.bufs.as_ref().map(|b| b.key) != Some(key) {
            self.bufs = Some(Bufs {
                key,
                dist: backend.zeros(&[batch * grid * grid])?,
                up: backend.zeros(&[batch, c, c])?,
                acc: backend.zeros(&[batch, c, c])?,
                blurred: backend.zeros(&[batch, c, c])?,
                top: backend.zeros(&[batch])?,
            });
        }
        let b = self
            .bufs
            .as_mut()
            .ok_or_else(|| Error::Invalid("internal: map buffers".into()))?;
        backend.fill(&mut b.acc, 0.0)?;
        for (t, s) in teacher.iter().zip(student) {
            b.dist.reshape(&[batch * grid * grid])?;
            backend.cosine_distance_fwd(t, s, &mut b.dist)?;
            b.dist.reshape(&[batch, grid, grid])?;
            backend.resize(
                &b.dist,
                Interp::Bilinear {
                    align_corners: true,
                },
                &mut b.up,
            )?;
            backend.axpy(1.0 / teacher.len() as f32, &b.up, &mut b.acc)?;
        }
        backend.gaussian_blur(&b.acc, self.sigma, self.ksize, &mut b.blurred)?;
        b.blurred.reshape(&[batch, c * c])?;
        let topk = backend.topk_mean(&b.blurred, k, &mut b.top);
        b.blurred.reshape(&[batch, c, c])?;
        topk?;
        let scores = backend
            .download(&b.top)?
            .data
            .iter()
            .map(|&v| v as f64)
            .collect();
        Ok(Maps {
            maps: backend.download(&b.blurred)?,
            scores,
        })
    }
}
