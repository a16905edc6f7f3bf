//! Image-plane ops of the scoring path: resize (as PyTorch `interpolate`), Gaussian blur
//! (as Dinomaly's `get_gaussian_kernel` conv) and the top-k mean image score.

use super::par;
use crate::device::Interp;

/// One output coordinate's source taps along an axis: indices and weights.
type Taps = Vec<([usize; 4], [f32; 4])>;

/// Bilinear taps as PyTorch's `upsample_bilinear2d`: align_corners maps the corner pixels
/// onto each other; otherwise half-pixel centres, clamped at 0 on the low side.
fn bilinear_taps(len_in: usize, len_out: usize, align_corners: bool) -> Taps {
    let scale = if align_corners {
        if len_out > 1 {
            (len_in - 1) as f32 / (len_out - 1) as f32
        } else {
            0.0
        }
    } else {
        len_in as f32 / len_out as f32
    };
    (0..len_out)
        .map(|o| {
            let src = if align_corners {
                scale * o as f32
            } else {
                (scale * (o as f32 + 0.5) - 0.5).max(0.0)
            };
            let i0 = (src as usize).min(len_in - 1);
            let i1 = (i0 + 1).min(len_in - 1);
            let l1 = src - i0 as f32;
            ([i0, i1, i1, i1], [1.0 - l1, l1, 0.0, 0.0])
        })
        .collect()
}

/// The cubic convolution kernel with a = -0.75 (PyTorch's `cubic_convolution1/2`).
fn cubic_weights(t: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let near = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// Bicubic taps as PyTorch's `upsample_bicubic2d` with align_corners=False: source
/// coordinate `(o + 0.5)·scale - 0.5` (not clamped), four taps clamped to the border.
/// `scale` is in/out, or 1/scale_factor when the caller gave a scale factor.
fn bicubic_taps(len_in: usize, len_out: usize, scale_factor: Option<f64>) -> Taps {
    let scale = match scale_factor {
        Some(s) => (1.0 / s) as f32,
        None => len_in as f32 / len_out as f32,
    };
    let last = len_in as isize - 1;
    (0..len_out)
        .map(|o| {
            let src = scale * (o as f32 + 0.5) - 0.5;
            let base = src.floor();
            let idx = |d: isize| (base as isize + d).clamp(0, last) as usize;
            ([idx(-1), idx(0), idx(1), idx(2)], cubic_weights(src - base))
        })
        .collect()
}

/// Resize every `[H, W]` plane to `[H2, W2]`. `dims` = (planes, H, W, H2, W2).
pub fn resize(
    x: &[f32],
    (_, h, w, h2, w2): (usize, usize, usize, usize, usize),
    interp: Interp,
    out: &mut [f32],
) {
    let (ty, tx) = match interp {
        Interp::Bilinear { align_corners } => (
            bilinear_taps(h, h2, align_corners),
            bilinear_taps(w, w2, align_corners),
        ),
        Interp::Bicubic { scale } => (
            bicubic_taps(h, h2, scale.map(|s| s.0)),
            bicubic_taps(w, w2, scale.map(|s| s.1)),
        ),
    };
    par::for_rows(out, w2, |row, o| {
        let (plane, oy) = (row / h2, row % h2);
        let src = &x[plane * h * w..][..h * w];
        let (iy, wy) = ty[oy];
        for (ox, o) in o.iter_mut().enumerate() {
            let (ix, wx) = tx[ox];
            let mut acc = 0.0f32;
            for a in 0..4 {
                let mut line = 0.0f32;
                for b in 0..4 {
                    line += wx[b] * src[iy[a] * w + ix[b]];
                }
                acc += wy[a] * line;
            }
            *o = acc;
        }
    });
}

/// The normalised `ksize × ksize` Gaussian of Dinomaly's `get_gaussian_kernel`: centre
/// `(ksize-1)/2`, `exp(-(dx² + dy²)/(2σ²))`, divided by its sum. Row-major.
pub fn gaussian_kernel(sigma: f32, ksize: usize) -> Vec<f32> {
    let centre = (ksize as f64 - 1.0) / 2.0;
    let var = sigma as f64 * sigma as f64;
    let mut k: Vec<f64> = (0..ksize * ksize)
        .map(|i| {
            let (dy, dx) = ((i / ksize) as f64 - centre, (i % ksize) as f64 - centre);
            (-(dx * dx + dy * dy) / (2.0 * var)).exp()
        })
        .collect();
    let sum: f64 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= sum);
    k.into_iter().map(|v| v as f32).collect()
}

/// Blur every plane with [`gaussian_kernel`], zero padding `ksize/2` (a depthwise conv).
pub fn gaussian_blur(
    x: &[f32],
    (_, h, w): (usize, usize, usize),
    sigma: f32,
    ksize: usize,
    out: &mut [f32],
) {
    let kernel = gaussian_kernel(sigma, ksize);
    let pad = (ksize / 2) as isize;
    par::for_rows(out, w, |row, o| {
        let (plane, y) = (row / h, (row % h) as isize);
        let src = &x[plane * h * w..][..h * w];
        for (xo, o) in o.iter_mut().enumerate() {
            let mut acc = 0.0f32;
            for ky in 0..ksize as isize {
                let sy = y + ky - pad;
                if sy < 0 || sy >= h as isize {
                    continue;
                }
                for kx in 0..ksize as isize {
                    let sx = xo as isize + kx - pad;
                    if sx >= 0 && sx < w as isize {
                        acc += kernel[(ky * ksize as isize + kx) as usize]
                            * src[sy as usize * w + sx as usize];
                    }
                }
            }
            *o = acc;
        }
    });
}

/// `out[r]` = mean of the `k` largest values of row r (width `m`).
pub fn topk_mean(x: &[f32], m: usize, k: usize, out: &mut [f32]) {
    par::for_rows(out, 1, |r, o| {
        let mut row = x[r * m..(r + 1) * m].to_vec();
        // Descending order: the k largest end up in row[..k].
        row.select_nth_unstable_by(k - 1, |p, q| q.total_cmp(p));
        o[0] = (row[..k].iter().map(|&v| v as f64).sum::<f64>() / k as f64) as f32;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dinomaly_gaussian_kernel_matches_its_published_weights() {
        // research/methods.md §2.11: ksize 5, sigma 4; centre row and corner, to 4 digits.
        let k = gaussian_kernel(4.0, 5);
        let centre_row = [0.0399, 0.0438, 0.0452, 0.0438, 0.0399];
        for (got, want) in k[10..15].iter().zip(centre_row) {
            assert!((got - want).abs() < 5e-5, "{got} vs {want}");
        }
        assert!((k[0] - 0.0352).abs() < 5e-5, "corner {}", k[0]);
        assert!((k.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn cubic_weights_at_half_and_zero() {
        // a = -0.75: at t = 0.5 the taps are (-3/32, 19/32, 19/32, -3/32); at t = 0 the
        // kernel interpolates: (0, 1, 0, 0).
        assert_eq!(cubic_weights(0.5), [-0.09375, 0.59375, 0.59375, -0.09375]);
        assert_eq!(cubic_weights(0.0), [0.0, 1.0, 0.0, 0.0]);
    }
}
