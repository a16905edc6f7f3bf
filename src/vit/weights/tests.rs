//! Loader tests on small synthetic files written to the temp directory.

use super::*;
use crate::error::Error;
use crate::tensor::Rng;
use safetensors::tensor::{Dtype, TensorView};
use std::path::PathBuf;

/// A file path in the temp directory, unique per test, removed (with any leftovers of its
/// name) on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str, ext: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir =
            std::env::temp_dir().join(format!("kdad-weights-{}-{tag}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempFile(dir.join(format!("w.{ext}")))
    }
    fn dir_entries(&self) -> Vec<String> {
        std::fs::read_dir(self.0.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0.parent().unwrap());
    }
}

fn tiny() -> VitShape {
    VitShape {
        dim: 8,
        depth: 2,
        registers: 2,
        layerscale: true,
        grid: 3,
        mlp_hidden: 32,
    }
}

/// Random canonical tensors of a shape.
fn random_canonical(s: &VitShape, seed: u64) -> HashMap<String, HostTensor> {
    let mut rng = Rng::new(seed);
    canonical_shapes(s)
        .into_iter()
        .map(|(n, dims)| (n, rng.tensor(crate::tensor::Shape(dims), -1.0, 1.0)))
        .collect()
}

fn encode(t: &HostTensor, dtype: Dtype) -> Vec<u8> {
    match dtype {
        Dtype::F32 => t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Dtype::F16 => t
            .data
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect(),
        Dtype::BF16 => t
            .data
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect(),
        Dtype::F64 => t
            .data
            .iter()
            .flat_map(|v| (*v as f64).to_le_bytes())
            .collect(),
        Dtype::I64 => t
            .data
            .iter()
            .flat_map(|v| (*v as i64).to_le_bytes())
            .collect(),
        other => panic!("test helper has no encoder for {other:?}"),
    }
}

/// Writes tensors under the given names and element types (through the safetensors crate,
/// not through the code under test).
fn write_file(path: &Path, tensors: &[(String, &HostTensor, Dtype)]) {
    let bytes: Vec<(String, Vec<usize>, Dtype, Vec<u8>)> = tensors
        .iter()
        .map(|(n, t, d)| (n.clone(), t.dims().to_vec(), *d, encode(t, *d)))
        .collect();
    let views: Vec<(String, TensorView)> = bytes
        .iter()
        .map(|(n, s, d, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(path, safetensors::tensor::serialize(views, None).unwrap()).unwrap();
}

/// The Hugging Face names of canonical tensors, q/k/v split, as (name, tensor).
fn hugging_face_names(c: &HashMap<String, HostTensor>, s: &VitShape) -> Vec<(String, HostTensor)> {
    let d = s.dim;
    let mut out = vec![
        ("embeddings.cls_token".to_string(), c["cls_token"].clone()),
        (
            "embeddings.mask_token".to_string(),
            HostTensor::zeros([1, d]),
        ),
        (
            "embeddings.position_embeddings".to_string(),
            c["pos_embed"].clone(),
        ),
        (
            "embeddings.register_tokens".to_string(),
            c["register_tokens"].clone(),
        ),
        (
            "embeddings.patch_embeddings.projection.weight".to_string(),
            c["patch_embed.proj.weight"].clone(),
        ),
        (
            "embeddings.patch_embeddings.projection.bias".to_string(),
            c["patch_embed.proj.bias"].clone(),
        ),
        ("layernorm.weight".to_string(), c["norm.weight"].clone()),
        ("layernorm.bias".to_string(), c["norm.bias"].clone()),
    ];
    for i in 0..s.depth {
        let (hf, b) = (format!("encoder.layer.{i}."), format!("blocks.{i}."));
        let w = &c[&format!("{b}attn.qkv.weight")];
        let bias = &c[&format!("{b}attn.qkv.bias")];
        for (j, q) in ["query", "key", "value"].iter().enumerate() {
            let rows = w.data[j * d * d..(j + 1) * d * d].to_vec();
            out.push((
                format!("{hf}attention.attention.{q}.weight"),
                HostTensor::new([d, d], rows).unwrap(),
            ));
            let bv = bias.data[j * d..(j + 1) * d].to_vec();
            out.push((
                format!("{hf}attention.attention.{q}.bias"),
                HostTensor::new([d], bv).unwrap(),
            ));
        }
        for (h, m) in [
            ("norm1.weight", "norm1.weight"),
            ("norm1.bias", "norm1.bias"),
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
        ] {
            out.push((format!("{hf}{h}"), c[&format!("{b}{m}")].clone()));
        }
    }
    out
}

fn weights_detail(e: Error) -> String {
    match e {
        Error::Weights { detail, .. } => detail,
        other => panic!("expected Error::Weights, got {other}"),
    }
}

#[test]
fn hugging_face_file_in_four_dtypes_loads_as_canonical() {
    let s = tiny();
    let canon = random_canonical(&s, 1);
    let hf = hugging_face_names(&canon, &s);
    // Cycle the element types so every kind of tensor is read in each of them.
    let dtypes = [Dtype::F32, Dtype::F16, Dtype::BF16, Dtype::F64];
    let entries: Vec<(String, &HostTensor, Dtype)> = hf
        .iter()
        .enumerate()
        .map(|(i, (n, t))| (format!("dinov2.{n}"), t, dtypes[i % 4]))
        .collect();
    let mut with_head = entries.clone();
    let head = HostTensor::zeros([5, 16]);
    with_head.push(("classifier.weight".into(), &head, Dtype::I64));
    let f = TempFile::new("hf", "safetensors");
    write_file(&f.0, &with_head);

    let w = load_safetensors(&f.0).unwrap();
    assert_eq!(w.shape, s);
    assert_eq!(w.scheme, Scheme::HuggingFace);
    assert_eq!(
        w.ignored,
        vec![
            "classifier.weight".to_string(),
            "dinov2.embeddings.mask_token".to_string()
        ]
    );
    let mut names: Vec<&String> = w.tensors.keys().collect();
    names.sort();
    let mut want: Vec<String> = canonical_shapes(&s).into_iter().map(|(n, _)| n).collect();
    want.sort();
    assert_eq!(names, want.iter().collect::<Vec<_>>());
    assert_eq!(w.parameter_count(), s.parameter_count());
    for (name, t) in &canon {
        let got = &w.tensors[name];
        assert_eq!(got.shape, t.shape, "{name}");
        // bf16 keeps 8 significant bits: values in [-1, 1) are within 2^-8 of the original.
        let err = got.max_abs_diff(t).unwrap();
        assert!(err <= 1.0 / 256.0, "{name}: {err}");
    }
    // An F32 tensor comes through bit-exact (entry 0 is the class token, stored as F32).
    assert_eq!(entries[0].2, Dtype::F32);
    assert_eq!(w.tensors["cls_token"].data, canon["cls_token"].data);
}

#[test]
fn canonical_round_trip_is_exact_and_leaves_no_temporary_files() {
    let s = VitShape {
        registers: 0,
        layerscale: false,
        ..tiny()
    };
    let canon = random_canonical(&s, 2);
    let f = TempFile::new("roundtrip", "safetensors");
    let meta: HashMap<String, String> = [("source".to_string(), "test".to_string())].into();
    save_canonical(&canon, &f.0, &meta).unwrap();
    // Overwriting goes through the same temporary-file path.
    save_canonical(&canon, &f.0, &meta).unwrap();
    assert_eq!(f.dir_entries(), vec!["w.safetensors".to_string()]);
    let w = load_safetensors(&f.0).unwrap();
    assert_eq!(w.shape, s);
    assert_eq!(w.scheme, Scheme::MetaTimm);
    assert_eq!(w.tensors, canon);
    assert_eq!(w.metadata, meta);
}

#[test]
fn save_refuses_tensors_that_are_not_canonical() {
    let s = tiny();
    let canon = random_canonical(&s, 3);
    let hf: HashMap<String, HostTensor> = hugging_face_names(&canon, &s).into_iter().collect();
    let f = TempFile::new("refuse", "safetensors");
    let e = weights_detail(save_canonical(&hf, &f.0, &HashMap::new()).unwrap_err());
    assert!(e.contains("refusing to save"), "{e}");
    let mut broken = canon.clone();
    broken.remove("blocks.1.mlp.fc1.bias");
    let e = weights_detail(save_canonical(&broken, &f.0, &HashMap::new()).unwrap_err());
    assert!(e.contains("blocks.1.mlp.fc1.bias"), "{e}");
    assert!(!f.0.exists());
}

#[test]
fn timm_registers_layout_gets_a_zero_class_position() {
    let s = tiny();
    let canon = random_canonical(&s, 4);
    let mut entries: Vec<(String, HostTensor)> = Vec::new();
    for (n, t) in &canon {
        match n.as_str() {
            "register_tokens" => entries.push(("reg_token".into(), t.clone())),
            "pos_embed" => {
                let grid_only = t.data[s.dim..].to_vec();
                entries.push((
                    n.clone(),
                    HostTensor::new([1, 9, s.dim], grid_only).unwrap(),
                ));
            }
            _ => entries.push((n.clone(), t.clone())),
        }
    }
    let f = TempFile::new("timm", "safetensors");
    let refs: Vec<(String, &HostTensor, Dtype)> = entries
        .iter()
        .map(|(n, t)| (n.clone(), t, Dtype::F32))
        .collect();
    write_file(&f.0, &refs);
    let w = load_safetensors(&f.0).unwrap();
    assert_eq!(w.shape, s);
    assert_eq!(w.notes.len(), 1);
    let pos = &w.tensors["pos_embed"];
    assert_eq!(pos.dims(), &[1, 10, s.dim]);
    assert!(pos.data[..s.dim].iter().all(|&v| v == 0.0));
    assert_eq!(pos.data[s.dim..], canon["pos_embed"].data[s.dim..]);
    assert_eq!(w.tensors["register_tokens"], canon["register_tokens"]);
}

#[test]
fn missing_unexpected_and_misshapen_tensors_are_one_error() {
    let s = tiny();
    let canon = random_canonical(&s, 5);
    let hf = hugging_face_names(&canon, &s);
    let bad = HostTensor::zeros([8, 7]);
    let extra = HostTensor::zeros([3]);
    let mut entries: Vec<(String, &HostTensor, Dtype)> = hf
        .iter()
        .filter(|(n, _)| {
            n != "encoder.layer.1.attention.attention.value.bias" && n != "layernorm.weight"
        })
        .map(|(n, t)| {
            let t = if n == "encoder.layer.0.attention.attention.key.weight" {
                &bad
            } else {
                t
            };
            (n.clone(), t, Dtype::F32)
        })
        .collect();
    entries.push((
        "encoder.layer.0.mlp.weights_in.weight".into(),
        &extra,
        Dtype::F32,
    ));
    let f = TempFile::new("problems", "safetensors");
    write_file(&f.0, &entries);
    let e = load_safetensors(&f.0).unwrap_err().to_string();
    for part in [
        "2 missing: encoder.layer.1.attention.attention.value.bias, layernorm.weight",
        "1 unexpected: encoder.layer.0.mlp.weights_in.weight",
        "encoder.layer.0.attention.attention.key.weight is [8, 7], expected [8, 8]",
        "Hugging Face",
    ] {
        assert!(e.contains(part), "{part:?} not in:\n{e}");
    }
    assert!(
        e.contains(&*f.0.to_string_lossy()),
        "the path is named: {e}"
    );
}

#[test]
fn unreadable_element_type_is_reported_by_name() {
    let s = VitShape {
        registers: 0,
        ..tiny()
    };
    let canon = random_canonical(&s, 6);
    let entries: Vec<(String, &HostTensor, Dtype)> = canon
        .iter()
        .map(|(n, t)| {
            (
                n.clone(),
                t,
                if n == "norm.bias" {
                    Dtype::I64
                } else {
                    Dtype::F32
                },
            )
        })
        .collect();
    let f = TempFile::new("dtype", "safetensors");
    write_file(&f.0, &entries);
    let e = weights_detail(load_safetensors(&f.0).unwrap_err());
    assert!(e.contains("norm.bias (I64)"), "{e}");
}

#[test]
fn wrong_model_is_a_clear_error() {
    let conv = HostTensor::zeros([4, 3, 3, 3]);
    let fc = HostTensor::zeros([10, 4]);
    let f = TempFile::new("resnet", "safetensors");
    write_file(
        &f.0,
        &[
            ("conv1.weight".into(), &conv, Dtype::F32),
            ("layer1.0.conv1.weight".into(), &conv, Dtype::F32),
            ("fc.weight".into(), &fc, Dtype::F32),
        ],
    );
    let e = weights_detail(load_safetensors(&f.0).unwrap_err());
    assert!(
        e.contains("not a DINOv2 ViT") && e.contains("3 tensors") && e.contains("conv1.weight"),
        "{e}"
    );
}

#[test]
fn files_that_are_not_safetensors_are_clear_errors() {
    let f = TempFile::new("garbage", "safetensors");
    let cases: [(&[u8], &str); 5] = [
        (b"", "empty"),
        (b"\x02\x00\x00\x00\x00\x00\x00\x00{}", "holds no tensors"),
        (b"PK\x03\x04 rest of a torch zip", "convert_meta_pth.py"),
        (
            b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}",
            "not a readable safetensors file",
        ),
        (
            b"\xff\xff\xff\xff\xff\xff\xff\x7f",
            "not a readable safetensors file",
        ),
    ];
    for (bytes, want) in cases {
        std::fs::write(&f.0, bytes).unwrap();
        let e = weights_detail(load_safetensors(&f.0).unwrap_err());
        assert!(e.contains(want), "{want:?} not in {e}");
    }
    let onnx = TempFile::new("onnx", "onnx");
    std::fs::write(&onnx.0, b"\x08\x07\x12\x07pytorch").unwrap();
    let e = weights_detail(load_safetensors(&onnx.0).unwrap_err());
    assert!(e.contains("import-onnx"), "{e}");
    let missing = f.0.with_file_name("does-not-exist.safetensors");
    assert!(matches!(
        load_safetensors(&missing).unwrap_err(),
        Error::Io { .. }
    ));
}

#[test]
fn every_truncation_and_many_corruptions_error_without_panicking() {
    let s = VitShape {
        depth: 1,
        registers: 0,
        grid: 1,
        ..tiny()
    };
    let canon = random_canonical(&s, 7);
    let f = TempFile::new("truncate", "safetensors");
    save_canonical(&canon, &f.0, &HashMap::new()).unwrap();
    let good = std::fs::read(&f.0).unwrap();
    // In memory: thousands of file writes would only measure the disk.
    for len in 0..good.len() {
        let e = weights_detail(load_bytes(&f.0, &good[..len]).unwrap_err());
        assert!(!e.is_empty());
    }
    // Flipped bits in the header either still parse (then the model checks run) or are an
    // error; in no case a panic.
    let mut rng = Rng::new(8);
    let header_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize + 8;
    for _ in 0..2000 {
        let mut bad = good.clone();
        let at = rng.below(header_len);
        bad[at] ^= 1 << rng.below(8);
        let _ = load_bytes(&f.0, &bad);
    }
}

#[test]
fn standard_heads_and_counts() {
    assert_eq!(standard_heads(384), Some(6));
    assert_eq!(standard_heads(768), Some(12));
    assert_eq!(standard_heads(1024), Some(16));
    assert_eq!(standard_heads(1536), Some(24));
    assert_eq!(standard_heads(48), None);
    // DINOv2 ViT-S/14 without registers: the published count (mask_token excluded).
    let vits = VitShape {
        dim: 384,
        depth: 12,
        registers: 0,
        layerscale: true,
        grid: 37,
        mlp_hidden: 1536,
    };
    assert_eq!(vits.parameter_count(), 22_056_192);
    assert_eq!(vits.standard_heads(), Some(6));
}

#[test]
fn serialized_bytes_do_not_depend_on_metadata_map_order() {
    let canon = random_canonical(&tiny(), 3);
    let keys: Vec<String> = (0..12).map(|i| format!("key{i:02}")).collect();
    // Each HashMap gets its own random hasher keys, so insertion in different orders into
    // fresh maps exercises different iteration orders.
    let bytes: Vec<Vec<u8>> = (0..8)
        .map(|r| {
            let mut order = keys.clone();
            Rng::new(r).shuffle(&mut order);
            let meta: HashMap<String, String> = order
                .iter()
                .map(|k| (k.clone(), format!("value of {k}")))
                .collect();
            io::serialize(&canon, &meta).unwrap()
        })
        .collect();
    assert!(bytes.windows(2).all(|w| w[0] == w[1]));
    let f = TempFile::new("sorted", "safetensors");
    crate::atomic::write_atomic(&f.0, &bytes[0]).unwrap();
    let w = load_safetensors(&f.0).unwrap();
    assert_eq!(w.tensors, canon);
    assert_eq!(w.metadata.len(), keys.len());
    assert_eq!(w.metadata["key07"], "value of key07");
}
