//! Training-side loading: samples decoded and preprocessed on worker threads, in order, as
//! normalised CHW tensors (the evaluation driver has its own preparation, with masks).

use crate::data::decode::decode_rgb;
use crate::data::prefetch::{prefetch, Prefetch};
use crate::data::preprocess::{geometry_rgb, normalize, Geometry};
use crate::data::Sample;
use crate::Result;

/// One decoded, preprocessed image.
#[derive(Clone, Debug)]
pub struct LoadedImage {
    /// ImageNet-normalised CHW pixels, `3 x crop x crop`.
    pub tensor: Vec<f32>,
    pub name: String,
}

/// Prepares `samples` in order on `workers` threads, each with a queue `depth` deep. An
/// invalid geometry is an error here; an unreadable image comes back as an error naming it,
/// at its position.
pub fn load_images(
    samples: Vec<Sample>,
    geometry: Geometry,
    workers: usize,
    depth: usize,
) -> Result<Prefetch<LoadedImage>> {
    geometry.validate()?;
    Ok(prefetch(samples, workers, depth, move |s: &Sample| {
        let rgb = decode_rgb(&s.source)?;
        Ok(LoadedImage {
            tensor: normalize(&geometry_rgb(&rgb, geometry)),
            name: s.source.name(),
        })
    }))
}
