//! Token bookkeeping of the ViT: patch extraction, the cls/register/position embedding,
//! token slices and the mean over layer groups.

use super::par;
use crate::device::check::EmbedDims;
use rayon::prelude::*;

/// `out[b, py·gw + px, (c, y, x)] = img[b, c, py·p + y, px·p + x]`.
pub fn patchify(
    img: &[f32],
    (_, c, h, w): (usize, usize, usize, usize),
    p: usize,
    out: &mut [f32],
) {
    let (gh, gw) = (h / p, w / p);
    let width = c * p * p;
    par::for_rows(out, width, |row, o| {
        let (b, patch) = (row / (gh * gw), row % (gh * gw));
        let (py, px) = (patch / gw, patch % gw);
        for ci in 0..c {
            for y in 0..p {
                let src = ((b * c + ci) * h + py * p + y) * w + px * p;
                let dst = (ci * p + y) * p;
                o[dst..dst + p].copy_from_slice(&img[src..src + p]);
            }
        }
    });
}

/// `[cls + pos[0], regs.., emb[b, i] + pos[1 + i]..]` per image.
pub fn embed_fwd(
    emb: &[f32],
    cls: &[f32],
    pos: &[f32],
    regs: Option<&[f32]>,
    s: EmbedDims,
    out: &mut [f32],
) {
    let (d, n) = (s.dim, 1 + s.regs + s.patches);
    par::for_rows(out, d, |row, o| {
        let (b, i) = (row / n, row % n);
        if i == 0 {
            o.iter_mut()
                .zip(cls.iter().zip(pos))
                .for_each(|(o, (c, p))| *o = c + p);
        } else if i <= s.regs {
            let r = regs.expect("register rows exist only with registers");
            o.copy_from_slice(&r[(i - 1) * d..i * d]);
        } else {
            let j = i - 1 - s.regs;
            let e = &emb[(b * s.patches + j) * d..][..d];
            let p = &pos[(1 + j) * d..][..d];
            o.iter_mut()
                .zip(e.iter().zip(p))
                .for_each(|(o, (e, p))| *o = e + p);
        }
    });
}

/// Gradients of [`embed_fwd`]: `demb` written; `dcls`, `dpos`, `dregs` added into.
pub fn embed_bwd(
    dout: &[f32],
    s: EmbedDims,
    demb: &mut [f32],
    dcls: &mut [f32],
    dpos: &mut [f32],
    dregs: Option<&mut [f32]>,
) {
    let (d, n) = (s.dim, 1 + s.regs + s.patches);
    par::for_rows(demb, d, |row, g| {
        let (b, j) = (row / s.patches, row % s.patches);
        g.copy_from_slice(&dout[(b * n + 1 + s.regs + j) * d..][..d]);
    });
    // Token i of every image, summed over the batch.
    let batch_sum = |i: usize, acc: &mut [f32]| {
        par::column_sums(
            s.batch,
            d,
            |b, sum| {
                for (a, &g) in sum.iter_mut().zip(&dout[(b * n + i) * d..][..d]) {
                    *a += g as f64;
                }
            },
            acc,
        )
    };
    batch_sum(0, dcls);
    dpos.par_chunks_mut(d).enumerate().for_each(|(i, acc)| {
        // pos[0] sits on the cls token, pos[1 + j] on patch j.
        batch_sum(if i == 0 { 0 } else { s.regs + i }, acc)
    });
    if let Some(dregs) = dregs {
        dregs
            .par_chunks_mut(d)
            .enumerate()
            .for_each(|(r, acc)| batch_sum(1 + r, acc));
    }
}

/// `out[b] = x[b, start..start + M]`. `(B, N, M, D)` from the shape check.
pub fn slice(x: &[f32], (_, n, m, d): (usize, usize, usize, usize), start: usize, out: &mut [f32]) {
    par::for_rows(out, m * d, |b, o| {
        o.copy_from_slice(&x[(b * n + start) * d..][..m * d])
    });
}

/// `dx[b, start..start + M] += dout[b]`.
pub fn unslice_add(
    dout: &[f32],
    (_, n, m, d): (usize, usize, usize, usize),
    start: usize,
    dx: &mut [f32],
) {
    par::for_rows(dx, n * d, |b, g| {
        let part = &mut g[start * d..(start + m) * d];
        part.iter_mut()
            .zip(&dout[b * m * d..][..m * d])
            .for_each(|(g, &v)| *g += v);
    });
}

/// `out = mean(xs)` element-wise, summed in list order.
pub fn group_mean_fwd(xs: &[&[f32]], out: &mut [f32]) {
    let inv = 1.0 / xs.len() as f32;
    out.par_iter_mut()
        .enumerate()
        .with_min_len(1 << 14)
        .for_each(|(i, o)| {
            *o = xs.iter().map(|x| x[i]).sum::<f32>() * inv;
        });
}
