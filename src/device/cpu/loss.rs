//! Distillation losses: the per-token cosine-distance map and Dinomaly's global cosine loss
//! with hard mining.
//!
//! Cosines follow the Backend's documented convention `a·b / max(|a|·|b|, 1e-8)`
//! (`torch.nn.functional.cosine_similarity`), with all dot products in f64.

use super::par;
use rayon::prelude::*;

/// The floor of `|a|·|b|` in a cosine.
const COS_EPS: f64 = 1e-8;

/// (a·b, |a|², |b|²) in f64.
fn dots(a: &[f32], b: &[f32]) -> (f64, f64, f64) {
    a.iter()
        .zip(b)
        .fold((0.0, 0.0, 0.0), |(ab, aa, bb), (&x, &y)| {
            let (x, y) = (x as f64, y as f64);
            (ab + x * y, aa + x * x, bb + y * y)
        })
}

fn cosine(ab: f64, aa: f64, bb: f64) -> f64 {
    ab / (aa.sqrt() * bb.sqrt()).max(COS_EPS)
}

/// `∂cos/∂b` as the pair (ca, cb) with `∂cos/∂b = ca·a + cb·b`. When the floor is active the
/// denominator is a constant and only the `a` term remains.
fn cosine_grad_coefs(ab: f64, aa: f64, bb: f64) -> (f64, f64) {
    let norm = aa.sqrt() * bb.sqrt();
    if norm > COS_EPS {
        (1.0 / norm, -ab / (norm * bb))
    } else {
        (1.0 / COS_EPS, 0.0)
    }
}

/// `d[r] = 1 - cos(a_r, b_r)` for rows of width `c`.
pub fn cosine_distance_fwd(a: &[f32], b: &[f32], c: usize, d: &mut [f32]) {
    d.par_iter_mut().enumerate().for_each(|(r, d)| {
        let (ab, aa, bb) = dots(&a[r * c..][..c], &b[r * c..][..c]);
        *d = (1.0 - cosine(ab, aa, bb)) as f32;
    });
}

/// `db_r = -dd[r] · ∂cos(a_r, b_r)/∂b_r`.
pub fn cosine_distance_bwd(dd: &[f32], a: &[f32], b: &[f32], c: usize, db: &mut [f32]) {
    par::for_rows(db, c, |r, g| {
        let (ar, br) = (&a[r * c..][..c], &b[r * c..][..c]);
        let (ab, aa, bb) = dots(ar, br);
        let (ca, cb) = cosine_grad_coefs(ab, aa, bb);
        let scale = -(dd[r] as f64);
        for ((g, &x), &y) in g.iter_mut().zip(ar).zip(br) {
            *g = (scale * (ca * x as f64 + cb * y as f64)) as f32;
        }
    });
}

/// Forward of the global cosine loss over `a, b [B, T, C]` (`dims` = (B, T, C)).
pub fn global_cosine_fwd(
    a: &[f32],
    b: &[f32],
    (nb, nt, c): (usize, usize, usize),
    loss: &mut f32,
    point_dist: &mut [f32],
    stats: &mut [f32],
) {
    cosine_distance_fwd(a, b, c, point_dist);
    let per_image: Vec<(f64, f64, f64)> = (0..nb)
        .into_par_iter()
        .map(|i| dots(&a[i * nt * c..][..nt * c], &b[i * nt * c..][..nt * c]))
        .collect();
    let mut total = 0.0f64;
    for (i, &(ab, aa, bb)) in per_image.iter().enumerate() {
        stats[i * 3..i * 3 + 3].copy_from_slice(&[ab as f32, aa as f32, bb as f32]);
        total += 1.0 - cosine(ab, aa, bb);
    }
    *loss = if nb == 0 {
        0.0
    } else {
        (total / nb as f64) as f32
    };
}

/// The `k`-th largest value of `x` (1-based), ordered by `f32::total_cmp`, or `None` when
/// `k` is 0 or larger than `x`.
fn kth_largest(x: &[f32], k: usize) -> Option<f32> {
    if k == 0 || k > x.len() {
        return None;
    }
    let mut v = x.to_vec();
    let (_, kth, _) = v.select_nth_unstable_by(k - 1, |p, q| q.total_cmp(p));
    Some(*kth)
}

/// Inputs of the global cosine backward.
pub struct GlobalCosineBwd<'a> {
    pub a: &'a [f32],
    pub b: &'a [f32],
    pub point_dist: &'a [f32],
    pub stats: &'a [f32],
    /// (B, T, C)
    pub dims: (usize, usize, usize),
    /// Tokens that keep their whole gradient, from `check::hard_mining_k`.
    pub k: usize,
    pub factor: f32,
    pub dloss: f32,
}

/// `db = dloss · ∂loss/∂b`, then every token whose distance is below the k-th largest
/// distance of the batch is scaled by `factor` (Dinomaly's `modify_grad` hook).
///
/// Edge cases, as torch.topk would select: `k ≥ B·T` (p = 0) puts the threshold at the
/// smallest distance, so no token is scaled; `k = 0` (p = 1, which Dinomaly never reaches and
/// where torch.topk would fail) is defined as a threshold of +∞: every token is scaled.
pub fn global_cosine_bwd(i: GlobalCosineBwd, db: &mut [f32]) {
    let (nb, nt, c) = i.dims;
    let thresh = if i.k >= i.point_dist.len() {
        f32::NEG_INFINITY
    } else {
        kth_largest(i.point_dist, i.k).unwrap_or(f32::INFINITY)
    };
    par::for_rows(db, c, |row, g| {
        let img = row / nt.max(1);
        let s = &i.stats[img * 3..img * 3 + 3];
        let (ca, cb) = cosine_grad_coefs(s[0] as f64, s[1] as f64, s[2] as f64);
        let mut scale = -(i.dloss as f64) / nb as f64;
        if i.point_dist[row] < thresh {
            scale *= i.factor as f64;
        }
        let (ar, br) = (&i.a[row * c..][..c], &i.b[row * c..][..c]);
        for ((g, &x), &y) in g.iter_mut().zip(ar).zip(br) {
            *g = (scale * (ca * x as f64 + cb * y as f64)) as f32;
        }
    });
}
