//! `GpuBackend<L>`: the [`Backend`] op set for any [`Launcher`]. Each op validates shapes with
//! [`check`], then enqueues its kernels; the kernels are named after their `.cu` functions.

use std::sync::Arc;

use super::launch::{col_tiles, f32, grid_1d, grid_stride_count, int, ptr, warp_per_row, BLOCK};
use super::scratch::{Scratch, ScratchGuard};
use super::{dtype_bytes, DeviceBuffer, DevicePtr, Gemm, KernelArg, LaunchCfg, Launcher};
use crate::device::{check, AdamStep, AdamTensors, Backend, Interp, Layout, Tensor};
use crate::error::{shape_err, Error, Result};
use crate::tensor::{DType, HostTensor, Shape};

/// The GPU op set over launcher `L` (see the module docs of [`super`] for the storage).
pub struct GpuBackend<L: Launcher> {
    pub(super) launcher: Arc<L>,
    pub(super) scratch: Scratch<L>,
}

pub(super) type T<L> = Tensor<GpuBackend<L>>;

/// A tensor as a kernel operand: its address, with bit 0 set when it is stored as bf16 (the
/// `In`/`Out` operands of kernels/common.cuh read it; every allocation has an even address,
/// see `DeviceBuffer`, so the bit is free). An f32 tensor's operand is its plain address, which is also what the
/// kernels' f32-only `float*` parameters take.
pub(super) fn p<L: Launcher>(t: &T<L>) -> KernelArg {
    let tag = (t.storage.dtype() == DType::BF16) as u64;
    ptr(DevicePtr(t.storage.ptr().0 | tag))
}

pub(super) fn opt<L: Launcher>(t: Option<&T<L>>) -> KernelArg {
    t.map_or(ptr(DevicePtr::NULL), p)
}

/// Fails unless every operand is stored as f32: for the kernels that take `float*` (the
/// optimisers, anomaly-map ops, row statistics and atomically accumulated outputs).
pub(super) fn f32_only<L: Launcher>(op: &str, operands: &[(&str, Option<&T<L>>)]) -> Result<()> {
    for (name, t) in operands {
        if t.is_some_and(|t| t.storage.dtype() != DType::F32) {
            return Err(Error::Invalid(format!(
                "{op}: {name} is stored as bf16 (an activation tensor); this operand must be \
                 f32, allocated with zeros or upload"
            )));
        }
    }
    Ok(())
}

impl<L: Launcher> GpuBackend<L> {
    pub fn new(launcher: L) -> Self {
        GpuBackend {
            launcher: Arc::new(launcher),
            scratch: Scratch::new(),
        }
    }

    pub fn launcher(&self) -> &Arc<L> {
        &self.launcher
    }

    fn alloc(&self, dims: &[usize], dtype: DType) -> Result<T<L>> {
        let shape = Shape::new(dims);
        let storage = DeviceBuffer::elements(&self.launcher, shape.numel(), dtype)?;
        Ok(Tensor { shape, storage })
    }

    fn alloc_zeroed(&self, dims: &[usize], dtype: DType) -> Result<T<L>> {
        let t = self.alloc(dims, dtype)?;
        // All-zero bytes are 0.0 in f32 and in bf16 alike.
        self.launcher
            .memset(t.storage.ptr(), 0, t.storage.bytes())?;
        Ok(t)
    }

    pub(super) fn launch(
        &self,
        kernel: &'static str,
        cfg: LaunchCfg,
        args: &[KernelArg],
    ) -> Result<()> {
        self.launcher.launch(kernel, cfg, args)
    }

    /// A grid-stride kernel over `n` elements whose arguments end with `n`; nothing is
    /// launched for an empty tensor.
    pub(super) fn launch_1d(
        &self,
        kernel: &'static str,
        n: usize,
        args: &[KernelArg],
    ) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let mut all = args.to_vec();
        all.push(grid_stride_count(kernel, n)?);
        self.launch(kernel, grid_1d(n), &all)
    }

    /// `out[c] += Σ_r a[r, c] · b[r, c]` (`b` = 1 when absent): partial sums per slice of
    /// rows, then one pass adding them up in order (deterministic, no atomics).
    pub(super) fn col_sum(
        &self,
        a: &T<L>,
        b: Option<&T<L>>,
        out: &mut T<L>,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        const OP: &str = "col_sum";
        if rows == 0 || cols == 0 {
            return Ok(());
        }
        let (cfg, slices, per_slice) = col_tiles(rows, cols);
        let partial = self.scratch.get(&self.launcher, slices * cols * 4)?;
        let args = [
            p(a),
            opt(b),
            ptr(partial.ptr()),
            int(OP, rows)?,
            int(OP, cols)?,
            int(OP, per_slice)?,
        ];
        self.launch("col_sum", cfg, &args)?;
        self.col_sum_finish(partial.ptr(), p(out), slices, cols)
    }

    /// `out[c] += Σ_s partial[s, c]` over the `slices` rows of partial sums of a column
    /// reduction.
    pub(super) fn col_sum_finish(
        &self,
        partial: DevicePtr,
        out: KernelArg,
        slices: usize,
        cols: usize,
    ) -> Result<()> {
        let args = [ptr(partial), out, int("col_sum_finish", slices)?];
        self.launch_1d("col_sum_finish", cols, &args)
    }

    /// `t` as a bf16 GEMM operand: a bf16 tensor is used in place; an f32 one is rounded into
    /// the scratch at `spare` (room for `t.numel()` bf16 values, owned by the caller).
    fn gemm_operand(&self, t: &T<L>, spare: DevicePtr) -> Result<DevicePtr> {
        match t.storage.dtype() {
            DType::BF16 => Ok(t.storage.ptr()),
            DType::F32 => {
                self.launch_1d("cast_f32_bf16", t.numel(), &[p(t), ptr(spare)])?;
                Ok(spare)
            }
        }
    }

    /// Run a grid-stride reduction kernel whose arguments end with `n` and a `double*` of
    /// per-block partial sums; returns the scratch holding the partials and their count.
    pub(super) fn launch_partials(
        &self,
        kernel: &'static str,
        n: usize,
        args: &[KernelArg],
    ) -> Result<(ScratchGuard<'_, L>, usize)> {
        let blocks = partial_blocks(n);
        let scratch = self.scratch.get(&self.launcher, blocks * 8)?;
        let mut all = args.to_vec();
        all.extend([grid_stride_count(kernel, n)?, ptr(scratch.ptr())]);
        self.launch(kernel, grid_1d(n).min_grid(REDUCE_BLOCKS), &all)?;
        Ok((scratch, blocks))
    }

    /// The sum of a reduction kernel's partials (see [`Self::launch_partials`]), on the host.
    pub(super) fn reduce_partials(
        &self,
        kernel: &'static str,
        n: usize,
        args: &[KernelArg],
    ) -> Result<f64> {
        if n == 0 {
            return Ok(0.0);
        }
        let (scratch, blocks) = self.launch_partials(kernel, n, args)?;
        let mut bytes = vec![0u8; blocks * 8];
        self.launcher.dtoh(scratch.ptr(), &mut bytes)?;
        Ok(f64s_le(&bytes).sum())
    }
}

/// Blocks of the two-pass reductions (sum of squares, StableAdamW's RMS): enough to fill an
/// H100 (132 SMs) twice, few enough that one block sums all partials in one pass.
const REDUCE_BLOCKS: u32 = 256;

/// The partial sums [`GpuBackend::launch_partials`] writes for `n` elements.
pub(super) fn partial_blocks(n: usize) -> usize {
    grid_1d(n).min_grid(REDUCE_BLOCKS).grid.0 as usize
}

/// Little-endian f64s from a device copy.
pub(super) fn f64s_le(bytes: &[u8]) -> impl Iterator<Item = f64> + '_ {
    bytes
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
}

impl LaunchCfg {
    fn min_grid(mut self, max_blocks: u32) -> LaunchCfg {
        self.grid.0 = self.grid.0.min(max_blocks);
        self
    }
}

impl<L: Launcher> Backend for GpuBackend<L> {
    type Storage = DeviceBuffer<L>;

    fn name(&self) -> String {
        self.launcher.name()
    }

    fn zeros(&self, dims: &[usize]) -> Result<T<L>> {
        self.alloc_zeroed(dims, DType::F32)
    }

    fn zeros_activation(&self, dims: &[usize]) -> Result<T<L>> {
        self.alloc_zeroed(dims, DType::BF16)
    }

    fn freeze(&self, t: T<L>) -> Result<T<L>> {
        if t.storage.dtype() == DType::BF16 {
            return Ok(t);
        }
        let mut frozen = self.alloc_zeroed(t.dims(), DType::BF16)?;
        self.copy(&t, &mut frozen)?;
        Ok(frozen)
    }

    fn upload(&self, host: &HostTensor) -> Result<T<L>> {
        check::upload(host)?;
        let t = self.alloc(host.dims(), DType::F32)?;
        self.launcher
            .htod(bytemuck::cast_slice(&host.data), t.storage.ptr())?;
        Ok(t)
    }

    fn download(&self, t: &T<L>) -> Result<HostTensor> {
        let data = match t.storage.dtype() {
            DType::F32 => {
                let mut data = vec![0f32; t.numel()];
                self.launcher
                    .dtoh(t.storage.ptr(), bytemuck::cast_slice_mut(&mut data))?;
                data
            }
            DType::BF16 => {
                let mut data = vec![half::bf16::ZERO; t.numel()];
                self.launcher
                    .dtoh(t.storage.ptr(), bytemuck::cast_slice_mut(&mut data))?;
                data.iter().map(|v| v.to_f32()).collect()
            }
        };
        HostTensor::new(t.shape.clone(), data)
    }

    fn copy(&self, src: &T<L>, dst: &mut T<L>) -> Result<()> {
        check::same_numel("copy", ("src", src), ("dst", dst))?;
        let dtype = src.storage.dtype();
        if dtype == dst.storage.dtype() {
            let bytes = src.numel() * dtype_bytes(dtype);
            return self
                .launcher
                .dtod(src.storage.ptr(), dst.storage.ptr(), bytes);
        }
        self.launch_1d("scaled_copy", src.numel(), &[p(src), f32(1.0), p(dst)])
    }

    fn fill(&self, t: &mut T<L>, value: f32) -> Result<()> {
        self.launch_1d("fill", t.numel(), &[p(t), f32(value)])
    }

    fn synchronize(&self) -> Result<()> {
        self.launcher.synchronize()
    }

    fn axpy(&self, alpha: f32, x: &T<L>, y: &mut T<L>) -> Result<()> {
        check::same("axpy", ("x", x), ("y", y))?;
        self.launch_1d("axpy", x.numel(), &[f32(alpha), p(x), p(y)])
    }

    fn scale(&self, x: &mut T<L>, alpha: f32) -> Result<()> {
        self.launch_1d("scale", x.numel(), &[p(x), f32(alpha)])
    }

    fn sum_squares(&self, x: &T<L>) -> Result<f64> {
        self.reduce_partials("sum_squares_partial", x.numel(), &[p(x)])
    }

    fn matmul(
        &self,
        a: &T<L>,
        b: &T<L>,
        bias: Option<&T<L>>,
        out: &mut T<L>,
        layout: Layout,
        accumulate: bool,
    ) -> Result<()> {
        let d = check::matmul(a, b, bias, out, layout)?;
        if out.numel() == 0 {
            return Ok(());
        }
        // Scratch, each part on a 256-byte boundary (the alignment cuBLASLt's fastest kernels
        // want): bf16 copies of the f32 operands, and a copy of the bias in `out`'s type when
        // it is stored in the other one (the bias epilogue reads the bias in D's type).
        let at = |bytes: usize| bytes.div_ceil(256) * 256;
        let a_spare = match a.storage.dtype() {
            DType::F32 => at(a.numel() * 2),
            DType::BF16 => 0,
        };
        let b_spare = match b.storage.dtype() {
            DType::F32 => at(b.numel() * 2),
            DType::BF16 => 0,
        };
        let out_dtype = out.storage.dtype();
        let bias_spare = match bias.map(|t| t.storage.dtype()) {
            Some(dt) if dt != out_dtype => d.n * dtype_bytes(out_dtype),
            _ => 0,
        };
        let scratch = self
            .scratch
            .get(&self.launcher, a_spare + b_spare + bias_spare)?;
        let a16 = self.gemm_operand(a, scratch.ptr())?;
        let b16 = self.gemm_operand(b, scratch.ptr().offset(a_spare))?;
        let bias_in_out_type = match bias {
            Some(t) if t.storage.dtype() != out_dtype => {
                let spare = scratch.ptr().offset(a_spare + b_spare);
                let tag = (out_dtype == DType::BF16) as u64;
                let dst = ptr(DevicePtr(spare.0 | tag));
                self.launch_1d("scaled_copy", d.n, &[p(t), f32(1.0), dst])?;
                Some(spare)
            }
            Some(t) => Some(t.storage.ptr()),
            None => None,
        };
        let (m, n, k) = (d.m, d.n, d.k);
        // The GEMM adds the bias in its epilogue and rounds a bf16 `out` once, after it (a bias
        // held in f32 for a bf16 `out` is rounded to bf16 first, by at most 2^-9 of itself).
        self.launcher.gemm(&Gemm {
            m,
            n,
            k,
            batch: d.batch,
            a: a16,
            a_trans: layout == Layout::TN,
            stride_a: m * k,
            b: b16,
            b_trans: layout == Layout::NT,
            stride_b: if d.b_batched { k * n } else { 0 },
            c: out.storage.ptr(),
            c_bf16: out.storage.dtype() == DType::BF16,
            stride_c: m * n,
            accumulate,
            bias: bias_in_out_type,
        })
    }

    fn bias_grad(&self, dy: &T<L>, db: &mut T<L>) -> Result<()> {
        let (rows, cols) = check::rows_and_vec("bias_grad", dy, db, "db")?;
        self.col_sum(dy, None, db, rows, cols)
    }

    fn layernorm_fwd(
        &self,
        x: &T<L>,
        w: &T<L>,
        b: &T<L>,
        eps: f32,
        y: &mut T<L>,
        mean: &mut T<L>,
        rstd: &mut T<L>,
    ) -> Result<()> {
        const OP: &str = "layernorm_fwd";
        let (rows, d) = check::layernorm_fwd(x, w, b, y, mean, rstd)?;
        f32_only(OP, &[("mean", Some(mean)), ("rstd", Some(rstd))])?;
        if rows == 0 {
            return Ok(());
        }
        let args = [
            p(x),
            p(w),
            p(b),
            p(y),
            p(mean),
            p(rstd),
            int(OP, rows)?,
            int(OP, d)?,
            f32(eps),
        ];
        self.launch("layernorm_fwd", warp_per_row(rows), &args)
    }

    fn layernorm_bwd(
        &self,
        dy: &T<L>,
        x: &T<L>,
        w: &T<L>,
        mean: &T<L>,
        rstd: &T<L>,
        dx: &mut T<L>,
        dw: &mut T<L>,
        db: &mut T<L>,
        accumulate_dx: bool,
    ) -> Result<()> {
        const OP: &str = "layernorm_bwd";
        let (rows, d) = check::layernorm_bwd(dy, x, w, mean, rstd, dx, dw, db)?;
        f32_only(OP, &[("mean", Some(mean)), ("rstd", Some(rstd))])?;
        if rows == 0 {
            return Ok(());
        }
        let (r, c) = (int(OP, rows)?, int(OP, d)?);
        let acc = KernelArg::I32(accumulate_dx as i32);
        let args = [p(dy), p(x), p(w), p(mean), p(rstd), p(dx), r, c, acc];
        self.launch("layernorm_bwd_dx", warp_per_row(rows), &args)?;
        let (cfg, slices, per_slice) = col_tiles(rows, d);
        let partial = self.scratch.get(&self.launcher, 2 * slices * d * 4)?;
        let (pw, pb) = (partial.ptr(), partial.ptr().offset(slices * d * 4));
        let args = [
            p(dy),
            p(x),
            p(mean),
            p(rstd),
            ptr(pw),
            ptr(pb),
            r,
            c,
            int(OP, per_slice)?,
        ];
        self.launch("layernorm_bwd_params", cfg, &args)?;
        self.col_sum_finish(pw, p(dw), slices, d)?;
        self.col_sum_finish(pb, p(db), slices, d)
    }

    fn attention_fwd(
        &self,
        qkv: &T<L>,
        heads: usize,
        scale: f32,
        out: &mut T<L>,
        lse: &mut T<L>,
    ) -> Result<()> {
        self.flash_attention_fwd(qkv, heads, scale, out, lse)
    }

    fn attention_bwd(
        &self,
        dout: &T<L>,
        qkv: &T<L>,
        out: &T<L>,
        lse: &T<L>,
        heads: usize,
        scale: f32,
        dqkv: &mut T<L>,
    ) -> Result<()> {
        self.flash_attention_bwd(dout, qkv, out, lse, heads, scale, dqkv)
    }

    fn linear_attention_fwd(
        &self,
        qkv: &T<L>,
        heads: usize,
        eps: f32,
        out: &mut T<L>,
    ) -> Result<()> {
        self.linear_attn_fwd(qkv, heads, eps, out)
    }

    fn linear_attention_bwd(
        &self,
        dout: &T<L>,
        qkv: &T<L>,
        heads: usize,
        eps: f32,
        dqkv: &mut T<L>,
    ) -> Result<()> {
        self.linear_attn_bwd(dout, qkv, heads, eps, dqkv)
    }

    fn gelu_fwd(&self, x: &T<L>, y: &mut T<L>) -> Result<()> {
        check::same("gelu_fwd", ("x", x), ("y", y))?;
        let cols = int("gelu_fwd", x.shape.last().max(1))?;
        self.launch_1d(
            "gelu_fwd",
            x.numel(),
            &[p(x), ptr(DevicePtr::NULL), p(y), cols],
        )
    }

    fn gelu_bwd(&self, dy: &T<L>, x: &T<L>, dx: &mut T<L>) -> Result<()> {
        check::same("gelu_bwd", ("dy", dy), ("x", x))?;
        check::same("gelu_bwd", ("dx", dx), ("x", x))?;
        let cols = int("gelu_bwd", x.shape.last().max(1))?;
        self.launch_1d(
            "gelu_bwd",
            x.numel(),
            &[p(dy), p(x), ptr(DevicePtr::NULL), p(dx), cols],
        )
    }

    fn bias_gelu_fwd(&self, x: &T<L>, bias: &T<L>, y: &mut T<L>) -> Result<()> {
        let (_, cols) = check::rows_and_vec("bias_gelu_fwd", x, bias, "bias")?;
        check::same("bias_gelu_fwd", ("x", x), ("y", y))?;
        self.launch_1d(
            "gelu_fwd",
            x.numel(),
            &[p(x), p(bias), p(y), int("bias_gelu_fwd", cols)?],
        )
    }

    fn bias_gelu_bwd(
        &self,
        dy: &T<L>,
        x: &T<L>,
        bias: &T<L>,
        dx: &mut T<L>,
        dbias: &mut T<L>,
    ) -> Result<()> {
        const OP: &str = "bias_gelu_bwd";
        let (rows, cols) = check::bias_gelu_bwd(dy, x, bias, dx, dbias)?;
        self.launch_1d(
            "gelu_bwd",
            x.numel(),
            &[p(dy), p(x), p(bias), p(dx), int(OP, cols)?],
        )?;
        self.col_sum(dx, None, dbias, rows, cols)
    }

    fn residual_fwd(&self, x: &T<L>, y: &T<L>, gamma: Option<&T<L>>, out: &mut T<L>) -> Result<()> {
        const OP: &str = "residual_fwd";
        let (_, d) = check::residual(
            OP,
            ("x", x),
            ("y", y),
            ("out", out),
            gamma.map(|g| ("gamma", g)),
        )?;
        let cols = int(OP, d.max(1))?;
        self.launch_1d(
            "residual_fwd",
            x.numel(),
            &[p(x), p(y), opt(gamma), p(out), cols],
        )
    }

    fn residual_bwd(
        &self,
        dout: &T<L>,
        y: &T<L>,
        gamma: Option<&T<L>>,
        dy: &mut T<L>,
        dgamma: Option<&mut T<L>>,
    ) -> Result<()> {
        const OP: &str = "residual_bwd";
        let (rows, cols) = check::residual(
            OP,
            ("dout", dout),
            ("y", y),
            ("dy", dy),
            gamma.map(|g| ("gamma", g)),
        )?;
        match (gamma, dgamma.as_deref()) {
            (None, Some(dg)) => {
                return shape_err(OP, format!("dgamma {} given without gamma", dg.shape()))
            }
            (_, Some(dg)) => check::exact(OP, "dgamma", dg, &[cols])?,
            _ => {}
        }
        match gamma {
            Some(g) => self.launch_1d(
                "mul_cols",
                y.numel(),
                &[p(dout), p(g), p(dy), int(OP, cols.max(1))?],
            )?,
            None => self.copy(dout, dy)?,
        }
        match dgamma {
            Some(dg) => self.col_sum(dout, Some(y), dg, rows, cols),
            None => Ok(()),
        }
    }

    fn dropout_fwd(&self, x: &T<L>, p_drop: f32, seed: u64, out: &mut T<L>) -> Result<()> {
        check::dropout("dropout_fwd", ("x", x), ("out", out), p_drop)?;
        self.dropout(x, p_drop, seed, out)
    }

    fn dropout_bwd(&self, dout: &T<L>, p_drop: f32, seed: u64, dx: &mut T<L>) -> Result<()> {
        check::dropout("dropout_bwd", ("dout", dout), ("dx", dx), p_drop)?;
        self.dropout(dout, p_drop, seed, dx)
    }

    fn patchify(&self, img: &T<L>, patch: usize, out: &mut T<L>) -> Result<()> {
        self.patchify_op(img, patch, out)
    }

    fn embed_tokens_fwd(
        &self,
        emb: &T<L>,
        cls: &T<L>,
        pos: &T<L>,
        regs: Option<&T<L>>,
        out: &mut T<L>,
    ) -> Result<()> {
        self.embed_fwd(emb, cls, pos, regs, out)
    }

    fn embed_tokens_bwd(
        &self,
        dout: &T<L>,
        demb: &mut T<L>,
        dcls: &mut T<L>,
        dpos: &mut T<L>,
        dregs: Option<&mut T<L>>,
    ) -> Result<()> {
        self.embed_bwd(dout, demb, dcls, dpos, dregs)
    }

    fn slice_tokens(&self, x: &T<L>, start: usize, out: &mut T<L>) -> Result<()> {
        let (_, n, m, d) = check::token_slice("slice_tokens", ("x", x), ("out", out), start)?;
        self.slice_op("slice_tokens", x, out, (n, m, d), start)
    }

    fn unslice_tokens_add(&self, dout: &T<L>, start: usize, dx: &mut T<L>) -> Result<()> {
        let (_, n, m, d) =
            check::token_slice("unslice_tokens_add", ("dx", dx), ("dout", dout), start)?;
        self.slice_op("unslice_tokens_add", dx, dout, (n, m, d), start)
    }

    fn group_mean_fwd(&self, xs: &[&T<L>], out: &mut T<L>) -> Result<()> {
        check::group("group_mean_fwd", xs, ("out", out))?;
        // The sum is kept in f32 (in scratch when `out` is bf16), so that `out` is rounded
        // once, not after every term.
        let n = out.numel();
        let scratch = match out.storage.dtype() {
            DType::F32 => None,
            DType::BF16 => Some(self.scratch.get(&self.launcher, n * 4)?),
        };
        let acc = scratch.as_ref().map_or(p(out), |s| ptr(s.ptr()));
        let scale = 1.0 / xs.len() as f32;
        self.launch_1d("scaled_copy", n, &[p(xs[0]), f32(1.0), acc])?;
        for x in &xs[1..] {
            self.launch_1d("axpy", n, &[f32(1.0), p(x), acc])?;
        }
        match scratch {
            None => self.scale(out, scale),
            Some(_) => self.launch_1d("scaled_copy", n, &[acc, f32(scale), p(out)]),
        }
    }

    fn group_mean_bwd(&self, dout: &T<L>, dxs: &mut [&mut T<L>]) -> Result<()> {
        let views: Vec<&T<L>> = dxs.iter().map(|t| &**t).collect();
        check::group("group_mean_bwd", &views, ("dout", dout))?;
        let w = 1.0 / dxs.len() as f32;
        for dx in dxs.iter_mut() {
            self.axpy(w, dout, dx)?;
        }
        Ok(())
    }

    fn cosine_distance_fwd(&self, a: &T<L>, b: &T<L>, d: &mut T<L>) -> Result<()> {
        self.cosine_fwd(a, b, d)
    }

    fn cosine_distance_bwd(&self, dd: &T<L>, a: &T<L>, b: &T<L>, db: &mut T<L>) -> Result<()> {
        self.cosine_bwd(dd, a, b, db)
    }

    fn global_cosine_fwd(
        &self,
        a: &T<L>,
        b: &T<L>,
        loss: &mut T<L>,
        point_dist: &mut T<L>,
        stats: &mut T<L>,
    ) -> Result<()> {
        self.global_cos_fwd(a, b, loss, point_dist, stats)
    }

    fn global_cosine_bwd(
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
        self.global_cos_bwd(a, b, point_dist, stats, p_hard, factor, dloss, db)
    }

    fn adamw_step(
        &self,
        param: &mut T<L>,
        grad: &T<L>,
        m: &mut T<L>,
        v: &mut T<L>,
        vmax: Option<&mut T<L>>,
        hp: &AdamStep,
    ) -> Result<()> {
        let one = AdamTensors {
            param,
            grad,
            m,
            v,
            vmax,
        };
        self.adam_multi("adamw_step", false, &mut [one], hp)
    }

    fn stable_adamw_step(
        &self,
        param: &mut T<L>,
        grad: &T<L>,
        m: &mut T<L>,
        v: &mut T<L>,
        vmax: Option<&mut T<L>>,
        hp: &AdamStep,
    ) -> Result<()> {
        let one = AdamTensors {
            param,
            grad,
            m,
            v,
            vmax,
        };
        self.adam_multi("stable_adamw_step", true, &mut [one], hp)
    }

    fn adam_steps(
        &self,
        stable: bool,
        set: &mut [AdamTensors<'_, Self>],
        hp: &AdamStep,
    ) -> Result<()> {
        self.adam_multi("adam_steps", stable, set, hp)
    }

    fn clip_grad_norm(&self, grads: &mut [&mut T<L>], max_norm: f32) -> Result<f32> {
        self.clip_multi(grads, max_norm)
    }

    fn resize(&self, x: &T<L>, interp: Interp, out: &mut T<L>) -> Result<()> {
        self.resize_op(x, interp, out)
    }

    fn gaussian_blur(&self, x: &T<L>, sigma: f32, ksize: usize, out: &mut T<L>) -> Result<()> {
        self.blur_op(x, sigma, ksize, out)
    }

    fn topk_mean(&self, x: &T<L>, k: usize, out: &mut T<L>) -> Result<()> {
        const OP: &str = "topk_mean";
        let (rows, m) = check::topk_mean(x, k, out)?;
        f32_only(OP, &[("x", Some(x)), ("out", Some(out))])?;
        if rows == 0 {
            return Ok(());
        }
        let cfg = LaunchCfg {
            grid: (rows as u32, 1, 1),
            block: (BLOCK, 1, 1),
            smem: 0,
        };
        self.launch(
            "topk_mean",
            cfg,
            &[p(x), p(out), int(OP, rows)?, int(OP, m)?, int(OP, k)?],
        )
    }
}
