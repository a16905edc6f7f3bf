//! Map post-processing against hand-computed values and the kernel Dinomaly documents
//! (methods.md §2.11: centre row 0.0399 0.0438 0.0452 0.0438 0.0399, corner 0.0352).

use kdad::eval::postprocess::{gaussian_kernel, resize, smooth, top_mean, Align, Map, Smoothing};

#[test]
fn dinomaly_kernel_values() {
    let k = gaussian_kernel(5, 4.0);
    let row: Vec<f32> = k[10..15].to_vec();
    for (got, want) in row.iter().zip([0.0399, 0.0438, 0.0452, 0.0438, 0.0399]) {
        assert!((got - want).abs() < 5e-5, "{row:?}");
    }
    assert!((k[0] - 0.0352).abs() < 5e-5);
    assert!((k.iter().sum::<f32>() - 1.0).abs() < 1e-6);
}

#[test]
fn bilinear_half_pixel_and_corners() {
    let m = Map::new(2, 2, vec![0.0, 1.0, 2.0, 3.0]).unwrap();
    // align_corners=False, 2 -> 4: source x = (i + 0.5) / 2 - 0.5 = -0.25 (clamped to 0), 0.25,
    // 0.75, 1.25 (clamped to the last pixel): first row 0, 0.25, 0.75, 1.
    let up = resize(&m, 4, 4, Align::HalfPixel);
    assert_eq!(&up.data[..4], &[0.0, 0.25, 0.75, 1.0]);
    assert_eq!(&up.data[12..], &[2.0, 2.25, 2.75, 3.0]);
    // align_corners=True, 2 -> 3: the middle is the mean of the corners.
    let up = resize(&m, 3, 3, Align::Corners);
    assert_eq!(up.data, vec![0.0, 0.5, 1.0, 1.0, 1.5, 2.0, 2.0, 2.5, 3.0]);
}

#[test]
fn smoothing_keeps_constants_inside_and_pads_with_zeros() {
    let m = Map::new(9, 9, vec![1.0; 81]).unwrap();
    let s = smooth(&m, Smoothing::default());
    assert!(
        (s.data[4 * 9 + 4] - 1.0).abs() < 1e-6,
        "interior of a constant map stays constant"
    );
    // Corner: only the 3x3 lower-right block of the kernel overlaps the image.
    let k = gaussian_kernel(5, 4.0);
    let block: f32 = (2..5)
        .flat_map(|y| (2..5).map(move |x| (y, x)))
        .map(|(y, x)| k[y * 5 + x])
        .sum();
    assert!((s.data[0] - block).abs() < 1e-6);
    assert!(s.data[0] < 0.5);
}

#[test]
fn top_percent_mean() {
    let m = Map::new(100, 10, (0..1000).map(|v| v as f32).collect()).unwrap();
    // Top 1 % of 1000 values: 990..=999, mean 994.5.
    assert_eq!(top_mean(&m, 0.01), 994.5);
    assert_eq!(top_mean(&m, 0.0), 999.0);
    let tiny = Map::new(2, 2, vec![1.0, 4.0, 2.0, 3.0]).unwrap();
    assert_eq!(top_mean(&tiny, 0.01), 4.0, "at least one value");
    assert!(Map::new(2, 2, vec![1.0]).is_err());
}
