//! Data sets by name, for the command line (`kdad eval --dataset NAME --root DIR`).

use crate::data::elpv::{elpv, CellType};
use crate::data::semantic::{class_folders, UNIAD_CIFAR10_SPLITS};
use crate::data::{cifar, idx, loco, mvtec, realiad, visa, Dataset};
use crate::{Error, Result};
use std::path::Path;

/// The names `open_dataset` accepts, with what `root` must be.
pub const DATASETS: [(&str, &str); 13] = [
    (
        "mvtec",
        "MVTec AD: a category folder or the folder of the 15",
    ),
    ("mpdd", "MPDD (MVTec layout)"),
    (
        "visa",
        "VisA: raw data with split_csv/1cls.csv, or the MVTec-layout 1cls folder",
    ),
    ("loco", "MVTec LOCO AD"),
    (
        "realiad",
        "Real-IAD: the folder holding realiad_1024/ and realiad_jsons/",
    ),
    (
        "elpv",
        "ELPV mono cells: the elpv_dataset package folder (or its data/)",
    ),
    ("elpv-poly", "ELPV poly cells"),
    ("elpv-all", "ELPV, mono and poly cells together"),
    (
        "cifar10",
        "CIFAR-10 one class vs rest: cifar-10-batches-py/",
    ),
    (
        "cifar10-uniad",
        "CIFAR-10, UniAD's four 5-class-normal splits",
    ),
    (
        "cifar100",
        "CIFAR-100 superclass vs rest: cifar-100-python/",
    ),
    ("fmnist", "Fashion-MNIST one class vs rest: the IDX folder"),
    (
        "folders",
        "one class vs rest over root/{train,test}/<class>/ image folders",
    ),
];

pub fn open_dataset(name: &str, root: &Path) -> Result<Dataset> {
    match name {
        "mvtec" => mvtec::mvtec(root),
        "mpdd" => mvtec::mpdd(root),
        "visa" if root.join("split_csv").join("1cls.csv").is_file() => visa::visa(root, None),
        "visa" => mvtec::load("visa", root),
        "loco" => loco::loco(root),
        "realiad" => realiad::realiad(root, "realiad_1024", "realiad_jsons/realiad_jsons"),
        "elpv" => elpv(root, CellType::Mono),
        "elpv-poly" => elpv(root, CellType::Poly),
        "elpv-all" => elpv(root, CellType::All),
        "cifar10" => cifar::cifar10(root)?.one_vs_rest(),
        "cifar10-uniad" => {
            let groups: Vec<&[usize]> = UNIAD_CIFAR10_SPLITS.iter().map(|g| &g[..]).collect();
            cifar::cifar10(root)?.multi_class(&groups)
        }
        "cifar100" => cifar::cifar100_coarse(root)?.one_vs_rest(),
        "fmnist" => idx::fashion_mnist(root)?.one_vs_rest(),
        "folders" => class_folders(root, "folders")?.one_vs_rest(),
        other => Err(Error::Invalid(format!(
            "unknown data set {other:?}; known: {}",
            DATASETS
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}
