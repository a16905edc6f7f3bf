//! Real-IAD as Dinomaly reads it (methods.md §5.4): images under `<root>/<images>/<cls>/`
//! (`images` = `realiad_1024`, or another resolution), split files `<root>/<jsons>/<cls>.json`
//! (`jsons` = `realiad_jsons/realiad_jsons` for the standard protocol; the download also has
//! `realiad_jsons_sv` and others) with `train` and `test` lists of
//! `{image_path, mask_path, anomaly_class}`, paths relative to the category's image folder.
//! Normal is `anomaly_class == meta.normal_class` when the file has it, else `"OK"`.

use crate::data::fsutil::{check_split, file_stem};
use crate::data::sample::{Category, Dataset, ImageSource, Label, MaskSource, Sample, Split};
use crate::{Error, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Real-IAD at `root`, images from `root/images`, one category per JSON file in
/// `root/jsons`.
pub fn realiad(root: &Path, images: &str, jsons: &str) -> Result<Dataset> {
    let json_dir = root.join(jsons);
    let mut jsons: Vec<PathBuf> = std::fs::read_dir(&json_dir)
        .map_err(|e| Error::io(&json_dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    jsons.sort();
    if jsons.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: no <category>.json split files",
            json_dir.display()
        )));
    }
    let categories = jsons
        .iter()
        .map(|j| category(j, &root.join(images).join(file_stem(j))))
        .collect::<Result<Vec<_>>>()?;
    Ok(Dataset {
        name: "realiad".into(),
        categories,
    })
}

fn category(json: &Path, image_dir: &Path) -> Result<Category> {
    let name = file_stem(json);
    let text = std::fs::read_to_string(json).map_err(|e| Error::io(json, e))?;
    let bad = |what: String| Error::Invalid(format!("{}: {what}", json.display()));
    let v: Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let normal_class = v["meta"]["normal_class"].as_str().unwrap_or("OK");
    let mut split = Split::default();
    for (key, out) in [("train", &mut split.train), ("test", &mut split.test)] {
        let list = v[key]
            .as_array()
            .ok_or_else(|| bad(format!("no {key:?} list")))?;
        for (i, item) in list.iter().enumerate() {
            let field = |f: &str| item[f].as_str();
            let image =
                field("image_path").ok_or_else(|| bad(format!("{key}[{i}]: no image_path")))?;
            let class = field("anomaly_class")
                .ok_or_else(|| bad(format!("{key}[{i}]: no anomaly_class")))?;
            let label = if class == normal_class {
                Label::Normal
            } else {
                Label::Anomalous
            };
            let mask = match (label, field("mask_path")) {
                (Label::Normal, _) => None,
                (Label::Anomalous, Some(m)) if !m.is_empty() => {
                    Some(MaskSource::File(image_dir.join(m)))
                }
                (Label::Anomalous, _) => {
                    return Err(bad(format!(
                        "{key}[{i}]: anomalous image without mask_path"
                    )))
                }
            };
            out.push(Sample {
                source: ImageSource::File(image_dir.join(image)),
                label,
                defect: if label.is_anomalous() {
                    class.to_string()
                } else {
                    "good".into()
                },
                mask,
                category: name.clone(),
            });
        }
    }
    // Training on anomalies would be a corrupt split file; say so rather than learn them.
    if let Some(s) = split.train.iter().find(|s| s.label.is_anomalous()) {
        return Err(bad(format!(
            "train list holds an anomalous image {}",
            s.source.name()
        )));
    }
    check_split(&json.display().to_string(), &split)?;
    Ok(Category {
        name,
        split,
        has_masks: true,
    })
}
