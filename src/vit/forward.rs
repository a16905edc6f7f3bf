//! The ViT forward, as a flat list of ops over the arena's named buffers:
//! ```text
//! patches = patchify(images)                      [B, P, C·p·p]
//! emb     = patches · patch_wᵀ + patch_b          matmul NT        [B, P, D]
//! pos     = Mᵀᵀ · pos_embed                       matmul TN (only when the grid is resized)
//! x0      = [cls + pos₀, registers, emb + pos₁..] embed_tokens_fwd [B, N, D]
//! x_{i+1} = block_i(x_i)                          block_forward, i < run
//! y       = LN(x_depth)                           layernorm_fwd (final_norm only)
//! cls, patch = y[:, 0], y[:, 1+R..]               slice_tokens
//! ```

use super::block::block_forward;
use super::model::{frozen_err, input_slot, ArenaKey, ForwardSpec, Vit, VitOutput};
use crate::device::{Backend, Layout, Tensor};
use crate::error::{Error, Result};

/// `(&v[i], &mut v[o])` for two different slots.
pub(super) fn pair<T>(v: &mut [T], i: usize, o: usize) -> Result<(&T, &mut T)> {
    if i == o || i.max(o) >= v.len() {
        return Err(Error::Invalid(format!(
            "internal: buffer slots {i} and {o} of {} collide",
            v.len()
        )));
    }
    if i < o {
        let (lo, hi) = v.split_at_mut(o);
        Ok((&lo[i], &mut hi[0]))
    } else {
        let (lo, hi) = v.split_at_mut(i);
        Ok((&hi[0], &mut lo[o]))
    }
}

impl<B: Backend> Vit<B> {
    /// Run the ViT on `images [B, C, H, W]` (H, W multiples of the patch) and return the
    /// requested outputs. Buffers are allocated on the first call for a given (batch,
    /// resolution, spec) and reused while those stay the same.
    pub fn forward(
        &mut self,
        backend: &B,
        images: &Tensor<B>,
        spec: &ForwardSpec,
    ) -> Result<VitOutput<'_, B>> {
        let key = self.key_for(images, spec)?;
        self.arena_for(backend, key)?;
        let (cfg, prm) = (&self.cfg, &self.params);
        let a = self
            .arena
            .as_mut()
            .ok_or_else(|| Error::Invalid("internal: no arena".into()))?;
        a.ready = false;

        backend.patchify(images, cfg.patch, &mut a.patches)?;
        backend.matmul(
            &a.patches,
            &prm.patch_w,
            Some(&prm.patch_b),
            &mut a.emb,
            Layout::NT,
            false,
        )?;
        let pos = match a.interp.as_mut() {
            Some((mt, pos)) => {
                if self.pos_stale {
                    backend.matmul(mt, &prm.pos, None, pos, Layout::TN, false)?;
                }
                &*pos
            }
            None => &prm.pos,
        };
        self.pos_stale = false;
        backend.embed_tokens_fwd(
            &a.emb,
            &prm.cls,
            pos,
            prm.registers.as_ref(),
            &mut a.stream[0],
        )?;

        for (i, block) in prm.blocks.iter().take(a.run).enumerate() {
            let (from, to) = (input_slot(&a.slots, i), a.slots[i]);
            let (x, out) = pair(&mut a.stream, from, to)?;
            let acts = &mut a.acts[if spec.train { i } else { 0 }];
            block_forward(backend, block, acts, x, out)?;
        }

        if let Some(n) = a.norm.as_mut() {
            let last = &a.stream[input_slot(&a.slots, a.run)];
            backend.layernorm_fwd(
                last,
                &prm.norm_w,
                &prm.norm_b,
                cfg.ln_eps,
                &mut n.y,
                &mut n.mean,
                &mut n.rstd,
            )?;
            backend.slice_tokens(&n.y, 0, &mut n.cls)?;
            backend.slice_tokens(&n.y, 1 + cfg.registers, &mut n.patch)?;
        }
        a.ready = spec.train;

        let a = &*a;
        let taps = spec.taps.iter().map(|&t| &a.stream[a.slots[t]]).collect();
        Ok(VitOutput {
            taps,
            cls_norm: a.norm.as_ref().map(|n| &n.cls),
            patch_norm: a.norm.as_ref().map(|n| &n.patch),
        })
    }

    fn key_for(&self, images: &Tensor<B>, spec: &ForwardSpec) -> Result<ArenaKey> {
        let cfg = &self.cfg;
        let (batch, h, w) = match *images.dims() {
            [b, c, h, w] if c == cfg.in_chans && b > 0 => (b, h, w),
            _ => {
                return Err(Error::Invalid(format!(
                    "ViT input is {:?}, expected [batch, {}, H, W]",
                    images.dims(),
                    cfg.in_chans
                )))
            }
        };
        cfg.grid(h, w)?;
        if let Some(&t) = spec.taps.iter().find(|&&t| t >= cfg.depth) {
            return Err(Error::Invalid(format!(
                "tap {t} is past the last block ({} blocks)",
                cfg.depth
            )));
        }
        if spec.taps.is_empty() && !spec.final_norm {
            return Err(Error::Invalid(
                "ViT forward: no taps and no final norm requested".into(),
            ));
        }
        if spec.train && self.grads.is_none() {
            return Err(frozen_err());
        }
        let mut taps = spec.taps.to_vec();
        taps.sort_unstable();
        taps.dedup();
        Ok(ArenaKey {
            batch,
            h,
            w,
            taps,
            final_norm: spec.final_norm,
            train: spec.train,
        })
    }
}
