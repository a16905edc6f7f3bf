//! Every loader on a small synthetic tree made here, plus the Python-compatibility pieces
//! (pickle, random.shuffle) against fixtures from scripts/make_data_fixtures.py, and the
//! bad-input cases each loader must name.

mod common;

use common::{mvtec_tree, shared_data, write_mask, write_rgb, TempDir};
use kdad::data::cifar::{batch, cifar10};
use kdad::data::decode::decode_rgb;
use kdad::data::elpv::{elpv, CellType};
use kdad::data::folder::normal_folder;
use kdad::data::idx::fashion_mnist;
use kdad::data::pyrandom::PyRandom;
use kdad::data::semantic::{class_folders, UNIAD_CIFAR10_SPLITS};
use kdad::data::{loco, mvtec, realiad, visa, Label, MaskSource};
use serde_json::Value;
use std::path::Path;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/data")
        .join(name)
}

#[test]
fn mvtec_single_and_multi_category_roots() {
    let tmp = TempDir::new("mvtec");
    mvtec_tree(&tmp.path().join("bottle"), 3, 2, 2);
    mvtec_tree(&tmp.path().join("cable"), 1, 1, 1);
    std::fs::create_dir_all(tmp.path().join("not_a_category")).unwrap();
    let ds = mvtec::mvtec(tmp.path()).unwrap();
    let names: Vec<&str> = ds.categories.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["bottle", "cable"]);
    let b = &ds.categories[0].split;
    assert_eq!(b.train.len(), 3);
    assert_eq!(b.test.len(), 4);
    let bad: Vec<_> = b
        .test
        .iter()
        .filter(|s| s.label == Label::Anomalous)
        .collect();
    assert_eq!(bad.len(), 2);
    assert_eq!(bad[0].defect, "bright");
    assert_eq!(
        bad[0].mask,
        Some(MaskSource::File(
            tmp.path().join("bottle/ground_truth/bright/000_mask.png")
        ))
    );
    assert!(b
        .test
        .iter()
        .filter(|s| s.label == Label::Normal)
        .all(|s| s.mask.is_none() && s.defect == "good"));
    // One category folder as the root.
    let one = mvtec::mpdd(&tmp.path().join("cable")).unwrap();
    assert_eq!((one.name.as_str(), one.categories.len()), ("mpdd", 1));
    assert!(mvtec::mvtec(tmp.path())
        .unwrap()
        .select("nope")
        .unwrap_err()
        .to_string()
        .contains("bottle, cable"));
}

#[test]
fn mvtec_bad_trees_are_errors_naming_the_folder() {
    let tmp = TempDir::new("mvtec-bad");
    let err = mvtec::mvtec(&tmp.path().join("missing"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing"), "{err}");

    mvtec_tree(tmp.path(), 2, 2, 2);
    std::fs::create_dir_all(tmp.path().join("test/empty_defect")).unwrap();
    let err = mvtec::mvtec(tmp.path()).unwrap_err().to_string();
    assert!(
        err.contains("empty_defect") && err.contains("no images"),
        "{err}"
    );
    std::fs::remove_dir(tmp.path().join("test/empty_defect")).unwrap();

    std::fs::remove_file(tmp.path().join("ground_truth/bright/001_mask.png")).unwrap();
    let err = mvtec::mvtec(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("001.png") && err.contains("no mask"), "{err}");
    write_mask(
        &tmp.path().join("ground_truth/bright/001_mask.png"),
        64,
        48,
        (0, 0, 4),
        255,
    );

    for f in ["000.png", "001.png"] {
        std::fs::remove_file(tmp.path().join("train/good").join(f)).unwrap();
    }
    let err = mvtec::mvtec(tmp.path()).unwrap_err().to_string();
    assert!(
        err.contains("train/good") && err.contains("no images"),
        "{err}"
    );
}

#[test]
fn unreadable_image_is_an_error_naming_it() {
    let tmp = TempDir::new("unreadable");
    let p = tmp.path().join("x.png");
    std::fs::write(&p, b"this is not a png").unwrap();
    let err = decode_rgb(&kdad::data::ImageSource::File(p))
        .unwrap_err()
        .to_string();
    assert!(err.contains("x.png"), "{err}");
    let err = decode_rgb(&kdad::data::ImageSource::File(tmp.path().join("gone.png")))
        .unwrap_err()
        .to_string();
    assert!(err.contains("gone.png"), "{err}");
    let empty = kdad::data::ImageSource::Memory {
        name: "blank#0".into(),
        image: std::sync::Arc::new(kdad::data::RawImage {
            width: 0,
            height: 3,
            channels: 1,
            pixels: vec![],
        }),
    };
    assert!(decode_rgb(&empty)
        .unwrap_err()
        .to_string()
        .contains("blank#0: empty image"));
}

#[test]
fn loco_merges_mask_folders_and_keeps_validation() {
    let tmp = TempDir::new("loco");
    let root = tmp.path().join("pushpins");
    for (dir, n) in [("train/good", 3), ("validation/good", 2), ("test/good", 2)] {
        for i in 0..n {
            write_rgb(&root.join(format!("{dir}/{i:03}.png")), 32, 32, None);
        }
    }
    for d in ["logical_anomalies", "structural_anomalies"] {
        write_rgb(
            &root.join(format!("test/{d}/000.png")),
            32,
            32,
            Some((4, 4, 6)),
        );
        write_mask(
            &root.join(format!("ground_truth/{d}/000/000.png")),
            32,
            32,
            (4, 4, 3),
            255,
        );
        write_mask(
            &root.join(format!("ground_truth/{d}/000/001.png")),
            32,
            32,
            (20, 20, 3),
            255,
        );
    }
    let ds = loco::loco(tmp.path()).unwrap();
    let split = &ds.categories[0].split;
    assert_eq!(
        (split.train.len(), split.validation.len(), split.test.len()),
        (3, 2, 4)
    );
    let logical = split
        .test
        .iter()
        .find(|s| s.defect == "logical_anomalies")
        .unwrap();
    let MaskSource::Union(masks) = logical.mask.as_ref().unwrap() else {
        panic!("expected a union of masks")
    };
    assert_eq!(masks.len(), 2);
    let merged = kdad::data::decode::decode_mask(logical.mask.as_ref().unwrap()).unwrap();
    assert_eq!(
        merged.mask.as_raw().iter().filter(|&&v| v == 255).count(),
        18
    );

    std::fs::remove_dir_all(root.join("ground_truth/structural_anomalies/000")).unwrap();
    let err = loco::loco(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("structural_anomalies/000"), "{err}");
}

#[test]
fn visa_reads_the_split_csv() {
    let tmp = TempDir::new("visa");
    let r = tmp.path();
    let mut csv = String::from("object,split,label,image,mask\n");
    for (cls, i, split, label) in [
        ("candle", 0, "train", "normal"),
        ("candle", 1, "test", "normal"),
        ("candle", 2, "test", "anomaly"),
        ("pcb1", 0, "train", "normal"),
        ("pcb1", 1, "test", "normal"),
        ("pcb1", 2, "test", "anomaly"),
    ] {
        let kind = if label == "normal" {
            "Normal"
        } else {
            "Anomaly"
        };
        let img = format!("{cls}/Data/Images/{kind}/{i:03}.JPG");
        write_rgb(&r.join(&img), 16, 16, None);
        let mask = if label == "anomaly" {
            let m = format!("{cls}/Data/Masks/Anomaly/{i:03}.png");
            write_mask(&r.join(&m), 16, 16, (1, 1, 3), 255);
            m
        } else {
            String::new()
        };
        csv += &format!("{cls},{split},{label},{img},{mask}\n");
    }
    std::fs::create_dir_all(r.join("split_csv")).unwrap();
    std::fs::write(r.join("split_csv/1cls.csv"), &csv).unwrap();
    let ds = visa::visa(r, None).unwrap();
    assert_eq!(
        ds.categories
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["candle", "pcb1"]
    );
    let c = &ds.categories[0].split;
    assert_eq!((c.train.len(), c.test.len()), (1, 2));
    assert_eq!(
        c.test[1].mask,
        Some(MaskSource::File(
            r.join("candle/Data/Masks/Anomaly/002.png")
        ))
    );

    std::fs::write(
        r.join("bad.csv"),
        csv.replace("pcb1,test,anomaly", "pcb1,test,weird"),
    )
    .unwrap();
    let err = visa::visa(r, Some(&r.join("bad.csv")))
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad.csv:7") && err.contains("weird"), "{err}");
}

#[test]
fn realiad_reads_json_splits() {
    let tmp = TempDir::new("realiad");
    let r = tmp.path();
    let img_dir = r.join("realiad_1024/audiojack");
    write_rgb(&img_dir.join("OK/S0001/a.jpg"), 16, 16, None);
    write_rgb(&img_dir.join("OK/S0002/b.jpg"), 16, 16, None);
    write_rgb(&img_dir.join("NG/AK/S0003/c.jpg"), 16, 16, Some((2, 2, 4)));
    write_mask(&img_dir.join("NG/AK/S0003/c.png"), 16, 16, (2, 2, 4), 255);
    let json = serde_json::json!({
        "meta": {"normal_class": "OK", "prefix": ""},
        "train": [{"category": "audiojack", "anomaly_class": "OK", "image_path": "OK/S0001/a.jpg", "mask_path": null}],
        "test": [
            {"category": "audiojack", "anomaly_class": "OK", "image_path": "OK/S0002/b.jpg", "mask_path": null},
            {"category": "audiojack", "anomaly_class": "AK", "image_path": "NG/AK/S0003/c.jpg", "mask_path": "NG/AK/S0003/c.png"}
        ]
    });
    std::fs::create_dir_all(r.join("realiad_jsons/realiad_jsons")).unwrap();
    std::fs::write(
        r.join("realiad_jsons/realiad_jsons/audiojack.json"),
        json.to_string(),
    )
    .unwrap();
    let ds = realiad::realiad(r, "realiad_1024", "realiad_jsons/realiad_jsons").unwrap();
    let s = &ds.categories[0].split;
    assert_eq!(ds.categories[0].name, "audiojack");
    assert_eq!((s.train.len(), s.test.len()), (1, 2));
    assert_eq!(s.test[1].defect, "AK");
    assert_eq!(
        s.test[1].mask,
        Some(MaskSource::File(img_dir.join("NG/AK/S0003/c.png")))
    );

    // An anomalous image in the training list is a corrupt split file.
    let mut bad = json.clone();
    bad["train"][0]["anomaly_class"] = "AK".into();
    bad["train"][0]["mask_path"] = "NG/AK/S0003/c.png".into();
    std::fs::create_dir_all(r.join("sv")).unwrap();
    std::fs::write(r.join("sv/audiojack.json"), bad.to_string()).unwrap();
    let err = realiad::realiad(r, "realiad_1024", "sv")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sv/audiojack.json") && err.contains("train list"),
        "{err}"
    );
}

#[test]
fn plain_folder_of_normals() {
    let tmp = TempDir::new("folder");
    write_rgb(&tmp.path().join("b.png"), 8, 8, None);
    write_rgb(&tmp.path().join("a.png"), 8, 8, None);
    std::fs::write(tmp.path().join("notes.txt"), "not an image").unwrap();
    let s = normal_folder(tmp.path(), "mine").unwrap();
    assert_eq!(s.len(), 2);
    assert!(s[0].source.name().ends_with("a.png"));
    let empty = TempDir::new("folder-empty");
    assert!(normal_folder(empty.path(), "x")
        .unwrap_err()
        .to_string()
        .contains("no images"));
}

#[test]
fn python_random_shuffle_is_reproduced() {
    let f: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("pyrandom.json")).unwrap()).unwrap();
    for case in f["cases"].as_array().unwrap() {
        let (seed, n) = (
            case["seed"].as_u64().unwrap(),
            case["n"].as_u64().unwrap() as usize,
        );
        let want: Vec<usize> = case["shuffled"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let mut x: Vec<usize> = (0..n).collect();
        PyRandom::new(seed).shuffle(&mut x);
        assert_eq!(x, want, "seed {seed} n {n}");
    }
}

#[test]
fn elpv_split_follows_the_reference() {
    let tmp = TempDir::new("elpv");
    let d = tmp.path().join("data");
    // 10 mono normals, 2 mono anomalies, 3 poly cells.
    let mut csv = String::new();
    for i in 0..15 {
        let (p, kind) = match i {
            10 => ("0.3333333333333333", "mono"),
            11 => ("1.0", "mono"),
            12..=14 => ("0.0", "poly"),
            _ => ("0.0", "mono"),
        };
        csv += &format!("images/cell{i:04}.png  {p}                 {kind}\n");
        let img = image::GrayImage::from_pixel(12, 12, image::Luma([i as u8 * 10]));
        std::fs::create_dir_all(d.join("images")).unwrap();
        img.save(d.join(format!("images/cell{i:04}.png"))).unwrap();
    }
    std::fs::write(d.join("labels.csv"), csv).unwrap();
    let ds = elpv(tmp.path(), CellType::Mono).unwrap();
    let s = &ds.categories[0].split;
    // Python 3.11: idx = list(range(10)); random.Random(0).shuffle(idx) gives
    // [7, 8, 1, 5, 3, 4, 2, 0, 9, 6]; round(0.8 * 10) = 8 train: sorted {0,1,2,3,4,5,7,8};
    // test normals {6, 9}, then the anomalies.
    let names = |v: &[kdad::data::Sample]| -> Vec<String> {
        v.iter()
            .map(|s| {
                Path::new(&s.source.name())
                    .file_stem()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    };
    assert_eq!(
        names(&s.train),
        [
            "cell0000", "cell0001", "cell0002", "cell0003", "cell0004", "cell0005", "cell0007",
            "cell0008"
        ]
    );
    assert_eq!(
        names(&s.test),
        ["cell0006", "cell0009", "cell0010", "cell0011"]
    );
    assert_eq!(s.test[2].defect, "p=0.3333");
    assert!(!ds.categories[0].has_masks);
    // Grey cells decode as RGB.
    let rgb = decode_rgb(&s.test[0].source).unwrap();
    assert_eq!(rgb.get_pixel(0, 0).0, [60, 60, 60]);
}

/// The installed wheel: `$ELPV_ROOT`, or the package in this repository's `.venv`.
fn elpv_package() -> Option<std::path::PathBuf> {
    if let Some(r) = std::env::var_os("ELPV_ROOT") {
        return Some(r.into());
    }
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/lib");
    let found = std::fs::read_dir(&lib)
        .ok()?
        .filter_map(|e| e.ok())
        .find_map(|e| {
            let p = e.path().join("site-packages/elpv_dataset");
            p.is_dir().then_some(p)
        });
    if found.is_none() {
        eprintln!("SKIPPED: no elpv_dataset package (pip install elpv-dataset==1.0.0.post1 into .venv, or set ELPV_ROOT)");
    }
    found
}

#[test]
fn elpv_from_the_installed_wheel() {
    let Some(root) = elpv_package() else { return };
    let ds = elpv(&root, CellType::Mono).unwrap();
    let s = &ds.categories[0].split;
    // From the reference's elpv_split (peer/ref_dinomaly/common.py) run on the same wheel:
    // 470 train, 604 test, and these first held-out normals.
    assert_eq!((s.train.len(), s.test.len()), (470, 604));
    let first: Vec<String> = s.test[..5]
        .iter()
        .map(|x| {
            Path::new(&x.source.name())
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        first,
        [
            "cell0009.png",
            "cell0480.png",
            "cell0908.png",
            "cell0918.png",
            "cell0920.png"
        ]
    );
}

#[test]
fn cifar_pickles_of_python_2_and_3_are_read() {
    let want: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("cifar_expected.json")).unwrap())
            .unwrap();
    let labels: Vec<usize> = want["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let data: Vec<u8> = want["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u8)
        .collect();
    for f in ["cifar_py2.pkl", "cifar_py3_p2.pkl", "cifar_py3_p4.pkl"] {
        let items = batch(&fixture(f), "labels", 10).unwrap();
        assert_eq!(
            items.iter().map(|(_, c)| *c).collect::<Vec<_>>(),
            labels,
            "{f}"
        );
        // Image 4, pixel (x 5, y 2): planar R, G, B at offsets 0, 1024, 2048 of its row.
        let rgb = decode_rgb(&items[4].0).unwrap();
        let p = 2 * 32 + 5;
        let row = &data[4 * 3072..5 * 3072];
        assert_eq!(
            rgb.get_pixel(5, 2).0,
            [row[p], row[1024 + p], row[2048 + p]],
            "{f}"
        );
    }
    let tmp = TempDir::new("cifar-bad");
    let bytes = std::fs::read(fixture("cifar_py2.pkl")).unwrap();
    std::fs::write(tmp.path().join("trunc.pkl"), &bytes[..bytes.len() / 3]).unwrap();
    let err = batch(&tmp.path().join("trunc.pkl"), "labels", 10)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("trunc.pkl") && err.contains("truncated"),
        "{err}"
    );
}

#[test]
fn cifar10_one_class_and_multi_class_protocols() {
    // A CIFAR-10 folder whose five train batches and test batch are the tiny fixture batch
    // (labels 3 7 0 9 3 1).
    let tmp = TempDir::new("cifar10");
    let bytes = std::fs::read(fixture("cifar_py2.pkl")).unwrap();
    for f in [
        "data_batch_1",
        "data_batch_2",
        "data_batch_3",
        "data_batch_4",
        "data_batch_5",
        "test_batch",
    ] {
        std::fs::write(tmp.path().join(f), &bytes).unwrap();
    }
    let set = cifar10(tmp.path()).unwrap();
    assert_eq!((set.train.len(), set.test.len()), (30, 6));
    let three = set.normal_classes(&[3]).unwrap();
    assert_eq!(three.split.train.len(), 10); // two per batch
    let normal_test = three
        .split
        .test
        .iter()
        .filter(|s| s.label == Label::Normal)
        .count();
    assert_eq!((normal_test, three.split.test.len()), (2, 6));
    // One-vs-rest needs every class present; classes 2, 4, 5, 6, 8 are absent here.
    let err = set.one_vs_rest().unwrap_err().to_string();
    assert!(err.contains("no training images"), "{err}");
    // UniAD split {0,1,2,3,4}: labels 3, 0, 3, 1 normal; 7 and 9 anomalous.
    let multi = set.multi_class(&[&UNIAD_CIFAR10_SPLITS[0]]).unwrap();
    let c = &multi.categories[0];
    assert_eq!(c.name, "normal=0,1,2,3,4");
    assert_eq!(
        c.split
            .test
            .iter()
            .filter(|s| s.label == Label::Anomalous)
            .count(),
        2
    );
    assert_eq!(c.split.train.len(), 20);
}

#[test]
fn image_folders_by_class() {
    let tmp = TempDir::new("classfolders");
    for (part, class, n) in [
        ("train", "cat", 2),
        ("train", "dog", 2),
        ("test", "cat", 1),
        ("test", "dog", 2),
    ] {
        for i in 0..n {
            write_rgb(
                &tmp.path().join(format!("{part}/{class}/{i}.png")),
                8,
                8,
                None,
            );
        }
    }
    let set = class_folders(tmp.path(), "pets").unwrap();
    assert_eq!(set.classes, ["cat", "dog"]);
    let ds = set.one_vs_rest().unwrap();
    assert_eq!(ds.categories[1].name, "dog");
    assert_eq!(ds.categories[1].split.train.len(), 2);
    assert_eq!(
        ds.categories[1]
            .split
            .test
            .iter()
            .filter(|s| s.label == Label::Anomalous)
            .count(),
        1
    );
    std::fs::create_dir_all(tmp.path().join("test/bird")).unwrap();
    let err = class_folders(tmp.path(), "pets").unwrap_err().to_string();
    assert!(err.contains("bird"), "{err}");
}

fn write_idx(path: &Path, dims: &[u32], data: &[u8]) {
    let mut b = vec![0u8, 0, 0x08, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    std::fs::write(path, b).unwrap();
}

#[test]
fn fashion_mnist_idx_plain_and_gzipped() {
    let tmp = TempDir::new("fmnist");
    let r = tmp.path();
    let img: Vec<u8> = (0..3 * 28 * 28).map(|i| (i % 251) as u8).collect();
    write_idx(&r.join("train-images-idx3-ubyte"), &[3, 28, 28], &img);
    write_idx(&r.join("train-labels-idx1-ubyte"), &[3], &[0, 9, 0]);
    write_idx(
        &r.join("t10k-images-idx3-ubyte"),
        &[2, 28, 28],
        &img[..2 * 784],
    );
    // The test labels gzipped, as the original download ships them.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut raw = vec![0u8, 0, 0x08, 1, 0, 0, 0, 2];
    raw.extend_from_slice(&[9, 0]);
    std::io::Write::write_all(&mut gz, &raw).unwrap();
    std::fs::write(r.join("t10k-labels-idx1-ubyte.gz"), gz.finish().unwrap()).unwrap();
    let set = fashion_mnist(r).unwrap();
    assert_eq!((set.train.len(), set.test.len()), (3, 2));
    assert_eq!(set.test[0].1, 9);
    let rgb = decode_rgb(&set.train[1].0).unwrap();
    assert_eq!(rgb.dimensions(), (28, 28));
    let v = ((784 + 28 + 3) % 251) as u8; // image 1, pixel (x 3, y 1)
    assert_eq!(rgb.get_pixel(3, 1).0, [v, v, v]);
    let c = set.normal_classes(&[0]).unwrap();
    assert_eq!((c.name.as_str(), c.split.train.len()), ("T-shirt/top", 2));

    write_idx(&r.join("train-labels-idx1-ubyte"), &[4], &[0, 9, 0]);
    let err = fashion_mnist(r).unwrap_err().to_string();
    assert!(err.contains("train-labels-idx1-ubyte"), "{err}");
}

#[test]
fn mpdd_metal_plate_loads() {
    let Some(root) = shared_data("mpdd/metal_plate") else {
        return;
    };
    let ds = mvtec::mpdd(&root).unwrap();
    let s = &ds.categories[0].split;
    assert_eq!((s.train.len(), s.test.len()), (54, 107));
}

#[test]
fn fashion_mnist_real_files() {
    // Optional: FASHION_MNIST_ROOT = the folder of the four .gz files (Debian's
    // dataset-fashion-mnist installs them in /usr/share/datasets/fashion-mnist).
    let Some(root) = std::env::var_os("FASHION_MNIST_ROOT") else {
        eprintln!("SKIPPED: set FASHION_MNIST_ROOT to the Fashion-MNIST IDX folder");
        return;
    };
    let set = fashion_mnist(Path::new(&root)).unwrap();
    // The published sizes: 60,000 train and 10,000 test, 6,000 train images per class.
    assert_eq!((set.train.len(), set.test.len()), (60_000, 10_000));
    let c = set.normal_classes(&[7]).unwrap();
    assert_eq!(c.split.train.len(), 6_000);
    assert_eq!(
        c.split
            .test
            .iter()
            .filter(|s| s.label == Label::Normal)
            .count(),
        1_000
    );
}

#[test]
fn datasets_open_by_name() {
    let tmp = TempDir::new("byname");
    mvtec_tree(tmp.path(), 1, 1, 1);
    assert_eq!(
        kdad::data::open_dataset("mpdd", tmp.path()).unwrap().name,
        "mpdd"
    );
    let err = kdad::data::open_dataset("mnist-ish", tmp.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("mnist-ish") && err.contains("mvtec"), "{err}");
}

#[test]
fn cifar100_uses_the_coarse_superclasses() {
    // Fixture batch (scripts/make_data_fixtures.py): coarse labels 19 0 4 4 0 11, names
    // super0..super19 in the meta file.
    let tmp = TempDir::new("cifar100");
    std::fs::copy(fixture("cifar100_batch.pkl"), tmp.path().join("train")).unwrap();
    std::fs::copy(fixture("cifar100_batch.pkl"), tmp.path().join("test")).unwrap();
    std::fs::copy(fixture("cifar100_meta.pkl"), tmp.path().join("meta")).unwrap();
    let set = kdad::data::cifar::cifar100_coarse(tmp.path()).unwrap();
    assert_eq!(set.classes.len(), 20);
    assert_eq!(set.classes[4], "super4");
    let labels: Vec<usize> = set.test.iter().map(|(_, c)| *c).collect();
    assert_eq!(labels, [19, 0, 4, 4, 0, 11]);
    let c = set.normal_classes(&[4]).unwrap();
    assert_eq!((c.name.as_str(), c.split.train.len()), ("super4", 2));
}
