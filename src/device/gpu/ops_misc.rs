//! Token, dropout, optimiser and image ops of [`GpuBackend`]: shape checks and launches.

use super::backend::{f32_only, opt, p, T};
use super::launch::{f32, grid_1d, int, ptr};
use super::{GpuBackend, KernelArg, Launcher};
use crate::device::{check, AdamStep, Interp};
use crate::error::Result;

impl<L: Launcher> GpuBackend<L> {
    /// Inverted dropout (forward and backward alike); operands checked by the caller.
    pub(super) fn dropout(&self, x: &T<L>, p_drop: f32, seed: u64, out: &T<L>) -> Result<()> {
        self.launch_1d(
            "dropout",
            x.numel(),
            &[p(x), p(out), f32(p_drop), KernelArg::U64(seed)],
        )
    }

    pub(super) fn patchify_op(&self, img: &T<L>, patch: usize, out: &mut T<L>) -> Result<()> {
        const OP: &str = "patchify";
        let (_, c, h, w) = check::patchify(img, patch, out)?;
        let args = [
            p(img),
            p(out),
            int(OP, c)?,
            int(OP, h)?,
            int(OP, w)?,
            int(OP, patch)?,
        ];
        self.launch_1d("patchify", out.numel(), &args)
    }

    pub(super) fn embed_fwd(
        &self,
        emb: &T<L>,
        cls: &T<L>,
        pos: &T<L>,
        regs: Option<&T<L>>,
        out: &mut T<L>,
    ) -> Result<()> {
        const OP: &str = "embed_tokens_fwd";
        let s = check::embed_tokens(OP, emb, cls, pos, regs, out)?;
        let (np, nr, d) = (s.patches, s.regs, s.dim);
        let args = [
            p(emb),
            p(cls),
            p(pos),
            opt(regs),
            p(out),
            int(OP, np)?,
            int(OP, nr)?,
            int(OP, d)?,
        ];
        self.launch_1d("embed_tokens_fwd", out.numel(), &args)
    }

    pub(super) fn embed_bwd(
        &self,
        dout: &T<L>,
        demb: &mut T<L>,
        dcls: &mut T<L>,
        dpos: &mut T<L>,
        dregs: Option<&mut T<L>>,
    ) -> Result<()> {
        const OP: &str = "embed_tokens_bwd";
        let s = check::embed_tokens(OP, demb, dcls, dpos, dregs.as_deref(), dout)?;
        let (b, np, nr, d) = (s.batch, s.patches, s.regs, s.dim);
        // The patch rows of dout are demb itself.
        self.slice_op("slice_tokens", dout, demb, (1 + nr + np, np, d), 1 + nr)?;
        let args = [
            p(dout),
            p(dcls),
            p(dpos),
            opt(dregs.as_deref()),
            int(OP, b)?,
            int(OP, np)?,
            int(OP, nr)?,
            int(OP, d)?,
        ];
        self.launch_1d("embed_tokens_bwd_params", (1 + nr + np) * d, &args)
    }

    /// `slice_tokens` (`part = full[:, start..start+M]`) or `unslice_tokens_add`
    /// (`full[:, start..start+M] += part`), `full [B, N, D]`, `part [B, M, D]`, checked by
    /// the caller; (n, m, d) = (N, M, D).
    pub(super) fn slice_op(
        &self,
        kernel: &'static str,
        full: &T<L>,
        part: &T<L>,
        (n, m, d): (usize, usize, usize),
        start: usize,
    ) -> Result<()> {
        let args = [
            p(full),
            p(part),
            int(kernel, n)?,
            int(kernel, m)?,
            int(kernel, d)?,
            int(kernel, start)?,
        ];
        self.launch_1d(kernel, part.numel(), &args)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn adam(
        &self,
        stable: bool,
        param: &mut T<L>,
        grad: &T<L>,
        m: &mut T<L>,
        v: &mut T<L>,
        vmax: Option<&mut T<L>>,
        hp: &AdamStep,
    ) -> Result<()> {
        let op = if stable {
            "stable_adamw_step"
        } else {
            "adamw_step"
        };
        let n = check::adam(op, param, grad, m, v, vmax.as_deref(), hp)?;
        // Master weights and moments are f32 by design; the kernels take `float*`.
        f32_only(
            op,
            &[
                ("param", Some(param)),
                ("grad", Some(grad)),
                ("m", Some(m)),
                ("v", Some(v)),
                ("vmax", vmax.as_deref()),
            ],
        )?;
        if n == 0 {
            return Ok(());
        }
        // Bias corrections in f64: beta^t underflows gracefully and 1 - beta2^t keeps its
        // digits for small t.
        let t = hp.t.min(i32::MAX as u64) as i32;
        let bc1 = 1.0 - (hp.beta1 as f64).powi(t);
        let bc2_sqrt = (1.0 - (hp.beta2 as f64).powi(t)).sqrt();
        let vmax_arg = opt(vmax.as_deref());
        let hyper = [
            f32(hp.beta1),
            f32(hp.beta2),
            f32(hp.eps),
            f32(bc2_sqrt as f32),
        ];
        let mut args = vec![
            p(param),
            p(grad),
            p(m),
            p(v),
            vmax_arg,
            f32(hp.lr),
            f32(hp.weight_decay),
            f32(bc1 as f32),
        ];
        args.extend(hyper);
        if !stable {
            return self.launch_1d("adamw_step", n, &args);
        }
        // Pass 1: per-block partial sums of (g / denom)² with the updated moments; pass 2
        // sums the partials in every block (no host round trip) and applies the update.
        let rms_args = [p(grad), p(v), vmax_arg, hyper[1], hyper[2], hyper[3]];
        let (partials, blocks) = self.launch_partials("stable_adamw_rms", n, &rms_args)?;
        args.extend([ptr(partials.ptr()), int(op, blocks)?, int(op, n)?]);
        self.launch("stable_adamw_step", grid_1d(n), &args)
    }

    pub(super) fn resize_op(&self, x: &T<L>, interp: Interp, out: &mut T<L>) -> Result<()> {
        const OP: &str = "resize";
        let (_, h, w, h2, w2) = check::resize(x, out)?;
        f32_only(OP, &[("x", Some(x)), ("out", Some(out))])?;
        if let Interp::Bicubic {
            scale: Some((sh, sw)),
        } = interp
        {
            check::arg(OP, sh > 0.0 && sw > 0.0, || {
                format!("scale factors ({sh}, {sw}) must be positive")
            })?;
        }
        // Source-pixel step per output pixel, as PyTorch's `area_pixel_compute_scale` (in
        // f32, as its CPU kernels for f32 tensors).
        let step = |inp: usize, out: usize, align: bool, factor: Option<f64>| -> f32 {
            match (align, factor) {
                (true, _) if out > 1 => (inp as f64 - 1.0) as f32 / (out as f64 - 1.0) as f32,
                (true, _) => 0.0,
                (false, Some(f)) => (1.0 / f) as f32,
                (false, None) => inp as f32 / out as f32,
            }
        };
        let mut args = vec![
            p(x),
            p(out),
            int(OP, h)?,
            int(OP, w)?,
            int(OP, h2)?,
            int(OP, w2)?,
        ];
        let kernel = match interp {
            Interp::Bilinear { align_corners } => {
                let (sh, sw) = (
                    step(h, h2, align_corners, None),
                    step(w, w2, align_corners, None),
                );
                args.extend([f32(sh), f32(sw), KernelArg::I32(align_corners as i32)]);
                "resize_bilinear"
            }
            Interp::Bicubic { scale } => {
                let (sh, sw) = (
                    step(h, h2, false, scale.map(|s| s.0)),
                    step(w, w2, false, scale.map(|s| s.1)),
                );
                args.extend([f32(sh), f32(sw)]);
                "resize_bicubic"
            }
        };
        self.launch_1d(kernel, out.numel(), &args)
    }

    pub(super) fn blur_op(&self, x: &T<L>, sigma: f32, ksize: usize, out: &mut T<L>) -> Result<()> {
        const OP: &str = "gaussian_blur";
        let (_, h, w) = check::gaussian_blur(x, sigma, ksize, out)?;
        f32_only(OP, &[("x", Some(x)), ("out", Some(out))])?;
        let args = [
            p(x),
            p(out),
            int(OP, h)?,
            int(OP, w)?,
            int(OP, ksize)?,
            f32(sigma),
        ];
        self.launch_1d("gaussian_blur", out.numel(), &args)
    }
}
