//! MVTec LOCO AD (methods.md §5.3):
//!
//! ```text
//! <cls>/train/good, <cls>/validation/good
//! <cls>/test/{good, logical_anomalies, structural_anomalies}/*.png
//! <cls>/ground_truth/<defect>/<stem>/000.png, 001.png, ...   (one mask per defect region)
//! ```
//!
//! The masks of one image are merged by union. The report's per-defect AUROC gives the
//! logical and structural image AUROCs that LOCO results quote.

use crate::data::fsutil::{check_split, file_name, file_stem, list_images_nonempty, subdirs};
use crate::data::mvtec::category_dirs;
use crate::data::sample::{Category, Dataset, ImageSource, Label, MaskSource, Sample, Split};
use crate::Result;
use std::path::{Path, PathBuf};

/// MVTec LOCO at `root` (one category folder or a folder of them).
pub fn loco(root: &Path) -> Result<Dataset> {
    let categories = category_dirs(root)?
        .iter()
        .map(|d| category(d))
        .collect::<Result<Vec<_>>>()?;
    Ok(Dataset {
        name: "mvtec_loco".into(),
        categories,
    })
}

fn normals(dir: &Path, category: &str) -> Result<Vec<Sample>> {
    Ok(list_images_nonempty(dir)?
        .into_iter()
        .map(|p| normal(p, category))
        .collect())
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

fn category(dir: &Path) -> Result<Category> {
    let name = file_name(dir);
    let train = normals(&dir.join("train").join("good"), &name)?;
    let validation = normals(&dir.join("validation").join("good"), &name)?;
    let mut test = Vec::new();
    for defect_dir in subdirs(&dir.join("test"))? {
        let defect = file_name(&defect_dir);
        let images = list_images_nonempty(&defect_dir)?;
        if defect == "good" {
            test.extend(images.into_iter().map(|p| normal(p, &name)));
            continue;
        }
        for path in images {
            // A missing or empty mask folder is an error naming it (list_images_nonempty).
            let masks = list_images_nonempty(
                &dir.join("ground_truth")
                    .join(&defect)
                    .join(file_stem(&path)),
            )?;
            test.push(Sample {
                source: ImageSource::File(path),
                label: Label::Anomalous,
                defect: defect.clone(),
                mask: Some(MaskSource::Union(masks)),
                category: name.clone(),
            });
        }
    }
    let split = Split {
        train,
        validation,
        test,
    };
    check_split(&dir.display().to_string(), &split)?;
    Ok(Category {
        name,
        split,
        has_masks: true,
    })
}
