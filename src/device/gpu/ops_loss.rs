//! Distillation losses of [`GpuBackend`]: per-token cosine distance and Dinomaly's global
//! cosine loss with hard mining.

use super::backend::{f32_only, p, T};
use super::launch::{f32, int, ptr, warp_per_row};
use super::{DevicePtr, GpuBackend, LaunchCfg, Launcher};
use crate::device::{check, Backend};
use crate::error::Result;

/// Values of one image that one block of `global_cosine_stats` sums (16 per thread), and the
/// most blocks per image.
const STATS_VALUES_PER_BLOCK: usize = 4096;
const STATS_MAX_SLICES: usize = 64;

/// Threads of the single block that selects the hard-mining threshold: the B·T distances
/// (a few thousand) are read 4 times (one 8-bit radix digit each), so one block suffices.
const SELECT_THREADS: u32 = 1024;

impl<L: Launcher> GpuBackend<L> {
    pub(super) fn cosine_fwd(&self, a: &T<L>, b: &T<L>, d: &mut T<L>) -> Result<()> {
        const OP: &str = "cosine_distance_fwd";
        let (rows, cols) = check::cosine_distance(OP, a, b, ("d", d))?;
        if rows == 0 {
            return Ok(());
        }
        self.launch(
            "cosine_fwd",
            warp_per_row(rows),
            &[p(a), p(b), p(d), int(OP, rows)?, int(OP, cols)?],
        )
    }

    pub(super) fn cosine_bwd(&self, dd: &T<L>, a: &T<L>, b: &T<L>, db: &mut T<L>) -> Result<()> {
        const OP: &str = "cosine_distance_bwd";
        let (rows, cols) = check::cosine_distance(OP, a, b, ("dd", dd))?;
        check::same(OP, ("db", db), ("b", b))?;
        if rows == 0 {
            return Ok(());
        }
        let args = [p(dd), p(a), p(b), p(db), int(OP, rows)?, int(OP, cols)?];
        self.launch("cosine_bwd", warp_per_row(rows), &args)
    }

    pub(super) fn global_cos_fwd(
        &self,
        a: &T<L>,
        b: &T<L>,
        loss: &mut T<L>,
        point_dist: &mut T<L>,
        stats: &mut T<L>,
    ) -> Result<()> {
        const OP: &str = "global_cosine_fwd";
        let (bsz, _, _) = check::global_cosine(OP, a, b, point_dist, stats)?;
        check::exact(OP, "loss", loss, &[1])?;
        f32_only(
            OP,
            &[
                ("loss", Some(loss)),
                ("point_dist", Some(point_dist)),
                ("stats", Some(stats)),
            ],
        )?;
        if bsz == 0 {
            return self.fill(loss, 0.0);
        }
        self.cosine_fwd(a, b, point_dist)?;
        // Each image's a·b, |a|², |b|² in f64 partial sums over slices of its T·C values
        // (one block per slice and image, so a batch of 8 still fills the GPU), then one
        // warp adds the partials in order and writes stats and the loss.
        let per_image = a.numel() / bsz;
        let slices = per_image
            .div_ceil(STATS_VALUES_PER_BLOCK)
            .clamp(1, STATS_MAX_SLICES);
        let per_slice = per_image.div_ceil(slices);
        let partial = self.scratch.get(&self.launcher, bsz * slices * 3 * 8)?;
        let cfg = LaunchCfg {
            grid: (slices as u32, bsz as u32, 1),
            block: (256, 1, 1),
            smem: 0,
        };
        let args = [
            p(a),
            p(b),
            ptr(partial.ptr()),
            int(OP, per_image)?,
            int(OP, per_slice)?,
        ];
        self.launch("global_cosine_stats", cfg, &args)?;
        let cfg = LaunchCfg {
            grid: (1, 1, 1),
            block: (32, 1, 1),
            smem: 0,
        };
        let args = [
            ptr(partial.ptr()),
            p(stats),
            p(loss),
            int(OP, bsz)?,
            int(OP, slices)?,
        ];
        self.launch("global_cosine_loss", cfg, &args)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn global_cos_bwd(
        &self,
        a: &T<L>,
        b: &T<L>,
        point_dist: &T<L>,
        stats: &T<L>,
        p_hard: f32,
        factor: f32,
        dloss: f32,
        db: &mut T<L>,
    ) -> Result<()> {
        const OP: &str = "global_cosine_bwd";
        let (bsz, tokens, chans) = check::global_cosine(OP, a, b, point_dist, stats)?;
        check::same(OP, ("db", db), ("b", b))?;
        f32_only(
            OP,
            &[("point_dist", Some(point_dist)), ("stats", Some(stats))],
        )?;
        let n = bsz * tokens;
        let k = check::hard_mining_k(OP, n, p_hard)?;
        if a.numel() == 0 {
            return Ok(());
        }
        // k >= n: the threshold is the smallest distance and no token lies below it, so no
        // selection is needed. k = 0: there is no k-th largest and every token is scaled
        // (the CPU reference's convention).
        let scratch = self.scratch.get(&self.launcher, 4)?;
        let (thr, factor_all) = if k >= n {
            (DevicePtr::NULL, 1.0)
        } else if k == 0 {
            (DevicePtr::NULL, factor)
        } else {
            let cfg = LaunchCfg {
                grid: (1, 1, 1),
                block: (SELECT_THREADS, 1, 1),
                smem: 0,
            };
            self.launch(
                "kth_largest",
                cfg,
                &[p(point_dist), int(OP, n)?, int(OP, k)?, ptr(scratch.ptr())],
            )?;
            (scratch.ptr(), 1.0)
        };
        let args = [
            p(a),
            p(b),
            p(point_dist),
            p(stats),
            ptr(thr),
            p(db),
            int(OP, tokens * chans)?,
            int(OP, chans)?,
            f32(factor),
            f32(dloss / bsz as f32 * factor_all),
        ];
        self.launch_1d("global_cosine_bwd", a.numel(), &args)
    }
}
