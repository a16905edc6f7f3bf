//! From the names and shapes of a file's tensors to a checked plan: the architecture the
//! file describes (`VitShape`), and how each canonical tensor is built from the file's. Every
//! problem (missing, unexpected, wrongly shaped, unreadable dtype) is collected, so one error
//! lists them all.

use std::collections::{BTreeMap, BTreeSet};

use super::names::{from_canonical, to_canonical, Mapped, Scheme};
use super::{canonical_shapes, VitShape};
use crate::error::Result;
use crate::tensor::{HostTensor, Shape};

/// What the planner needs to know of one source tensor.
#[derive(Clone, Debug)]
pub struct TensorMeta {
    pub shape: Vec<usize>,
    /// `Some("I64")` (say) when the element type cannot be read as floats.
    pub unsupported_dtype: Option<String>,
}

/// How one canonical tensor is made from source tensors (by source name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Copy(String),
    /// Concatenate along the first dimension: HF query, key, value into `attn.qkv`.
    FuseRows([String; 3]),
    /// timm's DINOv2-with-registers layout stores `pos_embed` without the class position
    /// (its class token already includes it); a zero class position makes it canonical with
    /// the same forward result.
    PrependZeroRow(String),
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub shape: VitShape,
    pub scheme: Scheme,
    /// The prefix in front of every backbone name (`""`, `"dinov2."`, `"backbone."`, ...).
    pub prefix: String,
    /// Canonical name and how to build it, in `canonical_shapes` order.
    pub items: Vec<(String, Source)>,
    /// Source tensors deliberately left out: outside the backbone prefix (heads, decoders) or
    /// unused by the forward (`mask_token`).
    pub ignored: Vec<String>,
    /// Conversions worth telling the user about.
    pub notes: Vec<String>,
}

/// Longest list of names an error message shows per kind of problem.
const SHOW: usize = 12;

fn listing(title: &str, items: &[String]) -> Option<String> {
    if items.is_empty() {
        return None;
    }
    let mut s = format!(
        "{} {title}: {}",
        items.len(),
        items[..items.len().min(SHOW)].join(", ")
    );
    if items.len() > SHOW {
        s += &format!(", ... and {} more", items.len() - SHOW);
    }
    Some(s)
}

/// Finds the backbone: the one name ending in `embeddings.cls_token` (HF) or `cls_token`
/// (Meta/timm), and what stands before it.
fn find_backbone(metas: &BTreeMap<String, TensorMeta>) -> Result<(String, Scheme), String> {
    let anchors: Vec<(String, Scheme)> = metas
        .keys()
        .filter_map(|k| {
            if let Some(p) = k.strip_suffix("embeddings.cls_token") {
                Some((p.to_string(), Scheme::HuggingFace))
            } else {
                k.strip_suffix("cls_token")
                    .map(|p| (p.to_string(), Scheme::MetaTimm))
            }
        })
        .filter(|(p, _)| p.is_empty() || p.ends_with('.'))
        .collect();
    match anchors.len() {
        1 => Ok(anchors.into_iter().next().expect("one anchor")),
        0 if metas.is_empty() => Err("holds no tensors".into()),
        0 => {
            let some: Vec<String> = metas.keys().take(6).cloned().collect();
            Err(format!(
                "not a DINOv2 ViT: no class token (`cls_token`, or Hugging Face \
                 `embeddings.cls_token`, optionally under a prefix such as `dinov2.`) among its \
                 {} tensors (first names: {})",
                metas.len(),
                some.join(", ")
            ))
        }
        _ => {
            let names: Vec<String> = anchors
                .iter()
                .map(|(p, s)| format!("`{p}` ({s} names)"))
                .collect();
            Err(format!(
                "holds several ViT backbones (class tokens under the prefixes {}); extract one \
                 into its own file",
                names.join(", ")
            ))
        }
    }
}

fn is_square(n: usize) -> Option<usize> {
    let r = (n as f64).sqrt().round() as usize;
    (r * r == n).then_some(r)
}

/// The architecture the tensors describe. Fields that cannot be inferred get a placeholder;
/// the shape check then reports the tensors involved. Returns also whether `pos_embed` lacks
/// the class position (timm layout).
fn infer(
    mapped: &BTreeMap<String, String>,
    metas: &BTreeMap<String, TensorMeta>,
    scheme: Scheme,
    problems: &mut Vec<String>,
) -> (VitShape, bool) {
    let shape_of = |c: &str| mapped.get(c).map(|src| metas[src].shape.as_slice());
    let dim = shape_of("cls_token")
        .and_then(|s| s.last().copied())
        .unwrap_or(0);
    let depth = mapped
        .keys()
        .filter_map(|c| {
            c.strip_prefix("blocks.")?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max()
        .map_or(0, |m| m + 1);
    if depth == 0 {
        problems.push("no transformer blocks found".into());
    }
    let registers = shape_of("register_tokens")
        .and_then(|s| s.get(1).copied())
        .unwrap_or(0);
    let layerscale = mapped
        .keys()
        .any(|c| c.ends_with(".ls1.gamma") || c.ends_with(".ls2.gamma"));
    let mut grid = 0;
    let mut no_cls_position = false;
    if let Some(rows) = shape_of("pos_embed").and_then(|s| s.get(1).copied()) {
        if let Some(g) = rows.checked_sub(1).and_then(is_square).filter(|&g| g > 0) {
            grid = g;
        } else if let Some(g) = is_square(rows).filter(|_| scheme == Scheme::MetaTimm) {
            grid = g;
            no_cls_position = true;
        } else {
            problems.push(format!(
                "the position embedding holds {rows} positions, not 1 + G*G (class position \
                 first) for a square G x G grid"
            ));
        }
    }
    let mlp_hidden = (0..depth)
        .find_map(|i| {
            shape_of(&format!("blocks.{i}.mlp.fc1.weight")).and_then(|s| s.first().copied())
        })
        .unwrap_or(4 * dim);
    (
        VitShape {
            dim,
            depth,
            registers,
            layerscale,
            grid,
            mlp_hidden,
        },
        no_cls_position,
    )
}

/// Checks the tensors' names and shapes and plans the conversion to canonical names. The
/// error is the complete list of problems, for `Error::Weights`.
pub fn plan(metas: &BTreeMap<String, TensorMeta>) -> Result<Plan, String> {
    let (prefix, scheme) = find_backbone(metas)?;
    let mut problems = Vec::new();
    let mut mapped: BTreeMap<String, String> = BTreeMap::new(); // canonical -> source name
    let mut ignored = Vec::new();
    let mut unexpected = Vec::new();
    for key in metas.keys() {
        let Some(rest) = key.strip_prefix(prefix.as_str()) else {
            ignored.push(key.clone());
            continue;
        };
        match to_canonical(scheme, rest) {
            Some(Mapped::Name(c)) => {
                if let Some(other) = mapped.insert(c.clone(), key.clone()) {
                    problems.push(format!("both {other} and {key} give {c}"));
                }
            }
            Some(Mapped::Unused) => ignored.push(key.clone()),
            None => unexpected.push(key.clone()),
        }
    }
    let (shape, no_cls_position) = infer(&mapped, metas, scheme, &mut problems);

    // The expected (name, shape) list in the source's own terms: HF q/k/v pieces instead of
    // the fused qkv, timm's position table without the class row.
    let mut expected: Vec<(String, Vec<usize>)> = Vec::new();
    for (name, dims) in canonical_shapes(&shape) {
        if scheme == Scheme::HuggingFace && name.contains(".attn.qkv.") {
            let mut piece = dims.clone();
            piece[0] /= 3;
            for q in ["q", "k", "v"] {
                expected.push((name.replace(".qkv.", &format!(".{q}.")), piece.clone()));
            }
        } else if name == "pos_embed" && no_cls_position {
            expected.push((name, vec![1, shape.grid * shape.grid, shape.dim]));
        } else {
            expected.push((name, dims));
        }
    }
    let mut missing = Vec::new();
    let mut wrong = Vec::new();
    let mut bad_dtype = Vec::new();
    for (name, dims) in &expected {
        match mapped.get(name) {
            None => missing.push(format!("{prefix}{}", from_canonical(scheme, name))),
            Some(src) => {
                let meta = &metas[src];
                if &meta.shape != dims {
                    wrong.push(format!("{src} is {:?}, expected {dims:?}", meta.shape));
                }
                if let Some(dt) = &meta.unsupported_dtype {
                    bad_dtype.push(format!("{src} ({dt})"));
                }
            }
        }
    }
    let wanted: BTreeSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    unexpected.extend(
        mapped
            .iter()
            .filter(|(c, _)| !wanted.contains(c.as_str()))
            .map(|(_, s)| s.clone()),
    );
    unexpected.sort();

    problems.extend(listing("missing", &missing));
    problems.extend(listing("unexpected", &unexpected));
    problems.extend(listing("wrongly shaped", &wrong));
    problems.extend(listing(
        "with an element type other than F32/F16/BF16/F64",
        &bad_dtype,
    ));
    if !problems.is_empty() {
        let under = if prefix.is_empty() {
            String::new()
        } else {
            format!(" under `{prefix}`")
        };
        return Err(format!(
            "is not a complete DINOv2 ViT ({scheme} names{under}; inferred {shape}):\n  {}",
            problems.join("\n  ")
        ));
    }

    let mut notes = Vec::new();
    if no_cls_position {
        notes.push(format!(
            "{prefix}pos_embed has no class position (timm layout); a zero class position was \
             inserted, which leaves the forward unchanged"
        ));
    }
    let items = canonical_shapes(&shape)
        .into_iter()
        .map(|(name, _)| {
            let src = |c: &str| mapped[c].clone();
            let source = if scheme == Scheme::HuggingFace && name.contains(".attn.qkv.") {
                let piece = |q: &str| src(&name.replace(".qkv.", &format!(".{q}.")));
                Source::FuseRows([piece("q"), piece("k"), piece("v")])
            } else if name == "pos_embed" && no_cls_position {
                Source::PrependZeroRow(src(&name))
            } else {
                Source::Copy(src(&name))
            };
            (name, source)
        })
        .collect();
    Ok(Plan {
        shape,
        scheme,
        prefix,
        items,
        ignored,
        notes,
    })
}

/// Builds the canonical tensors of a checked plan, reading each source tensor with `fetch`.
pub fn materialize(
    plan: &Plan,
    mut fetch: impl FnMut(&str) -> Result<HostTensor>,
) -> Result<std::collections::HashMap<String, HostTensor>> {
    let mut out = std::collections::HashMap::with_capacity(plan.items.len());
    for (name, source) in &plan.items {
        let t = match source {
            Source::Copy(s) => fetch(s)?,
            Source::FuseRows(parts) => {
                let parts = parts.iter().map(|s| fetch(s)).collect::<Result<Vec<_>>>()?;
                let mut dims = parts[0].dims().to_vec();
                dims[0] *= 3;
                HostTensor::new(
                    Shape(dims),
                    parts.into_iter().flat_map(|p| p.data).collect(),
                )?
            }
            Source::PrependZeroRow(s) => {
                let t = fetch(s)?;
                let (rows, d) = (t.dims()[1], t.dims()[2]);
                let mut data = vec![0.0; d];
                data.extend(t.data);
                HostTensor::new([1, rows + 1, d], data)?
            }
        };
        out.insert(name.clone(), t);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(shape: &[usize]) -> TensorMeta {
        TensorMeta {
            shape: shape.to_vec(),
            unsupported_dtype: None,
        }
    }

    /// A tiny model in canonical names (dim 8, depth 2, grid 2, no registers).
    fn canonical_metas(shape: &VitShape) -> BTreeMap<String, TensorMeta> {
        canonical_shapes(shape)
            .into_iter()
            .map(|(n, s)| (n, meta(&s)))
            .collect()
    }

    fn small() -> VitShape {
        VitShape {
            dim: 8,
            depth: 2,
            registers: 0,
            layerscale: true,
            grid: 2,
            mlp_hidden: 32,
        }
    }

    #[test]
    fn canonical_names_plan_to_copies() {
        let p = plan(&canonical_metas(&small())).unwrap();
        assert_eq!(p.shape, small());
        assert_eq!(p.scheme, Scheme::MetaTimm);
        assert!(p.items.iter().all(|(n, s)| *s == Source::Copy(n.clone())));
        assert!(p.ignored.is_empty() && p.notes.is_empty());
    }

    #[test]
    fn chunked_meta_blocks_and_timm_registers() {
        let s = VitShape {
            registers: 4,
            ..small()
        };
        let mut m: BTreeMap<String, TensorMeta> = BTreeMap::new();
        for (n, dims) in canonical_shapes(&s) {
            let n = match n.as_str() {
                "register_tokens" => "reg_token".to_string(),
                "pos_embed" => {
                    m.insert(n, meta(&[1, 4, 8]));
                    continue;
                }
                // One chunk holding both blocks: `blocks.0.N.*`.
                _ => match n.strip_prefix("blocks.") {
                    Some(rest) => format!("blocks.0.{rest}"),
                    None => n,
                },
            };
            m.insert(n, meta(&dims));
        }
        m.insert("mask_token".into(), meta(&[1, 8]));
        let p = plan(&m).unwrap();
        assert_eq!(p.shape, s);
        assert_eq!(p.ignored, vec!["mask_token".to_string()]);
        assert_eq!(p.notes.len(), 1, "{:?}", p.notes);
        let get = |c: &str| p.items.iter().find(|(n, _)| n == c).unwrap().1.clone();
        assert_eq!(get("register_tokens"), Source::Copy("reg_token".into()));
        assert_eq!(get("pos_embed"), Source::PrependZeroRow("pos_embed".into()));
        assert_eq!(
            get("blocks.1.mlp.fc2.bias"),
            Source::Copy("blocks.0.1.mlp.fc2.bias".into())
        );
    }

    #[test]
    fn all_problems_are_reported_in_one_message() {
        let mut m = canonical_metas(&small());
        m.remove("blocks.1.norm2.bias");
        m.remove("norm.weight");
        m.insert("blocks.0.attn.proj.weight".into(), meta(&[8, 9]));
        m.insert("blocks.0.attn.extra".into(), meta(&[3]));
        m.get_mut("blocks.1.ls2.gamma").unwrap().unsupported_dtype = Some("I64".into());
        let e = plan(&m).unwrap_err();
        for part in [
            "2 missing: blocks.1.norm2.bias, norm.weight",
            "1 unexpected: blocks.0.attn.extra",
            "1 wrongly shaped: blocks.0.attn.proj.weight is [8, 9], expected [8, 8]",
            "blocks.1.ls2.gamma (I64)",
            "dim 8, depth 2",
        ] {
            assert!(e.contains(part), "{part:?} not in {e}");
        }
    }

    #[test]
    fn prefixes_and_foreign_tensors() {
        let mut m: BTreeMap<String, TensorMeta> = canonical_metas(&small())
            .into_iter()
            .map(|(n, t)| (format!("module.backbone.{n}"), t))
            .collect();
        m.insert("module.head.weight".into(), meta(&[10, 8]));
        let p = plan(&m).unwrap();
        assert_eq!(p.prefix, "module.backbone.");
        assert_eq!(p.ignored, vec!["module.head.weight".to_string()]);
    }

    #[test]
    fn wrong_models_and_ambiguous_files() {
        let mut resnet = BTreeMap::new();
        for n in [
            "conv1.weight",
            "bn1.weight",
            "layer1.0.conv1.weight",
            "fc.weight",
        ] {
            resnet.insert(n.to_string(), meta(&[4, 4]));
        }
        let e = plan(&resnet).unwrap_err();
        assert!(
            e.contains("not a DINOv2 ViT") && e.contains("conv1.weight"),
            "{e}"
        );

        let mut two = canonical_metas(&small());
        two.insert("student.cls_token".into(), meta(&[1, 1, 8]));
        let e = plan(&two).unwrap_err();
        assert!(
            e.contains("several ViT backbones") && e.contains("`student.`"),
            "{e}"
        );

        let mut bad_pos = canonical_metas(&small());
        bad_pos.insert("pos_embed".into(), meta(&[1, 7, 8]));
        let e = plan(&bad_pos).unwrap_err();
        assert!(e.contains("holds 7 positions"), "{e}");
    }

    #[test]
    fn materialize_fuses_and_pads() {
        let p = Plan {
            shape: small(),
            scheme: Scheme::HuggingFace,
            prefix: String::new(),
            items: vec![
                (
                    "qkv".into(),
                    Source::FuseRows(["q".into(), "k".into(), "v".into()]),
                ),
                ("pos".into(), Source::PrependZeroRow("p".into())),
            ],
            ignored: vec![],
            notes: vec![],
        };
        let out = materialize(&p, |name| {
            Ok(match name {
                "q" => HostTensor::new([1, 2], vec![1.0, 2.0])?,
                "k" => HostTensor::new([1, 2], vec![3.0, 4.0])?,
                "v" => HostTensor::new([1, 2], vec![5.0, 6.0])?,
                _ => HostTensor::new([1, 1, 2], vec![7.0, 8.0])?,
            })
        })
        .unwrap();
        assert_eq!(out["qkv"].dims(), &[3, 2]);
        assert_eq!(out["qkv"].data, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(out["pos"].dims(), &[1, 2, 2]);
        assert_eq!(out["pos"].data, vec![0.0, 0.0, 7.0, 8.0]);
    }
}
