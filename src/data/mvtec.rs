//! MVTec AD layout, also used by MPDD and by VisA after `prepare_visa.py`:
//!
//! ```text
//! <cls>/train/good/*.png
//! <cls>/test/good/*.png
//! <cls>/test/<defect>/*.png
//! <cls>/ground_truth/<defect>/<stem>_mask.png
//! ```
//!
//! `root` is either one category folder (it has `train/` and `test/`) or a folder of
//! category folders.

use crate::data::fsutil::{check_split, file_name, file_stem, list_images_nonempty, subdirs};
use crate::data::sample::{Category, Dataset, ImageSource, Label, MaskSource, Sample, Split};
use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// MVTec AD at `root` (one category or several).
pub fn mvtec(root: &Path) -> Result<Dataset> {
    load("mvtec", root)
}

/// MPDD: the MVTec layout under another name.
pub fn mpdd(root: &Path) -> Result<Dataset> {
    load("mpdd", root)
}

/// Any data set in the MVTec layout, reported under `name`.
pub fn load(name: &str, root: &Path) -> Result<Dataset> {
    let dirs = category_dirs(root)?;
    let categories = dirs
        .iter()
        .map(|d| category(d))
        .collect::<Result<Vec<_>>>()?;
    Ok(Dataset {
        name: name.to_string(),
        categories,
    })
}

/// The category folders under `root`: `root` itself when it holds `train/` and `test/`.
pub(crate) fn category_dirs(root: &Path) -> Result<Vec<PathBuf>> {
    if !root.is_dir() {
        return Err(Error::Invalid(format!(
            "{}: data set folder not found",
            root.display()
        )));
    }
    if root.join("test").is_dir() {
        return Ok(vec![root.to_path_buf()]);
    }
    let dirs: Vec<PathBuf> = subdirs(root)?
        .into_iter()
        .filter(|d| d.join("test").is_dir())
        .collect();
    if dirs.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: neither a category folder (train/, test/) nor a folder of category folders",
            root.display()
        )));
    }
    Ok(dirs)
}

/// One category folder.
pub fn category(dir: &Path) -> Result<Category> {
    let name = file_name(dir);
    let train = list_images_nonempty(&dir.join("train").join("good"))?
        .into_iter()
        .map(|p| normal(p, &name))
        .collect();
    let mut test = Vec::new();
    let test_dir = dir.join("test");
    for defect_dir in subdirs(&test_dir)? {
        let defect = file_name(&defect_dir);
        let images = list_images_nonempty(&defect_dir)?;
        if defect == "good" {
            test.extend(images.into_iter().map(|p| normal(p, &name)));
            continue;
        }
        let gt_dir = dir.join("ground_truth").join(&defect);
        for path in images {
            let mask = find_mask(&gt_dir, &path)?;
            test.push(Sample {
                source: ImageSource::File(path),
                label: Label::Anomalous,
                defect: defect.clone(),
                mask: Some(MaskSource::File(mask)),
                category: name.clone(),
            });
        }
    }
    let split = Split {
        train,
        validation: Vec::new(),
        test,
    };
    check_split(&format!("{}", dir.display()), &split)?;
    Ok(Category {
        name,
        split,
        has_masks: true,
    })
}

fn normal(path: PathBuf, category: &str) -> Sample {
    Sample {
        source: ImageSource::File(path),
        label: Label::Normal,
        defect: "good".into(),
        mask: None,
        category: category.to_string(),
    }
}

/// `<stem>_mask.<ext>` as MVTec and MPDD name masks, or `<stem>.<ext>` as some re-splits do.
/// A defective image without a mask is an error: its pixels would silently count as normal.
fn find_mask(gt_dir: &Path, image: &Path) -> Result<PathBuf> {
    let stem = file_stem(image);
    for name in [format!("{stem}_mask"), stem.clone()] {
        for ext in ["png", "bmp", "tif", "tiff", "jpg"] {
            let p = gt_dir.join(format!("{name}.{ext}"));
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(Error::Invalid(format!(
        "{}: no mask {}/{stem}_mask.png for this defective image",
        image.display(),
        gt_dir.display()
    )))
}
