//! Semantic one-class protocols (methods.md §5.5) over any labelled image set: one class
//! normal and all others anomalous (a category per class, GeneralAD), or several classes
//! normal (UniAD's multi-class CIFAR-10 splits). Training uses the normal classes' training
//! images; testing uses the full test split.

use crate::data::fsutil::{check_split, file_name, list_images, subdirs};
use crate::data::sample::{Category, Dataset, ImageSource, Label, Sample, Split};
use crate::{Error, Result};
use std::path::Path;

/// Images with class indices into `classes`.
#[derive(Clone, Debug)]
pub struct LabelledSet {
    pub name: String,
    pub classes: Vec<String>,
    pub train: Vec<(ImageSource, usize)>,
    pub test: Vec<(ImageSource, usize)>,
}

/// UniAD's multi-class CIFAR-10 splits: the listed classes are normal.
pub const UNIAD_CIFAR10_SPLITS: [[usize; 5]; 4] = [
    [0, 1, 2, 3, 4],
    [5, 6, 7, 8, 9],
    [0, 2, 4, 6, 8],
    [1, 3, 5, 7, 9],
];

impl LabelledSet {
    /// A category per class: that class normal, every other anomalous.
    pub fn one_vs_rest(&self) -> Result<Dataset> {
        let categories = (0..self.classes.len())
            .map(|c| self.normal_classes(&[c]))
            .collect::<Result<Vec<_>>>()?;
        Ok(Dataset {
            name: self.name.clone(),
            categories,
        })
    }

    /// One category per group of normal classes.
    pub fn multi_class(&self, groups: &[&[usize]]) -> Result<Dataset> {
        let categories = groups
            .iter()
            .map(|g| self.normal_classes(g))
            .collect::<Result<Vec<_>>>()?;
        Ok(Dataset {
            name: self.name.clone(),
            categories,
        })
    }

    /// The listed classes normal, the others anomalous. The category is named after the class
    /// when there is one, else `normal=0,1,2`.
    pub fn normal_classes(&self, normal: &[usize]) -> Result<Category> {
        if let Some(&c) = normal.iter().find(|&&c| c >= self.classes.len()) {
            return Err(Error::Invalid(format!(
                "{}: class {c} does not exist ({} classes)",
                self.name,
                self.classes.len()
            )));
        }
        let name = match normal {
            [c] => self.classes[*c].clone(),
            _ => format!(
                "normal={}",
                normal
                    .iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        };
        let sample = |(src, class): &(ImageSource, usize)| {
            let label = if normal.contains(class) {
                Label::Normal
            } else {
                Label::Anomalous
            };
            Sample {
                source: src.clone(),
                label,
                defect: if label.is_anomalous() {
                    self.classes[*class].clone()
                } else {
                    "good".into()
                },
                mask: None,
                category: name.clone(),
            }
        };
        let train = self
            .train
            .iter()
            .filter(|(_, c)| normal.contains(c))
            .map(sample)
            .collect();
        let test = self.test.iter().map(sample).collect();
        let split = Split {
            train,
            validation: Vec::new(),
            test,
        };
        check_split(&format!("{} {name}", self.name), &split)?;
        Ok(Category {
            name,
            split,
            has_masks: false,
        })
    }
}

/// Folders of images by class: `root/train/<class>/*` and `root/test/<class>/*` (CIFAR as
/// image folders, the Intel "View" set). Classes are the sorted train folder names; a test
/// class without a train folder is an error, and so is a class with no images.
pub fn class_folders(root: &Path, name: &str) -> Result<LabelledSet> {
    let class_dirs = subdirs(&root.join("train"))?;
    let classes: Vec<String> = class_dirs.iter().map(|d| file_name(d)).collect();
    if classes.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: no class folders",
            root.join("train").display()
        )));
    }
    let mut set = LabelledSet {
        name: name.to_string(),
        classes,
        train: Vec::new(),
        test: Vec::new(),
    };
    for (part, out) in [("train", &mut set.train), ("test", &mut set.test)] {
        for dir in subdirs(&root.join(part))? {
            let class = file_name(&dir);
            let idx = set
                .classes
                .iter()
                .position(|c| *c == class)
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "{}: class {class:?} has no training folder",
                        dir.display()
                    ))
                })?;
            let images = list_images(&dir)?;
            if images.is_empty() {
                return Err(Error::Invalid(format!(
                    "{}: no images in this class",
                    dir.display()
                )));
            }
            out.extend(images.into_iter().map(|p| (ImageSource::File(p), idx)));
        }
    }
    Ok(set)
}
