//! [`Vit`]: parameters, optional gradients, and the activation arena of the last forward's
//! (batch, resolution, outputs, mode).

use super::block::{BlockActs, BlockScratch};
use super::config::VitConfig;
use super::params::{VitGrads, VitParams};
use super::pos::interp_matrix;
use crate::device::{Backend, Tensor};
use crate::error::{Error, Result};

/// What one forward computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForwardSpec<'a> {
    /// 0-based blocks whose raw outputs (before the final norm) are returned, in this order.
    pub taps: &'a [usize],
    /// Also run every remaining block and the final LayerNorm, returning the normed class and
    /// patch tokens. Without it the forward stops after the last tapped block.
    pub final_norm: bool,
    /// Keep every block's activations for [`Vit::backward`] (trainable models only).
    pub train: bool,
}

/// Borrowed results of [`Vit::forward`], valid until the next forward.
pub struct VitOutput<'a, B: Backend> {
    /// `[B, N, D]` per requested tap (all tokens: class, registers, patches).
    pub taps: Vec<&'a Tensor<B>>,
    /// `[B, 1, D]`, when the final norm was requested.
    pub cls_norm: Option<&'a Tensor<B>>,
    /// `[B, gh·gw, D]`, when the final norm was requested.
    pub patch_norm: Option<&'a Tensor<B>>,
}

/// Gradients of a scalar loss with respect to a forward's outputs, for [`Vit::backward`].
/// Outputs without a gradient contribute nothing.
pub struct OutputGrads<'a, B: Backend> {
    /// `(block, d loss / d output of that block)`; a block may appear more than once.
    pub taps: Vec<(usize, &'a Tensor<B>)>,
    pub cls_norm: Option<&'a Tensor<B>>,
    pub patch_norm: Option<&'a Tensor<B>>,
}

impl<B: Backend> Default for OutputGrads<'_, B> {
    fn default() -> Self {
        OutputGrads {
            taps: vec![],
            cls_norm: None,
            patch_norm: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ArenaKey {
    pub batch: usize,
    pub h: usize,
    pub w: usize,
    pub taps: Vec<usize>,
    pub final_norm: bool,
    pub train: bool,
}

pub(super) struct NormBufs<B: Backend> {
    pub y: Tensor<B>,
    pub mean: Tensor<B>,
    pub rstd: Tensor<B>,
    pub cls: Tensor<B>,
    pub patch: Tensor<B>,
}

pub(super) struct BackBufs<B: Backend> {
    pub scratch: BlockScratch<B>,
    /// Gradient of the residual stream, ping-ponged between blocks.
    pub d: [Tensor<B>; 2],
    pub demb: Tensor<B>,
    /// Gradient of the interpolated position table, when there is one.
    pub dpos: Option<Tensor<B>>,
    /// Gradient of the final norm's output, when the forward ran it.
    pub dnorm: Option<Tensor<B>>,
}

/// Buffers sized for one (batch, resolution, outputs, mode).
pub(super) struct Arena<B: Backend> {
    pub key: ArenaKey,
    /// Blocks the forward runs: `0..run`.
    pub run: usize,
    pub patches: Tensor<B>,
    pub emb: Tensor<B>,
    /// `Mᵀ` of the position interpolation and the interpolated table `[1+P, D]`.
    pub interp: Option<(Tensor<B>, Tensor<B>)>,
    /// Residual-stream buffers `[B, N, D]`; slot 0 receives the embeddings. Training keeps
    /// every block's output (slot i+1 for block i); a frozen model keeps the tapped outputs
    /// and ping-pongs the rest between slots 0 and 1.
    pub stream: Vec<Tensor<B>>,
    /// Output slot of each block that runs.
    pub slots: Vec<usize>,
    /// One set per block when training, one shared set when frozen.
    pub acts: Vec<BlockActs<B>>,
    pub norm: Option<NormBufs<B>>,
    pub back: Option<BackBufs<B>>,
    /// A training forward completed, so `backward` may run.
    pub ready: bool,
}

impl<B: Backend> Arena<B> {
    fn new(backend: &B, cfg: &VitConfig, key: ArenaKey) -> Result<Self> {
        let (gh, gw) = cfg.grid(key.h, key.w)?;
        let (b, p, d) = (key.batch, gh * gw, cfg.dim);
        let n = cfg.tokens(key.h, key.w)?;
        let run = if key.final_norm {
            cfg.depth
        } else {
            key.taps.iter().max().map_or(0, |&t| t + 1)
        };
        let slots: Vec<usize> = if key.train {
            (1..=run).collect()
        } else {
            let mut prev = 0;
            (0..run)
                .map(|i| {
                    prev = match key.taps.iter().position(|&t| t == i) {
                        Some(j) => 2 + j,
                        None if prev == 0 => 1,
                        None => 0,
                    };
                    prev
                })
                .collect()
        };
        let nslots = if key.train {
            run + 1
        } else {
            2 + key.taps.len()
        };
        // Activations (the residual stream, patches, embeddings, the final norm's outputs)
        // may be stored with less precision; statistics, gradients and the interpolated
        // position embedding (a function of a parameter) stay f32.
        let stream = (0..nslots)
            .map(|_| backend.zeros_activation(&[b, n, d]))
            .collect::<Result<Vec<_>>>()?;
        let block = cfg.block();
        let nacts = if key.train { run } else { 1 };
        let acts = (0..nacts)
            .map(|_| BlockActs::new(backend, &block, b, n))
            .collect::<Result<Vec<_>>>()?;
        let interp = match interp_matrix(backend, cfg, gh, gw)? {
            Some(m) => Some((m, backend.zeros(&[1 + p, d])?)),
            None => None,
        };
        let norm = if key.final_norm {
            Some(NormBufs {
                y: backend.zeros_activation(&[b, n, d])?,
                mean: backend.zeros(&[b * n])?,
                rstd: backend.zeros(&[b * n])?,
                cls: backend.zeros_activation(&[b, 1, d])?,
                patch: backend.zeros_activation(&[b, p, d])?,
            })
        } else {
            None
        };
        let back = if key.train {
            Some(BackBufs {
                scratch: BlockScratch::new(backend, &block, b, n)?,
                d: [backend.zeros(&[b, n, d])?, backend.zeros(&[b, n, d])?],
                demb: backend.zeros(&[b, p, d])?,
                dpos: interp
                    .as_ref()
                    .map(|_| backend.zeros(&[1 + p, d]))
                    .transpose()?,
                dnorm: key
                    .final_norm
                    .then(|| backend.zeros(&[b, n, d]))
                    .transpose()?,
            })
        } else {
            None
        };
        Ok(Arena {
            run,
            patches: backend.zeros_activation(&[b, p, cfg.in_chans * cfg.patch * cfg.patch])?,
            emb: backend.zeros_activation(&[b, p, d])?,
            interp,
            stream,
            slots,
            acts,
            norm,
            back,
            ready: false,
            key,
        })
    }
}

/// Slot holding the input of block `i`, given each block's output slot.
pub(super) fn input_slot(slots: &[usize], i: usize) -> usize {
    if i == 0 {
        0
    } else {
        slots[i - 1]
    }
}

/// `(name, parameter, its gradient)`, as an optimiser step takes them.
pub type ParamGrad<'a, B> = (String, &'a mut Tensor<B>, &'a Tensor<B>);

/// A DINOv2-style ViT on a backend: a frozen teacher (no gradients, activations shared
/// between blocks) or a trainable student (gradients, every block's activations kept).
pub struct Vit<B: Backend> {
    pub(super) cfg: VitConfig,
    pub(super) params: VitParams<B>,
    pub(super) grads: Option<VitGrads<B>>,
    pub(super) arena: Option<Arena<B>>,
    /// The interpolated position table no longer matches `params` (new arena, or the
    /// parameters were handed out mutably).
    pub(super) pos_stale: bool,
}

impl<B: Backend> Vit<B> {
    /// A model for inference only: `forward` with `train: true` and `backward` are errors.
    /// Its weights move to the backend's frozen storage ([`Backend::freeze`]: bf16 on a GPU).
    pub fn frozen(backend: &B, cfg: VitConfig, mut params: VitParams<B>) -> Result<Self> {
        cfg.validate()?;
        for (_, t) in params.named_mut() {
            let held = std::mem::replace(t, backend.zeros(&[0])?);
            *t = backend.freeze(held)?;
        }
        Ok(Vit {
            cfg,
            params,
            grads: None,
            arena: None,
            pos_stale: true,
        })
    }

    /// A trainable model with zeroed gradient accumulators.
    pub fn trainable(backend: &B, cfg: VitConfig, params: VitParams<B>) -> Result<Self> {
        cfg.validate()?;
        let grads = Some(VitParams::zeros(backend, &cfg)?);
        Ok(Vit {
            cfg,
            params,
            grads,
            arena: None,
            pos_stale: true,
        })
    }

    pub fn config(&self) -> &VitConfig {
        &self.cfg
    }
    pub fn params(&self) -> &VitParams<B> {
        &self.params
    }
    pub fn params_mut(&mut self) -> &mut VitParams<B> {
        self.pos_stale = true;
        &mut self.params
    }
    /// The gradient accumulators, `None` for a frozen model.
    pub fn grads(&self) -> Option<&VitGrads<B>> {
        self.grads.as_ref()
    }

    /// `(canonical name, tensor)` in checkpoint order (held shapes, see `vit::params`).
    pub fn named_params(&self) -> Vec<(String, &Tensor<B>)> {
        self.params.named()
    }
    pub fn named_params_mut(&mut self) -> Vec<(String, &mut Tensor<B>)> {
        self.pos_stale = true;
        self.params.named_mut()
    }
    /// Gradients under the same names; an error for a frozen model.
    pub fn named_grads(&self) -> Result<Vec<(String, &Tensor<B>)>> {
        Ok(self.grads.as_ref().ok_or_else(frozen_err)?.named())
    }
    pub fn named_grads_mut(&mut self) -> Result<Vec<(String, &mut Tensor<B>)>> {
        Ok(self.grads.as_mut().ok_or_else(frozen_err)?.named_mut())
    }
    /// `(name, parameter, its gradient)` for an optimiser step.
    pub fn params_and_grads_mut(&mut self) -> Result<Vec<ParamGrad<'_, B>>> {
        let grads = self.grads.as_ref().ok_or_else(frozen_err)?;
        self.pos_stale = true;
        Ok(self
            .params
            .named_mut()
            .into_iter()
            .zip(grads.named())
            .map(|((n, p), (_, g))| (n, p, g))
            .collect())
    }
    /// Zero every gradient accumulator (the start of a step).
    pub fn zero_grads(&mut self, backend: &B) -> Result<()> {
        for (_, g) in self.named_grads_mut()? {
            backend.fill(g, 0.0)?;
        }
        Ok(())
    }

    /// Make sure the arena fits `key`, rebuilding it (old buffers freed first) if not.
    pub(super) fn arena_for(&mut self, backend: &B, key: ArenaKey) -> Result<()> {
        if self.arena.as_ref().map(|a| &a.key) != Some(&key) {
            self.arena = None;
            self.arena = Some(Arena::new(backend, &self.cfg, key)?);
            self.pos_stale = true;
        }
        Ok(())
    }
}

pub(super) fn frozen_err() -> Error {
    Error::Invalid(
        "this ViT is frozen: it keeps no gradients (build it with Vit::trainable)".into(),
    )
}
