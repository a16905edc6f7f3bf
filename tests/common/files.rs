//! Temporary folders and synthetic images for the data and eval tests.

use image::{GrayImage, Luma, Rgb, RgbImage};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("kdad-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A grey-ish RGB image with a bright square at (x, y) of side `s` when `defect` is Some.
pub fn write_rgb(path: &Path, w: u32, h: u32, defect: Option<(u32, u32, u32)>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = RgbImage::from_fn(w, h, |x, y| {
        let inside =
            defect.is_some_and(|(dx, dy, s)| x >= dx && x < dx + s && y >= dy && y < dy + s);
        if inside {
            Rgb([250, 250, 250])
        } else {
            let v = (60 + (x * 7 + y * 3) % 40) as u8;
            Rgb([v, v, v])
        }
    });
    img.save(path).unwrap();
}

/// A 0/`on` mask with the square of `write_rgb`.
pub fn write_mask(path: &Path, w: u32, h: u32, (dx, dy, s): (u32, u32, u32), on: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let m = GrayImage::from_fn(w, h, |x, y| {
        Luma([if x >= dx && x < dx + s && y >= dy && y < dy + s {
            on
        } else {
            0
        }])
    });
    m.save(path).unwrap();
}

/// An MVTec-layout category: `n_train` train/good, `n_good` test/good, and `n_bad` images in
/// test/bright with masks.
pub fn mvtec_tree(root: &Path, n_train: usize, n_good: usize, n_bad: usize) {
    let (w, h) = (64, 48);
    for i in 0..n_train {
        write_rgb(&root.join(format!("train/good/{i:03}.png")), w, h, None);
    }
    for i in 0..n_good {
        write_rgb(&root.join(format!("test/good/{i:03}.png")), w, h, None);
    }
    for i in 0..n_bad {
        let sq = (8 + 4 * i as u32, 10, 12);
        write_rgb(
            &root.join(format!("test/bright/{i:03}.png")),
            w,
            h,
            Some(sq),
        );
        write_mask(
            &root.join(format!("ground_truth/bright/{i:03}_mask.png")),
            w,
            h,
            sq,
            255,
        );
    }
}

/// Where the shared development data lives: `$KDAD_DATA` or `../shared/data` beside the
/// repository. `None` (and a message) when absent.
pub fn shared_data(sub: &str) -> Option<PathBuf> {
    let base = std::env::var_os("KDAD_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    let p = base.join(sub);
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!(
            "SKIPPED: {} not found (set KDAD_DATA to the shared data folder)",
            p.display()
        );
        None
    }
}
