//! The names DINOv2 weights are published under, mapped to the canonical (Meta/timm) names.
//!
//! Two families exist:
//! - Hugging Face `Dinov2Model` / `Dinov2WithRegistersModel`: `embeddings.*`,
//!   `encoder.layer.N.*` with separate query/key/value, `layernorm.*`.
//! - Meta's `dinov2` checkpoints and timm: `cls_token`, `blocks.N.*` with a fused `attn.qkv`,
//!   `norm.*`. timm calls the registers `reg_token`; Meta checkpoints trained with
//!   `block_chunks > 0` nest blocks as `blocks.CHUNK.N.*` (N stays the global index).
//!
//! HF query/key/value map to the pieces `blocks.N.attn.{q,k,v}.{weight,bias}`, which the
//! planner checks one by one and then fuses into `attn.qkv` (rows q, k, v).

/// Which family of names a file uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    HuggingFace,
    MetaTimm,
}

impl std::fmt::Display for Scheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Scheme::HuggingFace => "Hugging Face Dinov2Model",
            Scheme::MetaTimm => "Meta/timm",
        })
    }
}

/// What one source tensor becomes.
#[derive(Debug, PartialEq, Eq)]
pub enum Mapped {
    /// A canonical name (or, for HF, a q/k/v piece that is fused later).
    Name(String),
    /// In checkpoints but never used by a forward pass: `mask_token` only serves masked-image
    /// modelling during DINOv2's own training.
    Unused,
}

/// Top-level tensors: (Hugging Face name, canonical name).
const HF_TOP: &[(&str, &str)] = &[
    ("embeddings.cls_token", "cls_token"),
    ("embeddings.position_embeddings", "pos_embed"),
    ("embeddings.register_tokens", "register_tokens"),
    (
        "embeddings.patch_embeddings.projection.weight",
        "patch_embed.proj.weight",
    ),
    (
        "embeddings.patch_embeddings.projection.bias",
        "patch_embed.proj.bias",
    ),
    ("layernorm.weight", "norm.weight"),
    ("layernorm.bias", "norm.bias"),
];

/// Per-block tensors: (Hugging Face suffix, canonical suffix), after `encoder.layer.N.` and
/// `blocks.N.` respectively.
const HF_BLOCK: &[(&str, &str)] = &[
    ("norm1.weight", "norm1.weight"),
    ("norm1.bias", "norm1.bias"),
    ("attention.attention.query.weight", "attn.q.weight"),
    ("attention.attention.query.bias", "attn.q.bias"),
    ("attention.attention.key.weight", "attn.k.weight"),
    ("attention.attention.key.bias", "attn.k.bias"),
    ("attention.attention.value.weight", "attn.v.weight"),
    ("attention.attention.value.bias", "attn.v.bias"),
    ("attention.output.dense.weight", "attn.proj.weight"),
    ("attention.output.dense.bias", "attn.proj.bias"),
    ("layer_scale1.lambda1", "ls1.gamma"),
    ("layer_scale2.lambda1", "ls2.gamma"),
    ("norm2.weight", "norm2.weight"),
    ("norm2.bias", "norm2.bias"),
    ("mlp.fc1.weight", "mlp.fc1.weight"),
    ("mlp.fc1.bias", "mlp.fc1.bias"),
    ("mlp.fc2.weight", "mlp.fc2.weight"),
    ("mlp.fc2.bias", "mlp.fc2.bias"),
];

const META_TOP: &[&str] = &[
    "cls_token",
    "pos_embed",
    "register_tokens",
    "patch_embed.proj.weight",
    "patch_embed.proj.bias",
    "norm.weight",
    "norm.bias",
];

const META_BLOCK: &[&str] = &[
    "norm1.weight",
    "norm1.bias",
    "attn.qkv.weight",
    "attn.qkv.bias",
    "attn.proj.weight",
    "attn.proj.bias",
    "ls1.gamma",
    "ls2.gamma",
    "norm2.weight",
    "norm2.bias",
    "mlp.fc1.weight",
    "mlp.fc1.bias",
    "mlp.fc2.weight",
    "mlp.fc2.bias",
];

/// Splits `"12.rest"` into (12, "rest").
fn leading_index(s: &str) -> Option<(usize, &str)> {
    let (idx, rest) = s.split_once('.')?;
    if idx.is_empty() || !idx.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((idx.parse().ok()?, rest))
}

/// Maps a name (prefix already removed) to its canonical name; `None` for a name that is not
/// part of a DINOv2 ViT in this scheme.
pub fn to_canonical(scheme: Scheme, key: &str) -> Option<Mapped> {
    match scheme {
        Scheme::HuggingFace => {
            if key == "embeddings.mask_token" {
                return Some(Mapped::Unused);
            }
            if let Some((_, c)) = HF_TOP.iter().find(|(h, _)| *h == key) {
                return Some(Mapped::Name(c.to_string()));
            }
            let (i, tail) = leading_index(key.strip_prefix("encoder.layer.")?)?;
            let (_, c) = HF_BLOCK.iter().find(|(h, _)| *h == tail)?;
            Some(Mapped::Name(format!("blocks.{i}.{c}")))
        }
        Scheme::MetaTimm => {
            match key {
                "mask_token" => return Some(Mapped::Unused),
                "reg_token" => return Some(Mapped::Name("register_tokens".into())),
                k if META_TOP.contains(&k) => return Some(Mapped::Name(k.into())),
                _ => {}
            }
            let (i, tail) = leading_index(key.strip_prefix("blocks.")?)?;
            if META_BLOCK.contains(&tail) {
                return Some(Mapped::Name(format!("blocks.{i}.{tail}")));
            }
            // Chunked blocks: `blocks.CHUNK.N.tail`, N global.
            let (i, tail) = leading_index(tail)?;
            META_BLOCK
                .contains(&tail)
                .then(|| Mapped::Name(format!("blocks.{i}.{tail}")))
        }
    }
}

/// The name a file of this scheme would use for a canonical name (or q/k/v piece): what an
/// error message calls a missing tensor.
pub fn from_canonical(scheme: Scheme, canonical: &str) -> String {
    if scheme == Scheme::MetaTimm {
        return canonical.to_string();
    }
    if let Some((h, _)) = HF_TOP.iter().find(|(_, c)| *c == canonical) {
        return h.to_string();
    }
    if let Some((i, tail)) = canonical.strip_prefix("blocks.").and_then(leading_index) {
        if let Some((h, _)) = HF_BLOCK.iter().find(|(_, c)| *c == tail) {
            return format!("encoder.layer.{i}.{h}");
        }
    }
    canonical.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Option<Mapped> {
        Some(Mapped::Name(s.to_string()))
    }

    #[test]
    fn hugging_face_names() {
        let hf = Scheme::HuggingFace;
        assert_eq!(
            to_canonical(hf, "embeddings.position_embeddings"),
            name("pos_embed")
        );
        assert_eq!(
            to_canonical(hf, "embeddings.register_tokens"),
            name("register_tokens")
        );
        assert_eq!(
            to_canonical(hf, "embeddings.mask_token"),
            Some(Mapped::Unused)
        );
        assert_eq!(
            to_canonical(hf, "encoder.layer.11.attention.attention.key.bias"),
            name("blocks.11.attn.k.bias")
        );
        assert_eq!(
            to_canonical(hf, "encoder.layer.0.layer_scale2.lambda1"),
            name("blocks.0.ls2.gamma")
        );
        assert_eq!(to_canonical(hf, "layernorm.bias"), name("norm.bias"));
        assert_eq!(to_canonical(hf, "encoder.layer.x.norm1.weight"), None);
        assert_eq!(
            to_canonical(hf, "encoder.layer.0.mlp.weights_in.weight"),
            None
        );
        assert_eq!(to_canonical(hf, "cls_token"), None);
    }

    #[test]
    fn meta_and_timm_names() {
        let m = Scheme::MetaTimm;
        assert_eq!(
            to_canonical(m, "blocks.3.attn.qkv.weight"),
            name("blocks.3.attn.qkv.weight")
        );
        assert_eq!(
            to_canonical(m, "blocks.1.5.ls1.gamma"),
            name("blocks.5.ls1.gamma")
        );
        assert_eq!(to_canonical(m, "reg_token"), name("register_tokens"));
        assert_eq!(to_canonical(m, "mask_token"), Some(Mapped::Unused));
        assert_eq!(to_canonical(m, "blocks.3.attn.q.weight"), None);
        assert_eq!(to_canonical(m, "blocks.+3.norm1.weight"), None);
        assert_eq!(to_canonical(m, "head.weight"), None);
    }

    #[test]
    fn missing_tensors_are_named_as_the_file_would_name_them() {
        let hf = Scheme::HuggingFace;
        assert_eq!(
            from_canonical(hf, "blocks.2.attn.v.weight"),
            "encoder.layer.2.attention.attention.value.weight"
        );
        assert_eq!(
            from_canonical(hf, "pos_embed"),
            "embeddings.position_embeddings"
        );
        assert_eq!(
            from_canonical(Scheme::MetaTimm, "blocks.2.ls1.gamma"),
            "blocks.2.ls1.gamma"
        );
    }
}
