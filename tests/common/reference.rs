//! Naive f64 reference implementations of every op of the Backend trait, written from the
//! trait's documentation and the PyTorch / Dinomaly definitions, independently of any backend.
//! Loops are as plain as possible: these are the definitions the backends are held to.

#![allow(clippy::too_many_arguments)]

use kdad::device::rng::dropout_keep;

/// erf by its Maclaurin series (|x| <= 3) or its continued fraction for erfc (|x| > 3): f64
/// accurate to ~1e-13 in the ranges the tests use, and independent of libm.
pub fn erf(x: f64) -> f64 {
    if x.abs() <= 3.0 {
        let mut term = x;
        let mut sum = x;
        let x2 = x * x;
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.abs().max(1e-300) {
            n += 1.0;
            term *= -x2 / n;
            sum += term / (2.0 * n + 1.0);
        }
        2.0 / std::f64::consts::PI.sqrt() * sum
    } else {
        // erfc(x) = exp(-x²)/√π · 1/(x + 1/2/(x + 1/(x + 3/2/(x + ...)))), evaluated bottom-up.
        let ax = x.abs();
        let mut frac = ax;
        for k in (1..60).rev() {
            frac = ax + (k as f64 / 2.0) / frac;
        }
        let erfc = (-ax * ax).exp() / std::f64::consts::PI.sqrt() / frac;
        (1.0 - erfc).copysign(x)
    }
}

pub fn gelu(x: f64) -> f64 {
    0.5 * x * (1.0 + erf(x / 2f64.sqrt()))
}

/// `out[m, n] = Σ_k A[m, k] B[k, n] (+ bias[n])` for `batch` products; `a_t` / `b_t` say the
/// operand is stored transposed; `b_shared` = one B for all batches.
pub fn matmul(
    a: &[f64],
    b: &[f64],
    bias: Option<&[f64]>,
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    a_t: bool,
    b_t: bool,
    b_shared: bool,
) -> Vec<f64> {
    let mut out = vec![0.0; batch * m * n];
    for z in 0..batch {
        let ab = &a[z * m * k..];
        let bb = if b_shared { b } else { &b[z * k * n..] };
        for i in 0..m {
            for j in 0..n {
                let mut s = bias.map_or(0.0, |bias| bias[j]);
                for p in 0..k {
                    let av = if a_t { ab[p * m + i] } else { ab[i * k + p] };
                    let bv = if b_t { bb[j * k + p] } else { bb[p * n + j] };
                    s += av * bv;
                }
                out[(z * m + i) * n + j] = s;
            }
        }
    }
    out
}

/// (y, mean, rstd) of a layer norm over rows of width `d`.
pub fn layernorm(
    x: &[f64],
    w: &[f64],
    b: &[f64],
    d: usize,
    eps: f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let rows = x.len() / d;
    let (mut y, mut mean, mut rstd) = (vec![0.0; x.len()], vec![0.0; rows], vec![0.0; rows]);
    for r in 0..rows {
        let row = &x[r * d..(r + 1) * d];
        let mu = row.iter().sum::<f64>() / d as f64;
        let var = row.iter().map(|v| (v - mu) * (v - mu)).sum::<f64>() / d as f64;
        let rs = 1.0 / (var + eps).sqrt();
        for j in 0..d {
            y[r * d + j] = (row[j] - mu) * rs * w[j] + b[j];
        }
        mean[r] = mu;
        rstd[r] = rs;
    }
    (y, mean, rstd)
}

/// Element `[b, n, which, h, j]` of packed qkv `[B, N, 3, H, dh]`.
fn qkv_at(
    qkv: &[f64],
    n: usize,
    h: usize,
    dh: usize,
    b: usize,
    t: usize,
    which: usize,
    head: usize,
    j: usize,
) -> f64 {
    qkv[(((b * n + t) * 3 + which) * h + head) * dh + j]
}

/// Softmax attention: (out [B, N, H·dh], lse [B, H, N]).
pub fn attention(
    qkv: &[f64],
    bsz: usize,
    n: usize,
    h: usize,
    dh: usize,
    scale: f64,
) -> (Vec<f64>, Vec<f64>) {
    let d = h * dh;
    let mut out = vec![0.0; bsz * n * d];
    let mut lse = vec![0.0; bsz * h * n];
    let at = |b, t, w, hh, j| qkv_at(qkv, n, h, dh, b, t, w, hh, j);
    for b in 0..bsz {
        for hh in 0..h {
            for i in 0..n {
                let s: Vec<f64> = (0..n)
                    .map(|t| {
                        scale
                            * (0..dh)
                                .map(|j| at(b, i, 0, hh, j) * at(b, t, 1, hh, j))
                                .sum::<f64>()
                    })
                    .collect();
                let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = s.iter().map(|v| (v - mx).exp()).sum();
                lse[(b * h + hh) * n + i] = mx + z.ln();
                for j in 0..dh {
                    out[(b * n + i) * d + hh * dh + j] = (0..n)
                        .map(|t| (s[t] - mx).exp() / z * at(b, t, 2, hh, j))
                        .sum();
                }
            }
        }
    }
    (out, lse)
}

fn phi(t: f64) -> f64 {
    if t > 0.0 {
        t + 1.0
    } else {
        t.exp()
    }
}

/// Dinomaly's LinearAttention2 with eps in the denominator: out [B, N, H·dh].
pub fn linear_attention(
    qkv: &[f64],
    bsz: usize,
    n: usize,
    h: usize,
    dh: usize,
    eps: f64,
) -> Vec<f64> {
    let d = h * dh;
    let mut out = vec![0.0; bsz * n * d];
    let at = |b, t, w, hh, j| qkv_at(qkv, n, h, dh, b, t, w, hh, j);
    for b in 0..bsz {
        for hh in 0..h {
            let mut kv = vec![0.0; dh * dh];
            let mut ksum = vec![0.0; dh];
            for t in 0..n {
                for p in 0..dh {
                    let fk = phi(at(b, t, 1, hh, p));
                    ksum[p] += fk;
                    for e in 0..dh {
                        kv[p * dh + e] += fk * at(b, t, 2, hh, e);
                    }
                }
            }
            for i in 0..n {
                let fq: Vec<f64> = (0..dh).map(|p| phi(at(b, i, 0, hh, p))).collect();
                let z = 1.0 / ((0..dh).map(|p| fq[p] * ksum[p]).sum::<f64>() + eps);
                for e in 0..dh {
                    out[(b * n + i) * d + hh * dh + e] =
                        z * (0..dh).map(|p| fq[p] * kv[p * dh + e]).sum::<f64>();
                }
            }
        }
    }
    out
}

/// `x + bias` per column then GELU (bias optional).
pub fn bias_gelu(x: &[f64], bias: Option<&[f64]>) -> Vec<f64> {
    x.iter()
        .enumerate()
        .map(|(i, &v)| gelu(v + bias.map_or(0.0, |b| b[i % b.len()])))
        .collect()
}

/// `x + gamma ⊙ y`.
pub fn residual(x: &[f64], y: &[f64], gamma: Option<&[f64]>) -> Vec<f64> {
    x.iter()
        .zip(y)
        .enumerate()
        .map(|(i, (&a, &b))| a + gamma.map_or(1.0, |g| g[i % g.len()]) * b)
        .collect()
}

pub fn dropout(x: &[f64], p: f64, seed: u64) -> Vec<f64> {
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            if dropout_keep(seed, i as u64, p as f32) {
                v / (1.0 - p)
            } else {
                0.0
            }
        })
        .collect()
}

/// img [B, C, H, W] → [B, (H/p)(W/p), C·p·p].
pub fn patchify(img: &[f64], bsz: usize, c: usize, h: usize, w: usize, p: usize) -> Vec<f64> {
    let (gh, gw) = (h / p, w / p);
    let mut out = Vec::with_capacity(img.len());
    for b in 0..bsz {
        for py in 0..gh {
            for px in 0..gw {
                for ci in 0..c {
                    for y in 0..p {
                        for x in 0..p {
                            out.push(img[((b * c + ci) * h + py * p + y) * w + px * p + x]);
                        }
                    }
                }
            }
        }
    }
    out
}

/// [cls + pos0, regs.., emb + pos[1..]] per image.
pub fn embed_tokens(
    emb: &[f64],
    cls: &[f64],
    pos: &[f64],
    regs: &[f64],
    bsz: usize,
    np: usize,
    d: usize,
) -> Vec<f64> {
    let mut out = Vec::new();
    for b in 0..bsz {
        out.extend((0..d).map(|j| cls[j] + pos[j]));
        out.extend_from_slice(regs);
        for i in 0..np {
            out.extend((0..d).map(|j| emb[(b * np + i) * d + j] + pos[(1 + i) * d + j]));
        }
    }
    out
}

/// x [B, N, D] → x[:, start..start+m].
pub fn slice_tokens(x: &[f64], bsz: usize, n: usize, d: usize, start: usize, m: usize) -> Vec<f64> {
    (0..bsz)
        .flat_map(|b| x[(b * n + start) * d..(b * n + start + m) * d].to_vec())
        .collect()
}

pub fn group_mean(xs: &[Vec<f64>]) -> Vec<f64> {
    (0..xs[0].len())
        .map(|i| xs.iter().map(|x| x[i]).sum::<f64>() / xs.len() as f64)
        .collect()
}

/// torch's cosine_similarity: a·b / max(|a|·|b|, 1e-8).
pub fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let ab: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    ab / (na * nb).max(1e-8)
}

/// 1 - cos per row of width c.
pub fn cosine_distance(a: &[f64], b: &[f64], c: usize) -> Vec<f64> {
    a.chunks(c)
        .zip(b.chunks(c))
        .map(|(x, y)| 1.0 - cosine(x, y))
        .collect()
}

/// (loss, point_dist [B·T], stats [B, 3]) of Dinomaly's global cosine loss.
pub fn global_cosine(a: &[f64], b: &[f64], bsz: usize, c: usize) -> (f64, Vec<f64>, Vec<f64>) {
    let per = a.len() / bsz;
    let mut loss = 0.0;
    let mut stats = Vec::new();
    for i in 0..bsz {
        let (x, y) = (&a[i * per..(i + 1) * per], &b[i * per..(i + 1) * per]);
        loss += 1.0 - cosine(x, y);
        stats.push(x.iter().zip(y).map(|(p, q)| p * q).sum());
        stats.push(x.iter().map(|p| p * p).sum());
        stats.push(y.iter().map(|q| q * q).sum());
    }
    (loss / bsz as f64, cosine_distance(a, b, c), stats)
}

/// One torch.optim.AdamW step (`stable`: Dinomaly's StableAdamW update-RMS clip) on f64
/// copies: returns (param, m, v, vmax).
pub fn adam(
    p: &[f64],
    g: &[f64],
    m: &[f64],
    v: &[f64],
    vmax: Option<&[f64]>,
    lr: f64,
    b1: f64,
    b2: f64,
    eps: f64,
    wd: f64,
    t: i32,
    stable: bool,
) -> (Vec<f64>, Vec<f64>, Vec<f64>, Option<Vec<f64>>) {
    let m2: Vec<f64> = m
        .iter()
        .zip(g)
        .map(|(m, g)| b1 * m + (1.0 - b1) * g)
        .collect();
    let v2: Vec<f64> = v
        .iter()
        .zip(g)
        .map(|(v, g)| b2 * v + (1.0 - b2) * g * g)
        .collect();
    let vmax2: Option<Vec<f64>> =
        vmax.map(|vm| vm.iter().zip(&v2).map(|(a, b)| a.max(*b)).collect());
    let (bc1, bc2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
    let second = vmax2.as_ref().unwrap_or(&v2);
    let denom: Vec<f64> = second.iter().map(|s| s.sqrt() / bc2.sqrt() + eps).collect();
    let lr_scale = if stable {
        let rms = (g
            .iter()
            .zip(&denom)
            .map(|(g, d)| (g / d).powi(2))
            .sum::<f64>()
            / g.len() as f64)
            .sqrt();
        rms.max(1.0)
    } else {
        1.0
    };
    let p2 = (0..p.len())
        .map(|i| p[i] * (1.0 - lr * wd) - lr / bc1 / lr_scale * m2[i] / denom[i])
        .collect();
    (p2, m2, v2, vmax2)
}

/// PyTorch `interpolate(mode="bilinear")` source taps along one axis.
fn bilinear_axis(len_in: usize, len_out: usize, align_corners: bool) -> Vec<Vec<(usize, f64)>> {
    (0..len_out)
        .map(|o| {
            let src = if align_corners {
                if len_out > 1 {
                    o as f64 * (len_in - 1) as f64 / (len_out - 1) as f64
                } else {
                    0.0
                }
            } else {
                ((o as f64 + 0.5) * len_in as f64 / len_out as f64 - 0.5).max(0.0)
            };
            let i0 = (src.floor() as usize).min(len_in - 1);
            let i1 = if i0 < len_in - 1 { i0 + 1 } else { i0 };
            let l = src - i0 as f64;
            vec![(i0, 1.0 - l), (i1, l)]
        })
        .collect()
}

/// PyTorch `interpolate(mode="bicubic", align_corners=False)` taps: a = -0.75, clamped
/// border taps, source coordinate (o + 0.5)·scale - 0.5 with scale = in/out or 1/factor.
fn bicubic_axis(len_in: usize, len_out: usize, factor: Option<f64>) -> Vec<Vec<(usize, f64)>> {
    let a = -0.75;
    let w = |x: f64| {
        let x = x.abs();
        if x <= 1.0 {
            (a + 2.0) * x.powi(3) - (a + 3.0) * x * x + 1.0
        } else if x < 2.0 {
            a * x.powi(3) - 5.0 * a * x * x + 8.0 * a * x - 4.0 * a
        } else {
            0.0
        }
    };
    let scale = factor.map_or(len_in as f64 / len_out as f64, |f| 1.0 / f);
    (0..len_out)
        .map(|o| {
            let src = (o as f64 + 0.5) * scale - 0.5;
            let base = src.floor();
            (-1..=2)
                .map(|d| {
                    let idx = (base as i64 + d).clamp(0, len_in as i64 - 1) as usize;
                    (idx, w(src - (base + d as f64)))
                })
                .collect()
        })
        .collect()
}

pub enum Resize {
    Bilinear(bool),
    Bicubic(Option<(f64, f64)>),
}

/// Resize `planes` planes [H, W] → [H2, W2] (separable taps).
pub fn resize(
    x: &[f64],
    planes: usize,
    h: usize,
    w: usize,
    h2: usize,
    w2: usize,
    mode: &Resize,
) -> Vec<f64> {
    let (ty, tx) = match mode {
        Resize::Bilinear(ac) => (bilinear_axis(h, h2, *ac), bilinear_axis(w, w2, *ac)),
        Resize::Bicubic(f) => (
            bicubic_axis(h, h2, f.map(|f| f.0)),
            bicubic_axis(w, w2, f.map(|f| f.1)),
        ),
    };
    let mut out = vec![0.0; planes * h2 * w2];
    for p in 0..planes {
        for (oy, ys) in ty.iter().enumerate() {
            for (ox, xs) in tx.iter().enumerate() {
                let mut s = 0.0;
                for &(iy, wy) in ys {
                    for &(ix, wx) in xs {
                        s += wy * wx * x[(p * h + iy) * w + ix];
                    }
                }
                out[(p * h2 + oy) * w2 + ox] = s;
            }
        }
    }
    out
}

/// Dinomaly's get_gaussian_kernel conv: normalised 2-D Gaussian, zero padding ksize/2.
pub fn gaussian_blur(
    x: &[f64],
    planes: usize,
    h: usize,
    w: usize,
    sigma: f64,
    ksize: usize,
) -> Vec<f64> {
    let mean = (ksize as f64 - 1.0) / 2.0;
    let mut k = vec![0.0; ksize * ksize];
    for y in 0..ksize {
        for xx in 0..ksize {
            let r2 = (xx as f64 - mean).powi(2) + (y as f64 - mean).powi(2);
            k[y * ksize + xx] = 1.0 / (2.0 * std::f64::consts::PI * sigma * sigma)
                * (-r2 / (2.0 * sigma * sigma)).exp();
        }
    }
    let total: f64 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= total);
    let pad = (ksize / 2) as i64;
    let mut out = vec![0.0; x.len()];
    for p in 0..planes {
        for y in 0..h as i64 {
            for xx in 0..w as i64 {
                let mut s = 0.0;
                for ky in 0..ksize as i64 {
                    for kx in 0..ksize as i64 {
                        let (sy, sx) = (y + ky - pad, xx + kx - pad);
                        if sy >= 0 && sy < h as i64 && sx >= 0 && sx < w as i64 {
                            s += k[(ky * ksize as i64 + kx) as usize]
                                * x[(p * h + sy as usize) * w + sx as usize];
                        }
                    }
                }
                out[(p * h + y as usize) * w + xx as usize] = s;
            }
        }
    }
    out
}

/// Mean of the k largest values of each row of width m (a full sort, as Dinomaly does).
pub fn topk_mean(x: &[f64], m: usize, k: usize) -> Vec<f64> {
    x.chunks(m)
        .map(|row| {
            let mut r = row.to_vec();
            r.sort_by(|a, b| b.partial_cmp(a).unwrap());
            r[..k].iter().sum::<f64>() / k as f64
        })
        .collect()
}
