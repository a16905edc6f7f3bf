//! Ranking metrics as scikit-learn computes them (methods.md §2.12, §5.6): ROC AUC
//! (`roc_auc_score`), average precision (`average_precision_score`) and F1-max (Dinomaly's
//! `f1_score_max` over `precision_recall_curve`), with tied scores forming one threshold.
//! AUPRO lives in `aupro`.
//!
//! Memory: scores are split into positives and negatives and each half is sorted once, in
//! place, then one merge walk visits every distinct threshold and accumulates all three
//! metrics. Nothing per threshold is stored, so 100M pooled pixels need their own 5 bytes each
//! (f32 score, u8 label) and no more.

use crate::{Error, Result};
use rayon::slice::ParallelSliceMut;

pub use crate::eval::aupro::aupro;

/// AUROC, AP and F1-max of one set of scores.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Ranking {
    pub auroc: f64,
    pub ap: f64,
    pub f1_max: f64,
}

/// Metrics of scores (higher = more anomalous) against labels (non-zero = anomalous).
pub fn ranking(scores: &[f32], labels: &[u8]) -> Result<Ranking> {
    ranking_owned(scores.to_vec(), labels)
}

/// `ranking` that consumes its scores, to sort them in place (pooled pixel scores).
pub fn ranking_owned(mut scores: Vec<f32>, labels: &[u8]) -> Result<Ranking> {
    let n_pos = partition(&mut scores, labels)?;
    let (pos, neg) = scores.split_at_mut(n_pos);
    sort_desc(pos);
    sort_desc(neg);
    let (p, n) = (pos.len() as u64, neg.len() as u64);
    let mut area2: u128 = 0; // twice the ROC area, in units of 1/(P*N)
    let mut ap = 0.0f64;
    let mut f1_max = 0.0f64;
    let (mut tp_prev, mut fp_prev) = (0u64, 0u64);
    walk(pos, neg, |tp, fp| {
        area2 += (fp - fp_prev) as u128 * (tp + tp_prev) as u128;
        let precision = tp as f64 / (tp + fp) as f64;
        let recall = tp as f64 / p as f64;
        ap += (tp - tp_prev) as f64 / p as f64 * precision;
        // Dinomaly's f1_score_max: 2PR / (P + R + 1e-7).
        f1_max = f1_max.max(2.0 * precision * recall / (precision + recall + 1e-7));
        tp_prev = tp;
        fp_prev = fp;
    });
    let auroc = area2 as f64 / (2.0 * p as f64 * n as f64);
    Ok(Ranking { auroc, ap, f1_max })
}

/// The ROC curve (FPR, TPR) at every distinct threshold, starting at (0, 0), as sklearn's
/// `roc_curve(drop_intermediate=False)`. For plots of image-level scores.
pub fn roc_curve(scores: &[f32], labels: &[u8]) -> Result<Vec<(f64, f64)>> {
    let mut scores = scores.to_vec();
    let n_pos = partition(&mut scores, labels)?;
    let (pos, neg) = scores.split_at_mut(n_pos);
    sort_desc(pos);
    sort_desc(neg);
    let (p, n) = (pos.len() as f64, neg.len() as f64);
    let mut out = vec![(0.0, 0.0)];
    walk(pos, neg, |tp, fp| out.push((fp as f64 / n, tp as f64 / p)));
    Ok(out)
}

/// Moves the positives' scores to the front and returns how many there are; checks lengths,
/// NaN, and that both classes are present (sklearn refuses AUROC otherwise).
fn partition(scores: &mut [f32], labels: &[u8]) -> Result<usize> {
    if scores.len() != labels.len() {
        return Err(Error::Invalid(format!(
            "metrics: {} scores but {} labels",
            scores.len(),
            labels.len()
        )));
    }
    if let Some(i) = scores.iter().position(|s| s.is_nan()) {
        return Err(Error::Numerical(format!("metrics: score {i} is NaN")));
    }
    let mut front = 0;
    for (i, &label) in labels.iter().enumerate() {
        if label != 0 {
            scores.swap(front, i);
            front += 1;
        }
    }
    if front == 0 || front == scores.len() {
        return Err(Error::Invalid(format!(
            "metrics: only one class among {} labels ({} anomalous); ranking metrics need both",
            labels.len(),
            front
        )));
    }
    Ok(front)
}

fn sort_desc(v: &mut [f32]) {
    // -0.0 and 0.0 are one threshold for numpy; total_cmp would order them apart.
    for x in v.iter_mut() {
        *x += 0.0;
    }
    v.par_sort_unstable_by(|a, b| b.total_cmp(a));
}

/// Visits each distinct score, from the highest, with the counts of positives (tp) and
/// negatives (fp) scoring at least that much: sklearn's `_binary_clf_curve`.
fn walk(pos: &[f32], neg: &[f32], mut visit: impl FnMut(u64, u64)) {
    let (mut i, mut j) = (0usize, 0usize);
    loop {
        let t = match (pos.get(i), neg.get(j)) {
            (Some(&a), Some(&b)) => a.max(b),
            (Some(&a), None) => a,
            (None, Some(&b)) => b,
            (None, None) => break,
        };
        while i < pos.len() && pos[i] == t {
            i += 1;
        }
        while j < neg.len() && neg[j] == t {
            j += 1;
        }
        visit(i as u64, j as u64);
    }
}
