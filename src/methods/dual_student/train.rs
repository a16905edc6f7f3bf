//! Training the two students: teacher features of the training images computed once and
//! cached (no augmentation, as Dinomaly and the reference), then the shared training loop
//! over a [`Steppable`] that steps both students, then a calibration pass that fits the
//! Noisy-OR link on the training normals.
//!
//! Reproducibility: student initialisation, the data order (a permutation per epoch) and
//! every dropout mask are functions of (seed, step) alone, so a run resumed from a
//! checkpoint takes exactly the steps an unbroken run takes (bit-identical on the CPU
//! backend).

use super::cache::{batch_indices, Batch, FeatureCache};
use super::config::DualStudentConfig;
use super::ed::EdStudent;
use super::ee::EeStudent;
use super::maps::MapScorer;
use super::model::{raw_scores, METHOD};
use super::noisy_or::{Calibration, RunningStats};
use super::teacher::Teacher;
use crate::device::rng::mix64;
use crate::device::Backend;
use crate::error::{Error, Result};
use crate::tensor::{HostTensor, Rng};
use crate::train::checkpoint::{self, Checkpoint, CheckpointMeta, TeacherId};
use crate::train::optim::Optimizer;
use crate::train::params::values_to_host;
use crate::train::runner::{self, LoopOptions, Steppable};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where a run writes and how it reports.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// Checkpoint directory (config.json, weights, optimiser state, train_log.jsonl).
    pub out_dir: PathBuf,
    /// Checkpoint every this many steps (a killed run loses at most this many); 0 = at the end.
    pub checkpoint_every: u64,
    /// Continue from the checkpoint in `out_dir`.
    pub resume: bool,
    pub progress: bool,
    /// Stop (with a checkpoint) after this many steps in all, to be resumed later.
    pub stop_after: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrainReport {
    pub steps_done: u64,
    pub finished: bool,
    pub train_images: usize,
    pub seconds_features: f64,
    pub seconds_train: f64,
    pub median_step_s: f64,
    pub last_loss: Vec<(String, f64)>,
    /// The Noisy-OR calibration on the training normals (a finished run only).
    pub calibration: Option<Calibration>,
}

/// Non-tensor training state that a checkpoint must restore for a bit-identical resume.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct MethodState {
    pub ed_optimizer_steps: u64,
    pub ee_optimizer_steps: u64,
    /// Exponential moving averages of the two losses (decay 0.99, bias-corrected): the τ of
    /// the logged joint objective.
    pub ema_ed: f64,
    pub ema_ee: f64,
    pub ema_n: u64,
    pub calibration: Option<Calibration>,
}

const EMA_DECAY: f64 = 0.99;

struct DualTrainer<'a, B: Backend> {
    backend: &'a B,
    cfg: DualStudentConfig,
    teacher_id: TeacherId,
    cache: FeatureCache,
    ed: EdStudent<B>,
    ee: EeStudent<B>,
    ed_opt: Optimizer<B>,
    ee_opt: Optimizer<B>,
    state: MethodState,
    batch: Option<Batch<B>>,
    step_seed: u64,
    last: (f64, f64),
    patch: usize,
}

impl<B: Backend> DualTrainer<'_, B> {
    fn tau(&self) -> (f64, f64) {
        let c = 1.0 - EMA_DECAY.powi(self.state.ema_n as i32);
        if c > 0.0 {
            (self.state.ema_ed / c, self.state.ema_ee / c)
        } else {
            (1.0, 1.0)
        }
    }

    fn meta(&self, step: u64) -> Result<CheckpointMeta> {
        let mut meta = CheckpointMeta::new(
            METHOD,
            step,
            self.cfg.steps,
            self.teacher_id.clone(),
            self.cfg.seed,
        );
        meta.method_config = to_json(&self.cfg)?;
        meta.backend = self.backend.name();
        let mut st = self.state.clone();
        st.ed_optimizer_steps = self.ed_opt.steps_taken();
        st.ee_optimizer_steps = self.ee_opt.steps_taken();
        meta.method_state = to_json(&st)?;
        Ok(meta)
    }

    fn save(&mut self, dir: &Path, step: u64) -> Result<()> {
        let meta = self.meta(step)?;
        let b = self.backend;
        let mut weights = values_to_host(b, &self.ed.params_mut())?;
        weights.extend(self.ee.params_to_host(b)?);
        let mut opt = self.ed_opt.state_to_host(b)?;
        opt.extend(self.ee_opt.state_to_host(b)?);
        checkpoint::save(dir, meta, &weights, Some(&opt))
    }

    /// Score every training image in inference mode and fit the link's statistics.
    fn calibrate(&mut self) -> Result<Calibration> {
        let mut scorer = MapScorer::new(&self.cfg);
        let grid = self.cfg.crop / self.patch;
        let (mut local, mut semantic) = (RunningStats::default(), RunningStats::default());
        let all: Vec<usize> = (0..self.cache.n).collect();
        for idx in all.chunks(self.cfg.batch) {
            let bt = self.cache.batch(self.backend, idx)?;
            let (maps, sem) = raw_scores(
                self.backend,
                &mut self.ed,
                &mut self.ee,
                &mut scorer,
                &bt.fused,
                &bt.group_refs(),
                &bt.cls,
                &bt.images,
                grid,
            )?;
            maps.scores.iter().for_each(|&s| local.push(s));
            sem.iter().for_each(|&s| semantic.push(s));
        }
        Ok(Calibration {
            link: self.cfg.link,
            local,
            semantic,
        })
    }
}

impl<B: Backend> Steppable for DualTrainer<'_, B> {
    fn forward(&mut self, it: u64) -> Result<Vec<(String, f64)>> {
        let idx = batch_indices(self.cfg.seed, it, self.cache.n, self.cfg.batch)?;
        let bt = self.cache.batch(self.backend, &idx)?;
        self.step_seed = mix64(self.cfg.seed ^ mix64(it.wrapping_add(1)));
        self.ed
            .forward(self.backend, &bt.fused, Some(self.step_seed))?;
        let l_ed = self.ed.loss(self.backend, &bt.group_refs())?;
        let d = self.ee.forward(self.backend, &bt.images, &bt.cls, true)?;
        let l_ee = d.iter().sum::<f64>() / d.len() as f64;
        self.batch = Some(bt);
        self.last = (l_ed, l_ee);
        // The joint objective with τ from the losses so far (before this step).
        let (tl, ts) = self.tau();
        Ok(vec![
            ("ed".into(), l_ed),
            ("ee".into(), l_ee),
            ("joint".into(), Calibration::joint_nll(l_ed, l_ee, tl, ts)),
        ])
    }

    fn update(&mut self, it: u64, lr: f64) -> Result<Vec<(String, f64)>> {
        let b = self.backend;
        let bt = self
            .batch
            .take()
            .ok_or_else(|| Error::Invalid("internal: update before forward".into()))?;
        for g in self.ed.grads_mut() {
            b.fill(g, 0.0)?;
        }
        self.ed.backward(
            b,
            &bt.group_refs(),
            self.cfg.hm_p(it),
            self.cfg.hm_factor,
            self.step_seed,
        )?;
        let gn_ed = b.clip_grad_norm(&mut self.ed.grads_mut(), self.cfg.clip)?;
        self.ed_opt.step(b, &mut self.ed.params_mut(), lr as f32)?;
        for g in self.ee.grads_mut()? {
            b.fill(g, 0.0)?;
        }
        self.ee.backward(b, &bt.cls)?;
        let gn_ee = b.clip_grad_norm(&mut self.ee.grads_mut()?, self.cfg.ee_clip)?;
        self.ee_opt.step(b, &mut self.ee.params_mut()?, lr as f32)?;
        let s = &mut self.state;
        s.ema_ed = EMA_DECAY * s.ema_ed + (1.0 - EMA_DECAY) * self.last.0;
        s.ema_ee = EMA_DECAY * s.ema_ee + (1.0 - EMA_DECAY) * self.last.1;
        s.ema_n += 1;
        Ok(vec![
            ("ed".into(), gn_ed as f64),
            ("ee".into(), gn_ee as f64),
        ])
    }

    fn checkpoint(&mut self, dir: &Path, steps_done: u64) -> Result<()> {
        self.save(dir, steps_done)
    }

    fn images_per_step(&self) -> usize {
        self.cfg.batch
    }
}

fn to_json<T: Serialize>(v: &T) -> Result<serde_json::Value> {
    serde_json::to_value(v).map_err(|e| Error::Invalid(format!("checkpoint config: {e}")))
}

/// Train both students on `images` (preprocessed training normals, each `[3, crop, crop]`)
/// against `teacher`, writing checkpoints to `opts.out_dir`.
pub fn train<B: Backend>(
    backend: &B,
    cfg: &DualStudentConfig,
    mut teacher: Teacher<B>,
    teacher_id: TeacherId,
    images: Vec<HostTensor>,
    opts: &TrainOptions,
) -> Result<TrainReport> {
    let tcfg = *teacher.config();
    cfg.validate(tcfg.depth, tcfg.patch)?;
    let n_images = images.len();
    let t0 = std::time::Instant::now();
    let cache = FeatureCache::build(backend, &mut teacher, images, cfg.batch)?;
    let seconds_features = t0.elapsed().as_secs_f64();
    let prefix = teacher.student_prefix();
    let ee_cfg = super::ee::student_config(&tcfg, cfg);
    let (mut ed, mut ee, state, start, ckpt) = if opts.resume {
        let ck = Checkpoint::open(&opts.out_dir, METHOD)?;
        check_resumable(&ck, cfg, &teacher_id, &backend.name())?;
        let w = ck.weights()?;
        let ed = EdStudent::from_host(backend, cfg, tcfg.dim, tcfg.heads, prefix, &w)?;
        let ee = EeStudent::from_host(backend, ee_cfg, &w, true)?;
        let state: MethodState = serde_json::from_value(ck.meta.method_state.clone())
            .map_err(|e| Error::Invalid(format!("{}: method state: {e}", ck.dir.display())))?;
        let step = ck.meta.step;
        (ed, ee, state, step, Some(ck))
    } else {
        let ed = EdStudent::init(
            backend,
            cfg,
            tcfg.dim,
            tcfg.heads,
            prefix,
            &mut Rng::new(cfg.seed),
        )?;
        let ee = EeStudent::init(backend, ee_cfg, &mut Rng::new(mix64(cfg.seed ^ 0xEE)))?;
        (ed, ee, MethodState::default(), 0, None)
    };
    let ed_opt = Optimizer::new(backend, cfg.optim(), &ed.params_mut())?;
    let ee_opt = Optimizer::new(backend, cfg.optim(), &ee.params_mut()?)?;
    let mut tr = DualTrainer {
        backend,
        cfg: cfg.clone(),
        teacher_id,
        cache,
        ed,
        ee,
        ed_opt,
        ee_opt,
        state,
        batch: None,
        step_seed: 0,
        last: (0.0, 0.0),
        patch: tcfg.patch,
    };
    if let Some(ck) = &ckpt {
        let o = ck.optimizer()?;
        let src = format!("{}: optimizer state", ck.dir.display());
        // Each optimiser checks exactly its own names, so split the file by student.
        let (ed_o, ee_o): (
            std::collections::HashMap<_, _>,
            std::collections::HashMap<_, _>,
        ) = o
            .into_iter()
            .partition(|(k, _)| k.split_once('.').is_some_and(|(_, n)| n.starts_with("ed.")));
        tr.ed_opt
            .load_state(backend, &ed_o, tr.state.ed_optimizer_steps, &src)?;
        tr.ee_opt
            .load_state(backend, &ee_o, tr.state.ee_optimizer_steps, &src)?;
    }
    let lo = LoopOptions {
        schedule: cfg.schedule(),
        checkpoint_every: opts.checkpoint_every,
        out_dir: opts.out_dir.clone(),
        progress: opts.progress,
        stop_after: opts.stop_after,
    };
    let r = runner::run(&mut tr, &lo, start)?;
    let finished = r.steps_done == cfg.steps;
    let calibration = if finished {
        let c = tr.calibrate()?;
        tr.state.calibration = Some(c);
        tr.save(&opts.out_dir, r.steps_done)?;
        Some(c)
    } else {
        None
    };
    Ok(TrainReport {
        steps_done: r.steps_done,
        finished,
        train_images: n_images,
        seconds_features,
        seconds_train: r.seconds,
        median_step_s: r.median_step_s,
        last_loss: r.last_loss,
        calibration,
    })
}

/// A resumed run must be the same run: same method settings, teacher and backend.
fn check_resumable(
    ck: &Checkpoint,
    cfg: &DualStudentConfig,
    teacher: &TeacherId,
    backend: &str,
) -> Result<()> {
    let dir = ck.dir.display();
    if !ck.meta.backend.is_empty() && ck.meta.backend != backend {
        return Err(Error::Invalid(format!(
            "{dir}: the run was trained on {:?}, not {backend:?}: resume it with the same \
             --device and --precision",
            ck.meta.backend
        )));
    }
    if ck.meta.teacher.sha256 != teacher.sha256 {
        return Err(Error::Invalid(format!(
            "{dir}: the checkpoint was trained with teacher {} (sha256 {}), not {} (sha256 {})",
            ck.meta.teacher.path, ck.meta.teacher.sha256, teacher.path, teacher.sha256
        )));
    }
    let mine = to_json(cfg)?;
    if ck.meta.method_config != mine {
        let (a, b) = (ck.meta.method_config.as_object(), mine.as_object());
        let diff: Vec<String> = match (a, b) {
            (Some(a), Some(b)) => b
                .iter()
                .filter(|(k, v)| a.get(*k) != Some(*v))
                .map(|(k, v)| {
                    format!(
                        "{k}: checkpoint {} vs now {v}",
                        a.get(k).map_or("absent".into(), |x| x.to_string())
                    )
                })
                .collect(),
            _ => vec!["unreadable settings".into()],
        };
        return Err(Error::Invalid(format!(
            "{dir}: cannot resume with different settings ({})",
            diff.join("; ")
        )));
    }
    Ok(())
}
