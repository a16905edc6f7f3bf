//! ViT forward throughput: the frozen teacher with every block and the final norm, as scoring
//! runs it, timed per call with the device synchronised, after one untimed warm-up call
//! (which also loads kernels and sizes the GPU's scratch).

use crate::device::Backend;
use crate::error::Result;
use crate::tensor::Rng;
use crate::vit::{ForwardSpec, Init, Vit, VitConfig, VitParams};
use std::time::Instant;

const FULL: ForwardSpec = ForwardSpec {
    taps: &[],
    final_norm: true,
    train: false,
};

/// Timings of one (model, batch, image size) case.
#[derive(Clone, Debug)]
pub struct ForwardTiming {
    pub batch: usize,
    pub size: usize,
    /// FLOPs of one image's forward (`VitConfig::forward_flops`).
    pub flops_per_image: f64,
    /// Wall seconds of each timed call, in the order they ran.
    pub seconds: Vec<f64>,
}

impl ForwardTiming {
    /// The fastest call: the figure least disturbed by other work on the machine.
    pub fn best(&self) -> f64 {
        self.seconds.iter().copied().fold(f64::INFINITY, f64::min)
    }
    pub fn median(&self) -> f64 {
        super::median(&self.seconds)
    }
    /// Achieved FLOP/s of a call that took `seconds`.
    pub fn flop_rate(&self, seconds: f64) -> f64 {
        self.flops_per_image * self.batch as f64 / seconds
    }
}

/// A frozen ViT of shape `cfg` with random weights, as `Vit::frozen` stores a teacher.
pub fn random_frozen<B: Backend>(be: &B, cfg: &VitConfig) -> Result<Vit<B>> {
    let params = VitParams::init(be, cfg, &Init::vit(), &mut Rng::new(0))?;
    Vit::frozen(be, *cfg, params)
}

/// `reps` timed forwards of `vit` on a random batch of `batch` images of `size`².
pub fn time_forward<B: Backend>(
    be: &B,
    vit: &mut Vit<B>,
    batch: usize,
    size: usize,
    reps: usize,
) -> Result<ForwardTiming> {
    let cfg = *vit.config();
    let img = be.upload(&Rng::new(1).tensor([batch, 3, size, size], -2.0, 2.0))?;
    vit.forward(be, &img, &FULL)?;
    be.synchronize()?;
    let mut seconds = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        vit.forward(be, &img, &FULL)?;
        be.synchronize()?;
        seconds.push(t.elapsed().as_secs_f64());
    }
    Ok(ForwardTiming {
        batch,
        size,
        flops_per_image: cfg.forward_flops(size, size, cfg.depth)? as f64,
        seconds,
    })
}
