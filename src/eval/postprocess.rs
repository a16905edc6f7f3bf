//! Anomaly-map post-processing on the CPU, as Dinomaly's `evaluation_batch` does it
//! (methods.md §2.11): bilinear resize to the mask size, Gaussian smoothing (5x5, sigma 4,
//! zero padding), image score = mean of the top 1 % of the smoothed map.

use crate::{Error, Result};

/// A single-channel f32 map, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Map {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

impl Map {
    pub fn new(width: usize, height: usize, data: Vec<f32>) -> Result<Map> {
        if data.len() != width * height || data.is_empty() {
            return Err(Error::Invalid(format!(
                "map {width}x{height} given {} values",
                data.len()
            )));
        }
        Ok(Map {
            width,
            height,
            data,
        })
    }
}

/// How `resize` maps output pixels to input pixels (torch `F.interpolate(mode="bilinear")`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    /// `align_corners=False`: pixel centres, `src = (dst + 0.5) * in / out - 0.5`.
    HalfPixel,
    /// `align_corners=True`: corner pixels coincide, `src = dst * (in - 1) / (out - 1)`.
    Corners,
}

/// Bilinear resize with no antialiasing, as torch's `F.interpolate` (Dinomaly resizes the
/// 392 map to 256 this way).
pub fn resize(map: &Map, width: usize, height: usize, align: Align) -> Map {
    let xs = axis(map.width, width, align);
    let ys = axis(map.height, height, align);
    let mut data = Vec::with_capacity(width * height);
    for &(y0, y1, fy) in &ys {
        for &(x0, x1, fx) in &xs {
            let at = |x: usize, y: usize| map.data[y * map.width + x];
            let top = at(x0, y0) * (1.0 - fx) + at(x1, y0) * fx;
            let bottom = at(x0, y1) * (1.0 - fx) + at(x1, y1) * fx;
            data.push(top * (1.0 - fy) + bottom * fy);
        }
    }
    Map {
        width,
        height,
        data,
    }
}

/// For each output index: the two input indices and the weight of the second.
fn axis(n_in: usize, n_out: usize, align: Align) -> Vec<(usize, usize, f32)> {
    (0..n_out)
        .map(|i| {
            let src = match align {
                Align::HalfPixel => {
                    ((i as f32 + 0.5) * (n_in as f32 / n_out as f32) - 0.5).max(0.0)
                }
                Align::Corners if n_out > 1 => i as f32 * (n_in - 1) as f32 / (n_out - 1) as f32,
                Align::Corners => 0.0,
            };
            let i0 = (src.floor() as usize).min(n_in - 1);
            let i1 = (i0 + 1).min(n_in - 1);
            (i0, i1, src - i0 as f32)
        })
        .collect()
}

/// A normalised `size x size` Gaussian kernel (Dinomaly's `get_gaussian_kernel`), row-major.
pub fn gaussian_kernel(size: usize, sigma: f32) -> Vec<f32> {
    let mean = (size as f32 - 1.0) / 2.0;
    let mut k: Vec<f32> = (0..size * size)
        .map(|i| {
            let (x, y) = ((i % size) as f32 - mean, (i / size) as f32 - mean);
            (-(x * x + y * y) / (2.0 * sigma * sigma)).exp()
        })
        .collect();
    let sum: f32 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= sum);
    k
}

/// Gaussian smoothing settings; Dinomaly's default is 5x5, sigma 4.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Smoothing {
    pub size: usize,
    pub sigma: f32,
}

impl Default for Smoothing {
    fn default() -> Self {
        Smoothing {
            size: 5,
            sigma: 4.0,
        }
    }
}

/// Convolution with the Gaussian kernel and zero padding `size / 2` (a depthwise `conv2d`):
/// pixels near the border lose weight, exactly as in Dinomaly.
pub fn smooth(map: &Map, s: Smoothing) -> Map {
    let k = gaussian_kernel(s.size, s.sigma);
    let r = (s.size / 2) as isize;
    let (w, h) = (map.width as isize, map.height as isize);
    let mut data = vec![0f32; map.data.len()];
    for y in 0..h {
        for x in 0..w {
            let mut acc = 0f32;
            for ky in 0..s.size as isize {
                let sy = y + ky - r;
                if sy < 0 || sy >= h {
                    continue;
                }
                for kx in 0..s.size as isize {
                    let sx = x + kx - r;
                    if sx < 0 || sx >= w {
                        continue;
                    }
                    acc +=
                        k[(ky * s.size as isize + kx) as usize] * map.data[(sy * w + sx) as usize];
                }
            }
            data[(y * w + x) as usize] = acc;
        }
    }
    Map {
        width: map.width,
        height: map.height,
        data,
    }
}

/// Mean of the `max(1, floor(n * ratio))` largest values; `ratio = 0` gives the maximum.
/// `ratio` is f64 as in Python: `int(65536 * 0.01)` is 655, which an f32 0.01 would make 655
/// only by luck of rounding.
/// Dinomaly takes `int(n * ratio)` values, which is empty (NaN) for maps under 1/ratio pixels;
/// at least one value is taken here. An empty map gives NaN.
pub fn top_mean(map: &Map, ratio: f64) -> f32 {
    if map.data.is_empty() {
        return f32::NAN;
    }
    let k = ((map.data.len() as f64 * ratio) as usize).clamp(1, map.data.len());
    let mut v = map.data.clone();
    v.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    (v[..k].iter().map(|&x| x as f64).sum::<f64>() / k as f64) as f32
}
