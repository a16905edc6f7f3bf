//! VisA from its raw download and the official split CSV (`split_csv/1cls.csv`, header
//! `object,split,label,image,mask`, paths relative to the data root; normal rows have an
//! empty mask). Already converted to the MVTec layout by `prepare_visa.py`, VisA loads with
//! `mvtec::load("visa", ..)` instead.

use crate::data::fsutil::check_split;
use crate::data::sample::{Category, Dataset, ImageSource, Label, MaskSource, Sample, Split};
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// VisA at `root` with the split file `csv` (default `root/split_csv/1cls.csv`).
pub fn visa(root: &Path, csv: Option<&Path>) -> Result<Dataset> {
    let default = root.join("split_csv").join("1cls.csv");
    let csv = csv.unwrap_or(&default);
    let text = std::fs::read_to_string(csv).map_err(|e| Error::io(csv, e))?;
    let bad = |line: usize, what: &str| Error::Invalid(format!("{}:{line}: {what}", csv.display()));
    let mut lines = text.lines().enumerate();
    let header = lines.next().map(|(_, h)| h.trim()).unwrap_or("");
    if header != "object,split,label,image,mask" {
        return Err(bad(
            1,
            &format!("expected the header object,split,label,image,mask, found {header:?}"),
        ));
    }
    let mut splits: BTreeMap<String, Split> = BTreeMap::new();
    for (i, line) in lines {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let [object, split, label, image, mask] = f[..] else {
            return Err(bad(i + 1, "expected 5 comma-separated fields"));
        };
        let path = root.join(image);
        if !path.is_file() {
            return Err(bad(i + 1, &format!("image {} not found", path.display())));
        }
        let label = match label {
            "normal" => Label::Normal,
            "anomaly" => Label::Anomalous,
            other => {
                return Err(bad(
                    i + 1,
                    &format!("label {other:?} is neither normal nor anomaly"),
                ))
            }
        };
        let mask = match (label, mask) {
            (Label::Normal, _) => None,
            (Label::Anomalous, "") => return Err(bad(i + 1, "anomalous image without a mask")),
            (Label::Anomalous, m) => Some(MaskSource::File(root.join(m))),
        };
        let sample = Sample {
            source: ImageSource::File(path),
            label,
            defect: if label.is_anomalous() {
                "bad".into()
            } else {
                "good".into()
            },
            mask,
            category: object.to_string(),
        };
        let entry = splits.entry(object.to_string()).or_default();
        match split {
            "train" => entry.train.push(sample),
            "test" => entry.test.push(sample),
            other => {
                return Err(bad(
                    i + 1,
                    &format!("split {other:?} is neither train nor test"),
                ))
            }
        }
    }
    if splits.is_empty() {
        return Err(bad(1, "no rows"));
    }
    let categories = splits
        .into_iter()
        .map(|(name, split)| {
            check_split(&format!("VisA {name}"), &split)?;
            Ok(Category {
                name,
                split,
                has_masks: true,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Dataset {
        name: "visa".into(),
        categories,
    })
}
