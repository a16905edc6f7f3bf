//! AUPRO up to FPR 0.3 as Dinomaly's `compute_pro` (methods.md §2.12):
//! 200 thresholds `np.arange(min, max, (max - min) / 200)` in float32, a pixel is predicted
//! anomalous when its score is `> t`; PRO(t) = mean over every 8-connected GT region of every
//! image of the fraction of the region predicted anomalous; FPR(t) = predicted-anomalous
//! GT-negative pixels over all GT-negative pixels; points with FPR < 0.3 kept, FPR divided by
//! its largest kept value, trapezoid area.
//!
//! Rather than binarising the maps 200 times, each pixel is binned once by how many
//! thresholds lie below its score; per-region and negative histograms then give every
//! threshold's counts by suffix sums. Same numbers, one pass.

use crate::{Error, Result};

const NUM_THRESHOLDS: usize = 200;
const FPR_LIMIT: f64 = 0.3;

/// AUPRO of pooled maps: `scores` and `labels` (non-zero = anomalous) hold the images one
/// after another, each `width * height` in `shapes` order. `None` when it is undefined (no
/// anomalous region, constant scores, or no kept point with FPR > 0), where Dinomaly's code
/// would produce NaN or fail.
pub fn aupro(scores: &[f32], labels: &[u8], shapes: &[(usize, usize)]) -> Result<Option<f64>> {
    let total: usize = shapes.iter().map(|(w, h)| w * h).sum();
    if scores.len() != total || labels.len() != total {
        return Err(Error::Invalid(format!(
            "aupro: images hold {total} pixels, got {} scores and {} labels",
            scores.len(),
            labels.len()
        )));
    }
    let Some(thresholds) = thresholds(scores) else {
        return Ok(None);
    };
    let bins = thresholds.len() + 1;
    let bin = |s: f32| thresholds.partition_point(|&t| t < s);

    let mut neg_hist = vec![0u64; bins];
    let mut region_hists: Vec<Vec<u32>> = Vec::new();
    let mut region_areas: Vec<u64> = Vec::new();
    let mut offset = 0;
    for &(w, h) in shapes {
        let (s, l) = (
            &scores[offset..offset + w * h],
            &labels[offset..offset + w * h],
        );
        offset += w * h;
        let (comp, n_comp) = label_components(l, w, h);
        let first = region_hists.len();
        region_hists.extend((0..n_comp).map(|_| vec![0u32; bins]));
        region_areas.extend(std::iter::repeat_n(0, n_comp));
        for i in 0..w * h {
            let b = bin(s[i]);
            if comp[i] == 0 {
                neg_hist[b] += 1;
            } else {
                let r = first + comp[i] as usize - 1;
                region_hists[r][b] += 1;
                region_areas[r] += 1;
            }
        }
    }
    let n_neg: u64 = neg_hist.iter().sum();
    if region_hists.is_empty() || n_neg == 0 {
        return Ok(None);
    }

    let neg_above = above_counts(&neg_hist);
    let region_above: Vec<Vec<u64>> = region_hists.iter().map(|h| above_counts(h)).collect();
    let mut points = Vec::with_capacity(thresholds.len());
    for i in 0..thresholds.len() {
        let fpr = neg_above[i] as f64 / n_neg as f64;
        let pro = region_above
            .iter()
            .zip(&region_areas)
            .map(|(above, &area)| above[i] as f64 / area as f64)
            .sum::<f64>()
            / region_above.len() as f64;
        if fpr < FPR_LIMIT {
            points.push((fpr, pro));
        }
    }
    let max_fpr = points.iter().map(|p| p.0).fold(0.0, f64::max);
    if points.is_empty() || max_fpr == 0.0 {
        return Ok(None);
    }
    // sklearn.metrics.auc on FPR decreasing with the threshold: the absolute trapezoid area.
    let area: f64 = points
        .windows(2)
        .map(|w| (w[0].0 - w[1].0) / max_fpr * (w[0].1 + w[1].1) / 2.0)
        .sum();
    Ok(Some(area.abs()))
}

/// `out[i]` = how many pixels lie in bins above `i`, i.e. score above threshold `i`.
fn above_counts<T: Copy + Into<u64>>(hist: &[T]) -> Vec<u64> {
    let mut out = vec![0u64; hist.len()];
    for i in (0..hist.len() - 1).rev() {
        out[i] = out[i + 1] + hist[i + 1].into();
    }
    out
}

/// `np.arange(min, max, (max - min) / 200)` on float32 maps: numpy sizes it as
/// `ceil((max - min) / delta)` and fills it as `start + i * (buffer[1] - buffer[0])` in float32.
fn thresholds(scores: &[f32]) -> Option<Vec<f32>> {
    let (min, max) = scores
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &s| {
            (a.min(s), b.max(s))
        });
    let delta = (max - min) / NUM_THRESHOLDS as f32;
    // Constant (or non-finite) maps give no thresholds; NaN fails `delta > 0` too.
    if delta.is_nan() || delta <= 0.0 || !delta.is_finite() {
        return None;
    }
    let len = ((max - min) / delta).ceil() as usize;
    let step = (min + delta) - min;
    Some(
        (0..len)
            .map(|i| if i == 0 { min } else { min + i as f32 * step })
            .collect(),
    )
}

/// 8-connected components of the non-zero pixels (skimage.measure.label's default for 2-D):
/// a label per pixel (0 = background, regions 1..=n) and n.
pub fn label_components(mask: &[u8], w: usize, h: usize) -> (Vec<u32>, usize) {
    let mut comp = vec![0u32; w * h];
    let mut n = 0u32;
    let mut stack = Vec::new();
    for start in 0..w * h {
        if mask[start] == 0 || comp[start] != 0 {
            continue;
        }
        n += 1;
        comp[start] = n;
        stack.push(start);
        while let Some(p) = stack.pop() {
            let (x, y) = ((p % w) as isize, (p / w) as isize);
            for dy in -1..=1isize {
                for dx in -1..=1isize {
                    let (nx, ny) = (x + dx, y + dy);
                    if nx < 0 || ny < 0 || nx >= w as isize || ny >= h as isize {
                        continue;
                    }
                    let q = ny as usize * w + nx as usize;
                    if mask[q] != 0 && comp[q] == 0 {
                        comp[q] = n;
                        stack.push(q);
                    }
                }
            }
        }
    }
    (comp, n as usize)
}
