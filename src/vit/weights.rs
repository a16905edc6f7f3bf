//! DINOv2 ViT weights: load safetensors published under Hugging Face, Meta or timm names,
//! check them completely, and hand the model canonical tensors; save canonical files.
//!
//! Canonical names are Meta's (and timm's, which agree): `cls_token [1,1,D]`,
//! `pos_embed [1,1+G*G,D]` (class position first), `register_tokens [1,R,D]` (absent when
//! R = 0), `patch_embed.proj.{weight [D,3,14,14], bias}`, and per block `blocks.i.`
//! `norm1.*`, `attn.qkv.{weight [3D,D], bias}` (rows q, k, v), `attn.proj.*`, `ls1.gamma`,
//! `ls2.gamma` (absent without LayerScale), `norm2.*`, `mlp.fc1.*`, `mlp.fc2.*`; then
//! `norm.*`. Linear weights are [out, in], as PyTorch stores them.
//!
//! Not supported, and reported as unexpected tensors: the SwiGLU MLP of ViT-g
//! (`mlp.w12`/`mlp.w3`, HF `mlp.weights_in`/`weights_out`), and patch sizes other than 14.

mod io;
mod names;
mod plan;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::error::Result;
use crate::tensor::HostTensor;
pub use names::Scheme;

/// DINOv2's patch size; the only one the loader accepts.
pub const PATCH: usize = 14;

/// The architecture a weights file describes, inferred from its tensor shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VitShape {
    pub dim: usize,
    pub depth: usize,
    pub registers: usize,
    pub layerscale: bool,
    /// Side of the stored position grid (37 for DINOv2: 518 px / 14).
    pub grid: usize,
    pub mlp_hidden: usize,
}

impl VitShape {
    /// Attention heads of the published model of this width (weights do not record it).
    pub fn standard_heads(&self) -> Option<usize> {
        standard_heads(self.dim)
    }

    pub fn parameter_count(&self) -> usize {
        canonical_shapes(self)
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }
}

impl std::fmt::Display for VitShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "dim {}, depth {}, {} registers, {}, {}x{} position grid, MLP {}",
            self.dim,
            self.depth,
            self.registers,
            if self.layerscale {
                "LayerScale"
            } else {
                "no LayerScale"
            },
            self.grid,
            self.grid,
            self.mlp_hidden
        )
    }
}

/// Heads of the published DINOv2 models: ViT-S 384 -> 6, B 768 -> 12, L 1024 -> 16,
/// g 1536 -> 24 (head dim 64 throughout).
pub fn standard_heads(dim: usize) -> Option<usize> {
    match dim {
        384 => Some(6),
        768 => Some(12),
        1024 => Some(16),
        1536 => Some(24),
        _ => None,
    }
}

/// Every canonical tensor of a ViT of this shape with its shape, in model order.
pub fn canonical_shapes(s: &VitShape) -> Vec<(String, Vec<usize>)> {
    let d = s.dim;
    let mut v: Vec<(String, Vec<usize>)> = vec![
        ("cls_token".into(), vec![1, 1, d]),
        ("pos_embed".into(), vec![1, 1 + s.grid * s.grid, d]),
    ];
    if s.registers > 0 {
        v.push(("register_tokens".into(), vec![1, s.registers, d]));
    }
    v.push(("patch_embed.proj.weight".into(), vec![d, 3, PATCH, PATCH]));
    v.push(("patch_embed.proj.bias".into(), vec![d]));
    for i in 0..s.depth {
        let b = |n: &str, dims: Vec<usize>| (format!("blocks.{i}.{n}"), dims);
        v.push(b("norm1.weight", vec![d]));
        v.push(b("norm1.bias", vec![d]));
        v.push(b("attn.qkv.weight", vec![3 * d, d]));
        v.push(b("attn.qkv.bias", vec![3 * d]));
        v.push(b("attn.proj.weight", vec![d, d]));
        v.push(b("attn.proj.bias", vec![d]));
        if s.layerscale {
            v.push(b("ls1.gamma", vec![d]));
        }
        v.push(b("norm2.weight", vec![d]));
        v.push(b("norm2.bias", vec![d]));
        v.push(b("mlp.fc1.weight", vec![s.mlp_hidden, d]));
        v.push(b("mlp.fc1.bias", vec![s.mlp_hidden]));
        v.push(b("mlp.fc2.weight", vec![d, s.mlp_hidden]));
        v.push(b("mlp.fc2.bias", vec![d]));
        if s.layerscale {
            v.push(b("ls2.gamma", vec![d]));
        }
    }
    v.push(("norm.weight".into(), vec![d]));
    v.push(("norm.bias".into(), vec![d]));
    v
}

/// A checked ViT in canonical names.
#[derive(Clone, Debug)]
pub struct VitWeights {
    pub shape: VitShape,
    pub tensors: HashMap<String, HostTensor>,
    /// Which names the source used.
    pub scheme: Scheme,
    /// The source file's safetensors `__metadata__` (empty for other sources).
    pub metadata: HashMap<String, String>,
    /// Source tensors left out on purpose: outside the backbone prefix (classifier heads,
    /// decoders) and `mask_token`.
    pub ignored: Vec<String>,
    /// Conversions worth telling the user about.
    pub notes: Vec<String>,
}

impl VitWeights {
    pub fn parameter_count(&self) -> usize {
        self.tensors.values().map(HostTensor::numel).sum()
    }
}

/// Loads a DINOv2 ViT from safetensors (F32/F16/BF16/F64, any accepted names, optionally under
/// a prefix such as `dinov2.` or `backbone.`). Missing, unexpected and wrongly shaped tensors
/// are reported together in one `Error::Weights`.
pub fn load_safetensors(path: &Path) -> Result<VitWeights> {
    load_bytes(path, &io::read_file(path)?)
}

/// `load_safetensors` on the file's contents; `path` names the file in errors.
fn load_bytes(path: &Path, bytes: &[u8]) -> Result<VitWeights> {
    let st = io::parse(path, bytes)?;
    let metas: BTreeMap<String, plan::TensorMeta> = st
        .iter()
        .map(|(name, view)| {
            let dtype = view.dtype();
            let unsupported_dtype = (!io::readable(dtype)).then(|| format!("{dtype:?}"));
            (
                name.to_string(),
                plan::TensorMeta {
                    shape: view.shape().to_vec(),
                    unsupported_dtype,
                },
            )
        })
        .collect();
    let p = plan::plan(&metas).map_err(|detail| io::weights_err(path, detail))?;
    let tensors = plan::materialize(&p, |name| {
        let view = st
            .tensor(name)
            .map_err(|e| io::weights_err(path, format!("{name}: {e}")))?;
        io::to_f32(path, name, &view)
    })?;
    Ok(VitWeights {
        shape: p.shape,
        tensors,
        scheme: p.scheme,
        metadata: io::metadata(path, bytes)?,
        ignored: p.ignored,
        notes: p.notes,
    })
}

/// Checks and converts tensors held in memory, under any accepted names (the ONNX importer
/// hands over Hugging Face names). `source` names them in errors.
pub fn canonicalize(source: &Path, mut tensors: HashMap<String, HostTensor>) -> Result<VitWeights> {
    let metas: BTreeMap<String, plan::TensorMeta> = tensors
        .iter()
        .map(|(n, t)| {
            (
                n.clone(),
                plan::TensorMeta {
                    shape: t.dims().to_vec(),
                    unsupported_dtype: None,
                },
            )
        })
        .collect();
    let p = plan::plan(&metas).map_err(|detail| io::weights_err(source, detail))?;
    let out = plan::materialize(&p, |name| {
        tensors
            .remove(name)
            .ok_or_else(|| io::weights_err(source, format!("{name} is used twice")))
    })?;
    Ok(VitWeights {
        shape: p.shape,
        tensors: out,
        scheme: p.scheme,
        metadata: HashMap::new(),
        ignored: p.ignored,
        notes: p.notes,
    })
}

/// Writes canonical tensors as F32 safetensors with `metadata`, atomically. Refuses a set of
/// tensors that `load_safetensors` would not read back as exactly these canonical tensors.
pub fn save_canonical(
    tensors: &HashMap<String, HostTensor>,
    path: &Path,
    metadata: &HashMap<String, String>,
) -> Result<()> {
    let metas: BTreeMap<String, plan::TensorMeta> = tensors
        .iter()
        .map(|(n, t)| {
            (
                n.clone(),
                plan::TensorMeta {
                    shape: t.dims().to_vec(),
                    unsupported_dtype: None,
                },
            )
        })
        .collect();
    let refuse = |why: String| io::weights_err(path, format!("refusing to save: {why}"));
    let p = plan::plan(&metas).map_err(|d| refuse(format!("the tensors {d}")))?;
    let canonical = p.scheme == Scheme::MetaTimm
        && p.prefix.is_empty()
        && p.ignored.is_empty()
        && p.items
            .iter()
            .all(|(n, s)| *s == plan::Source::Copy(n.clone()));
    if !canonical {
        return Err(refuse(
            "the tensors are not all in canonical names and layout".into(),
        ));
    }
    crate::atomic::write_atomic(path, &io::serialize(tensors, metadata)?)
}

/// Every floating-point tensor of a safetensors file as f32 under its own name, with no model
/// checks: for test fixtures and activations, not for weights.
pub fn read_tensors(path: &Path) -> Result<HashMap<String, HostTensor>> {
    let bytes = io::read_file(path)?;
    let st = io::parse(path, &bytes)?;
    st.iter()
        .map(|(name, view)| Ok((name.to_string(), io::to_f32(path, name, &view)?)))
        .collect()
}

#[cfg(test)]
mod tests;
