//! The ViT backward: the forward's op list reversed, written out.
//! ```text
//! d y          = scatter(d cls, d patch)               unslice_tokens_add
//! d x_depth    = LNᵀ(d y)                              layernorm_bwd
//! d x_i        = block_iᵀ(d x_{i+1} + d tap_i)         axpy, block_backward
//! d emb, d cls, d pos (table), d registers              embed_tokens_bwd
//! d pos_embed += Mᵀ · d pos                            matmul NN (resized grid only)
//! d patch_w   += d embᵀ · patches, d patch_b += Σ d emb matmul TN, bias_grad
//! ```
//! The image gradient is not computed: no model here trains its input.

use super::block::block_backward;
use super::forward::pair;
use super::model::{frozen_err, input_slot, OutputGrads, Vit};
use crate::device::{Backend, Layout};
use crate::error::{Error, Result};

impl<B: Backend> Vit<B> {
    /// Add the gradients of a scalar loss, given its gradients with respect to the outputs of
    /// the last forward (which must have run with `train: true`), into the parameter
    /// gradients. Blocks above the highest output with a gradient are skipped.
    pub fn backward(&mut self, backend: &B, dout: &OutputGrads<B>) -> Result<()> {
        let (cfg, prm) = (&self.cfg, &self.params);
        let g = self.grads.as_mut().ok_or_else(frozen_err)?;
        let a = match self.arena.as_mut() {
            Some(a) if a.ready => a,
            _ => {
                return Err(Error::Invalid(
                    "ViT backward needs a forward with train: true before it".into(),
                ))
            }
        };
        if let Some(&(t, _)) = dout.taps.iter().find(|(t, _)| *t >= a.run) {
            return Err(Error::Invalid(format!(
                "backward: block {t} did not run in the last forward (it ran {})",
                a.run
            )));
        }
        let has_norm = dout.cls_norm.is_some() || dout.patch_norm.is_some();
        let top = match dout.taps.iter().map(|(t, _)| *t).max() {
            _ if has_norm => a.run - 1,
            Some(t) => t,
            None => return Ok(()),
        };
        let bk = a
            .back
            .as_mut()
            .ok_or_else(|| Error::Invalid("internal: no backward buffers".into()))?;

        let mut cur = 0;
        match (a.norm.as_ref(), bk.dnorm.as_mut()) {
            (Some(n), Some(dy)) if has_norm => {
                backend.fill(dy, 0.0)?;
                if let Some(d) = dout.cls_norm {
                    backend.unslice_tokens_add(d, 0, dy)?;
                }
                if let Some(d) = dout.patch_norm {
                    backend.unslice_tokens_add(d, 1 + cfg.registers, dy)?;
                }
                let last = &a.stream[a.slots[a.run - 1]];
                let [d0, _] = &mut bk.d;
                backend.layernorm_bwd(
                    dy,
                    last,
                    &prm.norm_w,
                    &n.mean,
                    &n.rstd,
                    d0,
                    &mut g.norm_w,
                    &mut g.norm_b,
                    false,
                )?;
            }
            _ if has_norm => {
                return Err(Error::Invalid(
                    "backward: norm gradients given but the forward ran no final norm".into(),
                ))
            }
            _ => backend.fill(&mut bk.d[0], 0.0)?,
        }

        for i in (0..=top).rev() {
            for (_, d) in dout.taps.iter().filter(|(t, _)| *t == i) {
                backend.axpy(1.0, d, &mut bk.d[cur])?;
            }
            let (dy, dx) = pair(&mut bk.d, cur, 1 - cur)?;
            let x = &a.stream[input_slot(&a.slots, i)];
            block_backward(
                backend,
                &prm.blocks[i],
                &a.acts[i],
                x,
                dy,
                dx,
                &mut g.blocks[i],
                &mut bk.scratch,
            )?;
            cur = 1 - cur;
        }

        let dx0 = &bk.d[cur];
        match (a.interp.as_ref(), bk.dpos.as_mut()) {
            (Some((mt, _)), Some(dpos)) => {
                backend.fill(dpos, 0.0)?;
                backend.embed_tokens_bwd(
                    dx0,
                    &mut bk.demb,
                    &mut g.cls,
                    dpos,
                    g.registers.as_mut(),
                )?;
                backend.matmul(mt, dpos, None, &mut g.pos, Layout::NN, true)?;
            }
            _ => backend.embed_tokens_bwd(
                dx0,
                &mut bk.demb,
                &mut g.cls,
                &mut g.pos,
                g.registers.as_mut(),
            )?,
        }
        backend.matmul(&bk.demb, &a.patches, None, &mut g.patch_w, Layout::TN, true)?;
        backend.bias_grad(&bk.demb, &mut g.patch_b)
    }
}
