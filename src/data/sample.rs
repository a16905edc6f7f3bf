//! The common currency of every loader: a `Sample` (where the pixels come from, its label,
//! its defect type, its mask, its category) and the `Split` of a category into train,
//! validation and test samples.

use std::path::PathBuf;
use std::sync::Arc;

/// Ground truth of one image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Label {
    Normal,
    Anomalous,
}

impl Label {
    pub fn is_anomalous(self) -> bool {
        self == Label::Anomalous
    }
}

/// Pixels already in memory (CIFAR, Fashion-MNIST): 8-bit, interleaved channels.
#[derive(Clone, Debug, PartialEq)]
pub struct RawImage {
    pub width: u32,
    pub height: u32,
    /// 1 (grey) or 3 (RGB).
    pub channels: u8,
    pub pixels: Vec<u8>,
}

/// Where an image's pixels come from.
#[derive(Clone, Debug)]
pub enum ImageSource {
    File(PathBuf),
    /// In-memory pixels with a name for messages and reports (e.g. `cifar10/test_batch#17`).
    Memory {
        name: String,
        image: Arc<RawImage>,
    },
}

impl ImageSource {
    /// A short human-readable name: the path, or the in-memory name.
    pub fn name(&self) -> String {
        match self {
            ImageSource::File(p) => p.display().to_string(),
            ImageSource::Memory { name, .. } => name.clone(),
        }
    }
}

/// Where an image's ground-truth mask comes from. MVTec LOCO stores several masks per image
/// (one per defect instance); they are merged by union.
#[derive(Clone, Debug, PartialEq)]
pub enum MaskSource {
    File(PathBuf),
    Union(Vec<PathBuf>),
}

impl MaskSource {
    pub fn paths(&self) -> &[PathBuf] {
        match self {
            MaskSource::File(p) => std::slice::from_ref(p),
            MaskSource::Union(v) => v,
        }
    }
}

/// One image of a data set.
#[derive(Clone, Debug)]
pub struct Sample {
    pub source: ImageSource,
    pub label: Label,
    /// "good" for normal images; the defect folder or class name otherwise.
    pub defect: String,
    /// Pixel-level ground truth. `None` for normal images (an all-zero mask) and for data sets
    /// without masks (semantic AD, ELPV).
    pub mask: Option<MaskSource>,
    pub category: String,
}

/// The samples of one category. `validation` is empty except for MVTec LOCO.
#[derive(Clone, Debug, Default)]
pub struct Split {
    pub train: Vec<Sample>,
    pub validation: Vec<Sample>,
    pub test: Vec<Sample>,
}

/// A data set as a list of categories, each evaluated on its own (metrics are per category,
/// then averaged, as every benchmark reports them).
#[derive(Clone, Debug)]
pub struct Dataset {
    pub name: String,
    pub categories: Vec<Category>,
}

#[derive(Clone, Debug)]
pub struct Category {
    pub name: String,
    pub split: Split,
    /// Whether the test samples carry pixel masks, so pixel metrics are meaningful.
    pub has_masks: bool,
}

impl Dataset {
    /// Keeps only the named category; an error lists the ones that exist.
    pub fn select(mut self, category: &str) -> crate::Result<Dataset> {
        let names: Vec<String> = self.categories.iter().map(|c| c.name.clone()).collect();
        self.categories.retain(|c| c.name == category);
        if self.categories.is_empty() {
            return Err(crate::Error::Invalid(format!(
                "data set {}: no category {category:?}; it has {}",
                self.name,
                names.join(", ")
            )));
        }
        Ok(self)
    }
}
