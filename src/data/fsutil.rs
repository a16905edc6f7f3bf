//! File-system helpers shared by the loaders: sorted image listings and the checks that turn
//! a missing folder or an empty class into an error naming it.

use crate::data::sample::{Label, Split};
use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// Extensions the decoder handles (the `image` crate features this crate enables).
const IMAGE_EXT: [&str; 6] = ["png", "jpg", "jpeg", "bmp", "tif", "tiff"];

pub fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXT.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// The image files directly inside `dir`, sorted by name (the order every reference uses).
/// A missing folder is an error naming it; an empty one is not (callers decide).
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_file() && is_image(&path) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// Like `list_images`, but an empty folder is an error: a class with no images would give
/// undefined metrics or an empty training set.
pub fn list_images_nonempty(dir: &Path) -> Result<Vec<PathBuf>> {
    let v = list_images(dir)?;
    if v.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: no images (expected .png/.jpg/.bmp/.tif files)",
            dir.display()
        )));
    }
    Ok(v)
}

/// Sub-folders of `dir`, sorted by name.
pub fn subdirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_dir() {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

pub fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub fn file_stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Checks what every protocol needs: training images, and a test set with both normal and
/// anomalous images (AUROC is undefined otherwise).
pub fn check_split(what: &str, split: &Split) -> Result<()> {
    if split.train.is_empty() {
        return Err(Error::Invalid(format!("{what}: no training images")));
    }
    let anomalous = split
        .test
        .iter()
        .filter(|s| s.label == Label::Anomalous)
        .count();
    let normal = split.test.len() - anomalous;
    if normal == 0 || anomalous == 0 {
        return Err(Error::Invalid(format!(
            "{what}: the test set needs normal and anomalous images, it has {normal} normal and {anomalous} anomalous"
        )));
    }
    Ok(())
}
