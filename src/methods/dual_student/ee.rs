//! The encoder-encoder (EE) student: a ViT trained from scratch to reproduce the teacher's
//! final-normed class token (research/methods.md §1.3 item 3, OUR design: the seed paper says
//! only "trained from scratch to replicate the class token"). It has the teacher's width and
//! heads and patch 14, so no projection head is needed; its depth is a config field (6 by
//! default, our choice for a CPU budget). Loss and semantic score: `1 - cos(t_cls, s_cls)`.

use super::config::DualStudentConfig;
use crate::device::{Backend, Tensor};
use crate::error::{Error, Result};
use crate::tensor::{HostTensor, Rng};
use crate::train::params::ParamMut;
use crate::vit::{ForwardSpec, Init, OutputGrads, PosInterp, Vit, VitConfig, VitParams};
use std::collections::HashMap;

struct Bufs<B: Backend> {
    batch: usize,
    /// The student's class token `[B, D]`.
    cls: Tensor<B>,
    /// `1 - cos` per image `[B]`, its upstream gradient, and d cls `[B, 1, D]`.
    dist: Tensor<B>,
    d_dist: Tensor<B>,
    d_cls: Tensor<B>,
}

pub struct EeStudent<B: Backend> {
    vit: Vit<B>,
    bufs: Option<Bufs<B>>,
}

/// The student's architecture for a teacher `t` and images of side `crop`: the teacher's
/// width, heads and patch, a position grid that fits the crop exactly (no interpolation).
pub fn student_config(t: &VitConfig, cfg: &DualStudentConfig) -> VitConfig {
    VitConfig {
        depth: cfg.ee_depth,
        registers: 0,
        layerscale: cfg.ee_layerscale,
        pos_grid: cfg.crop / t.patch,
        pos_interp: PosInterp::Size,
        ..VitConfig::dinov2(t.dim, cfg.ee_depth, t.heads)
    }
}

impl<B: Backend> EeStudent<B> {
    /// Random initialisation as DINOv2/timm (truncated normal std 0.02).
    pub fn init(backend: &B, vcfg: VitConfig, rng: &mut Rng) -> Result<Self> {
        let params = VitParams::init(backend, &vcfg, &Init::vit(), rng)?;
        Ok(EeStudent {
            vit: Vit::trainable(backend, vcfg, params)?,
            bufs: None,
        })
    }

    /// Load the tensors named `ee.…` from a checkpoint map, with gradient buffers for
    /// training (`trainable`) or without them for scoring.
    pub fn from_host(
        backend: &B,
        vcfg: VitConfig,
        map: &HashMap<String, HostTensor>,
        trainable: bool,
    ) -> Result<Self> {
        let mine: HashMap<String, HostTensor> = map
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("ee.").map(|n| (n.to_string(), v.clone())))
            .collect();
        let params = VitParams::from_host(backend, &vcfg, &mine)
            .map_err(|e| Error::Invalid(format!("checkpoint EE student: {e}")))?;
        let vit = if trainable {
            Vit::trainable(backend, vcfg, params)?
        } else {
            Vit::frozen(backend, vcfg, params)?
        };
        Ok(EeStudent { vit, bufs: None })
    }

    pub fn params_to_host(&self, backend: &B) -> Result<Vec<(String, HostTensor)>> {
        self.vit
            .named_params()
            .into_iter()
            .map(|(n, t)| Ok((format!("ee.{n}"), backend.download(t)?)))
            .collect()
    }

    pub fn params_mut(&mut self) -> Result<Vec<ParamMut<'_, B>>> {
        Ok(self
            .vit
            .params_and_grads_mut()?
            .into_iter()
            .map(|(n, value, grad)| ParamMut {
                name: format!("ee.{n}"),
                value,
                grad,
            })
            .collect())
    }

    pub fn grads_mut(&mut self) -> Result<Vec<&mut Tensor<B>>> {
        Ok(self
            .vit
            .named_grads_mut()?
            .into_iter()
            .map(|(_, t)| t)
            .collect())
    }

    /// `1 - cos(teacher_cls, student_cls)` per image for `images [B, 3, H, W]`; `train` keeps
    /// the activations for [`EeStudent::backward`].
    pub fn forward(
        &mut self,
        backend: &B,
        images: &Tensor<B>,
        teacher_cls: &Tensor<B>,
        train: bool,
    ) -> Result<Vec<f64>> {
        let d = self.vit.config().dim;
        let batch = match images.dims() {
            &[b, _, _, _] if teacher_cls.dims() == [b, d] => b,
            _ => {
                return Err(Error::Invalid(format!(
                    "EE student: images {:?} and teacher class tokens {:?} must be [B, 3, H, W] \
                     and [B, {d}]",
                    images.dims(),
                    teacher_cls.dims()
                )))
            }
        };
        if self.bufs.as_ref().map(|b| b.batch) != Some(batch) {
            self.bufs = Some(Bufs {
                batch,
                cls: backend.zeros(&[batch, d])?,
                dist: backend.zeros(&[batch])?,
                d_dist: backend.zeros(&[batch])?,
                d_cls: backend.zeros(&[batch, d])?,
            });
        }
        let b = self
            .bufs
            .as_mut()
            .ok_or_else(|| Error::Invalid("internal: EE buffers".into()))?;
        let spec = ForwardSpec {
            taps: &[],
            final_norm: true,
            train,
        };
        let out = self.vit.forward(backend, images, &spec)?;
        let cls = out
            .cls_norm
            .ok_or_else(|| Error::Invalid("internal: EE class token".into()))?;
        backend.copy(cls, &mut b.cls)?;
        backend.cosine_distance_fwd(teacher_cls, &b.cls, &mut b.dist)?;
        Ok(backend
            .download(&b.dist)?
            .data
            .iter()
            .map(|&v| v as f64)
            .collect())
    }

    /// Add the gradients of the batch-mean loss of the last training forward.
    pub fn backward(&mut self, backend: &B, teacher_cls: &Tensor<B>) -> Result<()> {
        let b = self
            .bufs
            .as_mut()
            .ok_or_else(|| Error::Invalid("EE student: no forward yet".into()))?;
        backend.fill(&mut b.d_dist, 1.0 / b.batch as f32)?;
        b.d_cls.reshape(&[b.batch, self.vit.config().dim])?;
        backend.cosine_distance_bwd(&b.d_dist, teacher_cls, &b.cls, &mut b.d_cls)?;
        b.d_cls.reshape(&[b.batch, 1, self.vit.config().dim])?;
        let grads = OutputGrads {
            cls_norm: Some(&b.d_cls),
            ..Default::default()
        };
        self.vit.backward(backend, &grads)
    }
}
