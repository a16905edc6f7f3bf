//! A trained dual student for scoring: load a checkpoint once, score images from memory.
//! No global state: every model owns its backend handle, teacher, students and buffers.

use super::cache::stack;
use super::config::DualStudentConfig;
use super::ed::EdStudent;
use super::ee::{student_config, EeStudent};
use super::maps::{MapScorer, Maps};
use super::noisy_or::Calibration;
use super::teacher::Teacher;
use super::train::MethodState;
use crate::device::{Backend, Tensor};
use crate::error::{Error, Result};
use crate::tensor::HostTensor;
use crate::train::checkpoint::Checkpoint;
use std::path::Path;
use std::sync::Arc;

/// The method's name in checkpoints.
pub const METHOD: &str = "dual_student";

/// Scores of one image.
#[derive(Clone, Debug, PartialEq)]
pub struct Score {
    /// ED student: Dinomaly's image score (mean of the top 1 % of the smoothed map).
    pub local: f64,
    /// EE student: `1 - cos` of the class tokens.
    pub semantic: f64,
    /// Noisy-OR probability `1 - (1 - p_L)(1 - p_S)`.
    pub joint: f64,
    /// `-log(1 - joint)`: ranks like `joint` without saturating (rank by this).
    pub evidence: f64,
    /// The smoothed anomaly map `[crop, crop]` of the ED student.
    pub map: HostTensor,
}

/// Run both students on one batch of teacher features; returns the ED maps and scores and
/// the EE semantic scores.
#[allow(clippy::too_many_arguments)]
pub(super) fn raw_scores<B: Backend>(
    backend: &B,
    ed: &mut EdStudent<B>,
    ee: &mut EeStudent<B>,
    scorer: &mut MapScorer<B>,
    fused: &Tensor<B>,
    groups: &[&Tensor<B>],
    cls: &Tensor<B>,
    images: &Tensor<B>,
    grid: usize,
) -> Result<(Maps, Vec<f64>)> {
    ed.forward(backend, fused, None)?;
    let maps = scorer.score(backend, groups, &ed.group_patches()?, grid)?;
    let semantic = ee.forward(backend, images, cls, false)?;
    Ok((maps, semantic))
}

pub struct DualStudent<B: Backend> {
    backend: Arc<B>,
    cfg: DualStudentConfig,
    teacher: Teacher<B>,
    ed: EdStudent<B>,
    ee: EeStudent<B>,
    scorer: MapScorer<B>,
    calibration: Calibration,
}

impl<B: Backend> DualStudent<B> {
    /// Load a finished checkpoint and the teacher it was trained with, found at the path
    /// recorded in the checkpoint unless `teacher_path` overrides it; the teacher file's
    /// sha256 must match the checkpoint's.
    pub fn load(
        checkpoint_dir: &Path,
        teacher_path: Option<&Path>,
        backend: Arc<B>,
    ) -> Result<Self> {
        let ck = Checkpoint::open(checkpoint_dir, METHOD)?;
        let cfg: DualStudentConfig = serde_json::from_value(ck.meta.method_config.clone())
            .map_err(|e| {
                Error::Invalid(format!(
                    "{}: method settings: {e}",
                    checkpoint_dir.display()
                ))
            })?;
        let state: MethodState =
            serde_json::from_value(ck.meta.method_state.clone()).map_err(|e| {
                Error::Invalid(format!("{}: method state: {e}", checkpoint_dir.display()))
            })?;
        let calibration = state.calibration.ok_or_else(|| {
            Error::Invalid(format!(
                "{}: the run stopped at step {} of {} and was never calibrated; finish it with \
                 --resume before scoring",
                checkpoint_dir.display(),
                ck.meta.step,
                ck.meta.total_steps
            ))
        })?;
        let path = teacher_path
            .map(Path::to_path_buf)
            .unwrap_or_else(|| ck.meta.teacher.path.clone().into());
        let (vit, id) = super::teacher::load_teacher(&*backend, &path)?;
        if id.sha256 != ck.meta.teacher.sha256 {
            return Err(Error::Invalid(format!(
                "teacher {} (sha256 {}) is not the one {} was trained with (sha256 {})",
                path.display(),
                id.sha256,
                checkpoint_dir.display(),
                ck.meta.teacher.sha256
            )));
        }
        let teacher = Teacher::new(vit, &cfg)?;
        let t = *teacher.config();
        let w = ck.weights()?;
        let b = &*backend;
        let ed = EdStudent::from_host(b, &cfg, t.dim, t.heads, teacher.student_prefix(), &w)?;
        let ee = EeStudent::from_host(b, student_config(&t, &cfg), &w, false)?;
        let scorer = MapScorer::new(&cfg);
        Ok(DualStudent {
            backend,
            cfg,
            teacher,
            ed,
            ee,
            scorer,
            calibration,
        })
    }

    pub fn config(&self) -> &DualStudentConfig {
        &self.cfg
    }

    /// The Noisy-OR link fitted on the training normals.
    pub fn calibration(&self) -> &Calibration {
        &self.calibration
    }

    /// Score preprocessed images (each `[3, crop, crop]`, see `data::preprocess`).
    pub fn score_batch(&mut self, images: &[HostTensor]) -> Result<Vec<Score>> {
        if images.is_empty() {
            return Ok(vec![]);
        }
        let c = self.cfg.crop;
        if let Some(bad) = images.iter().find(|t| t.dims() != [3, c, c]) {
            return Err(Error::Invalid(format!(
                "score: image is {:?}, this model takes preprocessed [3, {c}, {c}] images",
                bad.dims()
            )));
        }
        let b = &*self.backend;
        let x = b.upload(&stack(images)?)?;
        let grid = c / self.teacher.config().patch;
        let f = self.teacher.features(b, &x)?;
        let cls = f
            .cls
            .ok_or_else(|| Error::Invalid("internal: teacher without class token".into()))?;
        let (maps, semantic) = raw_scores(
            b,
            &mut self.ed,
            &mut self.ee,
            &mut self.scorer,
            f.fused,
            &f.groups,
            cls,
            &x,
            grid,
        )?;
        let per = c * c;
        Ok(maps
            .scores
            .iter()
            .zip(&semantic)
            .enumerate()
            .map(|(i, (&local, &semantic))| {
                let j = self.calibration.score(local, semantic);
                Score {
                    local,
                    semantic,
                    joint: j.joint,
                    evidence: j.evidence,
                    map: HostTensor {
                        shape: [c, c].into(),
                        data: maps.maps.data[i * per..(i + 1) * per].to_vec(),
                    },
                }
            })
            .collect())
    }
}
