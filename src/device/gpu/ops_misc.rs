//! Token, dropout and image ops of [`GpuBackend`]: shape checks and launches.

use super::backend::{f32_only, opt, p, T};
use super::launch::{f32, int};
use super::{GpuBackend, KernelArg, Launcher};
use crate::device::{check, Interp};
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
