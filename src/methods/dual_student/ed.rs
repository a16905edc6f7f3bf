//! The encoder-decoder (ED) student: Dinomaly (research/methods.md §2.4-2.8), written as a
//! flat list of backend ops over buffers allocated once per (batch, tokens, mode).
//!
//! Forward (`x [B, N, D]` = mean of the teacher taps, all tokens or patches only):
//! ```text
//! a0   = drop(x)                         dropout_fwd      (train only)
//! fc1  = a0 · fc1_wᵀ                     matmul NT        [B, N, 4D]
//! hid  = gelu(fc1 + fc1_b)               bias_gelu_fwd
//! hidd = drop(hid)                       dropout_fwd      (train only)
//! fc2  = hidd · fc2_wᵀ + fc2_b           matmul NT        [B, N, D]
//! z    = drop(fc2)                       dropout_fwd      (train only)
//! out_j = block_j(out_{j-1}), out_-1 = z block_forward (linear attention, LN eps 1e-8)
//! de_g = mean_{i ∈ group g} out_{mirror(i)}   group_mean_fwd  (mirror(i) = depth-1-i)
//! de_g patches = de_g[:, prefix:]        slice_tokens     (when prefix tokens are kept)
//! L    = mean_g global_cos(te_g, de_g)   global_cosine_fwd
//! ```
//! The backward runs the list in reverse; the hard-mining rescale of easy positions is part
//! of `global_cosine_bwd`.

use super::config::DualStudentConfig;
use crate::device::rng::mix64;
use crate::device::{Backend, Layout, Tensor};
use crate::error::{Error, Result};
use crate::tensor::{HostTensor, Rng};
use crate::train::params::{Param, ParamMut};
use crate::vit::{
    block_backward, block_forward, trunc_normal, Attn, BlockActs, BlockConfig, BlockGrads,
    BlockParams, BlockScratch, Init,
};
use std::collections::HashMap;

/// The noisy bottleneck MLP (Dinomaly's `bMlp`): D → 4D → D with dropout on the input, the
/// hidden layer and the output.
struct Bottleneck<B: Backend> {
    fc1_w: Param<B>,
    fc1_b: Param<B>,
    fc2_w: Param<B>,
    fc2_b: Param<B>,
}

/// Buffers of one (batch, tokens, mode).
struct Arena<B: Backend> {
    key: (usize, usize, bool),
    a0: Tensor<B>,
    fc1: Tensor<B>,
    hid: Tensor<B>,
    hidd: Tensor<B>,
    fc2: Tensor<B>,
    z: Tensor<B>,
    /// One set per block when training, one shared set otherwise.
    acts: Vec<BlockActs<B>>,
    outs: Vec<Tensor<B>>,
    /// Per group: all tokens `[B, N, D]`, and the patches `[B, P, D]` when N > P.
    groups: Vec<Tensor<B>>,
    groups_patch: Vec<Tensor<B>>,
    loss: Vec<Tensor<B>>,
    point_dist: Vec<Tensor<B>>,
    stats: Vec<Tensor<B>>,
    back: Option<Back<B>>,
}

struct Back<B: Backend> {
    d_patch: Tensor<B>,
    d_group: Tensor<B>,
    d_outs: Vec<Tensor<B>>,
    dx: Tensor<B>,
    scratch: BlockScratch<B>,
    d_fc2: Tensor<B>,
    d_hid: Tensor<B>,
    d_fc1: Tensor<B>,
}

pub struct EdStudent<B: Backend> {
    dim: usize,
    dropout: f32,
    /// Tokens before the patches in the student's sequence (0 when only patches go in).
    prefix: usize,
    /// Decoder output indices of each group, after the mirror pairing.
    groups: Vec<Vec<usize>>,
    block_cfg: BlockConfig,
    bott: Bottleneck<B>,
    blocks: Vec<BlockParams<B>>,
    grads: Vec<BlockGrads<B>>,
    arena: Option<Arena<B>>,
}

/// Dropout-mask seeds of the three bottleneck dropouts at one training step.
fn dropout_seeds(step_seed: u64) -> [u64; 3] {
    [1u64, 2, 3].map(|site| mix64(step_seed ^ site.wrapping_mul(0xD1B5_4A32_D192_ED03)))
}

impl<B: Backend> EdStudent<B> {
    /// A freshly initialised student (Dinomaly §2.7: linear weights truncated normal, biases
    /// 0, LayerNorm 1/0) for a teacher of width `dim` and `heads` heads; `prefix` is the
    /// number of class/register tokens in the student's input (0 when they are dropped).
    pub fn init(
        backend: &B,
        cfg: &DualStudentConfig,
        dim: usize,
        heads: usize,
        prefix: usize,
        rng: &mut Rng,
    ) -> Result<Self> {
        let hidden = 4 * dim;
        let init = Init {
            std: cfg.init_std,
            bound: cfg.init_bound,
            layerscale: 1.0,
        };
        let w = |rng: &mut Rng, d: &[usize]| trunc_normal(rng, d, init.std, init.bound);
        let bott = Bottleneck {
            fc1_w: Param::new(backend, "ed.bottleneck.fc1.weight", &w(rng, &[hidden, dim]))?,
            fc1_b: Param::new(
                backend,
                "ed.bottleneck.fc1.bias",
                &HostTensor::zeros([hidden]),
            )?,
            fc2_w: Param::new(backend, "ed.bottleneck.fc2.weight", &w(rng, &[dim, hidden]))?,
            fc2_b: Param::new(backend, "ed.bottleneck.fc2.bias", &HostTensor::zeros([dim]))?,
        };
        let block_cfg = BlockConfig {
            dim,
            heads,
            mlp_hidden: hidden,
            attn: Attn::Linear {
                eps: cfg.decoder_attn_eps,
            },
            layerscale: false,
            ln_eps: cfg.decoder_ln_eps,
        };
        let blocks = (0..cfg.decoder_depth)
            .map(|_| BlockParams::init(backend, block_cfg, &init, rng))
            .collect::<Result<Vec<_>>>()?;
        Self::assemble(backend, cfg, dim, prefix, block_cfg, bott, blocks)
    }

    fn assemble(
        backend: &B,
        cfg: &DualStudentConfig,
        dim: usize,
        prefix: usize,
        block_cfg: BlockConfig,
        bott: Bottleneck<B>,
        blocks: Vec<BlockParams<B>>,
    ) -> Result<Self> {
        let depth = blocks.len();
        let grads = blocks
            .iter()
            .map(|b| b.zeros_like(backend))
            .collect::<Result<Vec<_>>>()?;
        let pair = |i: usize| if cfg.mirror { depth - 1 - i } else { i };
        Ok(EdStudent {
            dim,
            dropout: cfg.bottleneck_dropout,
            prefix,
            groups: cfg
                .groups
                .iter()
                .map(|g| g.iter().map(|&i| pair(i)).collect())
                .collect(),
            block_cfg,
            bott,
            blocks,
            grads,
            arena: None,
        })
    }

    /// Load the student's tensors (names `ed.…`) from a checkpoint map.
    pub fn from_host(
        backend: &B,
        cfg: &DualStudentConfig,
        dim: usize,
        heads: usize,
        prefix: usize,
        map: &HashMap<String, HostTensor>,
    ) -> Result<Self> {
        let mut s = Self::init(backend, cfg, dim, heads, prefix, &mut Rng::new(0))?;
        let wanted: HashMap<String, HostTensor> = map
            .iter()
            .filter(|(k, _)| k.starts_with("ed."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        crate::train::params::load_values(
            backend,
            &mut s.params_mut(),
            &wanted,
            "checkpoint ED student",
        )?;
        Ok(s)
    }

    /// Parameters and gradients in checkpoint order: bottleneck, then decoder blocks.
    pub fn params_mut(&mut self) -> Vec<ParamMut<'_, B>> {
        let b = &mut self.bott;
        let mut v = vec![
            b.fc1_w.view(),
            b.fc1_b.view(),
            b.fc2_w.view(),
            b.fc2_b.view(),
        ];
        for (j, (p, g)) in self.blocks.iter_mut().zip(self.grads.iter()).enumerate() {
            for ((n, value), (_, grad)) in p.named_mut().into_iter().zip(g.named()) {
                v.push(ParamMut {
                    name: format!("ed.decoder.{j}.{n}"),
                    value,
                    grad,
                });
            }
        }
        v
    }

    /// Every gradient accumulator, for zeroing and clipping.
    pub fn grads_mut(&mut self) -> Vec<&mut Tensor<B>> {
        let b = &mut self.bott;
        let mut v = vec![
            &mut b.fc1_w.grad,
            &mut b.fc1_b.grad,
            &mut b.fc2_w.grad,
            &mut b.fc2_b.grad,
        ];
        for g in self.grads.iter_mut() {
            v.extend(g.named_mut().into_iter().map(|(_, t)| t));
        }
        v
    }

    fn arena(&mut self, backend: &B, batch: usize, tokens: usize, train: bool) -> Result<()> {
        let key = (batch, tokens, train);
        if self.arena.as_ref().map(|a| a.key) == Some(key) {
            return Ok(());
        }
        self.arena = None;
        let (d, h, depth, ng) = (self.dim, 4 * self.dim, self.blocks.len(), self.groups.len());
        let patches = tokens - self.prefix;
        let z = |w: usize| backend.zeros(&[batch, tokens, w]);
        let zp = || backend.zeros(&[batch, patches, d]);
        let keep = self.prefix > 0;
        self.arena = Some(Arena {
            key,
            a0: if train { z(d)? } else { backend.zeros(&[1])? },
            fc1: z(h)?,
            hid: z(h)?,
            hidd: if train { z(h)? } else { backend.zeros(&[1])? },
            fc2: z(d)?,
            z: if train { z(d)? } else { backend.zeros(&[1])? },
            acts: many(if train { depth } else { 1 }, || {
                BlockActs::new(backend, &self.block_cfg, batch, tokens)
            })?,
            outs: many(depth, || z(d))?,
            groups: many(ng, || z(d))?,
            groups_patch: if keep { many(ng, zp)? } else { vec![] },
            loss: many(ng, || backend.zeros(&[1]))?,
            point_dist: many(ng, || backend.zeros(&[batch, patches]))?,
            stats: many(ng, || backend.zeros(&[batch, 3]))?,
            back: if train {
                Some(Back {
                    d_patch: zp()?,
                    d_group: z(d)?,
                    d_outs: many(depth, || z(d))?,
                    dx: z(d)?,
                    scratch: BlockScratch::new(backend, &self.block_cfg, batch, tokens)?,
                    d_fc2: z(d)?,
                    d_hid: z(h)?,
                    d_fc1: z(h)?,
                })
            } else {
                None
            },
        });
        Ok(())
    }

    /// Run bottleneck and decoder on `x [B, N, D]`. `step_seed` = Some(seed of this training
    /// step) turns dropout on and keeps what the backward needs; None is inference.
    pub fn forward(&mut self, backend: &B, x: &Tensor<B>, step_seed: Option<u64>) -> Result<()> {
        let [batch, tokens, d] = dims3("ED student input", x)?;
        if d != self.dim || tokens <= self.prefix {
            return Err(Error::Invalid(format!(
                "ED student: input {:?} does not fit width {} with {} prefix tokens",
                x.dims(),
                self.dim,
                self.prefix
            )));
        }
        let train = step_seed.is_some();
        self.arena(backend, batch, tokens, train)?;
        let a = self.arena.as_mut().ok_or_else(no_arena)?;
        let b = &self.bott;
        let p = self.dropout;
        let [s0, s1, s2] = dropout_seeds(step_seed.unwrap_or(0));
        let input = if train {
            backend.dropout_fwd(x, p, s0, &mut a.a0)?;
            &a.a0
        } else {
            x
        };
        backend.matmul(input, &b.fc1_w.value, None, &mut a.fc1, Layout::NT, false)?;
        backend.bias_gelu_fwd(&a.fc1, &b.fc1_b.value, &mut a.hid)?;
        let hid = if train {
            backend.dropout_fwd(&a.hid, p, s1, &mut a.hidd)?;
            &a.hidd
        } else {
            &a.hid
        };
        backend.matmul(
            hid,
            &b.fc2_w.value,
            Some(&b.fc2_b.value),
            &mut a.fc2,
            Layout::NT,
            false,
        )?;
        if train {
            backend.dropout_fwd(&a.fc2, p, s2, &mut a.z)?;
        }
        for (j, blk) in self.blocks.iter().enumerate() {
            let acts = &mut a.acts[if train { j } else { 0 }];
            let (done, rest) = a.outs.split_at_mut(j);
            let input = match j {
                0 if train => &a.z,
                0 => &a.fc2,
                _ => &done[j - 1],
            };
            block_forward(backend, blk, acts, input, &mut rest[0])?;
        }
        for (g, members) in self.groups.iter().enumerate() {
            let xs: Vec<&Tensor<B>> = members.iter().map(|&i| &a.outs[i]).collect();
            backend.group_mean_fwd(&xs, &mut a.groups[g])?;
            if self.prefix > 0 {
                backend.slice_tokens(&a.groups[g], self.prefix, &mut a.groups_patch[g])?;
            }
        }
        Ok(())
    }

    /// The student's group features (patch tokens `[B, P, D]`) of the last forward.
    pub fn group_patches(&self) -> Result<Vec<&Tensor<B>>> {
        let a = self.arena.as_ref().ok_or_else(no_arena)?;
        Ok(if self.prefix > 0 {
            a.groups_patch.iter().collect()
        } else {
            a.groups.iter().collect()
        })
    }

    /// Dinomaly's global cosine loss of the last forward against the teacher's group
    /// features `teacher[g] [B, P, D]`: the mean over groups of each group's loss.
    pub fn loss(&mut self, backend: &B, teacher: &[&Tensor<B>]) -> Result<f64> {
        self.check_groups(teacher)?;
        let a = self.arena.as_mut().ok_or_else(no_arena)?;
        let mut total = 0.0;
        for (g, t) in teacher.iter().enumerate() {
            let student = if self.prefix > 0 {
                &a.groups_patch[g]
            } else {
                &a.groups[g]
            };
            backend.global_cosine_fwd(
                t,
                student,
                &mut a.loss[g],
                &mut a.point_dist[g],
                &mut a.stats[g],
            )?;
            total += backend.download(&a.loss[g])?.data[0] as f64;
        }
        Ok(total / teacher.len() as f64)
    }

    fn check_groups(&self, teacher: &[&Tensor<B>]) -> Result<()> {
        if teacher.len() != self.groups.len() {
            return Err(Error::Invalid(format!(
                "ED student: {} teacher groups given, the student has {}",
                teacher.len(),
                self.groups.len()
            )));
        }
        Ok(())
    }

    /// Add the gradients of the last [`EdStudent::loss`] into the parameter gradients, with
    /// hard mining fraction `hm_p` and easy-position factor `hm_factor`. `x` is the forward's
    /// input and `step_seed` its seed (the dropout masks are recomputed from it).
    pub fn backward(
        &mut self,
        backend: &B,
        teacher: &[&Tensor<B>],
        hm_p: f32,
        hm_factor: f32,
        step_seed: u64,
    ) -> Result<()> {
        self.check_groups(teacher)?;
        let a = self.arena.as_mut().ok_or_else(no_arena)?;
        let bk = a.back.as_mut().ok_or_else(|| {
            Error::Invalid("ED student: backward needs a training forward first".into())
        })?;
        // The input is the frozen teacher's and needs no gradient, so its mask (site 0) is
        // not replayed.
        let (p, [_, s1, s2]) = (self.dropout, dropout_seeds(step_seed));
        for t in bk.d_outs.iter_mut() {
            backend.fill(t, 0.0)?;
        }
        let dloss = 1.0 / teacher.len() as f32;
        for (g, members) in self.groups.iter().enumerate() {
            let student = if self.prefix > 0 {
                &a.groups_patch[g]
            } else {
                &a.groups[g]
            };
            backend.global_cosine_bwd(
                teacher[g],
                student,
                &a.point_dist[g],
                &a.stats[g],
                hm_p,
                hm_factor,
                dloss,
                &mut bk.d_patch,
            )?;
            let d_group = if self.prefix > 0 {
                backend.fill(&mut bk.d_group, 0.0)?;
                backend.unslice_tokens_add(&bk.d_patch, self.prefix, &mut bk.d_group)?;
                &bk.d_group
            } else {
                &bk.d_patch
            };
            let mut targets = pick_mut(&mut bk.d_outs, members)?;
            backend.group_mean_bwd(d_group, &mut targets)?;
        }
        // Decoder, last block first; block j's input gradient adds into block j-1's output
        // gradient (which already holds that output's share of the loss).
        for j in (0..self.blocks.len()).rev() {
            let input = if j == 0 { &a.z } else { &a.outs[j - 1] };
            block_backward(
                backend,
                &self.blocks[j],
                &a.acts[j],
                input,
                &bk.d_outs[j],
                &mut bk.dx,
                &mut self.grads[j],
                &mut bk.scratch,
            )?;
            if j > 0 {
                backend.axpy(1.0, &bk.dx, &mut bk.d_outs[j - 1])?;
            }
        }
        // Bottleneck: z = drop(fc2), fc2 = drop(hid)·W2ᵀ + b2, hid = gelu(a0·W1ᵀ + b1).
        // d_hid holds d hidd, then d (fc1 + b1); d_fc1 holds d hid in between.
        let b = &mut self.bott;
        backend.dropout_bwd(&bk.dx, p, s2, &mut bk.d_fc2)?;
        backend.matmul(
            &bk.d_fc2,
            &b.fc2_w.value,
            None,
            &mut bk.d_hid,
            Layout::NN,
            false,
        )?;
        backend.matmul(
            &bk.d_fc2,
            &a.hidd,
            None,
            &mut b.fc2_w.grad,
            Layout::TN,
            true,
        )?;
        backend.bias_grad(&bk.d_fc2, &mut b.fc2_b.grad)?;
        backend.dropout_bwd(&bk.d_hid, p, s1, &mut bk.d_fc1)?;
        backend.bias_gelu_bwd(
            &bk.d_fc1,
            &a.fc1,
            &b.fc1_b.value,
            &mut bk.d_hid,
            &mut b.fc1_b.grad,
        )?;
        backend.matmul(&bk.d_hid, &a.a0, None, &mut b.fc1_w.grad, Layout::TN, true)
    }
}

/// `n` results of `f`.
fn many<T>(n: usize, f: impl Fn() -> Result<T>) -> Result<Vec<T>> {
    (0..n).map(|_| f()).collect()
}

/// `&mut v[i]` for each (distinct) index in `idx`.
fn pick_mut<'a, T>(v: &'a mut [T], idx: &[usize]) -> Result<Vec<&'a mut T>> {
    let len = v.len();
    let mut out: Vec<(usize, &mut T)> = v
        .iter_mut()
        .enumerate()
        .filter(|(i, _)| idx.contains(i))
        .collect();
    if out.len() != idx.len() {
        return Err(Error::Invalid(format!(
            "group indices {idx:?} repeat or exceed {len}"
        )));
    }
    out.sort_by_key(|(i, _)| idx.iter().position(|j| j == i));
    Ok(out.into_iter().map(|(_, t)| t).collect())
}

fn dims3<B: Backend>(what: &str, t: &Tensor<B>) -> Result<[usize; 3]> {
    match t.dims() {
        &[a, b, c] => Ok([a, b, c]),
        d => Err(Error::Invalid(format!(
            "{what}: expected [B, N, D], got {d:?}"
        ))),
    }
}

fn no_arena() -> Error {
    Error::Invalid("ED student: no forward has run yet".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::cpu::Cpu;

    /// Loss of `ed` on `x` against `t` with fixed dropout masks.
    fn loss(b: &Cpu, ed: &mut EdStudent<Cpu>, x: &Tensor<Cpu>, t: &[&Tensor<Cpu>]) -> f64 {
        ed.forward(b, x, Some(77)).unwrap();
        ed.loss(b, t).unwrap()
    }

    /// The backward against central finite differences of the forward, through dropout (the
    /// masks are replayed from the seed), bottleneck, decoder and the mirrored groups. The
    /// weights are drawn 20× larger than Dinomaly's so every path moves the loss well above
    /// f32 rounding; each tensor is checked at its largest gradient entries.
    #[test]
    fn gradients_match_finite_differences() {
        let b = Cpu::new();
        let cfg = DualStudentConfig {
            taps: vec![0, 1, 2],
            groups: vec![vec![0], vec![1, 2]],
            decoder_depth: 3,
            init_std: 0.2,
            init_bound: 0.6,
            ..Default::default()
        };
        for prefix in [0, 1] {
            let mut rng = Rng::new(3 + prefix as u64);
            let mut ed = EdStudent::init(&b, &cfg, 16, 2, prefix, &mut rng).unwrap();
            let x = b
                .upload(&rng.tensor([2, 9 + prefix, 16], -1.0, 1.0))
                .unwrap();
            let t: Vec<Tensor<Cpu>> = (0..2)
                .map(|_| b.upload(&rng.tensor([2, 9, 16], -1.0, 1.0)).unwrap())
                .collect();
            let tr: Vec<&Tensor<Cpu>> = t.iter().collect();
            loss(&b, &mut ed, &x, &tr);
            for g in ed.grads_mut() {
                b.fill(g, 0.0).unwrap();
            }
            ed.backward(&b, &tr, 0.0, 0.1, 77).unwrap();
            let names = [
                "ed.bottleneck.fc1.weight",
                "ed.bottleneck.fc2.bias",
                "ed.decoder.0.attn.qkv.weight",
                "ed.decoder.1.norm1.weight",
                "ed.decoder.2.mlp.fc2.weight",
                "ed.decoder.2.norm2.bias",
            ];
            for name in names {
                let (grad, value) = {
                    let ps = ed.params_mut();
                    let p = ps.iter().find(|p| p.name == name).unwrap();
                    (b.download(p.grad).unwrap(), b.download(p.value).unwrap())
                };
                let mut order: Vec<usize> = (0..grad.numel()).collect();
                order.sort_by(|&i, &j| grad.data[j].abs().total_cmp(&grad.data[i].abs()));
                for &i in &order[..3] {
                    let h = 1e-2f32;
                    let mut at = |delta: f32| {
                        let mut v = value.clone();
                        v.data[i] += delta;
                        {
                            let mut ps = ed.params_mut();
                            let p = ps.iter_mut().find(|p| p.name == name).unwrap();
                            *p.value = b.upload(&v).unwrap();
                        }
                        loss(&b, &mut ed, &x, &tr)
                    };
                    let fd = (at(h) - at(-h)) / (2.0 * h as f64);
                    at(0.0);
                    let an = grad.data[i] as f64;
                    assert!(
                        (fd - an).abs() <= 0.01 * an.abs() + 1e-5,
                        "prefix {prefix} {name}[{i}]: analytic {an}, numeric {fd}"
                    );
                }
            }
        }
    }
}
