//! Fashion-MNIST in the IDX format (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
//! `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, each optionally `.gz`): big-endian
//! header `0 0 0x08 ndim`, `ndim` u32 sizes, then uint8 data. Grey 28x28 images, replicated
//! to RGB by the decoder.

use crate::data::sample::{ImageSource, RawImage};
use crate::data::semantic::LabelledSet;
use crate::{Error, Result};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Fashion-MNIST from the folder holding the four IDX files.
pub fn fashion_mnist(root: &Path) -> Result<LabelledSet> {
    let classes = FASHION_MNIST_CLASSES
        .iter()
        .map(|s| s.to_string())
        .collect();
    Ok(LabelledSet {
        name: "fashion_mnist".into(),
        classes,
        train: images(
            &find(root, "train-images-idx3-ubyte")?,
            &find(root, "train-labels-idx1-ubyte")?,
        )?,
        test: images(
            &find(root, "t10k-images-idx3-ubyte")?,
            &find(root, "t10k-labels-idx1-ubyte")?,
        )?,
    })
}

fn find(root: &Path, stem: &str) -> Result<PathBuf> {
    for name in [stem.to_string(), format!("{stem}.gz")] {
        let p = root.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(Error::Invalid(format!(
        "{}: no {stem} (or {stem}.gz)",
        root.display()
    )))
}

/// Reads one IDX file of uint8: its dimensions and data.
pub fn read_idx(path: &Path) -> Result<(Vec<usize>, Vec<u8>)> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| Error::io(path, e))?;
        out
    } else {
        raw
    };
    let bad = |what: String| Error::Invalid(format!("{}: IDX: {what}", path.display()));
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad("bad magic number".into()));
    }
    if bytes[2] != 0x08 {
        return Err(bad(format!(
            "element type 0x{:02x}, only uint8 (0x08) is supported",
            bytes[2]
        )));
    }
    let ndim = bytes[3] as usize;
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(bad("truncated header".into()));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|i| u32::from_be_bytes([0, 1, 2, 3].map(|k| bytes[4 + 4 * i + k])) as usize)
        .collect();
    let n: usize = dims.iter().product();
    if bytes.len() - header != n {
        return Err(bad(format!(
            "dimensions {dims:?} need {n} bytes, the file has {}",
            bytes.len() - header
        )));
    }
    Ok((dims, bytes[header..].to_vec()))
}

fn images(images: &Path, labels: &Path) -> Result<Vec<(ImageSource, usize)>> {
    let (dims, data) = read_idx(images)?;
    let (ldims, lab) = read_idx(labels)?;
    let [n, h, w] = dims[..] else {
        return Err(Error::Invalid(format!(
            "{}: expected 3 dimensions, found {dims:?}",
            images.display()
        )));
    };
    if ldims != [n] {
        return Err(Error::Invalid(format!(
            "{}: {ldims:?} labels for {n} images",
            labels.display()
        )));
    }
    lab.iter()
        .enumerate()
        .map(|(i, &c)| {
            if c > 9 {
                return Err(Error::Invalid(format!(
                    "{}: label {i} is {c}, expected 0..9",
                    labels.display()
                )));
            }
            let pixels = data[i * h * w..(i + 1) * h * w].to_vec();
            let image = Arc::new(RawImage {
                width: w as u32,
                height: h as u32,
                channels: 1,
                pixels,
            });
            Ok((
                ImageSource::Memory {
                    name: format!("{}#{i}", images.display()),
                    image,
                },
                c as usize,
            ))
        })
        .collect()
}
