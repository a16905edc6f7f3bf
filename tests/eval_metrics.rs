//! Metrics against fixtures written by scripts/make_metric_fixtures.py (scikit-learn,
//! scikit-image, and Dinomaly's compute_pro re-typed there), plus hand-checked cases.

use kdad::eval::aupro::label_components;
use kdad::eval::metrics::{aupro, ranking, roc_curve};
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/metrics")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn u8s(v: &Value) -> Vec<u8> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u8)
        .collect()
}

#[test]
fn ranking_matches_sklearn() {
    let f = fixture("ranking.json");
    for case in f["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let r = ranking(&f32s(&case["scores"]), &u8s(&case["labels"])).unwrap();
        for (got, key) in [(r.auroc, "auroc"), (r.ap, "ap"), (r.f1_max, "f1_max")] {
            let want = case[key].as_f64().unwrap();
            assert!(
                (got - want).abs() < 1e-6,
                "{name} {key}: {got} vs sklearn {want}"
            );
        }
        if case.get("roc_fpr").is_some() {
            let curve = roc_curve(&f32s(&case["scores"]), &u8s(&case["labels"])).unwrap();
            let (fpr, tpr) = (f64s(&case["roc_fpr"]), f64s(&case["roc_tpr"]));
            assert_eq!(curve.len(), fpr.len(), "{name}: ROC points");
            for (i, &(x, y)) in curve.iter().enumerate() {
                assert!(
                    (x - fpr[i]).abs() < 1e-12 && (y - tpr[i]).abs() < 1e-12,
                    "{name}: ROC point {i}"
                );
            }
        }
    }
}

#[test]
fn aupro_matches_dinomaly_compute_pro() {
    let f = fixture("aupro.json");
    for case in f["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let (w, h) = (
            case["width"].as_u64().unwrap() as usize,
            case["height"].as_u64().unwrap() as usize,
        );
        let n = case["images"].as_u64().unwrap() as usize;
        let got = aupro(&f32s(&case["maps"]), &u8s(&case["masks"]), &vec![(w, h); n])
            .unwrap()
            .unwrap();
        let want = case["aupro"].as_f64().unwrap();
        assert!(
            (got - want).abs() < 1e-3,
            "{name}: AUPRO {got} vs reference {want}"
        );
    }
}

#[test]
fn hand_checked_ranking() {
    // Scores 0.1 0.4 0.35 0.8 with labels 0 0 1 1: sklearn's documented example, AUROC 0.75,
    // AP 0.8333.
    let r = ranking(&[0.1, 0.4, 0.35, 0.8], &[0, 0, 1, 1]).unwrap();
    assert!((r.auroc - 0.75).abs() < 1e-12);
    assert!((r.ap - 0.8333333333333333).abs() < 1e-12);
    // A tie between a positive and a negative counts half.
    let r = ranking(&[0.5, 0.5], &[0, 1]).unwrap();
    assert_eq!(r.auroc, 0.5);
}

#[test]
fn ranking_rejects_bad_input() {
    assert!(ranking(&[0.1, 0.2], &[1, 1]).is_err(), "one class");
    assert!(ranking(&[0.1, f32::NAN], &[0, 1]).is_err(), "NaN");
    assert!(ranking(&[0.1], &[0, 1]).is_err(), "lengths");
}

#[test]
fn components_are_8_connected() {
    // 1 . .
    // . 1 .
    // . . .      plus a separate pixel at the bottom-right corner.
    #[rustfmt::skip]
    let mask = [1, 0, 0, 0,
                0, 1, 0, 0,
                0, 0, 0, 0,
                0, 0, 0, 1];
    let (labels, n) = label_components(&mask, 4, 4);
    assert_eq!(n, 2);
    assert_eq!(labels[0], labels[5]);
    assert_ne!(labels[0], labels[15]);
}

#[test]
fn pixel_metrics_scale_to_millions() {
    // 4M pixels, a quarter anomalous and scoring higher by construction: quick, and the
    // answer is known: every positive above every negative gives AUROC 1.
    let n = 4_000_000usize;
    let labels: Vec<u8> = (0..n).map(|i| (i % 4 == 0) as u8).collect();
    let scores: Vec<f32> = (0..n)
        .map(|i| (i % 1000) as f32 / 1000.0 + labels[i] as f32 * 2.0)
        .collect();
    let r = ranking(&scores, &labels).unwrap();
    assert_eq!(r.auroc, 1.0);
    assert!((r.ap - 1.0).abs() < 1e-12);
}

/// The scale the pooled pixel metrics must handle: 100M pixels (1,526 maps of 256x256, more
/// than any MVTec category). Ignored by default (it needs ~0.6 GB and some seconds); run with
/// `cargo test --release --test eval_metrics -- --ignored`.
#[test]
#[ignore]
fn pixel_metrics_at_100m() {
    use kdad::eval::metrics::ranking_owned;
    let side = 256usize;
    let images = 100_000_000 / (side * side) + 1;
    let n = images * side * side;
    // Every map has a 16x16 defect square scoring above every normal pixel: AUROC 1, AUPRO 1.
    let labels: Vec<u8> = (0..n)
        .map(|i| ((i % side) < 16 && (i / side) % side < 16) as u8)
        .collect();
    let scores: Vec<f32> = (0..n)
        .map(|i| (i % 997) as f32 / 997.0 + labels[i] as f32 * 2.0)
        .collect();
    let t = std::time::Instant::now();
    let pro = aupro(&scores, &labels, &vec![(side, side); images])
        .unwrap()
        .unwrap();
    let t_pro = t.elapsed();
    let r = ranking_owned(scores, &labels).unwrap();
    println!(
        "{n} pixels: AUPRO {:.1?}, ranking {:.1?}",
        t_pro,
        t.elapsed() - t_pro
    );
    assert_eq!(r.auroc, 1.0);
    assert!((pro - 1.0).abs() < 1e-9);
}

#[test]
fn aupro_is_undefined_where_dinomaly_gives_nan() {
    // Binary maps equal to the masks: no threshold has a false positive, so the FPR rescale
    // divides 0 by 0 in compute_pro.
    assert_eq!(
        aupro(&[0.0, 1.0, 0.0, 1.0], &[0, 1, 0, 1], &[(2, 2)]).unwrap(),
        None
    );
    // No anomalous region at all.
    assert_eq!(
        aupro(&[0.1, 0.2, 0.3, 0.4], &[0, 0, 0, 0], &[(2, 2)]).unwrap(),
        None
    );
    // Constant maps: no thresholds.
    assert_eq!(aupro(&[0.5; 4], &[0, 1, 0, 0], &[(2, 2)]).unwrap(), None);
    assert!(
        aupro(&[0.5; 4], &[0, 1, 0, 0], &[(3, 2)]).is_err(),
        "shape mismatch"
    );
}
