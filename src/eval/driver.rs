//! The generic evaluation driver: prepares every test image of every category on worker
//! threads, hands batches to the method's scorer, post-processes the maps as Dinomaly does,
//! and computes the per-category metrics. The method plugs in through `scorer` only.

use crate::data::decode::{decode_mask, decode_rgb};
use crate::data::prefetch::prefetch;
use crate::data::preprocess::{geometry_mask, geometry_rgb, normalize, Geometry};
use crate::data::{Category, Dataset, Label, Sample};
use crate::eval::metrics::{aupro, ranking, ranking_owned, roc_curve};
use crate::eval::postprocess::{resize, smooth, top_mean, Align, Map, Smoothing};
use crate::eval::report::{CategoryResult, HeatmapSample, ImageRecord, Report};
use crate::{Error, Result};
use image::{GrayImage, RgbImage};
use std::collections::BTreeMap;
use std::time::Instant;

/// One test image, decoded and preprocessed, as the scorer receives it.
#[derive(Clone, Debug)]
pub struct PreparedImage {
    /// Position in the category's test list.
    pub index: usize,
    /// ImageNet-normalised CHW pixels, `3 x size x size`.
    pub tensor: Vec<f32>,
    /// Side of the (square) crop.
    pub size: u32,
    /// The cropped 8-bit image, for overlays.
    pub rgb: RgbImage,
    /// Ground truth at the evaluation size, 1 = anomalous; `None` where the data set has no
    /// masks. Normal images of a data set with masks get an all-zero mask.
    pub mask: Option<GrayImage>,
    pub label: Label,
    pub defect: String,
    pub name: String,
}

/// How the image score is obtained.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub enum ImageScore {
    /// The score the scorer returns.
    FromScorer,
    /// Mean of the top `ratio` of the post-processed map (Dinomaly: 0.01; 0 = maximum).
    TopMean(f64),
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct EvalOptions {
    pub geometry: Geometry,
    /// Side at which maps and masks are compared (Dinomaly's `resize_mask=256`).
    pub mask_size: u32,
    /// Smoothing of the map after it is resized to `mask_size`; `None`: none.
    pub smoothing: Option<Smoothing>,
    pub image_score: ImageScore,
    pub batch_size: usize,
    pub workers: usize,
    /// Prepared images queued per worker.
    pub prefetch_depth: usize,
    /// Overlays kept per category for the report.
    pub heatmaps_per_category: usize,
}

impl EvalOptions {
    /// The quick setting of the shared reference scripts: R256-C224, maps and masks compared
    /// at the crop size (224), Dinomaly's smoothing and top-1 % score.
    pub fn quick() -> Self {
        EvalOptions {
            geometry: Geometry::R256_C224,
            mask_size: 224,
            smoothing: Some(Smoothing::default()),
            image_score: ImageScore::TopMean(0.01),
            batch_size: 8,
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .min(4),
            prefetch_depth: 4,
            heatmaps_per_category: 8,
        }
    }

    /// Dinomaly's paper setting (methods.md §2.1, §2.11): R448-C392, maps and masks at 256.
    pub fn dinomaly() -> Self {
        EvalOptions {
            geometry: Geometry::R448_C392,
            mask_size: 256,
            ..Self::quick()
        }
    }
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self::quick()
    }
}

/// What the scorer returns per image: a score and, for localisation, an anomaly map at any
/// resolution (it is resized to `mask_size`).
pub type Scored = (f32, Option<Map>);

/// Evaluates every category of `dataset` with `scorer`. Nothing is written: call
/// `Report::write` on the result.
pub fn evaluate<S>(dataset: &Dataset, opts: &EvalOptions, mut scorer: S) -> Result<Report>
where
    S: FnMut(&[PreparedImage]) -> Result<Vec<Scored>>,
{
    opts.geometry.validate()?;
    if opts.mask_size == 0 || opts.batch_size == 0 {
        return Err(Error::Invalid(
            "evaluation: mask size and batch size must be positive".into(),
        ));
    }
    let mut report = Report::new(&dataset.name, opts);
    for category in &dataset.categories {
        let result = evaluate_category(category, opts, &mut scorer, &mut report.warnings)?;
        report.categories.push(result);
    }
    report.finish();
    Ok(report)
}

/// Pooled per-pixel data of one category.
#[derive(Default)]
struct Pixels {
    scores: Vec<f32>,
    labels: Vec<u8>,
    shapes: Vec<(usize, usize)>,
    missing_maps: usize,
}

fn evaluate_category<S>(
    category: &Category,
    opts: &EvalOptions,
    scorer: &mut S,
    warnings: &mut Vec<String>,
) -> Result<CategoryResult>
where
    S: FnMut(&[PreparedImage]) -> Result<Vec<Scored>>,
{
    let start = Instant::now();
    let test = &category.split.test;
    let keep = heatmap_indices(test.len(), opts.heatmaps_per_category);
    let items: Vec<(usize, Sample)> = test.iter().cloned().enumerate().collect();
    let (geometry, mask_size, with_masks) = (opts.geometry, opts.mask_size, category.has_masks);
    let prepared = prefetch(items, opts.workers, opts.prefetch_depth, move |(i, s)| {
        prepare(*i, s, geometry, mask_size, with_masks)
    });

    let mut records = Vec::with_capacity(test.len());
    let mut pixels = Pixels::default();
    let mut heatmaps = Vec::new();
    let mut batch = Vec::with_capacity(opts.batch_size);
    let mut prepared = prepared.peekable();
    while let Some(item) = prepared.next() {
        let (image, warning) = item?;
        warnings.extend(warning);
        batch.push(image);
        if batch.len() == opts.batch_size || prepared.peek().is_none() {
            let scored = scorer(&batch)?;
            if scored.len() != batch.len() {
                return Err(Error::Invalid(format!(
                    "{}: the scorer returned {} results for a batch of {}",
                    category.name,
                    scored.len(),
                    batch.len()
                )));
            }
            for (image, (score, map)) in batch.drain(..).zip(scored) {
                let map = map.map(|m| postprocess(m, opts, &image.name)).transpose()?;
                let score = match (opts.image_score, &map) {
                    (ImageScore::TopMean(ratio), Some(m)) => top_mean(m, ratio),
                    (ImageScore::TopMean(_), None) => {
                        return Err(Error::Invalid(format!(
                        "{}: image score from the map was asked for, but the scorer gave no map",
                        image.name
                    )))
                    }
                    (ImageScore::FromScorer, _) => score,
                };
                if !score.is_finite() {
                    return Err(Error::Numerical(format!(
                        "{}: image score is {score}",
                        image.name
                    )));
                }
                pool_pixels(&mut pixels, &image, map.as_ref());
                if keep.contains(&image.index) {
                    heatmaps.push(HeatmapSample {
                        name: image.name.clone(),
                        rgb: image.rgb.clone(),
                        map: map.clone(),
                        mask: image.mask.clone(),
                    });
                }
                records.push(ImageRecord {
                    name: image.name,
                    label: image.label,
                    defect: image.defect,
                    score,
                });
            }
        }
    }
    finish_category(category, records, pixels, heatmaps, start)
}

/// Resize to the evaluation size, then smooth (Dinomaly's order). A map whose fields
/// disagree (they are public) is an error naming the image.
fn postprocess(map: Map, opts: &EvalOptions, name: &str) -> Result<Map> {
    if map.data.is_empty() || map.data.len() != map.width * map.height {
        return Err(Error::Invalid(format!(
            "{name}: the scorer returned a {}x{} map with {} values",
            map.width,
            map.height,
            map.data.len()
        )));
    }
    let n = opts.mask_size as usize;
    let map = if map.width != n || map.height != n {
        resize(&map, n, n, Align::HalfPixel)
    } else {
        map
    };
    Ok(match opts.smoothing {
        Some(s) => smooth(&map, s),
        None => map,
    })
}

fn pool_pixels(pixels: &mut Pixels, image: &PreparedImage, map: Option<&Map>) {
    let (Some(mask), Some(map)) = (&image.mask, map) else {
        pixels.missing_maps += image.mask.is_some() as usize;
        return;
    };
    pixels.scores.extend_from_slice(&map.data);
    pixels.labels.extend_from_slice(mask.as_raw());
    pixels.shapes.push((map.width, map.height));
}

fn finish_category(
    category: &Category,
    records: Vec<ImageRecord>,
    pixels: Pixels,
    heatmaps: Vec<HeatmapSample>,
    start: Instant,
) -> Result<CategoryResult> {
    let what = |e: Error| Error::Invalid(format!("category {}: {e}", category.name));
    let scores: Vec<f32> = records.iter().map(|r| r.score).collect();
    let labels: Vec<u8> = records
        .iter()
        .map(|r| r.label.is_anomalous() as u8)
        .collect();
    let image = ranking(&scores, &labels).map_err(what)?;
    let roc = roc_curve(&scores, &labels).map_err(what)?;

    // AUROC of the normal images against each defect type alone (MVTec LOCO reports logical
    // and structural anomalies this way).
    let mut per_defect = BTreeMap::new();
    let defects: std::collections::BTreeSet<&str> = records
        .iter()
        .filter(|r| r.label.is_anomalous())
        .map(|r| r.defect.as_str())
        .collect();
    for d in defects {
        let sel: Vec<&ImageRecord> = records
            .iter()
            .filter(|r| !r.label.is_anomalous() || r.defect == d)
            .collect();
        let s: Vec<f32> = sel.iter().map(|r| r.score).collect();
        let l: Vec<u8> = sel.iter().map(|r| r.label.is_anomalous() as u8).collect();
        per_defect.insert(d.to_string(), ranking(&s, &l).map_err(what)?.auroc);
    }

    let with_pixels = category.has_masks && pixels.missing_maps == 0 && !pixels.shapes.is_empty();
    let (pixel, pro) = if with_pixels {
        let pro = aupro(&pixels.scores, &pixels.labels, &pixels.shapes).map_err(what)?;
        let px = ranking_owned(pixels.scores, &pixels.labels).map_err(what)?;
        (Some(px), pro)
    } else {
        (None, None)
    };
    Ok(CategoryResult {
        category: category.name.clone(),
        normal: labels.iter().filter(|&&l| l == 0).count(),
        anomalous: labels.iter().filter(|&&l| l != 0).count(),
        image,
        pixel,
        aupro: pro,
        per_defect_auroc: per_defect,
        seconds: start.elapsed().as_secs_f64(),
        roc,
        records,
        heatmaps,
    })
}

/// Decode and preprocess one test sample. A non-binary mask is a warning (returned with the
/// image); every other problem is an error naming the file.
fn prepare(
    index: usize,
    sample: &Sample,
    geometry: Geometry,
    mask_size: u32,
    with_masks: bool,
) -> Result<(PreparedImage, Option<String>)> {
    let rgb = decode_rgb(&sample.source)?;
    let crop = geometry_rgb(&rgb, geometry);
    let mut warning = None;
    let mask = match (&sample.mask, with_masks) {
        (_, false) => None,
        (None, true) => Some(GrayImage::new(mask_size, mask_size)),
        (Some(src), true) => {
            let decoded = decode_mask(src)?;
            let first = &src.paths()[0];
            if decoded.mask.dimensions() != rgb.dimensions() {
                return Err(Error::Invalid(format!(
                    "{}: mask is {}x{} but its image {} is {}x{}",
                    first.display(),
                    decoded.mask.width(),
                    decoded.mask.height(),
                    sample.source.name(),
                    rgb.width(),
                    rgb.height()
                )));
            }
            if decoded.non_binary {
                warning = Some(format!(
                    "{}: mask has values other than 0 and 255; every value > 0 counts as anomalous",
                    first.display()
                ));
            }
            Some(resize_mask_nearest(
                &geometry_mask(&decoded.mask, geometry),
                mask_size,
            ))
        }
    };
    let image = PreparedImage {
        index,
        tensor: normalize(&crop),
        size: geometry.crop,
        rgb: crop,
        mask,
        label: sample.label,
        defect: sample.defect.clone(),
        name: sample.source.name(),
    };
    Ok((image, warning))
}

/// torch `F.interpolate(mode="nearest")`: input index `floor(i * in / out)`.
fn resize_mask_nearest(mask: &GrayImage, size: u32) -> GrayImage {
    if mask.width() == size && mask.height() == size {
        return mask.clone();
    }
    let (w, h) = mask.dimensions();
    GrayImage::from_fn(size, size, |x, y| {
        let ix = ((x as f64 * w as f64 / size as f64) as u32).min(w - 1);
        let iy = ((y as f64 * h as f64 / size as f64) as u32).min(h - 1);
        *mask.get_pixel(ix, iy)
    })
}

/// `k` test positions spread evenly over the list (which is sorted by defect type, so the
/// sample covers normal images and several defect types).
fn heatmap_indices(n: usize, k: usize) -> Vec<usize> {
    let k = k.min(n);
    (0..k)
        .map(|i| i * n / k + n / (2 * k))
        .map(|i| i.min(n - 1))
        .collect()
}
