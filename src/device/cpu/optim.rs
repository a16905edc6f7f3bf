//! AdamW (as `torch.optim.AdamW`) and Dinomaly's StableAdamW on one parameter tensor.

use crate::device::AdamStep;
use rayon::prelude::*;

const ELEMS_PER_TASK: usize = 1 << 14;

/// The optimizer state of one tensor; `vmax` only with AMSGrad.
pub struct AdamState<'a> {
    pub m: &'a mut [f32],
    pub v: &'a mut [f32],
    pub vmax: Option<&'a mut [f32]>,
}

/// One step:
/// 1. `m = β1·m + (1-β1)·g`, `v = β2·v + (1-β2)·g²`, `vmax = max(vmax, v)` (AMSGrad);
/// 2. `denom = sqrt(vmax or v)/sqrt(1-β2^t) + eps`;
/// 3. StableAdamW only: `r = max(1, RMS(g / denom))` over the whole tensor, else `r = 1`;
/// 4. `p = p·(1 - lr·wd) - lr/(1-β1^t)/r · m/denom`.
///
/// The decay uses the old `p`, as both torch's AdamW and Dinomaly's StableAdamW do
/// (`p.mul_(1 - lr·wd)` before the update, which reads only m and denom).
pub fn adam_step(param: &mut [f32], grad: &[f32], st: AdamState, hp: &AdamStep, stable: bool) {
    let bc1 = 1.0 - (hp.beta1 as f64).powi(hp.t.min(i32::MAX as u64) as i32);
    let bc2 = 1.0 - (hp.beta2 as f64).powi(hp.t.min(i32::MAX as u64) as i32);
    let bc2_sqrt = bc2.sqrt() as f32;
    let (b1, b2, eps) = (hp.beta1, hp.beta2, hp.eps);
    let AdamState { m, v, mut vmax } = st;
    // Pass 1: moments; returns Σ (g/denom)² for the stable variant.
    let moments = |(i, (m, v)): (usize, (&mut f32, &mut f32)), vmax: Option<&mut f32>| -> f64 {
        let g = grad[i];
        *m = b1 * *m + (1.0 - b1) * g;
        *v = b2 * *v + (1.0 - b2) * g * g;
        let second = match vmax {
            Some(vm) => {
                *vm = vm.max(*v);
                *vm
            }
            None => *v,
        };
        let r = (g / (second.sqrt() / bc2_sqrt + eps)) as f64;
        r * r
    };
    let sum_r2: f64 = match vmax.as_deref_mut() {
        Some(vm) => m
            .par_iter_mut()
            .zip(v.par_iter_mut())
            .enumerate()
            .zip(vm.par_iter_mut())
            .with_min_len(ELEMS_PER_TASK)
            .map(|(mv, vm)| moments(mv, Some(vm)))
            .sum(),
        None => m
            .par_iter_mut()
            .zip(v.par_iter_mut())
            .enumerate()
            .with_min_len(ELEMS_PER_TASK)
            .map(|mv| moments(mv, None))
            .sum(),
    };
    let r = if stable && !param.is_empty() {
        (sum_r2 / param.len() as f64).sqrt().max(1.0)
    } else {
        1.0
    };
    let step = (hp.lr as f64 / bc1 / r) as f32;
    let decay = 1.0 - hp.lr * hp.weight_decay;
    let second: &[f32] = match &vmax {
        Some(vm) => vm,
        None => v,
    };
    param
        .par_iter_mut()
        .enumerate()
        .with_min_len(ELEMS_PER_TASK)
        .for_each(|(i, p)| {
            let denom = second[i].sqrt() / bc2_sqrt + eps;
            *p = *p * decay - step * m[i] / denom;
        });
}
