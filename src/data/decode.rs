//! Decoding images and masks with the `image` crate. EXIF orientation is not applied (the
//! crate ignores it unless asked), as PIL's `Image.open` in the reference pipelines does not.

use crate::data::sample::{ImageSource, MaskSource, RawImage};
use crate::{Error, Result};
use image::{GrayImage, RgbImage};
use std::path::Path;

/// Decodes any supported image as 8-bit RGB: grey is replicated to three channels, alpha is
/// dropped and 16-bit samples are scaled to 8 bits (PIL's `convert("RGB")`).
/// An empty image is an error (the resizes below need at least one pixel).
pub fn decode_rgb(source: &ImageSource) -> Result<RgbImage> {
    let rgb = match source {
        ImageSource::File(path) => open(path)?.to_rgb8(),
        ImageSource::Memory { name, image } => raw_to_rgb(name, image)?,
    };
    if rgb.width() == 0 || rgb.height() == 0 {
        return Err(Error::Invalid(format!("{}: empty image", source.name())));
    }
    Ok(rgb)
}

fn open(path: &Path) -> Result<image::DynamicImage> {
    let reader = image::ImageReader::open(path).map_err(|e| Error::io(path, e))?;
    let reader = reader
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    reader
        .decode()
        .map_err(|e| Error::Invalid(format!("{}: cannot decode image: {e}", path.display())))
}

fn raw_to_rgb(name: &str, raw: &RawImage) -> Result<RgbImage> {
    let n = raw.width as usize * raw.height as usize;
    if raw.pixels.len() != n * raw.channels as usize || !matches!(raw.channels, 1 | 3) {
        return Err(Error::Invalid(format!(
            "{name}: in-memory image {}x{}x{} holds {} bytes",
            raw.width,
            raw.height,
            raw.channels,
            raw.pixels.len()
        )));
    }
    let rgb = if raw.channels == 3 {
        raw.pixels.clone()
    } else {
        raw.pixels.iter().flat_map(|&v| [v, v, v]).collect()
    };
    RgbImage::from_raw(raw.width, raw.height, rgb)
        .ok_or_else(|| Error::Invalid(format!("{name}: in-memory image has the wrong size")))
}

/// A decoded ground-truth mask, with a note when it was not a clean 0/255 mask.
pub struct DecodedMask {
    pub mask: GrayImage,
    /// A value other than 0 and 255 was seen (anti-aliased or JPEG-compressed masks). The
    /// mask is still used with every value > 0 counting as anomalous, as Dinomaly does; the
    /// caller turns this into a warning naming the file.
    pub non_binary: bool,
}

/// Decodes a mask as 8-bit grey; several masks (MVTec LOCO) are merged by their maximum.
/// Masks of one image that differ in size are an error naming both files.
pub fn decode_mask(source: &MaskSource) -> Result<DecodedMask> {
    let paths = source.paths();
    let first = paths
        .first()
        .ok_or_else(|| Error::Invalid("empty list of mask files".into()))?;
    let mut mask = open(first)?.to_luma8();
    for p in &paths[1..] {
        let other = open(p)?.to_luma8();
        if other.dimensions() != mask.dimensions() {
            return Err(Error::Invalid(format!(
                "{}: mask is {}x{} but {} is {}x{}",
                p.display(),
                other.width(),
                other.height(),
                first.display(),
                mask.width(),
                mask.height()
            )));
        }
        for (a, b) in mask.as_mut().iter_mut().zip(other.as_raw()) {
            *a = (*a).max(*b);
        }
    }
    if mask.width() == 0 || mask.height() == 0 {
        return Err(Error::Invalid(format!("{}: empty mask", first.display())));
    }
    let non_binary = mask.as_raw().iter().any(|&v| v != 0 && v != 255);
    Ok(DecodedMask { mask, non_binary })
}
