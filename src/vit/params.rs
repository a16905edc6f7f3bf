//! Parameters of a block and of a whole ViT, by canonical Meta/timm name: loading from a
//! tensor map, exporting one, random initialisation. Gradients use the same structs.
//!
//! Four embedding tensors are held in the 2-D form the ops take, not their canonical shape
//! (loading accepts either; [`VitParams::to_host`] gives canonical shapes back):
//! `cls_token [D]` (canonical `[1,1,D]`), `pos_embed [1+G², D]` (`[1,1+G²,D]`),
//! `register_tokens [R, D]` (`[1,R,D]`), `patch_embed.proj.weight [D, C·p·p]` (`[D,C,p,p]`).

use super::config::{BlockConfig, VitConfig};
use crate::device::{Backend, Tensor};
use crate::error::{Error, Result};
use crate::tensor::{HostTensor, Rng};
use std::collections::HashMap;

/// Random initialisation of trainable weights.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Init {
    /// Linear weights: normal with this std, redrawn outside `±bound` (absolute, as timm's
    /// `trunc_normal_(std, a, b)`).
    pub std: f32,
    pub bound: f32,
    /// Initial LayerScale gamma.
    pub layerscale: f32,
}

impl Init {
    /// timm / DINOv2: `trunc_normal_(std=0.02)` (bounds ±2, so barely truncated), LayerScale
    /// 1e-5 (DINOv2's training default).
    pub fn vit() -> Self {
        Init {
            std: 0.02,
            bound: 2.0,
            layerscale: 1e-5,
        }
    }
    /// Dinomaly's bottleneck and decoder: `trunc_normal_(std=0.01, a=-0.03, b=0.03)`.
    pub fn dinomaly() -> Self {
        Init {
            std: 0.01,
            bound: 0.03,
            layerscale: 1e-5,
        }
    }
}

/// Values from N(0, std²), redrawn outside ±bound (timm's `trunc_normal_` with absolute
/// bounds); also initialises the dual student's bottleneck.
pub fn trunc_normal(rng: &mut Rng, shape: &[usize], std: f32, bound: f32) -> HostTensor {
    let n: usize = shape.iter().product();
    let mut data = Vec::with_capacity(n);
    while data.len() < n {
        let v = rng.normal() * std;
        if v.abs() <= bound {
            data.push(v);
        }
    }
    HostTensor {
        shape: shape.into(),
        data,
    }
}

/// Makes one tensor from its canonical name and held dims.
type Make<'a, B> = dyn FnMut(&str, &[usize]) -> Result<Tensor<B>> + 'a;

/// A [`Make`] that loads from a map, collecting every missing or wrongly shaped tensor in
/// `errors` (and standing in zeros for it) so that one error can name them all; `used`
/// records the names taken, for the caller's check of unexpected names.
fn loader<'a, B: Backend>(
    backend: &'a B,
    map: &'a HashMap<String, HostTensor>,
    errors: &'a mut Vec<String>,
    used: &'a mut Vec<String>,
) -> impl FnMut(&str, &[usize]) -> Result<Tensor<B>> + 'a {
    move |name, dims| {
        used.push(name.to_string());
        match take(map, name, dims) {
            Ok(h) => backend.upload(&h),
            Err(e) => {
                errors.push(e);
                backend.zeros(dims)
            }
        }
    }
}

fn weights_error(errors: Vec<String>) -> Result<()> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "ViT weights do not fit the config: {}",
            errors.join("; ")
        )))
    }
}

/// Listed fields of a block, in checkpoint order. `$opt` is `as_ref` or `as_mut`, `$r` the
/// matching borrow, so the name list exists once for both views.
macro_rules! block_fields {
    ($s:expr, $opt:ident, $($r:tt)+) => {{
        let s = $s;
        let mut v = Vec::with_capacity(14);
        v.push(("norm1.weight", $($r)+ s.norm1_w));
        v.push(("norm1.bias", $($r)+ s.norm1_b));
        v.push(("attn.qkv.weight", $($r)+ s.qkv_w));
        v.push(("attn.qkv.bias", $($r)+ s.qkv_b));
        v.push(("attn.proj.weight", $($r)+ s.proj_w));
        v.push(("attn.proj.bias", $($r)+ s.proj_b));
        if let Some(g) = s.ls1.$opt() {
            v.push(("ls1.gamma", g));
        }
        v.push(("norm2.weight", $($r)+ s.norm2_w));
        v.push(("norm2.bias", $($r)+ s.norm2_b));
        v.push(("mlp.fc1.weight", $($r)+ s.fc1_w));
        v.push(("mlp.fc1.bias", $($r)+ s.fc1_b));
        v.push(("mlp.fc2.weight", $($r)+ s.fc2_w));
        v.push(("mlp.fc2.bias", $($r)+ s.fc2_b));
        if let Some(g) = s.ls2.$opt() {
            v.push(("ls2.gamma", g));
        }
        v
    }};
}

/// The tensors of one block (or their gradients, see [`BlockGrads`]). Linear weights are
/// `[out, in]` as in PyTorch; qkv rows are q, k, v.
pub struct BlockParams<B: Backend> {
    pub cfg: BlockConfig,
    pub norm1_w: Tensor<B>,
    pub norm1_b: Tensor<B>,
    pub qkv_w: Tensor<B>,
    pub qkv_b: Tensor<B>,
    pub proj_w: Tensor<B>,
    pub proj_b: Tensor<B>,
    pub ls1: Option<Tensor<B>>,
    pub norm2_w: Tensor<B>,
    pub norm2_b: Tensor<B>,
    pub fc1_w: Tensor<B>,
    pub fc1_b: Tensor<B>,
    pub fc2_w: Tensor<B>,
    pub fc2_b: Tensor<B>,
    pub ls2: Option<Tensor<B>>,
}

/// Gradients of a block's parameters: the same tensors, summed into by the backward.
pub type BlockGrads<B> = BlockParams<B>;

impl<B: Backend> BlockParams<B> {
    fn build(cfg: BlockConfig, prefix: &str, make: &mut Make<B>) -> Result<Self> {
        let (d, h) = (cfg.dim, cfg.mlp_hidden);
        let mut t = |name: &str, dims: &[usize]| make(&format!("{prefix}{name}"), dims);
        Ok(BlockParams {
            cfg,
            norm1_w: t("norm1.weight", &[d])?,
            norm1_b: t("norm1.bias", &[d])?,
            qkv_w: t("attn.qkv.weight", &[3 * d, d])?,
            qkv_b: t("attn.qkv.bias", &[3 * d])?,
            proj_w: t("attn.proj.weight", &[d, d])?,
            proj_b: t("attn.proj.bias", &[d])?,
            ls1: cfg.layerscale.then(|| t("ls1.gamma", &[d])).transpose()?,
            norm2_w: t("norm2.weight", &[d])?,
            norm2_b: t("norm2.bias", &[d])?,
            fc1_w: t("mlp.fc1.weight", &[h, d])?,
            fc1_b: t("mlp.fc1.bias", &[h])?,
            fc2_w: t("mlp.fc2.weight", &[d, h])?,
            fc2_b: t("mlp.fc2.bias", &[d])?,
            ls2: cfg.layerscale.then(|| t("ls2.gamma", &[d])).transpose()?,
        })
    }

    /// Random weights: linear weights truncated normal, biases 0, LayerNorm 1/0, LayerScale
    /// `init.layerscale`.
    pub fn init(backend: &B, cfg: BlockConfig, init: &Init, rng: &mut Rng) -> Result<Self> {
        cfg.validate()?;
        Self::build(cfg, "", &mut |name, dims| {
            backend.upload(&init_tensor(name, dims, init, rng))
        })
    }

    /// All-zero tensors of this block's shapes: a gradient accumulator.
    pub fn zeros_like(&self, backend: &B) -> Result<Self> {
        Self::build(self.cfg, "", &mut |_, dims| backend.zeros(dims))
    }

    /// Load from canonical names `{prefix}norm1.weight`, ... (`prefix` = `blocks.3.` in a
    /// ViT, `""` for a lone block). Every missing or wrongly shaped tensor is named.
    pub fn from_host(
        backend: &B,
        cfg: BlockConfig,
        map: &HashMap<String, HostTensor>,
        prefix: &str,
    ) -> Result<Self> {
        cfg.validate()?;
        let (mut errors, mut used) = (vec![], vec![]);
        let p = Self::build(
            cfg,
            prefix,
            &mut loader(backend, map, &mut errors, &mut used),
        )?;
        weights_error(errors)?;
        Ok(p)
    }

    /// `(name, tensor)` in checkpoint order, names without prefix.
    pub fn named(&self) -> Vec<(&'static str, &Tensor<B>)> {
        block_fields!(self, as_ref, &)
    }
    pub fn named_mut(&mut self) -> Vec<(&'static str, &mut Tensor<B>)> {
        block_fields!(self, as_mut, &mut)
    }
}

/// The tensors of a ViT (or their gradients, see [`VitGrads`]), in the held shapes of the
/// module doc.
pub struct VitParams<B: Backend> {
    pub patch_w: Tensor<B>,
    pub patch_b: Tensor<B>,
    pub cls: Tensor<B>,
    pub pos: Tensor<B>,
    pub registers: Option<Tensor<B>>,
    pub blocks: Vec<BlockParams<B>>,
    pub norm_w: Tensor<B>,
    pub norm_b: Tensor<B>,
}

/// Gradients of a ViT's parameters: the same tensors, summed into by the backward.
pub type VitGrads<B> = VitParams<B>;

/// Listed fields of a ViT in checkpoint order, as `block_fields` (`$iter`: `iter` or
/// `iter_mut`, `$named`: the block's matching view).
macro_rules! vit_fields {
    ($s:expr, $opt:ident, $iter:ident, $named:ident, $($r:tt)+) => {{
        let s = $s;
        let mut v = vec![
            ("cls_token".to_string(), $($r)+ s.cls),
            ("pos_embed".to_string(), $($r)+ s.pos),
        ];
        if let Some(r) = s.registers.$opt() {
            v.push(("register_tokens".to_string(), r));
        }
        v.push(("patch_embed.proj.weight".to_string(), $($r)+ s.patch_w));
        v.push(("patch_embed.proj.bias".to_string(), $($r)+ s.patch_b));
        for (i, b) in s.blocks.$iter().enumerate() {
            for (n, t) in b.$named() {
                v.push((format!("blocks.{i}.{n}"), t));
            }
        }
        v.push(("norm.weight".to_string(), $($r)+ s.norm_w));
        v.push(("norm.bias".to_string(), $($r)+ s.norm_b));
        v
    }};
}

impl<B: Backend> VitParams<B> {
    fn build(cfg: &VitConfig, make: &mut Make<B>) -> Result<Self> {
        let d = cfg.dim;
        let g2 = cfg.pos_grid * cfg.pos_grid;
        let k = cfg.in_chans * cfg.patch * cfg.patch;
        let cls = make("cls_token", &[d])?;
        let pos = make("pos_embed", &[1 + g2, d])?;
        let registers = (cfg.registers > 0)
            .then(|| make("register_tokens", &[cfg.registers, d]))
            .transpose()?;
        let patch_w = make("patch_embed.proj.weight", &[d, k])?;
        let patch_b = make("patch_embed.proj.bias", &[d])?;
        let blocks = (0..cfg.depth)
            .map(|i| BlockParams::build(cfg.block(), &format!("blocks.{i}."), make))
            .collect::<Result<Vec<_>>>()?;
        Ok(VitParams {
            patch_w,
            patch_b,
            cls,
            pos,
            registers,
            blocks,
            norm_w: make("norm.weight", &[d])?,
            norm_b: make("norm.bias", &[d])?,
        })
    }

    /// Random weights as DINOv2/timm initialise them: linear weights and `pos_embed`
    /// truncated normal (`init`), class and register tokens normal with std 1e-6, the patch
    /// embedding as PyTorch's Conv2d default (uniform ±1/√fan_in, weight and bias), LayerNorm
    /// 1/0, LayerScale `init.layerscale`.
    pub fn init(backend: &B, cfg: &VitConfig, init: &Init, rng: &mut Rng) -> Result<Self> {
        cfg.validate()?;
        let fan_in = (cfg.in_chans * cfg.patch * cfg.patch) as f32;
        let bound = 1.0 / fan_in.sqrt();
        Self::build(cfg, &mut |name, dims| {
            let host = match name {
                "cls_token" | "register_tokens" => trunc_normal(rng, dims, 1e-6, f32::INFINITY),
                "pos_embed" => trunc_normal(rng, dims, init.std, init.bound),
                "patch_embed.proj.weight" | "patch_embed.proj.bias" => {
                    rng.tensor(dims, -bound, bound)
                }
                _ => init_tensor(name, dims, init, rng),
            };
            backend.upload(&host)
        })
    }

    /// All-zero tensors of these shapes: a gradient accumulator.
    pub fn zeros(backend: &B, cfg: &VitConfig) -> Result<Self> {
        cfg.validate()?;
        Self::build(cfg, &mut |_, dims| backend.zeros(dims))
    }

    /// Load from a map in canonical names (or the held shapes). Missing, wrongly shaped and
    /// unexpected tensors are all named in one error. `mask_token` (DINOv2's masked-image
    /// token, unused at inference) is ignored.
    pub fn from_host(
        backend: &B,
        cfg: &VitConfig,
        map: &HashMap<String, HostTensor>,
    ) -> Result<Self> {
        cfg.validate()?;
        let (mut errors, mut used) = (vec![], vec![]);
        let p = Self::build(cfg, &mut loader(backend, map, &mut errors, &mut used))?;
        let mut unexpected: Vec<&String> = map
            .keys()
            .filter(|k| k.as_str() != "mask_token" && !used.contains(k))
            .collect();
        unexpected.sort();
        if !unexpected.is_empty() {
            errors.push(format!("unexpected tensors {unexpected:?}"));
        }
        weights_error(errors)?;
        Ok(p)
    }

    /// Download every tensor under its canonical name and shape.
    pub fn to_host(&self, backend: &B, cfg: &VitConfig) -> Result<HashMap<String, HostTensor>> {
        let d = cfg.dim;
        self.named()
            .into_iter()
            .map(|(name, t)| {
                let h = backend.download(t)?;
                let canonical = match name.as_str() {
                    "cls_token" => vec![1, 1, d],
                    "pos_embed" | "register_tokens" => vec![1, h.dims()[0], d],
                    "patch_embed.proj.weight" => vec![d, cfg.in_chans, cfg.patch, cfg.patch],
                    _ => h.dims().to_vec(),
                };
                Ok((name, h.reshape(canonical.as_slice())?))
            })
            .collect()
    }

    /// `(canonical name, tensor)` in checkpoint order.
    pub fn named(&self) -> Vec<(String, &Tensor<B>)> {
        vit_fields!(self, as_ref, iter, named, &)
    }
    pub fn named_mut(&mut self) -> Vec<(String, &mut Tensor<B>)> {
        vit_fields!(self, as_mut, iter_mut, named_mut, &mut)
    }

    /// Number of scalars.
    pub fn numel(&self) -> usize {
        self.named().iter().map(|(_, t)| t.numel()).sum()
    }
}

fn init_tensor(name: &str, dims: &[usize], init: &Init, rng: &mut Rng) -> HostTensor {
    let leaf = name.rsplit('.').next().unwrap_or(name);
    match leaf {
        "gamma" => HostTensor::filled(dims, init.layerscale),
        "weight" if name.contains("norm") => HostTensor::filled(dims, 1.0),
        "weight" => trunc_normal(rng, dims, init.std, init.bound),
        _ => HostTensor::zeros(dims),
    }
}

/// Fetch `name` from a map and check it holds `dims`, accepting the canonical forms of the
/// module doc (extra leading 1s, a conv weight for a held `[D, C·p·p]`).
fn take(
    map: &HashMap<String, HostTensor>,
    name: &str,
    dims: &[usize],
) -> Result<HostTensor, String> {
    let t = map
        .get(name)
        .ok_or_else(|| format!("missing tensor `{name}` (expected {dims:?})"))?;
    let strip = |d: &[usize]| {
        d.iter()
            .skip_while(|&&x| x == 1)
            .copied()
            .collect::<Vec<_>>()
    };
    let (s, d) = (strip(t.dims()), strip(dims));
    let conv = s.len() == 4 && d.len() == 2 && s[0] == d[0] && s[1] * s[2] * s[3] == d[1];
    if s != d && !conv {
        return Err(format!(
            "tensor `{name}` is {:?} but must be {dims:?}",
            t.dims()
        ));
    }
    t.clone().reshape(dims).map_err(|e| e.to_string())
}
