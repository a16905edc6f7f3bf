//! Optimiser steps and gradient clipping of [`GpuBackend`] over many tensors per launch
//! (kernels/optim.cu): a table with one [`Slot`] per tensor, copied to the device first, gives
//! each tensor its own range of the grid's blocks. A model's ~100 parameters then take two
//! launches per optimiser step instead of two per parameter, and clipping needs one host
//! round trip for all gradients.

use super::backend::{f32_only, f64s_le, partial_blocks, T};
use super::launch::{f32, int, int32, ptr, BLOCK};
use super::scratch::ScratchGuard;
use super::{DevicePtr, GpuBackend, LaunchCfg, Launcher};
use crate::device::{check, AdamStep, AdamTensors};
use crate::error::Result;

/// One tensor of a multi-tensor launch; mirrors `optim::Slot` in kernels/optim.cu byte for
/// byte. Pointers a launch does not use are 0.
#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Slot {
    param: u64,
    grad: u64,
    m: u64,
    v: u64,
    vmax: u64,
    n: i32,
    block0: i32,
    blocks: i32,
    pad: i32,
}

/// The slots of one launch, with their block ranges assigned in order.
struct Table {
    slots: Vec<Slot>,
    blocks: usize,
}

impl Table {
    /// Slots for `tensors` (their `n` set, blocks not yet), skipping empty ones.
    fn new(op: &'static str, tensors: impl IntoIterator<Item = Slot>) -> Result<Table> {
        let mut slots = Vec::new();
        let mut blocks = 0usize;
        for mut s in tensors {
            if s.n == 0 {
                continue;
            }
            let own = partial_blocks(s.n as usize);
            s.block0 = int32(op, blocks)?;
            s.blocks = int32(op, own)?;
            blocks += own;
            slots.push(s);
        }
        Ok(Table { slots, blocks })
    }

    /// Each slot's partial sums, in slot order, from one f64 per block.
    fn per_slot<'p>(&'p self, partials: &'p [f64]) -> impl Iterator<Item = &'p [f64]> + 'p {
        self.slots.iter().map(move |s| {
            let b0 = s.block0 as usize;
            &partials[b0..b0 + s.blocks as usize]
        })
    }
}

fn addr<L: Launcher>(t: &T<L>) -> u64 {
    t.storage().ptr().0
}

impl<L: Launcher> GpuBackend<L> {
    /// `table` on the device, followed by room for one f64 per block: (guard, slots, partials).
    fn upload_table(&self, table: &Table) -> Result<(ScratchGuard<'_, L>, DevicePtr, DevicePtr)> {
        let bytes: &[u8] = bytemuck::cast_slice(&table.slots);
        let at = bytes.len().div_ceil(256) * 256;
        let scratch = self.scratch.get(&self.launcher, at + table.blocks * 8)?;
        self.launcher.htod(bytes, scratch.ptr())?;
        let (slots, partials) = (scratch.ptr(), scratch.ptr().offset(at));
        Ok((scratch, slots, partials))
    }

    fn launch_table(
        &self,
        kernel: &'static str,
        table: &Table,
        slots: DevicePtr,
        rest: &[super::KernelArg],
    ) -> Result<()> {
        let cfg = LaunchCfg {
            grid: (table.blocks as u32, 1, 1),
            block: (BLOCK, 1, 1),
            smem: 0,
        };
        let mut args = vec![ptr(slots), int(kernel, table.slots.len())?];
        args.extend_from_slice(rest);
        self.launch(kernel, cfg, &args)
    }

    /// AdamW or StableAdamW on every tensor of `set`; `op` names the caller in errors.
    pub(super) fn adam_multi(
        &self,
        op: &'static str,
        stable: bool,
        set: &mut [AdamTensors<'_, Self>],
        hp: &AdamStep,
    ) -> Result<()> {
        let mut slots = Vec::with_capacity(set.len());
        for t in set.iter() {
            let n = check::adam(op, t.param, t.grad, t.m, t.v, t.vmax.as_deref(), hp)?;
            // Master weights and moments are f32 by design; the kernels take `float*`.
            f32_only(
                op,
                &[
                    ("param", Some(&*t.param)),
                    ("grad", Some(t.grad)),
                    ("m", Some(&*t.m)),
                    ("v", Some(&*t.v)),
                    ("vmax", t.vmax.as_deref()),
                ],
            )?;
            slots.push(Slot {
                param: addr(t.param),
                grad: addr(t.grad),
                m: addr(t.m),
                v: addr(t.v),
                vmax: t.vmax.as_deref().map_or(0, addr),
                n: int32(op, n)?,
                ..Slot::default()
            });
        }
        let table = Table::new(op, slots)?;
        if table.slots.is_empty() {
            return Ok(());
        }
        // Bias corrections in f64: beta^t underflows gracefully and 1 - beta2^t keeps its
        // digits for small t.
        let t = hp.t.min(i32::MAX as u64) as i32;
        let bc1 = 1.0 - (hp.beta1 as f64).powi(t);
        let bc2_sqrt = (1.0 - (hp.beta2 as f64).powi(t)).sqrt() as f32;
        let (_scratch, slots, partials) = self.upload_table(&table)?;
        if stable {
            // Pass 1: per-block partial sums of (g / denom)² with the updated moments; pass 2
            // sums each tensor's partials in every one of its blocks (no host round trip).
            let rms = [f32(hp.beta2), f32(hp.eps), f32(bc2_sqrt), ptr(partials)];
            self.launch_table("adam_rms", &table, slots, &rms)?;
        }
        let step = [
            f32(hp.lr),
            f32(hp.weight_decay),
            f32(bc1 as f32),
            f32(hp.beta1),
            f32(hp.beta2),
            f32(hp.eps),
            f32(bc2_sqrt),
            ptr(if stable { partials } else { DevicePtr::NULL }),
        ];
        self.launch_table("adam_step", &table, slots, &step)
    }

    /// The trait's clipping: the same f64 sums in the same order (each gradient's partial sums,
    /// then over gradients), with two launches and one host round trip for all gradients.
    pub(super) fn clip_multi(&self, grads: &mut [&mut T<L>], max_norm: f32) -> Result<f32> {
        const OP: &str = "clip_grad_norm";
        let named: Vec<_> = grads.iter().map(|g| ("grads", Some(&**g))).collect();
        f32_only(OP, &named)?;
        let slots = grads
            .iter()
            .map(|g| {
                Ok(Slot {
                    grad: addr(g),
                    n: int32(OP, g.numel())?,
                    ..Slot::default()
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let table = Table::new(OP, slots)?;
        if table.slots.is_empty() {
            return Ok(0.0);
        }
        let (_scratch, slots, partials) = self.upload_table(&table)?;
        self.launch_table("grad_sum_squares", &table, slots, &[ptr(partials)])?;
        let mut bytes = vec![0u8; table.blocks * 8];
        self.launcher.dtoh(partials, &mut bytes)?;
        let sums: Vec<f64> = f64s_le(&bytes).collect();
        let ss: f64 = table
            .per_slot(&sums)
            .map(|part| part.iter().sum::<f64>())
            .sum();
        let norm = ss.sqrt() as f32;
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 {
            self.launch_table("grad_scale", &table, slots, &[f32(coef)])?;
        }
        Ok(norm)
    }
}
