//! CIFAR-10 and CIFAR-100, "python version" (pickled batches):
//!
//! ```text
//! cifar-10-batches-py/  data_batch_1..5, test_batch, batches.meta (label_names)
//! cifar-100-python/     train, test, meta (fine_label_names, coarse_label_names)
//! ```
//!
//! Each batch is a dict with `data` (uint8 N x 3072, planes R, G, B of 32x32) and `labels`
//! (CIFAR-10) or `fine_labels` / `coarse_labels` (CIFAR-100). CIFAR-100 one-class protocols
//! use the 20 coarse superclasses.

use crate::data::pickle::{ndarray_u8, parse, Value};
use crate::data::sample::{ImageSource, RawImage};
use crate::data::semantic::LabelledSet;
use crate::{Error, Result};
use std::path::Path;
use std::sync::Arc;

const SIDE: usize = 32;

/// CIFAR-10 from `root` = the `cifar-10-batches-py` folder.
pub fn cifar10(root: &Path) -> Result<LabelledSet> {
    let train: Vec<String> = (1..=5).map(|i| format!("data_batch_{i}")).collect();
    let classes = class_names(&root.join("batches.meta"), "label_names", 10)?;
    load(root, "cifar10", &train, "test_batch", "labels", classes)
}

/// CIFAR-100 with its 20 superclasses, from `root` = the `cifar-100-python` folder.
pub fn cifar100_coarse(root: &Path) -> Result<LabelledSet> {
    let classes = class_names(&root.join("meta"), "coarse_label_names", 20)?;
    load(
        root,
        "cifar100",
        &["train".to_string()],
        "test",
        "coarse_labels",
        classes,
    )
}

/// Class names from the meta file; numbers when it is absent.
fn class_names(meta: &Path, key: &str, n: usize) -> Result<Vec<String>> {
    if !meta.is_file() {
        return Ok((0..n).map(|i| i.to_string()).collect());
    }
    let v = read(meta)?;
    let Some(Value::List(names)) = v.get(key) else {
        return Err(Error::Invalid(format!("{}: no {key} list", meta.display())));
    };
    names
        .iter()
        .map(|s| {
            s.as_text().map(str::to_string).ok_or_else(|| {
                Error::Invalid(format!("{}: {key} holds a non-string", meta.display()))
            })
        })
        .collect()
}

fn read(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse(&bytes, &path.display().to_string())
}

fn load(
    root: &Path,
    name: &str,
    train: &[String],
    test: &str,
    key: &str,
    classes: Vec<String>,
) -> Result<LabelledSet> {
    let mut set = LabelledSet {
        name: name.into(),
        classes,
        train: Vec::new(),
        test: Vec::new(),
    };
    for file in train {
        set.train
            .extend(batch(&root.join(file), key, set.classes.len())?);
    }
    set.test = batch(&root.join(test), key, set.classes.len())?;
    Ok(set)
}

/// One pickled batch as in-memory RGB images with their class.
pub fn batch(path: &Path, key: &str, n_classes: usize) -> Result<Vec<(ImageSource, usize)>> {
    let v = read(path)?;
    let bad = |what: &str| Error::Invalid(format!("{}: {what}", path.display()));
    let (shape, data) = v
        .get("data")
        .and_then(ndarray_u8)
        .ok_or_else(|| bad("no uint8 `data` array"))?;
    let [n, row] = shape[..] else {
        return Err(bad("`data` is not 2-D"));
    };
    if row != 3 * SIDE * SIDE {
        return Err(bad(&format!(
            "`data` rows hold {row} values, expected {}",
            3 * SIDE * SIDE
        )));
    }
    let Some(Value::List(labels)) = v.get(key) else {
        return Err(bad(&format!("no `{key}` list")));
    };
    if labels.len() != n {
        return Err(bad(&format!("{} labels for {n} images", labels.len())));
    }
    let mut out = Vec::with_capacity(n);
    for (i, label) in labels.iter().enumerate() {
        let class = match label {
            Value::Int(c) if (0..n_classes as i64).contains(c) => *c as usize,
            other => {
                return Err(bad(&format!(
                    "label {i} is {other:?}, expected 0..{n_classes}"
                )))
            }
        };
        let planes = &data[i * row..(i + 1) * row];
        let plane = SIDE * SIDE;
        let pixels = (0..plane)
            .flat_map(|p| [planes[p], planes[plane + p], planes[2 * plane + p]])
            .collect();
        let image = Arc::new(RawImage {
            width: SIDE as u32,
            height: SIDE as u32,
            channels: 3,
            pixels,
        });
        out.push((
            ImageSource::Memory {
                name: format!("{}#{i}", path.display()),
                image,
            },
            class,
        ));
    }
    Ok(out)
}
