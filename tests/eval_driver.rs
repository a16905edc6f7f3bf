//! The evaluation driver end to end with trivial scorers: on synthetic trees (where the
//! answer is known by construction), on MPDD metal_plate when the shared data is present, and
//! on bad input.

mod common;

use common::{mvtec_tree, shared_data, write_mask, TempDir};
use kdad::data::loader::load_images;
use kdad::data::mvtec;
use kdad::eval::{evaluate, EvalOptions, ImageScore, Map, PreparedImage, Report, Scored};
use kdad::Result;

/// Brightness map: the channel mean of the normalised crop, pooled to 28x28 (a patch grid
/// like a ViT-S/14 at 392 would give), so the driver has to resize it.
fn brightness(batch: &[PreparedImage]) -> Result<Vec<Scored>> {
    Ok(batch
        .iter()
        .map(|im| {
            let s = im.size as usize;
            let g = 28;
            let mut data = vec![0f32; g * g];
            for y in 0..s {
                for x in 0..s {
                    let v = (0..3)
                        .map(|c| im.tensor[c * s * s + y * s + x])
                        .sum::<f32>()
                        / 3.0;
                    data[(y * g / s) * g + x * g / s] += v / ((s * s) / (g * g)) as f32;
                }
            }
            (0.0, Some(Map::new(g, g, data).unwrap()))
        })
        .collect())
}

fn small_opts() -> EvalOptions {
    EvalOptions {
        batch_size: 3,
        workers: 2,
        heatmaps_per_category: 3,
        ..EvalOptions::default()
    }
}

#[test]
fn synthetic_bright_defects_are_found() {
    let tmp = TempDir::new("driver");
    mvtec_tree(&tmp.path().join("widget"), 2, 5, 4);
    let ds = mvtec::mvtec(&tmp.path().join("widget")).unwrap();
    let report = evaluate(&ds, &small_opts(), brightness).unwrap();
    let c = &report.categories[0];
    assert_eq!((c.normal, c.anomalous), (5, 4));
    // Every defect is a bright square on a darker image: brightness ranks them all first.
    assert_eq!(c.image.auroc, 1.0);
    assert!(c.pixel.unwrap().auroc > 0.9, "pixel AUROC {:?}", c.pixel);
    assert!(c.aupro.is_some());
    assert_eq!(c.per_defect_auroc["bright"], 1.0);
    assert!(report.warnings.is_empty());

    let out = TempDir::new("driver-out");
    let files = report.write(out.path()).unwrap();
    for f in ["report.json", "report.csv", "scores.csv", "roc_widget.png"] {
        assert!(out.path().join(f).is_file(), "{f} missing");
    }
    assert_eq!(
        files.iter().filter(|f| f.starts_with("heatmaps")).count(),
        3
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(json["categories"][0]["image"]["auroc"], 1.0);
    let scores = std::fs::read_to_string(out.path().join("scores.csv")).unwrap();
    assert_eq!(scores.lines().count(), 1 + 9);
    let first = files
        .iter()
        .find(|f| f.starts_with("heatmaps/widget"))
        .unwrap();
    let strip = image::open(out.path().join(first)).unwrap();
    assert_eq!((strip.width(), strip.height()), (3 * 224 + 8, 224));
}

#[test]
fn oracle_maps_give_perfect_pixel_metrics() {
    // The scorer returns the ground-truth mask plus noise below 0.5 as the map: anomalous
    // pixels score in [1, 1.5), normal ones in [0, 0.5). If the driver pools maps and masks in
    // step, every pixel metric is exactly 1. (Without the noise, AUPRO is undefined: every
    // threshold has FPR 0, and Dinomaly's compute_pro divides 0 by 0.)
    let tmp = TempDir::new("driver-oracle");
    mvtec_tree(tmp.path(), 2, 4, 4);
    let ds = mvtec::mvtec(tmp.path()).unwrap();
    let opts = EvalOptions {
        smoothing: None,
        ..small_opts()
    };
    let report = evaluate(&ds, &opts, |b: &[PreparedImage]| {
        Ok(b.iter()
            .map(|im| {
                let m = im.mask.as_ref().unwrap();
                let noise = |i: usize| (i * 2_654_435_761 % 1000) as f32 / 2000.0;
                let data = m
                    .as_raw()
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| v as f32 + noise(i))
                    .collect();
                (
                    0.0,
                    Some(Map::new(m.width() as usize, m.height() as usize, data).unwrap()),
                )
            })
            .collect())
    })
    .unwrap();
    let c = &report.categories[0];
    assert_eq!(c.image.auroc, 1.0);
    assert_eq!(c.pixel.unwrap().auroc, 1.0);
    assert!((c.pixel.unwrap().ap - 1.0).abs() < 1e-12);
    assert!((c.aupro.unwrap() - 1.0).abs() < 1e-12);
}

#[test]
fn score_from_scorer_without_maps_gives_image_metrics_only() {
    let tmp = TempDir::new("driver-nomap");
    mvtec_tree(tmp.path(), 2, 3, 3);
    let ds = mvtec::mvtec(tmp.path()).unwrap();
    let opts = EvalOptions {
        image_score: ImageScore::FromScorer,
        ..small_opts()
    };
    // Score = index in the batch list reversed: not meaningful, only finite.
    let report = evaluate(&ds, &opts, |b: &[PreparedImage]| {
        Ok(b.iter()
            .map(|im| (im.tensor.iter().sum::<f32>(), None))
            .collect())
    })
    .unwrap();
    assert!(report.categories[0].pixel.is_none());
    assert!(report.categories[0].aupro.is_none());
    assert!(report.mean.pixel_auroc.is_none());
}

#[test]
fn truncated_image_is_an_error_naming_it_and_keeps_the_old_report() {
    let tmp = TempDir::new("driver-trunc");
    mvtec_tree(tmp.path(), 2, 3, 3);
    let out = TempDir::new("driver-trunc-out");
    let ds = mvtec::mvtec(tmp.path()).unwrap();
    let good = evaluate(&ds, &small_opts(), brightness).unwrap();
    good.write(out.path()).unwrap();
    let before = std::fs::read(out.path().join("report.json")).unwrap();

    let victim = tmp.path().join("test/bright/001.png");
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).unwrap();
    let err = evaluate(&ds, &small_opts(), brightness)
        .unwrap_err()
        .to_string();
    assert!(err.contains("001.png"), "{err}");
    assert_eq!(
        std::fs::read(out.path().join("report.json")).unwrap(),
        before
    );
}

#[test]
fn mask_of_another_size_is_an_error_naming_it() {
    let tmp = TempDir::new("driver-masksize");
    mvtec_tree(tmp.path(), 2, 3, 3);
    write_mask(
        &tmp.path().join("ground_truth/bright/002_mask.png"),
        32,
        32,
        (1, 1, 4),
        255,
    );
    let ds = mvtec::mvtec(tmp.path()).unwrap();
    let err = evaluate(&ds, &small_opts(), brightness)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("002_mask.png") && err.contains("32x32"),
        "{err}"
    );
}

#[test]
fn non_binary_mask_is_a_warning_naming_it() {
    let tmp = TempDir::new("driver-grey");
    mvtec_tree(tmp.path(), 2, 3, 3);
    write_mask(
        &tmp.path().join("ground_truth/bright/000_mask.png"),
        64,
        48,
        (8, 10, 12),
        128,
    );
    let ds = mvtec::mvtec(tmp.path()).unwrap();
    let report = evaluate(&ds, &small_opts(), brightness).unwrap();
    assert_eq!(report.warnings.len(), 1);
    assert!(
        report.warnings[0].contains("000_mask.png"),
        "{:?}",
        report.warnings
    );
    // The 128-valued pixels still count as anomalous: same pixel metrics as with 255.
    let tmp2 = TempDir::new("driver-grey-ref");
    mvtec_tree(tmp2.path(), 2, 3, 3);
    let reference = evaluate(
        &mvtec::mvtec(tmp2.path()).unwrap(),
        &small_opts(),
        brightness,
    )
    .unwrap();
    assert_eq!(report.categories[0].pixel, reference.categories[0].pixel);
}

#[test]
fn scorer_errors_and_wrong_lengths_are_reported() {
    let tmp = TempDir::new("driver-scorer");
    mvtec_tree(tmp.path(), 2, 3, 3);
    let ds = mvtec::mvtec(tmp.path()).unwrap();
    let err = evaluate(&ds, &small_opts(), |_: &[PreparedImage]| Ok(vec![]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("returned 0 results"), "{err}");
    // A map whose public fields disagree.
    let err = evaluate(&ds, &small_opts(), |b: &[PreparedImage]| {
        Ok(b.iter()
            .map(|_| {
                (
                    0.0,
                    Some(Map {
                        width: 4,
                        height: 4,
                        data: vec![0.0; 3],
                    }),
                )
            })
            .collect())
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("4x4 map with 3 values"), "{err}");
}

#[test]
fn unwritable_output_leaves_no_partial_report() {
    let tmp = TempDir::new("driver-unwritable");
    mvtec_tree(tmp.path(), 2, 3, 3);
    let report = evaluate(
        &mvtec::mvtec(tmp.path()).unwrap(),
        &small_opts(),
        brightness,
    )
    .unwrap();
    // The output path is a file: the report cannot be written, and the file is untouched.
    let out = tmp.path().join("not_a_dir");
    std::fs::write(&out, b"keep").unwrap();
    assert!(report.write(&out).is_err());
    assert_eq!(std::fs::read(&out).unwrap(), b"keep");
}

#[test]
fn mpdd_metal_plate_report() {
    let Some(root) = shared_data("mpdd/metal_plate") else {
        return;
    };
    let ds = mvtec::mpdd(&root).unwrap();
    assert_eq!(ds.categories[0].split.train.len(), 54);
    let opts = EvalOptions {
        heatmaps_per_category: 6,
        ..EvalOptions::default()
    };
    // A trivial but sensible scorer: distance of each pixel from the mean training image,
    // averaged over channels. It exercises the training loader on real files too.
    let train = ds.categories[0].split.train.clone();
    let loaded: Vec<Vec<f32>> = load_images(train, opts.geometry, 2, 2)
        .unwrap()
        .map(|r| r.unwrap().tensor)
        .collect();
    let mut mean = vec![0f32; loaded[0].len()];
    for t in &loaded {
        for (m, v) in mean.iter_mut().zip(t) {
            *m += v / loaded.len() as f32;
        }
    }
    let report: Report = evaluate(&ds, &opts, |batch: &[PreparedImage]| {
        Ok(batch
            .iter()
            .map(|im| {
                let n = (im.size * im.size) as usize;
                let d = (0..n)
                    .map(|p| {
                        (0..3)
                            .map(|c| (im.tensor[c * n + p] - mean[c * n + p]).abs())
                            .sum::<f32>()
                            / 3.0
                    })
                    .collect();
                (
                    0.0,
                    Some(Map::new(im.size as usize, im.size as usize, d).unwrap()),
                )
            })
            .collect())
    })
    .unwrap();
    print!("{}", report.table());
    let c = &report.categories[0];
    // data/README.md: 26 good and 81 defective test images.
    assert_eq!((c.normal, c.anomalous), (26, 81));
    for v in [
        c.image.auroc,
        c.image.ap,
        c.pixel.unwrap().auroc,
        c.aupro.unwrap(),
    ] {
        assert!((0.0..=1.0).contains(&v));
    }
    let keep = std::env::var_os("KDAD_KEEP_REPORT").map(std::path::PathBuf::from);
    let tmp = TempDir::new("mpdd-report");
    let out = keep.unwrap_or_else(|| tmp.path().to_path_buf());
    let files = report.write(&out).unwrap();
    assert!(files.iter().any(|f| f.ends_with("roc_metal_plate.png")));
    assert_eq!(
        files.iter().filter(|f| f.starts_with("heatmaps")).count(),
        6
    );
}
