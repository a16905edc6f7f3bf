//! Heatmap overlays: image | map blended over the image in a jet-like colour map | mask,
//! side by side.

use crate::data::preprocess::resize_bilinear_u8;
use crate::eval::report::HeatmapSample;
use image::{Rgb, RgbImage};

const GAP: u32 = 4;

/// The jet colour map: blue (0) through cyan, yellow, to red (1).
pub fn jet(t: f32) -> Rgb<u8> {
    let t = t.clamp(0.0, 1.0);
    let ch = |c: f32| ((1.5 - (4.0 * t - c).abs()).clamp(0.0, 1.0) * 255.0).round() as u8;
    Rgb([ch(3.0), ch(2.0), ch(1.0)])
}

/// Three panels at the map's size (the crop is resized to it): the image, the map over the
/// image (half and half) scaled so `range.0` is blue and `range.1` red, and the mask in white.
/// Without a map the middle panel is grey; without a mask the last panel is black.
pub fn overlay_strip(h: &HeatmapSample, range: (f32, f32)) -> RgbImage {
    let (w, ht) = match (&h.map, &h.mask) {
        (Some(m), _) => (m.width as u32, m.height as u32),
        (None, Some(m)) => m.dimensions(),
        (None, None) => h.rgb.dimensions(),
    };
    let (iw, ih) = h.rgb.dimensions();
    let img = if (iw, ih) == (w, ht) {
        h.rgb.clone()
    } else {
        let data = resize_bilinear_u8(
            h.rgb.as_raw(),
            iw as usize,
            ih as usize,
            3,
            w as usize,
            ht as usize,
        );
        RgbImage::from_raw(w, ht, data).unwrap_or_else(|| RgbImage::new(w, ht))
    };
    let mut out = RgbImage::from_pixel(3 * w + 2 * GAP, ht, Rgb([255, 255, 255]));
    let span = (range.1 - range.0).max(f32::MIN_POSITIVE);
    for y in 0..ht {
        for x in 0..w {
            let p = *img.get_pixel(x, y);
            out.put_pixel(x, y, p);
            let mid = match &h.map {
                Some(m) => {
                    let c = jet((m.data[(y * w + x) as usize] - range.0) / span);
                    Rgb([0, 1, 2].map(|i| ((p[i] as u16 + c[i] as u16) / 2) as u8))
                }
                None => Rgb([128, 128, 128]),
            };
            out.put_pixel(w + GAP + x, y, mid);
            let on = h
                .mask
                .as_ref()
                .is_some_and(|m| m.get_pixel_checked(x, y).is_some_and(|p| p[0] > 0));
            out.put_pixel(
                2 * (w + GAP) + x,
                y,
                if on {
                    Rgb([255, 255, 255])
                } else {
                    Rgb([0, 0, 0])
                },
            );
        }
    }
    out
}
