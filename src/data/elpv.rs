//! ELPV solar cells from the `elpv-dataset` wheel (`pip install elpv-dataset==1.0.0.post1`):
//! `<package>/data/labels.csv` with whitespace-separated rows `images/cellNNNN.png <p> <type>`,
//! p = defect probability in {0, 1/3, 2/3, 1}, type = mono or poly; 300x300 grey PNGs.
//!
//! Split as the shared reference does (peer/ref_dinomaly/common.py `elpv_split`): keep one cell
//! type; normal = p == 0; shuffle the indices of the sorted normals with
//! `random.Random(seed)`, the first `round(0.8 n)` (sorted back) train and the rest test;
//! test anomalies = every cell of that type with p > 0, defect named by its probability.

use crate::data::fsutil::check_split;
use crate::data::pyrandom::PyRandom;
use crate::data::sample::{Category, Dataset, ImageSource, Label, Sample, Split};
use crate::{Error, Result};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CellType {
    Mono,
    Poly,
    All,
}

impl CellType {
    fn name(self) -> &'static str {
        match self {
            CellType::Mono => "mono",
            CellType::Poly => "poly",
            CellType::All => "all",
        }
    }
}

/// ELPV with the reference split (seed 0, 80 % of the normals for training).
pub fn elpv(root: &Path, cells: CellType) -> Result<Dataset> {
    elpv_split(root, cells, 0, 0.8)
}

/// `root`: the folder holding labels.csv, or the installed package folder above it.
pub fn elpv_split(root: &Path, cells: CellType, seed: u64, train_frac: f64) -> Result<Dataset> {
    let dir = if root.join("labels.csv").is_file() {
        root.to_path_buf()
    } else {
        root.join("data")
    };
    let csv = dir.join("labels.csv");
    let text = std::fs::read_to_string(&csv).map_err(|e| Error::io(&csv, e))?;
    let mut normals: Vec<PathBuf> = Vec::new();
    let mut anomalies: Vec<(PathBuf, f64)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() {
            continue;
        }
        let [path, prob, kind] = f[..] else {
            return Err(Error::Invalid(format!(
                "{}:{}: expected `path probability type`",
                csv.display(),
                i + 1
            )));
        };
        let prob: f64 = prob.parse().map_err(|_| {
            Error::Invalid(format!(
                "{}:{}: probability {prob:?} is not a number",
                csv.display(),
                i + 1
            ))
        })?;
        if cells != CellType::All && kind != cells.name() {
            continue;
        }
        let path = dir.join(path);
        if prob == 0.0 {
            normals.push(path);
        } else if prob > 0.0 {
            anomalies.push((path, prob));
        }
    }
    normals.sort();
    anomalies.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let mut idx: Vec<usize> = (0..normals.len()).collect();
    PyRandom::new(seed).shuffle(&mut idx);
    let n_train = (train_frac * normals.len() as f64).round_ties_even() as usize;
    let (mut train_idx, mut test_idx) = (idx[..n_train].to_vec(), idx[n_train..].to_vec());
    train_idx.sort_unstable();
    test_idx.sort_unstable();

    let name = format!("elpv_{}", cells.name());
    let sample = |path: &PathBuf, label, defect: String| Sample {
        source: ImageSource::File(path.clone()),
        label,
        defect,
        mask: None,
        category: name.clone(),
    };
    let train = train_idx
        .iter()
        .map(|&i| sample(&normals[i], Label::Normal, "good".into()))
        .collect();
    let mut test: Vec<Sample> = test_idx
        .iter()
        .map(|&i| sample(&normals[i], Label::Normal, "good".into()))
        .collect();
    test.extend(
        anomalies
            .iter()
            .map(|(p, pr)| sample(p, Label::Anomalous, format!("p={pr:.4}"))),
    );
    let split = Split {
        train,
        validation: Vec::new(),
        test,
    };
    check_split(
        &format!("{} ({} cells)", csv.display(), cells.name()),
        &split,
    )?;
    Ok(Dataset {
        name: "elpv".into(),
        categories: vec![Category {
            name,
            split,
            has_masks: false,
        }],
    })
}
