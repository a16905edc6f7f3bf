//! The committed tiny Hugging Face DINOv2 fixtures (tests/fixtures/tiny_dinov2, made by
//! scripts/make_fixtures.py with transformers) load as canonical weights.

use std::collections::HashMap;
use std::path::PathBuf;

use kdad::tensor::HostTensor;
use kdad::vit::weights::{canonical_shapes, load_safetensors, read_tensors, Scheme, VitShape};

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tiny_dinov2")
        .join(rel)
}

fn meta() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture("meta.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Rows `j*n .. (j+1)*n` of a row-major tensor, flattened.
fn rows(t: &HostTensor, j: usize, n: usize) -> &[f32] {
    let per_row = t.numel() / t.dims()[0];
    &t.data[j * n * per_row..(j + 1) * n * per_row]
}

fn check_variant(tag: &str, registers: usize) {
    let w = load_safetensors(&fixture(&format!("{tag}/model.safetensors"))).unwrap();
    let want = VitShape {
        dim: 48,
        depth: 3,
        registers,
        layerscale: true,
        grid: 3,
        mlp_hidden: 192,
    };
    assert_eq!(w.shape, want, "{tag}");
    assert_eq!(w.scheme, Scheme::HuggingFace);
    assert_eq!(w.ignored, vec!["embeddings.mask_token".to_string()]);
    assert!(w.notes.is_empty());
    // Same names and shapes as the contract.
    let mut got: Vec<(String, Vec<usize>)> = w
        .tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.dims().to_vec()))
        .collect();
    got.sort();
    let mut expected = canonical_shapes(&want);
    expected.sort();
    assert_eq!(got, expected, "{tag}");
    // torch's count (meta.json) includes mask_token [1, 48], which the forward does not use.
    let torch_count = meta()["models"][tag]["parameters"].as_u64().unwrap() as usize;
    assert_eq!(w.parameter_count(), torch_count - 48, "{tag}");

    // Values: the canonical tensors are the file's HF tensors, moved and fused.
    let raw: HashMap<String, HostTensor> =
        read_tensors(&fixture(&format!("{tag}/model.safetensors"))).unwrap();
    for i in 0..3 {
        let a = format!("encoder.layer.{i}.attention.attention.");
        for kind in ["weight", "bias"] {
            let qkv = &w.tensors[&format!("blocks.{i}.attn.qkv.{kind}")];
            for (j, q) in ["query", "key", "value"].iter().enumerate() {
                assert_eq!(
                    rows(qkv, j, 48),
                    raw[&format!("{a}{q}.{kind}")].data.as_slice(),
                    "{tag} {i} {q}"
                );
            }
        }
        assert_eq!(
            w.tensors[&format!("blocks.{i}.ls2.gamma")],
            raw[&format!("encoder.layer.{i}.layer_scale2.lambda1")]
        );
        assert_eq!(
            w.tensors[&format!("blocks.{i}.attn.proj.weight")],
            raw[&format!("encoder.layer.{i}.attention.output.dense.weight")]
        );
    }
    assert_eq!(
        w.tensors["pos_embed"],
        raw["embeddings.position_embeddings"]
    );
    assert_eq!(w.tensors["norm.bias"], raw["layernorm.bias"]);
    if registers > 0 {
        assert_eq!(
            w.tensors["register_tokens"],
            raw["embeddings.register_tokens"]
        );
    }
}

#[test]
fn tiny_dinov2_without_registers_f32() {
    check_variant("reg0", 0);
}

#[test]
fn tiny_dinov2_with_two_registers_f16() {
    check_variant("reg2", 2);
}

#[test]
fn tiny_outputs_have_the_documented_layout() {
    // The vit golden tests rely on these keys and shapes (tokens: cls, registers, patches).
    for (tag, registers) in [("reg0", 0), ("reg2", 2)] {
        let out = read_tensors(&fixture(&format!("{tag}/outputs.safetensors"))).unwrap();
        for res in [28usize, 42, 56] {
            let g = res / 14;
            let tokens = 1 + registers + g * g;
            for key in ["embeddings", "block.0", "block.1", "block.2", "norm"] {
                assert_eq!(
                    out[&format!("r{res}.{key}")].dims(),
                    &[2, tokens, 48],
                    "{tag} r{res}.{key}"
                );
            }
            assert_eq!(
                out[&format!("r{res}.pos_embed")].dims(),
                &[1, 1 + g * g, 48]
            );
        }
    }
    let inputs = read_tensors(&fixture("inputs.safetensors")).unwrap();
    assert_eq!(inputs["r56"].dims(), &[2, 3, 56, 56]);
}
