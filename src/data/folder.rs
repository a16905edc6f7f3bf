//! A plain folder of normal images, for training on a user's own data.

use crate::data::fsutil::list_images_nonempty;
use crate::data::sample::{ImageSource, Label, Sample};
use crate::Result;
use std::path::Path;

/// Every image directly in `dir` (sorted by name) as a normal sample of `category`. A missing
/// or empty folder is an error naming it.
pub fn normal_folder(dir: &Path, category: &str) -> Result<Vec<Sample>> {
    Ok(list_images_nonempty(dir)?
        .into_iter()
        .map(|p| Sample {
            source: ImageSource::File(p),
            label: Label::Normal,
            defect: "good".into(),
            mask: None,
            category: category.to_string(),
        })
        .collect())
}
