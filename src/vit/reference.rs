//! An f64 re-implementation of the ViT for tests: plain loops over canonical-name weights,
//! written from the DINOv2 / PyTorch definitions and sharing no code with the backend path,
//! so it can judge both the forward and (through finite differences in f64) the backward.

use super::config::{Attn, BlockConfig, PosInterp, VitConfig};
use crate::tensor::HostTensor;
use std::collections::HashMap;

pub type Params = HashMap<String, Vec<f64>>;

pub fn to_f64(map: &HashMap<String, HostTensor>) -> Params {
    map.iter()
        .map(|(k, v)| (k.clone(), v.data.iter().map(|&x| x as f64).collect()))
        .collect()
}

/// `y[r, o] = b[o] + Σ_i x[r, i] w[o, i]`.
fn linear(x: &[f64], w: &[f64], b: &[f64], out: usize) -> Vec<f64> {
    let inp = w.len() / out;
    x.chunks(inp)
        .flat_map(|row| {
            (0..out).map(move |o| {
                b[o] + row
                    .iter()
                    .zip(&w[o * inp..(o + 1) * inp])
                    .map(|(a, c)| a * c)
                    .sum::<f64>()
            })
        })
        .collect()
}

fn layernorm(x: &[f64], w: &[f64], b: &[f64], eps: f64) -> Vec<f64> {
    let d = w.len();
    x.chunks(d)
        .flat_map(|row| {
            let mean = row.iter().sum::<f64>() / d as f64;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / d as f64;
            let rstd = 1.0 / (var + eps).sqrt();
            (0..d).map(move |i| (row[i] - mean) * rstd * w[i] + b[i])
        })
        .collect()
}

fn gelu(x: f64) -> f64 {
    0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
}

fn phi(t: f64) -> f64 {
    if t > 0.0 {
        t + 1.0
    } else {
        t.exp()
    }
}

/// Attention of one image's packed `qkv [n, 3·d]` → `[n, d]`.
fn attention(qkv: &[f64], n: usize, d: usize, heads: usize, attn: Attn) -> Vec<f64> {
    let hd = d / heads;
    let q = |s: usize, h: usize, j: usize| qkv[s * 3 * d + h * hd + j];
    let k = |s: usize, h: usize, j: usize| qkv[s * 3 * d + d + h * hd + j];
    let v = |s: usize, h: usize, j: usize| qkv[s * 3 * d + 2 * d + h * hd + j];
    let mut out = vec![0.0; n * d];
    for h in 0..heads {
        match attn {
            Attn::Softmax => {
                let scale = (hd as f64).powf(-0.5);
                for s in 0..n {
                    let sc: Vec<f64> = (0..n)
                        .map(|t| (0..hd).map(|j| q(s, h, j) * k(t, h, j)).sum::<f64>() * scale)
                        .collect();
                    let m = sc.iter().cloned().fold(f64::MIN, f64::max);
                    let e: Vec<f64> = sc.iter().map(|x| (x - m).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for j in 0..hd {
                        out[s * d + h * hd + j] = (0..n).map(|t| e[t] / z * v(t, h, j)).sum();
                    }
                }
            }
            Attn::Linear { eps } => {
                for s in 0..n {
                    let ksum: Vec<f64> = (0..hd)
                        .map(|j| (0..n).map(|t| phi(k(t, h, j))).sum())
                        .collect();
                    let den = (0..hd).map(|j| phi(q(s, h, j)) * ksum[j]).sum::<f64>() + eps as f64;
                    for e in 0..hd {
                        let num: f64 = (0..hd)
                            .map(|j| {
                                phi(q(s, h, j))
                                    * (0..n).map(|t| phi(k(t, h, j)) * v(t, h, e)).sum::<f64>()
                            })
                            .sum();
                        out[s * d + h * hd + e] = num / den;
                    }
                }
            }
        }
    }
    out
}

/// One block on one image's tokens `x [n, d]`, weights under `{prefix}norm1.weight`, ...
pub fn block(p: &Params, prefix: &str, c: &BlockConfig, x: &[f64]) -> Vec<f64> {
    let w = |name: &str| &p[&format!("{prefix}{name}")];
    let d = c.dim;
    let n = x.len() / d;
    let eps = c.ln_eps as f64;
    let h = layernorm(x, w("norm1.weight"), w("norm1.bias"), eps);
    let qkv = linear(&h, w("attn.qkv.weight"), w("attn.qkv.bias"), 3 * d);
    let a = attention(&qkv, n, d, c.heads, c.attn);
    let y = linear(&a, w("attn.proj.weight"), w("attn.proj.bias"), d);
    let ls = |name: &str, i: usize| if c.layerscale { w(name)[i % d] } else { 1.0 };
    let x1: Vec<f64> = (0..n * d)
        .map(|i| x[i] + ls("ls1.gamma", i) * y[i])
        .collect();
    let h = layernorm(&x1, w("norm2.weight"), w("norm2.bias"), eps);
    let f: Vec<f64> = linear(&h, w("mlp.fc1.weight"), w("mlp.fc1.bias"), c.mlp_hidden)
        .into_iter()
        .map(gelu)
        .collect();
    let y = linear(&f, w("mlp.fc2.weight"), w("mlp.fc2.bias"), d);
    (0..n * d)
        .map(|i| x1[i] + ls("ls2.gamma", i) * y[i])
        .collect()
}

/// PyTorch's bicubic kernel (a = -0.75) for the four taps around fraction `t`.
fn cubic_weights(t: f64) -> [f64; 4] {
    let a = -0.75;
    let near = |x: f64| ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    let far = |x: f64| ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// `interpolate(mode="bicubic", align_corners=False)` of one `[gin, gin]` plane to
/// `[gh, gw]`; `inv` = the source step per output pixel on each axis.
fn bicubic(src: &[f64], gin: usize, gh: usize, gw: usize, inv: (f64, f64)) -> Vec<f64> {
    let taps = |o: usize, step: f64| {
        let s = (o as f64 + 0.5) * step - 0.5;
        let f = s.floor();
        let w = cubic_weights(s - f);
        let idx: Vec<usize> = (-1..3)
            .map(|k| (f as i64 + k).clamp(0, gin as i64 - 1) as usize)
            .collect();
        (idx, w)
    };
    let mut out = vec![0.0; gh * gw];
    for oy in 0..gh {
        let (iy, wy) = taps(oy, inv.0);
        for ox in 0..gw {
            let (ix, wx) = taps(ox, inv.1);
            out[oy * gw + ox] = (0..4)
                .flat_map(|a| (0..4).map(move |b| (a, b)))
                .map(|(a, b)| wy[a] * wx[b] * src[iy[a] * gin + ix[b]])
                .sum();
        }
    }
    out
}

/// Outputs of [`vit`] for a batch: taps `[B·N·D]` each, `cls [B·D]`, `patch [B·P·D]`.
pub struct Outputs {
    pub taps: Vec<Vec<f64>>,
    pub cls: Vec<f64>,
    pub patch: Vec<f64>,
}

/// The whole ViT on `images [B, C, H, W]` (flat), every block and the final norm.
pub fn vit(
    p: &Params,
    c: &VitConfig,
    images: &[f64],
    h: usize,
    w: usize,
    taps: &[usize],
) -> Outputs {
    let (d, pt, g) = (c.dim, c.patch, c.pos_grid);
    let (gh, gw) = (h / pt, w / pt);
    let np = gh * gw;
    let img_len = c.in_chans * h * w;
    // Position table [1+P, D]: class row, then the grid resized per channel.
    let pos = &p["pos_embed"];
    let mut table = pos[..d].to_vec();
    let grid: Vec<Vec<f64>> = (0..d)
        .map(|ch| {
            let plane: Vec<f64> = (0..g * g).map(|j| pos[(1 + j) * d + ch]).collect();
            if (gh, gw) == (g, g) {
                return plane;
            }
            let inv = match c.pos_interp {
                PosInterp::Size => (g as f64 / gh as f64, g as f64 / gw as f64),
                PosInterp::SizeAntialiased => panic!("the reference models no antialiased resize"),
                PosInterp::ScaleFactor { offset } => (
                    g as f64 / (gh as f64 + offset),
                    g as f64 / (gw as f64 + offset),
                ),
            };
            bicubic(&plane, g, gh, gw, inv)
        })
        .collect();
    for j in 0..np {
        table.extend(grid.iter().map(|plane| plane[j]));
    }
    let mut out = Outputs {
        taps: vec![vec![]; taps.len()],
        cls: vec![],
        patch: vec![],
    };
    for img in images.chunks(img_len) {
        let mut x: Vec<f64> = (0..d).map(|i| p["cls_token"][i] + table[i]).collect();
        if c.registers > 0 {
            x.extend_from_slice(&p["register_tokens"]);
        }
        let (pw, pb) = (&p["patch_embed.proj.weight"], &p["patch_embed.proj.bias"]);
        let k = c.in_chans * pt * pt;
        for j in 0..np {
            let (py, px) = (j / gw, j % gw);
            for o in 0..d {
                let mut s = pb[o];
                for ch in 0..c.in_chans {
                    for y in 0..pt {
                        for xx in 0..pt {
                            s += pw[o * k + (ch * pt + y) * pt + xx]
                                * img[(ch * h + py * pt + y) * w + px * pt + xx];
                        }
                    }
                }
                x.push(s + table[(1 + j) * d + o]);
            }
        }
        for i in 0..c.depth {
            x = block(p, &format!("blocks.{i}."), &c.block(), &x);
            for (t, buf) in taps.iter().zip(out.taps.iter_mut()) {
                if *t == i {
                    buf.extend_from_slice(&x);
                }
            }
        }
        let y = layernorm(&x, &p["norm.weight"], &p["norm.bias"], c.ln_eps as f64);
        out.cls.extend_from_slice(&y[..d]);
        out.patch.extend_from_slice(&y[(1 + c.registers) * d..]);
    }
    out
}
