//! One pre-LN transformer block, forward and backward, as flat lists of backend ops over
//! named buffers.
//!
//! Forward (`x`, `out` are `[B, N, D]`):
//! ```text
//! ln1   = LN1(x)                    layernorm_fwd   (saves ln1_mean, ln1_rstd)
//! qkv   = ln1 · qkv_wᵀ + qkv_b      matmul NT
//! att   = attention(qkv)            attention_fwd (saves lse) | linear_attention_fwd
//! proj  = att · proj_wᵀ + proj_b    matmul NT
//! x1    = x + ls1 ⊙ proj            residual_fwd
//! ln2   = LN2(x1)                   layernorm_fwd   (saves ln2_mean, ln2_rstd)
//! fc1   = ln2 · fc1_wᵀ              matmul NT (bias goes into the fused GELU)
//! hid   = gelu(fc1 + fc1_b)         bias_gelu_fwd
//! fc2   = hid · fc2_wᵀ + fc2_b      matmul NT
//! out   = x1 + ls2 ⊙ fc2            residual_fwd
//! ```
//! The backward runs the same list in reverse (see [`block_backward`]).

use super::config::{Attn, BlockConfig};
use super::params::{BlockGrads, BlockParams};
use crate::device::{Backend, Layout, Tensor};
use crate::error::Result;

/// The activations one block's forward writes: everything its backward reads. Allocated once
/// per (batch, tokens); a frozen model shares one set between all its blocks. The `[B, N, ·]`
/// activations come from [`Backend::zeros_activation`] (bf16 on a GPU); the row statistics
/// (layer-norm mean and rstd, attention's lse) stay f32, since each scales a whole row.
pub struct BlockActs<B: Backend> {
    pub ln1: Tensor<B>,
    pub ln1_mean: Tensor<B>,
    pub ln1_rstd: Tensor<B>,
    pub qkv: Tensor<B>,
    pub att: Tensor<B>,
    /// Softmax attention only: log-sum-exp of each score row, `[B, H, N]`.
    pub lse: Option<Tensor<B>>,
    pub proj: Tensor<B>,
    pub x1: Tensor<B>,
    pub ln2: Tensor<B>,
    pub ln2_mean: Tensor<B>,
    pub ln2_rstd: Tensor<B>,
    pub fc1: Tensor<B>,
    pub hid: Tensor<B>,
    pub fc2: Tensor<B>,
}

impl<B: Backend> BlockActs<B> {
    pub fn new(backend: &B, c: &BlockConfig, batch: usize, tokens: usize) -> Result<Self> {
        let (d, h) = (c.dim, c.mlp_hidden);
        let z = |w: usize| backend.zeros_activation(&[batch, tokens, w]);
        let rows = || backend.zeros(&[batch * tokens]);
        Ok(BlockActs {
            ln1: z(d)?,
            ln1_mean: rows()?,
            ln1_rstd: rows()?,
            qkv: z(3 * d)?,
            att: z(d)?,
            lse: match c.attn {
                Attn::Softmax => Some(backend.zeros(&[batch, c.heads, tokens])?),
                Attn::Linear { .. } => None,
            },
            proj: z(d)?,
            x1: z(d)?,
            ln2: z(d)?,
            ln2_mean: rows()?,
            ln2_rstd: rows()?,
            fc1: z(h)?,
            hid: z(h)?,
            fc2: z(d)?,
        })
    }
}

/// Gradient buffers of one block's backward. They hold nothing between calls, so one set
/// serves every block of a model.
pub struct BlockScratch<B: Backend> {
    /// `[B, N, D]`: d fc2, then d ln2, then d proj, then d ln1.
    pub d_a: Tensor<B>,
    /// `[B, N, D]`: d att.
    pub d_b: Tensor<B>,
    /// `[B, N, hidden]`: d hid and d fc1.
    pub d_hid: Tensor<B>,
    pub d_fc1: Tensor<B>,
    /// `[B, N, 3·D]`.
    pub d_qkv: Tensor<B>,
}

impl<B: Backend> BlockScratch<B> {
    pub fn new(backend: &B, c: &BlockConfig, batch: usize, tokens: usize) -> Result<Self> {
        let (d, h) = (c.dim, c.mlp_hidden);
        let z = |w: usize| backend.zeros(&[batch, tokens, w]);
        Ok(BlockScratch {
            d_a: z(d)?,
            d_b: z(d)?,
            d_hid: z(h)?,
            d_fc1: z(h)?,
            d_qkv: z(3 * d)?,
        })
    }
}

/// `out = block(x)`, keeping in `acts` what [`block_backward`] needs.
pub fn block_forward<B: Backend>(
    backend: &B,
    p: &BlockParams<B>,
    acts: &mut BlockActs<B>,
    x: &Tensor<B>,
    out: &mut Tensor<B>,
) -> Result<()> {
    let c = &p.cfg;
    let a = acts;
    backend.layernorm_fwd(
        x,
        &p.norm1_w,
        &p.norm1_b,
        c.ln_eps,
        &mut a.ln1,
        &mut a.ln1_mean,
        &mut a.ln1_rstd,
    )?;
    backend.matmul(
        &a.ln1,
        &p.qkv_w,
        Some(&p.qkv_b),
        &mut a.qkv,
        Layout::NT,
        false,
    )?;
    match (c.attn, a.lse.as_mut()) {
        (Attn::Softmax, Some(lse)) => {
            let scale = (c.head_dim() as f32).powf(-0.5);
            backend.attention_fwd(&a.qkv, c.heads, scale, &mut a.att, lse)?
        }
        (Attn::Linear { eps }, _) => {
            backend.linear_attention_fwd(&a.qkv, c.heads, eps, &mut a.att)?
        }
        (Attn::Softmax, None) => return Err(mismatch()),
    }
    backend.matmul(
        &a.att,
        &p.proj_w,
        Some(&p.proj_b),
        &mut a.proj,
        Layout::NT,
        false,
    )?;
    backend.residual_fwd(x, &a.proj, p.ls1.as_ref(), &mut a.x1)?;
    backend.layernorm_fwd(
        &a.x1,
        &p.norm2_w,
        &p.norm2_b,
        c.ln_eps,
        &mut a.ln2,
        &mut a.ln2_mean,
        &mut a.ln2_rstd,
    )?;
    backend.matmul(&a.ln2, &p.fc1_w, None, &mut a.fc1, Layout::NT, false)?;
    backend.bias_gelu_fwd(&a.fc1, &p.fc1_b, &mut a.hid)?;
    backend.matmul(
        &a.hid,
        &p.fc2_w,
        Some(&p.fc2_b),
        &mut a.fc2,
        Layout::NT,
        false,
    )?;
    backend.residual_fwd(&a.x1, &a.fc2, p.ls2.as_ref(), out)
}

fn mismatch() -> crate::Error {
    crate::Error::Invalid("block activations were allocated for another attention kind".into())
}

/// Backward of [`block_forward`] given its input `x` and the `acts` it saved: `dx` is
/// written, parameter gradients are added into `g`.
#[allow(clippy::too_many_arguments)]
pub fn block_backward<B: Backend>(
    backend: &B,
    p: &BlockParams<B>,
    acts: &BlockActs<B>,
    x: &Tensor<B>,
    dout: &Tensor<B>,
    dx: &mut Tensor<B>,
    g: &mut BlockGrads<B>,
    s: &mut BlockScratch<B>,
) -> Result<()> {
    let c = &p.cfg;
    let a = acts;
    // out = x1 + ls2 ⊙ fc2: d x1 = dout (+ the MLP branch below), d fc2 = ls2 ⊙ dout.
    backend.residual_bwd(dout, &a.fc2, p.ls2.as_ref(), &mut s.d_a, g.ls2.as_mut())?;
    // fc2 = hid · fc2_wᵀ + fc2_b
    backend.matmul(&s.d_a, &p.fc2_w, None, &mut s.d_hid, Layout::NN, false)?;
    backend.matmul(&s.d_a, &a.hid, None, &mut g.fc2_w, Layout::TN, true)?;
    backend.bias_grad(&s.d_a, &mut g.fc2_b)?;
    // hid = gelu(fc1 + fc1_b)
    backend.bias_gelu_bwd(&s.d_hid, &a.fc1, &p.fc1_b, &mut s.d_fc1, &mut g.fc1_b)?;
    // fc1 = ln2 · fc1_wᵀ
    backend.matmul(&s.d_fc1, &p.fc1_w, None, &mut s.d_a, Layout::NN, false)?;
    backend.matmul(&s.d_fc1, &a.ln2, None, &mut g.fc1_w, Layout::TN, true)?;
    // ln2 = LN2(x1); d x1 = dout + LN2ᵀ(d ln2), accumulated in dx.
    backend.copy(dout, dx)?;
    backend.layernorm_bwd(
        &s.d_a,
        &a.x1,
        &p.norm2_w,
        &a.ln2_mean,
        &a.ln2_rstd,
        dx,
        &mut g.norm2_w,
        &mut g.norm2_b,
        true,
    )?;
    // x1 = x + ls1 ⊙ proj
    backend.residual_bwd(dx, &a.proj, p.ls1.as_ref(), &mut s.d_a, g.ls1.as_mut())?;
    // proj = att · proj_wᵀ + proj_b
    backend.matmul(&s.d_a, &p.proj_w, None, &mut s.d_b, Layout::NN, false)?;
    backend.matmul(&s.d_a, &a.att, None, &mut g.proj_w, Layout::TN, true)?;
    backend.bias_grad(&s.d_a, &mut g.proj_b)?;
    // att = attention(qkv)
    match (c.attn, a.lse.as_ref()) {
        (Attn::Softmax, Some(lse)) => {
            let scale = (c.head_dim() as f32).powf(-0.5);
            backend.attention_bwd(&s.d_b, &a.qkv, &a.att, lse, c.heads, scale, &mut s.d_qkv)?
        }
        (Attn::Linear { eps }, _) => {
            backend.linear_attention_bwd(&s.d_b, &a.qkv, c.heads, eps, &mut s.d_qkv)?
        }
        (Attn::Softmax, None) => return Err(mismatch()),
    }
    // qkv = ln1 · qkv_wᵀ + qkv_b
    backend.matmul(&s.d_qkv, &p.qkv_w, None, &mut s.d_a, Layout::NN, false)?;
    backend.matmul(&s.d_qkv, &a.ln1, None, &mut g.qkv_w, Layout::TN, true)?;
    backend.bias_grad(&s.d_qkv, &mut g.qkv_b)?;
    // ln1 = LN1(x); d x = d x1 + LN1ᵀ(d ln1)
    backend.layernorm_bwd(
        &s.d_a,
        x,
        &p.norm1_w,
        &a.ln1_mean,
        &a.ln1_rstd,
        dx,
        &mut g.norm1_w,
        &mut g.norm1_b,
        true,
    )
}
