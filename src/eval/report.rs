//! Evaluation reports: a per-category and mean table for the terminal, `report.json`,
//! `report.csv`, `scores.csv` (every test image's score), heatmap overlays and one ROC plot
//! per category.
//!
//! A previous report is never replaced by a partial one: every file is first written into a
//! staging folder inside the output folder (`.staging-<pid>`), and only when all of them are
//! written are they renamed into place, each rename atomic, report.json last. A failure while
//! writing leaves the old files as they were and removes the staging folder. (A process
//! killed in the middle of the renames, a window of microseconds, would leave new plots
//! beside the old report.json; a killed process can also leave its staging folder behind.)

use crate::data::Label;
use crate::eval::driver::EvalOptions;
use crate::eval::heatmap::overlay_strip;
use crate::eval::metrics::Ranking;
use crate::eval::postprocess::Map;
use crate::eval::roc_plot::roc_png;
use crate::{Error, Result};
use image::{GrayImage, RgbImage};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One test image's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct ImageRecord {
    pub name: String,
    pub label: Label,
    pub defect: String,
    pub score: f32,
}

/// An image kept for an overlay: the crop, its post-processed map, its mask.
#[derive(Clone, Debug)]
pub struct HeatmapSample {
    pub name: String,
    pub rgb: RgbImage,
    pub map: Option<Map>,
    pub mask: Option<GrayImage>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CategoryResult {
    pub category: String,
    pub normal: usize,
    pub anomalous: usize,
    pub image: Ranking,
    /// Pooled pixel metrics; `None` without masks or maps.
    pub pixel: Option<Ranking>,
    pub aupro: Option<f64>,
    /// Image AUROC of the normal images against each defect type alone.
    pub per_defect_auroc: BTreeMap<String, f64>,
    pub seconds: f64,
    /// Image-level ROC curve (FPR, TPR).
    #[serde(skip)]
    pub roc: Vec<(f64, f64)>,
    #[serde(skip)]
    pub records: Vec<ImageRecord>,
    #[serde(skip)]
    pub heatmaps: Vec<HeatmapSample>,
}

/// Means over categories; a metric's mean is given only when every category has it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MeanRow {
    pub image_auroc: f64,
    pub image_ap: f64,
    pub image_f1_max: f64,
    pub pixel_auroc: Option<f64>,
    pub pixel_ap: Option<f64>,
    pub pixel_f1_max: Option<f64>,
    pub aupro: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub dataset: String,
    pub options: EvalOptions,
    pub categories: Vec<CategoryResult>,
    pub mean: MeanRow,
    /// Problems that did not stop the evaluation (e.g. non-binary masks), each naming a file.
    pub warnings: Vec<String>,
    pub kdad_version: &'static str,
}

impl Report {
    pub(crate) fn new(dataset: &str, opts: &EvalOptions) -> Report {
        Report {
            dataset: dataset.to_string(),
            options: opts.clone(),
            categories: Vec::new(),
            mean: MeanRow::default(),
            warnings: Vec::new(),
            kdad_version: env!("CARGO_PKG_VERSION"),
        }
    }

    /// Computes the mean row.
    pub(crate) fn finish(&mut self) {
        let c = &self.categories;
        let mean = |f: &dyn Fn(&CategoryResult) -> Option<f64>| -> Option<f64> {
            let v: Option<Vec<f64>> = c.iter().map(f).collect();
            v.filter(|v| !v.is_empty())
                .map(|v| v.iter().sum::<f64>() / v.len() as f64)
        };
        self.mean = MeanRow {
            image_auroc: mean(&|r| Some(r.image.auroc)).unwrap_or(f64::NAN),
            image_ap: mean(&|r| Some(r.image.ap)).unwrap_or(f64::NAN),
            image_f1_max: mean(&|r| Some(r.image.f1_max)).unwrap_or(f64::NAN),
            pixel_auroc: mean(&|r| r.pixel.map(|p| p.auroc)),
            pixel_ap: mean(&|r| r.pixel.map(|p| p.ap)),
            pixel_f1_max: mean(&|r| r.pixel.map(|p| p.f1_max)),
            aupro: mean(&|r| r.aupro),
        };
    }

    /// The terminal table: one row per category and the mean, metrics in percent, then the
    /// first warnings.
    pub fn table(&self) -> String {
        let width = self
            .categories
            .iter()
            .map(|c| c.category.len())
            .max()
            .unwrap_or(0)
            .max(8);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<width$} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}",
            "category", "I-AUC", "I-AP", "I-F1", "P-AUC", "P-AP", "P-F1", "AUPRO"
        );
        let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.2}", 100.0 * v));
        for c in &self.categories {
            let _ = writeln!(
                s,
                "{:<width$} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}",
                c.category,
                pct(Some(c.image.auroc)),
                pct(Some(c.image.ap)),
                pct(Some(c.image.f1_max)),
                pct(c.pixel.map(|p| p.auroc)),
                pct(c.pixel.map(|p| p.ap)),
                pct(c.pixel.map(|p| p.f1_max)),
                pct(c.aupro)
            );
        }
        let m = &self.mean;
        let _ = writeln!(
            s,
            "{:<width$} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}",
            "mean",
            pct(Some(m.image_auroc)),
            pct(Some(m.image_ap)),
            pct(Some(m.image_f1_max)),
            pct(m.pixel_auroc),
            pct(m.pixel_ap),
            pct(m.pixel_f1_max),
            pct(m.aupro)
        );
        // Warnings are few in practice (one per odd mask); the full list is in report.json.
        const SHOWN: usize = 10;
        for w in self.warnings.iter().take(SHOWN) {
            let _ = writeln!(s, "warning: {w}");
        }
        if self.warnings.len() > SHOWN {
            let _ = writeln!(
                s,
                "... and {} more warnings in report.json",
                self.warnings.len() - SHOWN
            );
        }
        s
    }

    fn csv(&self) -> String {
        let mut s = String::from("category,normal,anomalous,image_auroc,image_ap,image_f1_max,pixel_auroc,pixel_ap,pixel_f1_max,aupro\n");
        let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.6}"));
        for c in &self.categories {
            let _ = writeln!(
                s,
                "{},{},{},{:.6},{:.6},{:.6},{},{},{},{}",
                csv_field(&c.category),
                c.normal,
                c.anomalous,
                c.image.auroc,
                c.image.ap,
                c.image.f1_max,
                opt(c.pixel.map(|p| p.auroc)),
                opt(c.pixel.map(|p| p.ap)),
                opt(c.pixel.map(|p| p.f1_max)),
                opt(c.aupro)
            );
        }
        let m = &self.mean;
        let _ = writeln!(
            s,
            "mean,,,{:.6},{:.6},{:.6},{},{},{},{}",
            m.image_auroc,
            m.image_ap,
            m.image_f1_max,
            opt(m.pixel_auroc),
            opt(m.pixel_ap),
            opt(m.pixel_f1_max),
            opt(m.aupro)
        );
        s
    }

    fn scores_csv(&self) -> String {
        let mut s = String::from("category,image,label,defect,score\n");
        for c in &self.categories {
            for r in &c.records {
                let label = if r.label.is_anomalous() { 1 } else { 0 };
                let _ = writeln!(
                    s,
                    "{},{},{label},{},{}",
                    csv_field(&c.category),
                    csv_field(&r.name),
                    csv_field(&r.defect),
                    r.score
                );
            }
        }
        s
    }

    /// Writes the report into `dir` (created if needed) and returns the files written, relative
    /// to `dir`: `report.json`, `report.csv`, `scores.csv`, `roc_<category>.png`,
    /// `heatmaps/<category>/<NN>_<image>.png`.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let staging = dir.join(format!(".staging-{}", std::process::id()));
        let result = self.write_staged(&staging);
        let files = match result {
            Ok(files) => files,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(e);
            }
        };
        for rel in &files {
            let target = dir.join(rel);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            }
            std::fs::rename(staging.join(rel), &target).map_err(|e| Error::io(&target, e))?;
        }
        let _ = std::fs::remove_dir_all(&staging);
        Ok(files)
    }

    fn write_staged(&self, staging: &Path) -> Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        let mut put = |rel: PathBuf, bytes: &[u8]| -> Result<()> {
            let path = staging.join(&rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            }
            std::fs::write(&path, bytes).map_err(|e| Error::io(&path, e))?;
            files.push(rel);
            Ok(())
        };
        for c in &self.categories {
            let cat = file_safe(&c.category);
            put(
                PathBuf::from(format!("roc_{cat}.png")),
                &png(&roc_png(&c.roc, c.image.auroc))?,
            )?;
            for (i, h) in c.heatmaps.iter().enumerate() {
                let stem = Path::new(&h.name)
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned());
                let name = format!("{i:02}_{}.png", file_safe(&stem.unwrap_or_default()));
                put(
                    Path::new("heatmaps").join(&cat).join(name),
                    &png(&overlay_strip(h, c.heatmap_range()))?,
                )?;
            }
        }
        put("scores.csv".into(), self.scores_csv().as_bytes())?;
        put("report.csv".into(), self.csv().as_bytes())?;
        let json = serde_json::to_string_pretty(self)
            .map_err(|e| Error::Invalid(format!("report JSON: {e}")))?;
        // report.json last: it is what tools look for, so it is renamed into place last too.
        put("report.json".into(), json.as_bytes())?;
        Ok(files)
    }
}

impl CategoryResult {
    /// One colour scale for all overlays of a category, so maps compare across images.
    pub fn heatmap_range(&self) -> (f32, f32) {
        let mut lo = f32::INFINITY;
        let mut hi = f32::NEG_INFINITY;
        for m in self.heatmaps.iter().filter_map(|h| h.map.as_ref()) {
            for &v in &m.data {
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
        (lo, hi)
    }
}

fn png(img: &RgbImage) -> Result<Vec<u8>> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| Error::Invalid(format!("PNG encoding: {e}")))?;
    Ok(out.into_inner())
}

/// Letters, digits, `-`, `_` and `.` kept; anything else becomes `_`.
fn file_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
