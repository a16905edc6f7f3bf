//! AdamW (as `torch.optim.AdamW`) and Dinomaly's StableAdamW on one parameter tensor.

use super::simd::{self, dispatch, Simd, MAX_LANES};
use crate::device::AdamStep;
use rayon::prelude::*;

/// Elements per rayon task. The chunking is fixed (not derived from the thread count) and
/// StableAdamW's per-chunk sums are added in chunk order, so a step is bit-reproducible on
/// any number of threads.
const ELEMS_PER_TASK: usize = 1 << 14;

/// The optimizer state of one tensor; `vmax` only with AMSGrad.
pub struct AdamState<'a> {
    pub m: &'a mut [f32],
    pub v: &'a mut [f32],
    pub vmax: Option<&'a mut [f32]>,
}

/// The per-step constants of the element-wise update.
struct Coef {
    b1: f32,
    b2: f32,
    eps: f32,
    bc2_sqrt: f32,
    decay: f32,
}

impl Coef {
    /// `denom = sqrt(vmax or v)/sqrt(1-β2^t) + eps`.
    #[inline(always)]
    fn denom<S: Simd>(&self, s: S, second: S::V) -> S::V {
        s.add(
            s.div(s.sqrt(second), s.splat(self.bc2_sqrt)),
            s.splat(self.eps),
        )
    }

    /// `p·(1 - lr·wd) - step·m/denom`.
    #[inline(always)]
    fn param<S: Simd>(&self, s: S, p: S::V, m: S::V, denom: S::V, step: f32) -> S::V {
        s.sub(
            s.mul(p, s.splat(self.decay)),
            s.div(s.mul(s.splat(step), m), denom),
        )
    }
}

/// The slices of one chunk; `param` with its step size when the parameter is updated in the
/// same pass as the moments (plain AdamW).
struct Chunk<'a> {
    grad: &'a [f32],
    m: &'a mut [f32],
    v: &'a mut [f32],
    vmax: Option<&'a mut [f32]>,
    param: Option<(&'a mut [f32], f32)>,
}

/// One vector of the moment update at offset `i` of every slice of `c`; returns the lanes of
/// `(g/denom)²` when the parameter is not updated here (StableAdamW's first pass), else 0.
#[inline(always)]
fn moments_at<S: Simd>(s: S, k: &Coef, c: &mut Chunk, i: usize) -> S::D {
    let g = s.load(&c.grad[i..]);
    let m = s.mul_add(
        s.splat(k.b1),
        s.load(&c.m[i..]),
        s.mul(s.splat(1.0 - k.b1), g),
    );
    let v = s.mul_add(
        s.splat(k.b2),
        s.load(&c.v[i..]),
        s.mul(s.mul(s.splat(1.0 - k.b2), g), g),
    );
    s.store(m, &mut c.m[i..]);
    s.store(v, &mut c.v[i..]);
    let second = match c.vmax.as_deref_mut() {
        Some(vmax) => {
            let vm = s.max(v, s.load(&vmax[i..]));
            s.store(vm, &mut vmax[i..]);
            vm
        }
        None => v,
    };
    let denom = k.denom(s, second);
    match c.param.as_mut() {
        Some((p, step)) => {
            s.store(k.param(s, s.load(&p[i..]), m, denom, *step), &mut p[i..]);
            s.dsplat(0.0)
        }
        None => {
            let r = s.widen(s.div(g, denom));
            s.dmul(r, r)
        }
    }
}

/// [`moments_at`] over a whole chunk, the tail through zero-padded copies; returns the sum
/// of the returned lanes (padding excluded), added in a fixed order.
#[inline(always)]
fn moments<S: Simd>(s: S, k: &Coef, mut c: Chunk) -> f64 {
    let n = c.grad.len();
    let full = n - n % S::LANES;
    let mut acc = s.dsplat(0.0);
    for i in (0..full).step_by(S::LANES) {
        acc = s.dadd(acc, moments_at(s, k, &mut c, i));
    }
    let mut sum = s.reduce_sum(acc);
    if full < n {
        // The tail's lanes, zero-padded to a vector (like `simd::load_part`).
        let pad = |x: &[f32]| {
            let mut b = [0.0f32; MAX_LANES];
            b[..n - full].copy_from_slice(&x[full..]);
            b
        };
        let (g, mut m, mut v) = (pad(c.grad), pad(c.m), pad(c.v));
        let mut vmax = c.vmax.as_deref().map(pad);
        let mut param = c.param.as_ref().map(|(p, step)| (pad(p), *step));
        let mut t = Chunk {
            grad: &g,
            m: &mut m,
            v: &mut v,
            vmax: vmax.as_mut().map(|b| &mut b[..]),
            param: param.as_mut().map(|(b, step)| (&mut b[..], *step)),
        };
        let mut r2 = [0.0f64; MAX_LANES];
        s.dstore(moments_at(s, k, &mut t, 0), &mut r2);
        sum += r2[..n - full].iter().sum::<f64>();
        c.m[full..].copy_from_slice(&m[..n - full]);
        c.v[full..].copy_from_slice(&v[..n - full]);
        if let (Some(dst), Some(b)) = (c.vmax, vmax) {
            dst[full..].copy_from_slice(&b[..n - full]);
        }
        if let (Some((dst, _)), Some((b, _))) = (c.param, param) {
            dst[full..].copy_from_slice(&b[..n - full]);
        }
    }
    sum
}

/// `x` split into `ELEMS_PER_TASK` chunks, or `chunks` Nones.
fn chunks_of(x: Option<&mut [f32]>, chunks: usize) -> Vec<Option<&mut [f32]>> {
    match x {
        Some(x) => x.chunks_mut(ELEMS_PER_TASK).map(Some).collect(),
        None => std::iter::repeat_with(|| None).take(chunks).collect(),
    }
}

/// One step:
/// 1. `m = β1·m + (1-β1)·g`, `v = β2·v + (1-β2)·g²`, `vmax = max(vmax, v)` (AMSGrad);
/// 2. `denom = sqrt(vmax or v)/sqrt(1-β2^t) + eps`;
/// 3. StableAdamW only: `r = max(1, RMS(g / denom))` over the whole tensor, else `r = 1`;
/// 4. `p = p·(1 - lr·wd) - lr/(1-β1^t)/r · m/denom`.
///
/// The decay uses the old `p`, as both torch's AdamW and Dinomaly's StableAdamW do
/// (`p.mul_(1 - lr·wd)` before the update, which reads only m and denom).
///
/// AdamW is one pass over the tensor. StableAdamW needs `r` before any parameter moves, so it
/// takes two: the moments with the chunk sums of `(g/denom)²`, then the parameters.
pub fn adam_step(param: &mut [f32], grad: &[f32], st: AdamState, hp: &AdamStep, stable: bool) {
    let bc1 = 1.0 - (hp.beta1 as f64).powi(hp.t.min(i32::MAX as u64) as i32);
    let bc2 = 1.0 - (hp.beta2 as f64).powi(hp.t.min(i32::MAX as u64) as i32);
    let k = Coef {
        b1: hp.beta1,
        b2: hp.beta2,
        eps: hp.eps,
        bc2_sqrt: bc2.sqrt() as f32,
        decay: 1.0 - hp.lr * hp.weight_decay,
    };
    let step = |r: f64| (hp.lr as f64 / bc1 / r) as f32;
    let AdamState { m, v, mut vmax } = st;
    let chunks = param.len().div_ceil(ELEMS_PER_TASK);
    let fused = (!stable).then_some(&mut *param);
    let partial: Vec<f64> = m
        .par_chunks_mut(ELEMS_PER_TASK)
        .zip(v.par_chunks_mut(ELEMS_PER_TASK))
        .zip(grad.par_chunks(ELEMS_PER_TASK))
        .zip(chunks_of(vmax.as_deref_mut(), chunks))
        .zip(chunks_of(fused, chunks))
        .map(|((((m, v), grad), vmax), param)| {
            let param = param.map(|p| (p, step(1.0)));
            let c = Chunk {
                grad,
                m,
                v,
                vmax,
                param,
            };
            dispatch!(s => moments(s, &k, c))
        })
        .collect();
    if !stable {
        return;
    }
    let r = if param.is_empty() {
        1.0
    } else {
        (partial.iter().sum::<f64>() / param.len() as f64)
            .sqrt()
            .max(1.0)
    };
    let step = step(r);
    let second: &[f32] = match &vmax {
        Some(vm) => vm,
        None => v,
    };
    param
        .par_chunks_mut(ELEMS_PER_TASK)
        .zip(m.par_chunks(ELEMS_PER_TASK))
        .zip(second.par_chunks(ELEMS_PER_TASK))
        .for_each(|((p, m), second)| {
            dispatch!(s => simd::update(s, p, [m, second], |p, [m, second]| {
                k.param(s, p, m, k.denom(s, second), step)
            }))
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// StableAdamW's RMS is a sum over the whole tensor: its chunking (and so the step) must
    /// not depend on the thread count. A size with a ragged last chunk and a ragged vector
    /// tail, gradients large enough that r > 1.
    #[test]
    fn stable_step_is_bit_identical_on_any_thread_count() {
        let n = 5 * ELEMS_PER_TASK + 13;
        let hp = AdamStep {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-2,
            t: 3,
            amsgrad: true,
        };
        let wave = |i: usize, f: f32| (i as f32 * f).sin() * 3.0;
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let grad: Vec<f32> = (0..n).map(|i| wave(i, 0.37)).collect();
            let mut p: Vec<f32> = (0..n).map(|i| wave(i, 0.11)).collect();
            let mut m: Vec<f32> = (0..n).map(|i| wave(i, 0.05) * 0.1).collect();
            let mut v: Vec<f32> = (0..n).map(|i| wave(i, 0.07).abs() * 1e-4).collect();
            let mut vmax = v.clone();
            pool.install(|| {
                let st = AdamState {
                    m: &mut m,
                    v: &mut v,
                    vmax: Some(&mut vmax),
                };
                adam_step(&mut p, &grad, st, &hp, true)
            });
            [p, m, v, vmax].map(|x| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>())
        };
        let one = run(1);
        for threads in [2, 3, 7] {
            assert!(run(threads) == one, "{threads} threads differ from 1");
        }
    }
}
