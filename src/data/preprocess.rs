//! Dinomaly's preprocessing (methods.md §2.1): square resize (PIL bilinear, antialiased when
//! downscaling), centre crop, ImageNet normalisation into a CHW f32 buffer. Masks take the
//! same geometry with nearest-neighbour resizing and are binarised with `> 0`.
//!
//! The bilinear resize reproduces PIL's `ImagingResample` for 8-bit images bit for bit: the
//! triangle filter widened by the scale factor when downscaling, 22-bit fixed-point weights,
//! a horizontal pass rounded to 8 bits, then a vertical pass.

use image::{GrayImage, RgbImage};

pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Square resize to `resize`, then centre crop to `crop` (`crop == resize`: no crop).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Geometry {
    pub resize: u32,
    pub crop: u32,
}

impl Geometry {
    /// Dinomaly's quick setting (R256-C224), as the shared reference scripts use.
    pub const R256_C224: Geometry = Geometry {
        resize: 256,
        crop: 224,
    };
    /// Dinomaly's paper setting (R448-C392).
    pub const R448_C392: Geometry = Geometry {
        resize: 448,
        crop: 392,
    };

    pub fn validate(&self) -> crate::Result<()> {
        if self.crop == 0 || self.crop > self.resize {
            return Err(crate::Error::Invalid(format!(
                "preprocessing: crop {} must be in 1..={} (the resize)",
                self.crop, self.resize
            )));
        }
        Ok(())
    }

    /// The offset of the crop in the resized image, as torchvision's `CenterCrop` rounds it
    /// (Python `round`: half to even).
    fn offset(&self) -> u32 {
        ((self.resize - self.crop) as f64 / 2.0).round_ties_even() as u32
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// PIL's fixed-point coefficients for one axis: for each output index, the first input index
/// and the weights.
fn coeffs(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale; // the triangle filter has support 1
    let ss = 1.0 / filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // PIL truncates toward zero with a C cast; the operand is > -1 here, so `as i64`
            // on the value (not floor) is the faithful choice.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let w: Vec<f64> = (xmin..xmax)
                .map(|x| {
                    let t = ((x as f64 - center + 0.5) * ss).abs();
                    if t < 1.0 {
                        1.0 - t
                    } else {
                        0.0
                    }
                })
                .collect();
            let total: f64 = w.iter().sum();
            let k = w
                .iter()
                .map(|&v| {
                    let v = if total != 0.0 { v / total } else { v };
                    let f = v * (1u32 << PRECISION_BITS) as f64;
                    (if f < 0.0 { f - 0.5 } else { f + 0.5 }) as i32
                })
                .collect();
            (xmin, k)
        })
        .collect()
}

fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// PIL-exact bilinear resize of an interleaved 8-bit image with `ch` channels.
pub fn resize_bilinear_u8(
    src: &[u8],
    w: usize,
    h: usize,
    ch: usize,
    ow: usize,
    oh: usize,
) -> Vec<u8> {
    let half = 1i64 << (PRECISION_BITS - 1);
    let tmp = if ow != w {
        let cx = coeffs(w, ow);
        let mut out = vec![0u8; ow * h * ch];
        for y in 0..h {
            for (xx, (x0, k)) in cx.iter().enumerate() {
                for c in 0..ch {
                    let mut acc = half;
                    for (i, &kw) in k.iter().enumerate() {
                        acc += src[(y * w + x0 + i) * ch + c] as i64 * kw as i64;
                    }
                    out[(y * ow + xx) * ch + c] = clip8(acc);
                }
            }
        }
        out
    } else {
        src.to_vec()
    };
    if oh == h {
        return tmp;
    }
    let cy = coeffs(h, oh);
    let mut out = vec![0u8; ow * oh * ch];
    for (yy, (y0, k)) in cy.iter().enumerate() {
        for x in 0..ow * ch {
            let mut acc = half;
            for (i, &kw) in k.iter().enumerate() {
                acc += tmp[(y0 + i) * ow * ch + x] as i64 * kw as i64;
            }
            out[yy * ow * ch + x] = clip8(acc);
        }
    }
    out
}

/// PIL's nearest-neighbour resize: input index `floor((i + 0.5) * in / out)`.
pub fn resize_nearest_pil(src: &GrayImage, ow: u32, oh: u32) -> GrayImage {
    let (w, h) = src.dimensions();
    let sx = w as f64 / ow as f64;
    let sy = h as f64 / oh as f64;
    GrayImage::from_fn(ow, oh, |x, y| {
        let ix = (((x as f64 + 0.5) * sx) as u32).min(w - 1);
        let iy = (((y as f64 + 0.5) * sy) as u32).min(h - 1);
        *src.get_pixel(ix, iy)
    })
}

fn crop_rgb(img: &RgbImage, g: Geometry) -> RgbImage {
    let o = g.offset();
    image::imageops::crop_imm(img, o, o, g.crop, g.crop).to_image()
}

/// Resize and crop an RGB image (still 8-bit, for overlays and for `normalize`).
pub fn geometry_rgb(img: &RgbImage, g: Geometry) -> RgbImage {
    let (w, h) = img.dimensions();
    let n = g.resize as usize;
    let data = resize_bilinear_u8(img.as_raw(), w as usize, h as usize, 3, n, n);
    let resized =
        RgbImage::from_raw(g.resize, g.resize, data).expect("buffer sized for the resize");
    crop_rgb(&resized, g)
}

/// Resize (nearest) and crop a mask, then binarise: 1 where the value is > 0.
pub fn geometry_mask(mask: &GrayImage, g: Geometry) -> GrayImage {
    let resized = resize_nearest_pil(mask, g.resize, g.resize);
    let o = g.offset();
    let mut out = image::imageops::crop_imm(&resized, o, o, g.crop, g.crop).to_image();
    for v in out.iter_mut() {
        *v = (*v > 0) as u8;
    }
    out
}

/// `ToTensor` + `Normalize(IMAGENET_MEAN, IMAGENET_STD)`: a CHW f32 buffer.
pub fn normalize(img: &RgbImage) -> Vec<f32> {
    let (w, h) = img.dimensions();
    let n = (w * h) as usize;
    let mut out = vec![0f32; 3 * n];
    for (i, px) in img.pixels().enumerate() {
        for c in 0..3 {
            out[c * n + i] = (px[c] as f32 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
        }
    }
    out
}
