//! Preprocessing against PIL (fixtures from scripts/make_data_fixtures.py), normalisation and
//! crop by hand, and the prefetching loader's order and errors.

use image::{GrayImage, RgbImage};
use kdad::data::prefetch::prefetch;
use kdad::data::preprocess::{
    geometry_mask, geometry_rgb, normalize, resize_bilinear_u8, resize_nearest_pil, Geometry,
};
use kdad::Error;
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/data")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn bytes(v: &Value) -> Vec<u8> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u8)
        .collect()
}

#[test]
fn bilinear_and_nearest_match_pil_exactly() {
    for case in fixture("pil_resize.json")["cases"].as_array().unwrap() {
        let g = |k: &str| case[k].as_u64().unwrap() as usize;
        let (w, h, ow, oh) = (g("width"), g("height"), g("out_width"), g("out_height"));
        let got = resize_bilinear_u8(&bytes(&case["rgb"]), w, h, 3, ow, oh);
        assert_eq!(
            got,
            bytes(&case["rgb_bilinear"]),
            "bilinear {w}x{h} -> {ow}x{oh}"
        );
        let grey = GrayImage::from_raw(w as u32, h as u32, bytes(&case["grey"])).unwrap();
        let got = resize_nearest_pil(&grey, ow as u32, oh as u32);
        assert_eq!(
            got.into_raw(),
            bytes(&case["grey_nearest"]),
            "nearest {w}x{h} -> {ow}x{oh}"
        );
    }
}

#[test]
fn crop_is_centred_and_normalisation_is_imagenet() {
    // A 10x10 image whose pixel value encodes its position; resize 10 (identity), crop 6:
    // torchvision's offset is round((10 - 6) / 2) = 2.
    let img = RgbImage::from_fn(10, 10, |x, y| image::Rgb([(10 * y + x) as u8, 0, 255]));
    let crop = geometry_rgb(
        &img,
        Geometry {
            resize: 10,
            crop: 6,
        },
    );
    assert_eq!(crop.dimensions(), (6, 6));
    assert_eq!(crop.get_pixel(0, 0)[0], 22);
    assert_eq!(crop.get_pixel(5, 5)[0], 77);
    let t = normalize(&crop);
    assert_eq!(t.len(), 3 * 36);
    // Channel-major: R plane first. (22/255 - 0.485) / 0.229; G = (0 - 0.456) / 0.224;
    // B = (1 - 0.406) / 0.225.
    assert!((t[0] - (22.0 / 255.0 - 0.485) / 0.229).abs() < 1e-6);
    assert!((t[36] - (-0.456 / 0.224)).abs() < 1e-6);
    assert!((t[72] - (0.594 / 0.225)).abs() < 1e-6);
}

#[test]
fn masks_are_binarised_after_nearest_resize() {
    let mut m = GrayImage::new(8, 8);
    m.put_pixel(4, 4, image::Luma([1])); // faint, still anomalous (> 0)
    m.put_pixel(5, 4, image::Luma([255]));
    let out = geometry_mask(&m, Geometry { resize: 8, crop: 8 });
    assert_eq!(out.get_pixel(4, 4)[0], 1);
    assert_eq!(out.get_pixel(5, 4)[0], 1);
    assert_eq!(out.as_raw().iter().map(|&v| v as u32).sum::<u32>(), 2);
}

#[test]
fn prefetch_keeps_order_with_uneven_work() {
    let items: Vec<u64> = (0..50).collect();
    let out: Vec<u64> = prefetch(items, 3, 2, |&i| {
        // Make some items slow so workers finish out of order.
        std::thread::sleep(std::time::Duration::from_micros((50 - i) * 40));
        Ok(i * i)
    })
    .map(|r| r.unwrap())
    .collect();
    assert_eq!(out, (0..50u64).map(|i| i * i).collect::<Vec<_>>());
}

#[test]
fn prefetch_reports_errors_in_place_and_stops_cleanly_when_dropped() {
    let items: Vec<u32> = (0..20).collect();
    let mut it = prefetch(items, 2, 1, |&i| {
        if i == 3 {
            Err(Error::Invalid(format!("item {i} is bad")))
        } else {
            Ok(i)
        }
    });
    assert_eq!(it.next().unwrap().unwrap(), 0);
    assert_eq!(it.next().unwrap().unwrap(), 1);
    assert_eq!(it.next().unwrap().unwrap(), 2);
    assert!(it
        .next()
        .unwrap()
        .unwrap_err()
        .to_string()
        .contains("item 3"));
    drop(it); // workers blocked on full queues must exit, or this test hangs
}

#[test]
fn training_loader_yields_normalised_crops_in_order() {
    use kdad::data::loader::load_images;
    use kdad::data::{ImageSource, Label, RawImage, Sample};
    use std::sync::Arc;
    // Uniform in-memory images of value 10 * i: after any resize and crop every pixel of
    // image i is (10 i / 255 - mean) / std.
    let samples: Vec<Sample> = (0..7u8)
        .map(|i| Sample {
            source: ImageSource::Memory {
                name: format!("img{i}"),
                image: Arc::new(RawImage {
                    width: 5,
                    height: 4,
                    channels: 1,
                    pixels: vec![10 * i; 20],
                }),
            },
            label: Label::Normal,
            defect: "good".into(),
            mask: None,
            category: "c".into(),
        })
        .collect();
    assert!(load_images(samples.clone(), Geometry { resize: 8, crop: 9 }, 3, 1).is_err());
    let out: Vec<_> = load_images(samples, Geometry { resize: 8, crop: 6 }, 3, 1)
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(out.len(), 7);
    for (i, im) in out.iter().enumerate() {
        assert_eq!(im.name, format!("img{i}"));
        assert_eq!(im.tensor.len(), 3 * 36);
        let want = (10.0 * i as f32 / 255.0 - 0.485) / 0.229;
        assert!((im.tensor[0] - want).abs() < 1e-6 && (im.tensor[35] - want).abs() < 1e-6);
    }
}
