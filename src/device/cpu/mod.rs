//! The CPU backend: every op of [`Backend`] in plain Rust f32, with `gemm` for the matrix
//! products and rayon for parallel loops over rows, heads and images. It is the numerical
//! reference every other backend is held to, so each op is written for clarity first;
//! reductions accumulate in f64 where that costs little. The element-wise and row loops of
//! the non-GEMM ops are written once over `simd::Simd` and run with AVX-512 or AVX2 where
//! the CPU has them (see `simd.rs`).
//!
//! Each op validates its operands with [`crate::device::check`] (shared with the GPU
//! backends, so a wrong shape reads the same everywhere) and then calls a function of one of
//! the submodules on plain slices.

mod attention;
mod elementwise;
#[cfg(target_arch = "x86_64")]
mod frozen_gemm;
#[cfg(target_arch = "x86_64")]
mod gemm_bf16;
mod image;
mod loss;
mod math;
mod matmul;
mod norm;
mod optim;
mod par;
mod simd;
mod storage;
mod tokens;

use crate::device::{check, AdamStep, Backend, Interp, Layout, Tensor};
use crate::error::Result;
use crate::tensor::{HostTensor, Shape};
pub use storage::CpuStorage;

/// Operand precision of the CPU backend's matrix products; accumulation is f32 either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// Exact f32 products: the numerical reference.
    #[default]
    F32,
    /// Operands of every matrix product (linear layers and the attention products) rounded
    /// to bf16 (nearest even), summed in f32: the numerics of the GPU backends' GEMMs and
    /// flash attention, at up to twice the f32 rate on CPUs with AVX512-BF16 (elsewhere the
    /// same rounding feeds the f32 kernel). Norms, softmax, losses, activations and optimizer
    /// state stay f32.
    Bf16,
}

/// The CPU backend. Holds only its matmul precision: parallelism comes from rayon's global
/// pool.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu {
    precision: Precision,
}

impl Cpu {
    /// The f32 reference backend.
    pub fn new() -> Self {
        Cpu::default()
    }
    /// A backend whose [`Backend::matmul`] runs in `precision`.
    pub fn with_precision(precision: Precision) -> Self {
        Cpu { precision }
    }
    pub fn precision(&self) -> Precision {
        self.precision
    }
    /// Which matrix-product kernels this CPU runs, for `kdad info`.
    pub fn kernels() -> String {
        matmul::kernels()
    }
}

/// Run `f` on a thread of rayon's pool, and every CPU backend op it calls with it. The ops'
/// parallel loops are rayon jobs: called from a thread outside the pool, each op is handed to
/// the pool and its caller sleeps until a worker has finished it, two thread wake-ups per op;
/// called on a worker, an op starts at once and the other workers join in. For a ViT-B/14
/// forward at batch 1 (some 150 ops) that is 2 % of the time (232 → 227 ms). The command
/// line runs every CPU command this way; a library user calling the CPU backend from their
/// own thread does the same by wrapping the calls in this.
pub fn in_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

type T = Tensor<Cpu>;

impl Backend for Cpu {
    type Storage = CpuStorage;

    fn name(&self) -> String {
        match self.precision {
            Precision::F32 => "cpu".into(),
            Precision::Bf16 => "cpu (bf16 matmuls)".into(),
        }
    }

    fn zeros(&self, dims: &[usize]) -> Result<T> {
        let shape = Shape::new(dims);
        let n = shape.numel();
        Ok(Tensor::from_parts(shape, CpuStorage::new(vec![0.0; n])))
    }
    /// A frozen 2-D tensor (a linear layer's weight) is held packed for the frozen GEMM,
    /// which every later f32 `x·Wᵀ` with it reads instead of re-packing `W` (see
    /// [`CpuStorage`]: its values are rebuilt only if something reads them).
    fn freeze(&self, mut t: T) -> Result<T> {
        #[cfg(target_arch = "x86_64")]
        if let [n, k] = *t.dims() {
            if self.precision == Precision::F32 && frozen_gemm::available() {
                t.storage.pack(n, k);
            }
        }
        Ok(t)
    }
    fn upload(&self, host: &HostTensor) -> Result<T> {
        check::upload(host)?;
        Ok(Tensor::from_parts(
            host.shape.clone(),
            CpuStorage::new(host.data.clone()),
        ))
    }
    fn download(&self, t: &T) -> Result<HostTensor> {
        HostTensor::new(t.shape.clone(), t.storage.to_vec())
    }
    fn copy(&self, src: &T, dst: &mut T) -> Result<()> {
        check::same_numel("copy", ("src", src), ("dst", dst))?;
        dst.storage.copy_from_slice(&src.storage);
        Ok(())
    }
    fn fill(&self, t: &mut T, value: f32) -> Result<()> {
        t.storage.fill(value);
        Ok(())
    }

    fn axpy(&self, alpha: f32, x: &T, y: &mut T) -> Result<()> {
        check::same("axpy", ("x", x), ("y", y))?;
        elementwise::axpy(alpha, &x.storage, &mut y.storage);
        Ok(())
    }
    fn scale(&self, x: &mut T, alpha: f32) -> Result<()> {
        elementwise::scale(&mut x.storage, alpha);
        Ok(())
    }
    fn sum_squares(&self, x: &T) -> Result<f64> {
        Ok(elementwise::sum_squares(&x.storage))
    }

    fn matmul(
        &self,
        a: &T,
        b: &T,
        bias: Option<&T>,
        out: &mut T,
        layout: Layout,
        accumulate: bool,
    ) -> Result<()> {
        let dims = check::matmul(a, b, bias, out, layout)?;
        let bias = bias.map(|t| t.storage.as_slice());
        #[cfg(target_arch = "x86_64")]
        if let Some(w) = b.storage.packed() {
            // Only a 2-D weight is packed, so an NT product with it has one batch of m rows.
            if layout == Layout::NT && self.precision == Precision::F32 {
                debug_assert_eq!(w.dims(), (dims.n, dims.k));
                frozen_gemm::gemm(
                    &a.storage,
                    dims.m,
                    w,
                    bias,
                    &mut out.storage,
                    accumulate,
                    true,
                );
                return Ok(());
            }
        }
        matmul::matmul(
            &a.storage,
            &b.storage,
            bias,
            &mut out.storage,
            layout,
            dims,
            accumulate,
            self.precision,
        );
        Ok(())
    }
    fn bias_grad(&self, dy: &T, db: &mut T) -> Result<()> {
        let (r, n) = check::rows_and_vec("bias_grad", dy, db, "db")?;
        matmul::bias_grad(&dy.storage, r, n, &mut db.storage);
        Ok(())
    }

    fn layernorm_fwd(
        &self,
        x: &T,
        w: &T,
        b: &T,
        eps: f32,
        y: &mut T,
        mean: &mut T,
        rstd: &mut T,
    ) -> Result<()> {
        let (_, d) = check::layernorm_fwd(x, w, b, y, mean, rstd)?;
        norm::layernorm_fwd(
            &x.storage,
            &w.storage,
            &b.storage,
            d,
            eps,
            &mut y.storage,
            &mut mean.storage,
            &mut rstd.storage,
        );
        Ok(())
    }
    fn layernorm_bwd(
        &self,
        dy: &T,
        x: &T,
        w: &T,
        mean: &T,
        rstd: &T,
        dx: &mut T,
        dw: &mut T,
        db: &mut T,
        accumulate_dx: bool,
    ) -> Result<()> {
        let (_, d) = check::layernorm_bwd(dy, x, w, mean, rstd, dx, dw, db)?;
        norm::layernorm_bwd(
            norm::LnBwdIn {
                dy: &dy.storage,
                x: &x.storage,
                w: &w.storage,
                mean: &mean.storage,
                rstd: &rstd.storage,
                d,
            },
            &mut dx.storage,
            &mut dw.storage,
            &mut db.storage,
            accumulate_dx,
        );
        Ok(())
    }

    fn attention_fwd(
        &self,
        qkv: &T,
        heads: usize,
        scale: f32,
        out: &mut T,
        lse: &mut T,
    ) -> Result<()> {
        let s = check::attention_fwd(qkv, heads, out, lse)?;
        attention::softmax_fwd(
            self.precision,
            &qkv.storage,
            s,
            scale,
            &mut out.storage,
            &mut lse.storage,
        );
        Ok(())
    }
    fn attention_bwd(
        &self,
        dout: &T,
        qkv: &T,
        out: &T,
        lse: &T,
        heads: usize,
        scale: f32,
        dqkv: &mut T,
    ) -> Result<()> {
        let s = check::attention_bwd(dout, qkv, out, lse, heads, dqkv)?;
        attention::softmax_bwd(
            self.precision,
            &dout.storage,
            &qkv.storage,
            &out.storage,
            &lse.storage,
            s,
            scale,
            &mut dqkv.storage,
        );
        Ok(())
    }
    fn linear_attention_fwd(&self, qkv: &T, heads: usize, eps: f32, out: &mut T) -> Result<()> {
        let s = check::linear_attention_fwd(qkv, heads, eps, out)?;
        attention::linear_fwd(self.precision, &qkv.storage, s, eps, &mut out.storage);
        Ok(())
    }
    fn linear_attention_bwd(
        &self,
        dout: &T,
        qkv: &T,
        heads: usize,
        eps: f32,
        dqkv: &mut T,
    ) -> Result<()> {
        let s = check::linear_attention_bwd(dout, qkv, heads, eps, dqkv)?;
        attention::linear_bwd(
            self.precision,
            &dout.storage,
            &qkv.storage,
            s,
            eps,
            &mut dqkv.storage,
        );
        Ok(())
    }

    fn gelu_fwd(&self, x: &T, y: &mut T) -> Result<()> {
        check::same("gelu_fwd", ("x", x), ("y", y))?;
        elementwise::bias_gelu_fwd(&x.storage, None, &mut y.storage);
        Ok(())
    }
    fn gelu_bwd(&self, dy: &T, x: &T, dx: &mut T) -> Result<()> {
        check::gelu_bwd(dy, x, dx)?;
        elementwise::bias_gelu_bwd(&dy.storage, &x.storage, None, &mut dx.storage);
        Ok(())
    }
    fn bias_gelu_fwd(&self, x: &T, bias: &T, y: &mut T) -> Result<()> {
        check::bias_gelu_fwd(x, bias, y)?;
        elementwise::bias_gelu_fwd(&x.storage, Some(&bias.storage), &mut y.storage);
        Ok(())
    }
    fn bias_gelu_bwd(&self, dy: &T, x: &T, bias: &T, dx: &mut T, dbias: &mut T) -> Result<()> {
        let (r, n) = check::bias_gelu_bwd(dy, x, bias, dx, dbias)?;
        elementwise::bias_gelu_bwd(
            &dy.storage,
            &x.storage,
            Some(&bias.storage),
            &mut dx.storage,
        );
        matmul::bias_grad(&dx.storage, r, n, &mut dbias.storage);
        Ok(())
    }
    fn residual_fwd(&self, x: &T, y: &T, gamma: Option<&T>, out: &mut T) -> Result<()> {
        check::residual(
            "residual_fwd",
            ("x", x),
            ("y", y),
            ("out", out),
            gamma.map(|g| ("gamma", g)),
        )?;
        elementwise::residual_fwd(
            &x.storage,
            &y.storage,
            gamma.map(|g| g.storage.as_slice()),
            &mut out.storage,
        );
        Ok(())
    }
    fn residual_bwd(
        &self,
        dout: &T,
        y: &T,
        gamma: Option<&T>,
        dy: &mut T,
        dgamma: Option<&mut T>,
    ) -> Result<()> {
        let (r, _) = check::residual_bwd(dout, y, gamma, dy, dgamma.as_deref())?;
        elementwise::residual_bwd(
            &dout.storage,
            &y.storage,
            gamma.map(|g| g.storage.as_slice()),
            r,
            &mut dy.storage,
            dgamma.map(|g| g.storage.as_mut_slice()),
        );
        Ok(())
    }
    fn dropout_fwd(&self, x: &T, p: f32, seed: u64, out: &mut T) -> Result<()> {
        check::dropout("dropout_fwd", ("x", x), ("out", out), p)?;
        elementwise::dropout(&x.storage, p, seed, &mut out.storage);
        Ok(())
    }
    fn dropout_bwd(&self, dout: &T, p: f32, seed: u64, dx: &mut T) -> Result<()> {
        check::dropout("dropout_bwd", ("dout", dout), ("dx", dx), p)?;
        // The mask is a function of the element index, so the backward is the same map.
        elementwise::dropout(&dout.storage, p, seed, &mut dx.storage);
        Ok(())
    }

    fn patchify(&self, img: &T, patch: usize, out: &mut T) -> Result<()> {
        let dims = check::patchify(img, patch, out)?;
        tokens::patchify(&img.storage, dims, patch, &mut out.storage);
        Ok(())
    }
    fn embed_tokens_fwd(
        &self,
        emb: &T,
        cls: &T,
        pos: &T,
        regs: Option<&T>,
        out: &mut T,
    ) -> Result<()> {
        let s = check::embed_tokens("embed_tokens_fwd", emb, cls, pos, regs, out)?;
        tokens::embed_fwd(
            &emb.storage,
            &cls.storage,
            &pos.storage,
            regs.map(|r| r.storage.as_slice()),
            s,
            &mut out.storage,
        );
        Ok(())
    }
    fn embed_tokens_bwd(
        &self,
        dout: &T,
        demb: &mut T,
        dcls: &mut T,
        dpos: &mut T,
        dregs: Option<&mut T>,
    ) -> Result<()> {
        let s = check::embed_tokens("embed_tokens_bwd", demb, dcls, dpos, dregs.as_deref(), dout)?;
        tokens::embed_bwd(
            &dout.storage,
            s,
            &mut demb.storage,
            &mut dcls.storage,
            &mut dpos.storage,
            dregs.map(|r| r.storage.as_mut_slice()),
        );
        Ok(())
    }
    fn slice_tokens(&self, x: &T, start: usize, out: &mut T) -> Result<()> {
        let s = check::token_slice("slice_tokens", ("x", x), ("out", out), start)?;
        tokens::slice(&x.storage, s, start, &mut out.storage);
        Ok(())
    }
    fn unslice_tokens_add(&self, dout: &T, start: usize, dx: &mut T) -> Result<()> {
        let s = check::token_slice("unslice_tokens_add", ("dx", dx), ("dout", dout), start)?;
        tokens::unslice_add(&dout.storage, s, start, &mut dx.storage);
        Ok(())
    }
    fn group_mean_fwd(&self, xs: &[&T], out: &mut T) -> Result<()> {
        check::group("group_mean_fwd", xs, ("out", out))?;
        let xs: Vec<&[f32]> = xs.iter().map(|t| t.storage.as_slice()).collect();
        tokens::group_mean_fwd(&xs, &mut out.storage);
        Ok(())
    }
    fn group_mean_bwd(&self, dout: &T, dxs: &mut [&mut T]) -> Result<()> {
        let views: Vec<&T> = dxs.iter().map(|t| &**t).collect();
        check::group("group_mean_bwd", &views, ("dout", dout))?;
        let alpha = 1.0 / dxs.len() as f32;
        for dx in dxs.iter_mut() {
            elementwise::axpy(alpha, &dout.storage, &mut dx.storage);
        }
        Ok(())
    }

    fn cosine_distance_fwd(&self, a: &T, b: &T, d: &mut T) -> Result<()> {
        let (_, c) = check::cosine_distance("cosine_distance_fwd", a, b, ("d", d))?;
        loss::cosine_distance_fwd(&a.storage, &b.storage, c, &mut d.storage);
        Ok(())
    }
    fn cosine_distance_bwd(&self, dd: &T, a: &T, b: &T, db: &mut T) -> Result<()> {
        let (_, c) = check::cosine_distance_bwd(dd, a, b, db)?;
        loss::cosine_distance_bwd(&dd.storage, &a.storage, &b.storage, c, &mut db.storage);
        Ok(())
    }
    fn global_cosine_fwd(
        &self,
        a: &T,
        b: &T,
        loss: &mut T,
        point_dist: &mut T,
        stats: &mut T,
    ) -> Result<()> {
        let dims = check::global_cosine_fwd(a, b, loss, point_dist, stats)?;
        loss::global_cosine_fwd(
            &a.storage,
            &b.storage,
            dims,
            &mut loss.storage[0],
            &mut point_dist.storage,
            &mut stats.storage,
        );
        Ok(())
    }
    fn global_cosine_bwd(
        &self,
        a: &T,
        b: &T,
        point_dist: &T,
        stats: &T,
        p: f32,
        factor: f32,
        dloss: f32,
        db: &mut T,
    ) -> Result<()> {
        let (dims, k) = check::global_cosine_bwd(a, b, point_dist, stats, p, db)?;
        loss::global_cosine_bwd(
            loss::GlobalCosineBwd {
                a: &a.storage,
                b: &b.storage,
                point_dist: &point_dist.storage,
                stats: &stats.storage,
                dims,
                k,
                factor,
                dloss,
            },
            &mut db.storage,
        );
        Ok(())
    }

    fn adamw_step(
        &self,
        param: &mut T,
        grad: &T,
        m: &mut T,
        v: &mut T,
        vmax: Option<&mut T>,
        hp: &AdamStep,
    ) -> Result<()> {
        check::adam("adamw_step", param, grad, m, v, vmax.as_deref(), hp)?;
        let state = optim::AdamState {
            m: &mut m.storage,
            v: &mut v.storage,
            vmax: vmax.map(|t| t.storage.as_mut_slice()),
        };
        optim::adam_step(&mut param.storage, &grad.storage, state, hp, false);
        Ok(())
    }
    fn stable_adamw_step(
        &self,
        param: &mut T,
        grad: &T,
        m: &mut T,
        v: &mut T,
        vmax: Option<&mut T>,
        hp: &AdamStep,
    ) -> Result<()> {
        check::adam("stable_adamw_step", param, grad, m, v, vmax.as_deref(), hp)?;
        let state = optim::AdamState {
            m: &mut m.storage,
            v: &mut v.storage,
            vmax: vmax.map(|t| t.storage.as_mut_slice()),
        };
        optim::adam_step(&mut param.storage, &grad.storage, state, hp, true);
        Ok(())
    }

    fn resize(&self, x: &T, interp: Interp, out: &mut T) -> Result<()> {
        let dims = check::resize(x, out)?;
        check::resize_interp(interp)?;
        image::resize(&x.storage, dims, interp, &mut out.storage);
        Ok(())
    }
    fn gaussian_blur(&self, x: &T, sigma: f32, ksize: usize, out: &mut T) -> Result<()> {
        let dims = check::gaussian_blur(x, sigma, ksize, out)?;
        image::gaussian_blur(&x.storage, dims, sigma, ksize, &mut out.storage);
        Ok(())
    }
    fn topk_mean(&self, x: &T, k: usize, out: &mut T) -> Result<()> {
        let (_, m) = check::topk_mean(x, k, out)?;
        image::topk_mean(&x.storage, m, k, &mut out.storage);
        Ok(())
    }
}
