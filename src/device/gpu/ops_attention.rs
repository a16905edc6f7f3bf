//! Attention ops of [`GpuBackend`]: flash attention on tensor cores (head dim 64) and
//! Dinomaly's linear attention.

use super::backend::{f32_only, p, T};
use super::launch::{f32, int, ptr};
use super::{DevicePtr, GpuBackend, LaunchCfg, Launcher};
use crate::device::check::{self, AttnDims};
use crate::error::{Error, Result};

/// The largest head dimension of the flash-attention kernels' tiles (ViT-S/B/L all use 64;
/// smaller heads are zero-padded).
const FLASH_HEAD_DIM: usize = 64;
/// Query rows per block (16 per warp) and keys per step of the flash kernels.
const FLASH_ROWS: usize = 64;
/// bf16 elements per shared-memory row of a flash tile (64 + 8 padding).
const FLASH_STRIDE: usize = FLASH_HEAD_DIM + 8;
/// Tokens per block of the linear-attention kernels: B·H·ceil(N / 64) blocks fill the GPU
/// (1248 at B 8, N 785, H 12).
const LINEAR_CHUNK: usize = 64;
/// Threads of the linear-attention kernels: one per 4×4 tile of a 64 × 64 product.
const LINEAR_THREADS: u32 = 256;
/// The largest head dimension of the linear-attention kernels (their products' tiles).
const LINEAR_MAX_HEAD_DIM: usize = 64;

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
        let l = Linear::new(OP, &s)?;
        // Per-chunk partials of KV, then the head's sum.
        let scratch = self
            .scratch
            .get(&self.launcher, l.floats(l.chunks + 1) * 4)?;
        let part = scratch.ptr();
        let kv = part.offset(l.floats(l.chunks) * 4);
        let mut args = vec![p(qkv), ptr(part)];
        args.extend(l.dims_args()?);
        self.launch("linear_attn_kv", l.cfg(0), &args)?;
        self.linear_sum(&l, part, kv)?;
        let mut args = vec![p(qkv), ptr(kv), p(out)];
        args.extend(l.dims_args()?);
        args.push(f32(eps));
        // ksum, den.
        self.launch("linear_attn_out", l.cfg(2 * LINEAR_CHUNK), &args)
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
        let l = Linear::new(OP, &s)?;
        // The partials of KV, then (once summed) those of dKV; the summed KV and dKV.
        let scratch = self
            .scratch
            .get(&self.launcher, l.floats(l.chunks + 2) * 4)?;
        let part = scratch.ptr();
        let kv = part.offset(l.floats(l.chunks) * 4);
        let dkv = kv.offset(l.floats(1) * 4);
        let mut args = vec![p(qkv), ptr(part)];
        args.extend(l.dims_args()?);
        self.launch("linear_attn_kv", l.cfg(0), &args)?;
        self.linear_sum(&l, part, kv)?;
        let mut args = vec![p(dout), p(qkv), ptr(kv), p(dqkv), ptr(part)];
        args.extend(l.dims_args()?);
        args.push(f32(eps));
        // dot (64 × 16), ksum, den, dden.
        let extra = LINEAR_CHUNK * LINEAR_CHUNK / 4 + 3 * LINEAR_CHUNK;
        self.launch("linear_attn_bwd_q", l.cfg(extra), &args)?;
        self.linear_sum(&l, part, dkv)?;
        let mut args = vec![p(qkv), ptr(dkv), p(dqkv)];
        args.extend(l.dims_args()?);
        // dksum.
        self.launch("linear_attn_bwd_kv", l.cfg(LINEAR_CHUNK), &args)
    }

    /// `total` = the sum of each head's chunk partials at `part`, in chunk order.
    fn linear_sum(&self, l: &Linear, part: DevicePtr, total: DevicePtr) -> Result<()> {
        let width = l.width();
        let cfg = LaunchCfg {
            grid: (width.div_ceil(256) as u32, l.heads_total as u32, 1),
            block: (256, 1, 1),
            smem: 0,
        };
        let args = [
            ptr(part),
            ptr(total),
            int(l.op, l.chunks)?,
            int(l.op, width)?,
        ];
        self.launch("linear_attn_sum", cfg, &args)
    }
}

/// The linear-attention kernels' launch geometry (kernels/attention.cu): one block of
/// `LINEAR_THREADS` per chunk of `LINEAR_CHUNK` tokens of each (image, head).
struct Linear {
    op: &'static str,
    dims: AttnDims,
    chunks: usize,
    /// B·H.
    heads_total: usize,
}

impl Linear {
    fn new(op: &'static str, s: &AttnDims) -> Result<Self> {
        // Each thread owns one 4×4 tile of a dh × dh product: (64 / 4)² = LINEAR_THREADS.
        if s.head_dim > LINEAR_MAX_HEAD_DIM {
            return Err(Error::Unavailable {
                backend: "gpu",
                reason: format!(
                    "{op}: the linear-attention kernels take head dims up to \
                     {LINEAR_MAX_HEAD_DIM}, got {}",
                    s.head_dim
                ),
            });
        }
        Ok(Linear {
            op,
            dims: *s,
            chunks: s.n.div_ceil(LINEAR_CHUNK),
            heads_total: s.batch * s.heads,
        })
    }

    /// Floats of one head's partial sums: KV (dh × dh) and Σφ(k) (dh).
    fn width(&self) -> usize {
        self.dims.head_dim * (self.dims.head_dim + 1)
    }

    /// Floats of `records` partial sums per head, for every head.
    fn floats(&self, records: usize) -> usize {
        self.heads_total * records * self.width()
    }

    /// n, dim, heads, dh.
    fn dims_args(&self) -> Result<Vec<super::KernelArg>> {
        let mut args = dims_args(self.op, &self.dims)?.to_vec();
        args.push(int(self.op, self.dims.head_dim)?);
        Ok(args)
    }

    /// Grid (chunks, B·H) with two shared matrices of 64 rows × (dh rounded up to 4, + 4)
    /// floats and `extra` floats after them.
    fn cfg(&self, extra: usize) -> LaunchCfg {
        let stride = self.dims.head_dim.next_multiple_of(4) + 4;
        LaunchCfg {
            grid: (self.chunks as u32, self.heads_total as u32, 1),
            block: (LINEAR_THREADS, 1, 1),
            smem: ((2 * LINEAR_CHUNK * stride + extra) * 4) as u32,
        }
    }
}
