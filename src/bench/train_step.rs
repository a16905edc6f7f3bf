//! One Dinomaly-style training step of the encoder-decoder student, split into the phases the
//! PyTorch peer reports (shared/peer/README.md: teacher forward, student forward and loss,
//! backward, clipping and optimiser).
//!
//! Workload: a frozen DINOv2 teacher with random weights, patch embedding and the blocks up
//! to the last tap (2..9), the mean of the taps into the noisy bottleneck, 8 linear-attention
//! decoder blocks of the teacher's width, the two-group global cosine loss with hard mining at
//! p = 0.9, clipping at 0.1 and StableAdamW with AMSGrad. The EE student is not part of it.

use crate::device::{Backend, Tensor};
use crate::error::Result;
use crate::methods::dual_student::ed::EdStudent;
use crate::methods::dual_student::teacher::Teacher;
use crate::methods::dual_student::DualStudentConfig;
use crate::tensor::Rng;
use crate::train::optim::Optimizer;
use crate::vit::{Init, Vit, VitConfig, VitParams};
use std::time::Instant;

/// The phases of one step, in order.
pub const PHASES: [&str; 4] = [
    "teacher forward",
    "student forward+loss",
    "backward",
    "clip+optimiser",
];

/// What one step took: wall milliseconds per phase (device synchronised at each boundary)
/// and, where the OS reports it, the on-CPU milliseconds of all threads per phase.
#[derive(Clone, Debug)]
pub struct StepTimes {
    pub wall_ms: [f64; 4],
    pub cpu_ms: Option<[f64; 4]>,
    pub loss: f64,
}

impl StepTimes {
    pub fn total_ms(&self) -> f64 {
        self.wall_ms.iter().sum()
    }
}

/// The models, optimiser and one random batch of a training step.
pub struct TrainStep<B: Backend> {
    cfg: DualStudentConfig,
    teacher: Teacher<B>,
    ed: EdStudent<B>,
    opt: Optimizer<B>,
    images: Tensor<B>,
}

impl<B: Backend> TrainStep<B> {
    /// A teacher of shape `vit` and its ED student, for `batch` images of `crop`².
    pub fn new(be: &B, vit: VitConfig, batch: usize, crop: usize) -> Result<Self> {
        let cfg = DualStudentConfig {
            batch,
            crop,
            ..Default::default()
        };
        let mut rng = Rng::new(0);
        let params = VitParams::init(be, &vit, &Init::vit(), &mut rng)?;
        let teacher = Teacher::new(Vit::frozen(be, vit, params)?, &cfg)?.without_class_token();
        let mut ed = EdStudent::init(
            be,
            &cfg,
            vit.dim,
            vit.heads,
            teacher.student_prefix(),
            &mut rng,
        )?;
        let opt = Optimizer::new(be, cfg.optim(), &ed.params_mut())?;
        let images = be.upload(&rng.tensor([batch, 3, crop, crop], -2.0, 2.0))?;
        Ok(TrainStep {
            cfg,
            teacher,
            ed,
            opt,
            images,
        })
    }

    /// Run step number `step` (it seeds the bottleneck dropout) and time its phases.
    pub fn step(&mut self, be: &B, step: u64) -> Result<StepTimes> {
        let cpu = || super::process_cpu_ns().map(|ns| ns as f64 * 1e-6);
        let mut wall = [Instant::now(); 5];
        let mut cpu_at = [cpu(); 5];
        let f = self.teacher.features(be, &self.images)?;
        be.synchronize()?;
        (wall[1], cpu_at[1]) = (Instant::now(), cpu());
        self.ed.forward(be, f.fused, Some(step))?;
        let loss = self.ed.loss(be, &f.groups)?;
        be.synchronize()?;
        (wall[2], cpu_at[2]) = (Instant::now(), cpu());
        for g in self.ed.grads_mut() {
            be.fill(g, 0.0)?;
        }
        let (p, factor) = (self.cfg.hm_p_final, self.cfg.hm_factor);
        self.ed.backward(be, &f.groups, p, factor, step)?;
        be.synchronize()?;
        (wall[3], cpu_at[3]) = (Instant::now(), cpu());
        be.clip_grad_norm(&mut self.ed.grads_mut(), self.cfg.clip)?;
        self.opt
            .step(be, &mut self.ed.params_mut(), self.cfg.lr as f32)?;
        be.synchronize()?;
        (wall[4], cpu_at[4]) = (Instant::now(), cpu());
        let wall_ms = std::array::from_fn(|i| (wall[i + 1] - wall[i]).as_secs_f64() * 1e3);
        let cpu_ms = cpu_at
            .iter()
            .copied()
            .collect::<Option<Vec<f64>>>()
            .map(|c| std::array::from_fn(|i| c[i + 1] - c[i]));
        Ok(StepTimes {
            wall_ms,
            cpu_ms,
            loss,
        })
    }
}
