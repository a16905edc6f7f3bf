//! Attention ops of [`GpuBackend`]: flash attention on tensor cores (head dim 64) and
//! Dinomaly's linear attention.

use super::backend::{f32_only, p, T};
use super::launch::{f32, int, ptr};
use super::{GpuBackend, LaunchCfg, Launcher};
use crate::device::check::{self, AttnDims};
use crate::error::{Error, Result};

/// The largest head dimension of the flash-attention kernels' tiles (ViT-S/B/L all use 64;
/// smaller heads are zero-padded).
const FLASH_HEAD_DIM: usize = 64;
/// Query rows per block (16 per warp) and keys per step of the flash kernels.
const FLASH_ROWS: usize = 64;
/// bf16 elements per shared-memory row of a flash tile (64 + 8 padding).
const FLASH_STRIDE: usize = FLASH_HEAD_DIM + 8;
/// Threads of the linear-attention kernels: 8 warps, one token per warp at a time.
const LINEAR_THREADS: u32 = 256;

fn flash_head_dim_fits(op: &str, s: &AttnDims) -> Result<()> {
    if s.head_dim > FLASH_HEAD_DIM {
        return Err(Error::Unavailable {
            backend: "gpu",
            reason: format!(
                "{op}: the flash-attention kernels take head dims up to {FLASH_HEAD_DIM}, got {}",
                s.head_dim
            ),
        });
    }
    Ok(())
}

/// Arguments the attention kernels share after their pointers: n, dim, heads.
fn dims_args(op: &'static str, s: &AttnDims) -> Result<[super::KernelArg; 3]> {
    Ok([int(op, s.n)?, int(op, s.dim)?, int(op, s.heads)?])
}

impl<L: Launcher> GpuBackend<L> {
    pub(super) fn flash_attention_fwd(
        &self,
        qkv: &T<L>,
        heads: usize,
        scale: f32,
        out: &mut T<L>,
        lse: &mut T<L>,
    ) -> Result<()> {
        const OP: &str = "attention_fwd";
        let s = check::attention_fwd(qkv, heads, out, lse)?;
        f32_only(OP, &[("lse", Some(lse))])?;
        if s.n == 0 || s.batch == 0 {
            return Ok(());
        }
        flash_head_dim_fits(OP, &s)?;
        let cfg = LaunchCfg {
            grid: (
                s.n.div_ceil(FLASH_ROWS) as u32,
                (s.batch * s.heads) as u32,
                1,
            ),
            block: (128, 1, 1),
            // Q and two (K, V) buffers, bf16: 45 KiB.
            smem: (5 * FLASH_ROWS * FLASH_STRIDE * 2) as u32,
        };
        let mut args = vec![p(qkv), p(out), p(lse)];
        args.extend(dims_args(OP, &s)?);
        args.push(f32(scale));
        self.launch("flash_attn_fwd", cfg, &args)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn flash_attention_bwd(
        &self,
        dout: &T<L>,
        qkv: &T<L>,
        out: &T<L>,
        lse: &T<L>,
        heads: usize,
        scale: f32,
        dqkv: &mut T<L>,
    ) -> Result<()> {
        const OP: &str = "attention_bwd";
        let s = check::attention_bwd(dout, qkv, out, lse, heads, dqkv)?;
        // dq is accumulated with f32 atomics.
        f32_only(OP, &[("lse", Some(lse)), ("dqkv", Some(dqkv))])?;
        if s.n == 0 || s.batch == 0 {
            return Ok(());
        }
        flash_head_dim_fits(OP, &s)?;
        // dq is accumulated atomically by every key block.
        self.launcher
            .memset(dqkv.storage().ptr(), 0, dqkv.numel() * 4)?;
        let rows = s.batch * s.heads * s.n;
        let delta = self.scratch.get(&self.launcher, rows * 4)?;
        let mut args = vec![p(dout), p(out), ptr(delta.ptr())];
        args.extend(dims_args(OP, &s)?);
        self.launch_1d("flash_attn_bwd_delta", rows, &args)?;
        let cfg = LaunchCfg {
            grid: (
                s.n.div_ceil(FLASH_ROWS) as u32,
                (s.batch * s.heads) as u32,
                1,
            ),
            block: (128, 1, 1),
            smem: (5 * FLASH_ROWS * FLASH_STRIDE * 2 + 2 * FLASH_ROWS * 4) as u32,
        };
        let mut args = vec![p(dout), p(qkv), p(lse), ptr(delta.ptr()), p(dqkv)];
        args.extend(dims_args(OP, &s)?);
        args.push(f32(scale));
        self.launch("flash_attn_bwd", cfg, &args)
    }

    pub(super) fn linear_attn_fwd(
        &self,
        qkv: &T<L>,
        heads: usize,
        eps: f32,
        out: &mut T<L>,
    ) -> Result<()> {
        const OP: &str = "linear_attention_fwd";
        let s = check::linear_attention_fwd(qkv, heads, eps, out)?;
        if s.n == 0 || s.batch == 0 {
            return Ok(());
        }
        let dh = s.head_dim;
        let floats = dh * dh + dh + 2 * 32 * dh + (LINEAR_THREADS as usize / 32) * dh;
        let mut args = vec![p(qkv), p(out)];
        args.extend(dims_args(OP, &s)?);
        args.extend([int(OP, dh)?, f32(eps)]);
        self.launch("linear_attn_fwd", linear_cfg(&s, floats), &args)
    }

    pub(super) fn linear_attn_bwd(
        &self,
        dout: &T<L>,
        qkv: &T<L>,
        heads: usize,
        eps: f32,
        dqkv: &mut T<L>,
    ) -> Result<()> {
        const OP: &str = "linear_attention_bwd";
        let s = check::linear_attention_bwd(dout, qkv, heads, eps, dqkv)?;
        if s.n == 0 || s.batch == 0 {
            return Ok(());
        }
        let dh = s.head_dim;
        let floats =
            2 * dh * dh + 2 * dh + 2 * 32 * dh + 32 + (LINEAR_THREADS as usize / 32) * 2 * dh;
        let mut args = vec![p(dout), p(qkv), p(dqkv)];
        args.extend(dims_args(OP, &s)?);
        args.extend([int(OP, dh)?, f32(eps)]);
        self.launch("linear_attn_bwd", linear_cfg(&s, floats), &args)
    }
}

/// One block per (image, head) with `floats` of dynamic shared memory.
fn linear_cfg(s: &AttnDims, floats: usize) -> LaunchCfg {
    LaunchCfg {
        grid: ((s.batch * s.heads) as u32, 1, 1),
        block: (LINEAR_THREADS, 1, 1),
        smem: (floats * 4) as u32,
    }
}
