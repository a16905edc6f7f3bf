//! Every GPU op on the emulated device against the CPU backend (the reference), with fresh
//! random inputs of odd sizes (no multiple of a tile, a warp or a vector width unless a test
//! says why), and every written output poisoned with NaN before the launch so that an element
//! a kernel forgets to write fails the comparison.
//!
//! Tolerances (|gpu - cpu| <= atol + rtol·|cpu|), by what differs between the two sides:
//! * `EXACT` (0): the kernel does the same f32 operations in the same order (copies, gathers,
//!   dropout's mask and scale, single adds and multiplies).
//! * `ELEMENTWISE` (1e-6 rel, 1e-7 abs): one transcendental (erff, expf) from another libm.
//! * `REDUCE` (2e-5 rel, 2e-5 abs): sums of ≤ a few hundred O(1) terms accumulated in f32 in
//!   another order than the CPU's f64 (error ~ n·2^-24·Σ|terms| ≈ 1e-5 at worst here).
//! * GEMM: the GPU rounds both operands to bf16, so the reference is the CPU product of the
//!   bf16-rounded inputs; what remains is f32 accumulation order: `REDUCE`.

use kdad::device::cpu::Cpu;
use kdad::device::gpu::emu::Emu;
use kdad::device::gpu::GpuBackend;
use kdad::device::{AdamStep, Backend, Interp, Layout, Tensor};
use kdad::tensor::{HostTensor, Rng};
use kdad::Error;

type Gpu = GpuBackend<Emu>;

#[derive(Clone, Copy)]
struct Tol {
    atol: f32,
    rtol: f32,
}
const EXACT: Tol = Tol {
    atol: 0.0,
    rtol: 0.0,
};
const ELEMENTWISE: Tol = Tol {
    atol: 1e-7,
    rtol: 1e-6,
};
const REDUCE: Tol = Tol {
    atol: 2e-5,
    rtol: 2e-5,
};

/// The two backends and a random source; tensors come in (cpu, gpu) pairs.
struct Pair {
    cpu: Cpu,
    gpu: Gpu,
    rng: Rng,
}

struct Both {
    c: Tensor<Cpu>,
    g: Tensor<Gpu>,
}

impl Pair {
    fn new(seed: u64) -> Self {
        Pair {
            cpu: Cpu::new(),
            gpu: GpuBackend::new(Emu::new()),
            rng: Rng::new(seed),
        }
    }
    fn upload(&self, h: &HostTensor) -> Both {
        Both {
            c: self.cpu.upload(h).unwrap(),
            g: self.gpu.upload(h).unwrap(),
        }
    }
    /// Uniform in [-1, 1).
    fn rand(&mut self, dims: &[usize]) -> Both {
        let h = self.rng.tensor(dims, -1.0, 1.0);
        self.upload(&h)
    }
    fn rand_in(&mut self, dims: &[usize], lo: f32, hi: f32) -> Both {
        let h = self.rng.tensor(dims, lo, hi);
        self.upload(&h)
    }
    /// A written output: NaN on the GPU side, so unwritten elements fail.
    fn out(&self, dims: &[usize]) -> Both {
        Both {
            c: self.cpu.zeros(dims).unwrap(),
            g: self
                .gpu
                .upload(&HostTensor::filled(dims, f32::NAN))
                .unwrap(),
        }
    }
}

fn assert_close(what: &str, cpu: &HostTensor, gpu: &HostTensor, tol: Tol) {
    assert_eq!(cpu.shape, gpu.shape, "{what}: shapes");
    for (i, (&c, &g)) in cpu.data.iter().zip(&gpu.data).enumerate() {
        let err = (g - c).abs();
        let ok = err <= tol.atol + tol.rtol * c.abs();
        assert!(
            ok && !g.is_nan(),
            "{what}[{i}]: gpu {g} vs cpu {c} (|diff| {err})"
        );
    }
}

fn check(p: &Pair, what: &str, t: &Both, tol: Tol) {
    let c = p.cpu.download(&t.c).unwrap();
    let g = p.gpu.download(&t.g).unwrap();
    assert_close(what, &c, &g, tol);
}

#[test]
fn memory_roundtrip_copy_fill() {
    let mut p = Pair::new(1);
    let x = p.rand(&[3, 7, 5]);
    check(&p, "upload", &x, EXACT);
    let mut y = p.out(&[105]);
    p.cpu.copy(&x.c, &mut y.c).unwrap();
    p.gpu.copy(&x.g, &mut y.g).unwrap();
    check(&p, "copy", &y, EXACT);
    p.cpu.fill(&mut y.c, 2.5).unwrap();
    p.gpu.fill(&mut y.g, 2.5).unwrap();
    check(&p, "fill", &y, EXACT);
    let z = Both {
        c: p.cpu.zeros(&[0, 3]).unwrap(),
        g: p.gpu.zeros(&[0, 3]).unwrap(),
    };
    check(&p, "empty", &z, EXACT);
}

#[test]
fn axpy_scale_sum_squares() {
    let mut p = Pair::new(2);
    let x = p.rand(&[13, 29]);
    let mut y = p.rand(&[13, 29]);
    p.cpu.axpy(-0.7, &x.c, &mut y.c).unwrap();
    p.gpu.axpy(-0.7, &x.g, &mut y.g).unwrap();
    check(&p, "axpy", &y, EXACT);
    p.cpu.scale(&mut y.c, 1.3).unwrap();
    p.gpu.scale(&mut y.g, 1.3).unwrap();
    check(&p, "scale", &y, EXACT);
    let big = p.rand(&[70_001]);
    let (c, g) = (
        p.cpu.sum_squares(&big.c).unwrap(),
        p.gpu.sum_squares(&big.g).unwrap(),
    );
    // Both sum f32 squares in f64, in different orders.
    assert!((c - g).abs() <= 1e-12 * c, "sum_squares {g} vs {c}");
}

/// A GEMM case: a, b dims, layout, optional bias, accumulate.
fn gemm_case(
    p: &mut Pair,
    a_dims: &[usize],
    b_dims: &[usize],
    out_dims: &[usize],
    layout: Layout,
    bias: bool,
    acc: bool,
) {
    let a = p.rng.tensor(a_dims, -1.0, 1.0).round_bf16();
    let b = p.rng.tensor(b_dims, -1.0, 1.0).round_bf16();
    let (a, b) = (p.upload(&a), p.upload(&b));
    let n = out_dims[out_dims.len() - 1];
    let bias = bias.then(|| p.rand(&[n]));
    let mut out = if acc {
        p.rand(out_dims)
    } else {
        p.out(out_dims)
    };
    p.cpu
        .matmul(
            &a.c,
            &b.c,
            bias.as_ref().map(|t| &t.c),
            &mut out.c,
            layout,
            acc,
        )
        .unwrap();
    p.gpu
        .matmul(
            &a.g,
            &b.g,
            bias.as_ref().map(|t| &t.g),
            &mut out.g,
            layout,
            acc,
        )
        .unwrap();
    check(
        p,
        &format!("matmul {layout:?} {a_dims:?}x{b_dims:?}"),
        &out,
        REDUCE,
    );
}

#[test]
fn matmul_layouts_bias_accumulate() {
    let mut p = Pair::new(3);
    gemm_case(
        &mut p,
        &[2, 9, 37],
        &[11, 37],
        &[2, 9, 11],
        Layout::NT,
        true,
        false,
    );
    gemm_case(
        &mut p,
        &[17, 37],
        &[37, 13],
        &[17, 13],
        Layout::NN,
        false,
        true,
    );
    gemm_case(
        &mut p,
        &[3, 7, 19],
        &[3, 7, 23],
        &[19, 23],
        Layout::TN,
        false,
        true,
    );
    gemm_case(
        &mut p,
        &[5, 9, 21],
        &[5, 21, 7],
        &[5, 9, 7],
        Layout::NN,
        true,
        false,
    );
    gemm_case(
        &mut p,
        &[5, 9, 21],
        &[5, 7, 21],
        &[5, 9, 7],
        Layout::NT,
        false,
        false,
    );
    gemm_case(
        &mut p,
        &[5, 21, 9],
        &[5, 21, 7],
        &[5, 9, 7],
        Layout::TN,
        false,
        false,
    );
}

/// A bias added while accumulating into a bf16 output, from a bf16 bias: the GEMM's epilogue
/// adds the (widened) bias to the f32 sum of the old value and the product, and rounds once.
#[test]
fn matmul_bias_accumulate_into_bf16() {
    let mut p = Pair::new(4);
    let (m, n, k) = (9, 11, 37);
    let a = p.rng.tensor(&[2, m, k][..], -1.0, 1.0).round_bf16();
    let b = p.rng.tensor(&[n, k][..], -1.0, 1.0).round_bf16();
    let bias = p.rng.tensor(&[n][..], -1.0, 1.0).round_bf16();
    let init = p.rng.tensor(&[2, m, n][..], -1.0, 1.0).round_bf16();
    let cpu = |h: &HostTensor| p.cpu.upload(h).unwrap();
    let mut want = cpu(&init);
    p.cpu
        .matmul(
            &cpu(&a),
            &cpu(&b),
            Some(&cpu(&bias)),
            &mut want,
            Layout::NT,
            true,
        )
        .unwrap();
    let want = p.cpu.download(&want).unwrap().round_bf16();
    let bf16 = |h: &HostTensor| {
        let mut t = p.gpu.zeros_activation(h.dims()).unwrap();
        p.gpu.copy(&p.gpu.upload(h).unwrap(), &mut t).unwrap();
        t
    };
    let mut got = bf16(&init);
    p.gpu
        .matmul(
            &bf16(&a),
            &p.gpu.upload(&b).unwrap(),
            Some(&bf16(&bias)),
            &mut got,
            Layout::NT,
            true,
        )
        .unwrap();
    let got = p.gpu.download(&got).unwrap();
    // The two f32 sums may differ in their last bits and so round to neighbouring bf16
    // values: one bf16 step (2⁻⁸ relative) apart at most.
    let tol = Tol {
        atol: 1e-6,
        rtol: 1.0 / 128.0,
    };
    assert_close("matmul bias + accumulate into bf16", &want, &got, tol);
}

#[test]
fn bias_grad_adds() {
    let mut p = Pair::new(4);
    let dy = p.rand(&[3, 41, 45]);
    let mut db = p.rand(&[45]);
    p.cpu.bias_grad(&dy.c, &mut db.c).unwrap();
    p.gpu.bias_grad(&dy.g, &mut db.g).unwrap();
    check(&p, "bias_grad", &db, REDUCE);
}

#[test]
fn layernorm_fwd_bwd() {
    // d = 45 takes the scalar path, d = 44 the float4 path; 87 rows make two row slices of
    // the dw/db reduction.
    for (seed, d) in [(5u64, 45usize), (6, 44)] {
        let mut p = Pair::new(seed);
        let x = p.rand_in(&[3, 29, d], -2.0, 3.0);
        let (w, b) = (p.rand(&[d]), p.rand(&[d]));
        let (mut y, mut mean, mut rstd) = (p.out(&[3, 29, d]), p.out(&[3, 29]), p.out(&[87]));
        p.cpu
            .layernorm_fwd(&x.c, &w.c, &b.c, 1e-6, &mut y.c, &mut mean.c, &mut rstd.c)
            .unwrap();
        p.gpu
            .layernorm_fwd(&x.g, &w.g, &b.g, 1e-6, &mut y.g, &mut mean.g, &mut rstd.g)
            .unwrap();
        check(&p, "ln y", &y, REDUCE);
        check(&p, "ln mean", &mean, REDUCE);
        check(&p, "ln rstd", &rstd, REDUCE);
        let dy = p.rand(&[3, 29, d]);
        for acc in [false, true] {
            let mut dx = if acc {
                p.rand(&[3, 29, d])
            } else {
                p.out(&[3, 29, d])
            };
            let (mut dw, mut db) = (p.rand(&[d]), p.rand(&[d]));
            // The same saved statistics on both sides (the CPU's), so only the backward differs.
            let mean_h = p.cpu.download(&mean.c).unwrap();
            let rstd_h = p.cpu.download(&rstd.c).unwrap();
            let (m, r) = (p.upload(&mean_h), p.upload(&rstd_h));
            p.cpu
                .layernorm_bwd(
                    &dy.c, &x.c, &w.c, &m.c, &r.c, &mut dx.c, &mut dw.c, &mut db.c, acc,
                )
                .unwrap();
            p.gpu
                .layernorm_bwd(
                    &dy.g, &x.g, &w.g, &m.g, &r.g, &mut dx.g, &mut dw.g, &mut db.g, acc,
                )
                .unwrap();
            check(&p, "ln dx", &dx, REDUCE);
            check(&p, "ln dw", &dw, REDUCE);
            check(&p, "ln db", &db, REDUCE);
        }
    }
}

#[test]
fn gelu_and_bias_gelu() {
    let mut p = Pair::new(7);
    let x = p.rand_in(&[7, 31], -4.0, 4.0);
    let bias = p.rand(&[31]);
    let dy = p.rand(&[7, 31]);
    let mut y = p.out(&[7, 31]);
    p.cpu.gelu_fwd(&x.c, &mut y.c).unwrap();
    p.gpu.gelu_fwd(&x.g, &mut y.g).unwrap();
    check(&p, "gelu", &y, ELEMENTWISE);
    let mut dx = p.out(&[7, 31]);
    p.cpu.gelu_bwd(&dy.c, &x.c, &mut dx.c).unwrap();
    p.gpu.gelu_bwd(&dy.g, &x.g, &mut dx.g).unwrap();
    check(&p, "gelu_bwd", &dx, ELEMENTWISE);
    let mut y = p.out(&[7, 31]);
    p.cpu.bias_gelu_fwd(&x.c, &bias.c, &mut y.c).unwrap();
    p.gpu.bias_gelu_fwd(&x.g, &bias.g, &mut y.g).unwrap();
    check(&p, "bias_gelu", &y, ELEMENTWISE);
    let (mut dx, mut db) = (p.out(&[7, 31]), p.rand(&[31]));
    p.cpu
        .bias_gelu_bwd(&dy.c, &x.c, &bias.c, &mut dx.c, &mut db.c)
        .unwrap();
    p.gpu
        .bias_gelu_bwd(&dy.g, &x.g, &bias.g, &mut dx.g, &mut db.g)
        .unwrap();
    check(&p, "bias_gelu dx", &dx, ELEMENTWISE);
    check(&p, "bias_gelu dbias", &db, REDUCE);
}

#[test]
fn residual_layerscale() {
    let mut p = Pair::new(8);
    let (x, y, gamma, dout) = (
        p.rand(&[5, 9, 23]),
        p.rand(&[5, 9, 23]),
        p.rand(&[23]),
        p.rand(&[5, 9, 23]),
    );
    for with_gamma in [true, false] {
        let g = with_gamma.then_some(&gamma);
        let mut out = p.out(&[5, 9, 23]);
        p.cpu
            .residual_fwd(&x.c, &y.c, g.map(|t| &t.c), &mut out.c)
            .unwrap();
        p.gpu
            .residual_fwd(&x.g, &y.g, g.map(|t| &t.g), &mut out.g)
            .unwrap();
        check(&p, "residual_fwd", &out, EXACT);
        let mut dy = p.out(&[5, 9, 23]);
        let mut dgamma = p.rand(&[23]);
        let (dgc, dgg) = if with_gamma {
            (Some(&mut dgamma.c), Some(&mut dgamma.g))
        } else {
            (None, None)
        };
        p.cpu
            .residual_bwd(&dout.c, &y.c, g.map(|t| &t.c), &mut dy.c, dgc)
            .unwrap();
        p.gpu
            .residual_bwd(&dout.g, &y.g, g.map(|t| &t.g), &mut dy.g, dgg)
            .unwrap();
        check(&p, "residual dy", &dy, EXACT);
        check(&p, "residual dgamma", &dgamma, REDUCE);
    }
}

#[test]
fn dropout_matches_the_rng_bit_for_bit() {
    let mut p = Pair::new(9);
    let x = p.rand(&[11, 37]);
    let mut out = p.out(&[11, 37]);
    p.cpu
        .dropout_fwd(&x.c, 0.3, 0xDEAD_BEEF_1234, &mut out.c)
        .unwrap();
    p.gpu
        .dropout_fwd(&x.g, 0.3, 0xDEAD_BEEF_1234, &mut out.g)
        .unwrap();
    check(&p, "dropout_fwd", &out, EXACT);
    let zeros = p
        .gpu
        .download(&out.g)
        .unwrap()
        .data
        .iter()
        .filter(|v| **v == 0.0)
        .count();
    assert!(
        (60..=185).contains(&zeros),
        "{zeros} of 407 dropped at p = 0.3"
    );
    let mut dx = p.out(&[11, 37]);
    p.cpu.dropout_bwd(&x.c, 0.3, 77, &mut dx.c).unwrap();
    p.gpu.dropout_bwd(&x.g, 0.3, 77, &mut dx.g).unwrap();
    check(&p, "dropout_bwd", &dx, EXACT);
}

#[test]
fn tokens_patchify_embed_slice_group() {
    let mut p = Pair::new(10);
    let img = p.rand(&[2, 3, 14, 21]);
    let mut patches = p.out(&[2, 6, 3 * 49]);
    p.cpu.patchify(&img.c, 7, &mut patches.c).unwrap();
    p.gpu.patchify(&img.g, 7, &mut patches.g).unwrap();
    check(&p, "patchify", &patches, EXACT);

    for regs in [0usize, 3] {
        let (emb, cls, pos) = (p.rand(&[2, 6, 19]), p.rand(&[19]), p.rand(&[7, 19]));
        let reg = (regs > 0).then(|| p.rand(&[regs, 19]));
        let tokens = 1 + regs + 6;
        let mut out = p.out(&[2, tokens, 19]);
        p.cpu
            .embed_tokens_fwd(
                &emb.c,
                &cls.c,
                &pos.c,
                reg.as_ref().map(|r| &r.c),
                &mut out.c,
            )
            .unwrap();
        p.gpu
            .embed_tokens_fwd(
                &emb.g,
                &cls.g,
                &pos.g,
                reg.as_ref().map(|r| &r.g),
                &mut out.g,
            )
            .unwrap();
        check(&p, "embed_fwd", &out, EXACT);
        let dout = p.rand(&[2, tokens, 19]);
        let (mut demb, mut dcls, mut dpos) = (p.out(&[2, 6, 19]), p.rand(&[19]), p.rand(&[7, 19]));
        let mut dreg = (regs > 0).then(|| p.rand(&[regs, 19]));
        let (drc, drg) = match dreg.as_mut() {
            Some(d) => (Some(&mut d.c), Some(&mut d.g)),
            None => (None, None),
        };
        p.cpu
            .embed_tokens_bwd(&dout.c, &mut demb.c, &mut dcls.c, &mut dpos.c, drc)
            .unwrap();
        p.gpu
            .embed_tokens_bwd(&dout.g, &mut demb.g, &mut dcls.g, &mut dpos.g, drg)
            .unwrap();
        check(&p, "embed demb", &demb, EXACT);
        check(&p, "embed dcls", &dcls, REDUCE);
        check(&p, "embed dpos", &dpos, REDUCE);
        if let Some(d) = &dreg {
            check(&p, "embed dregs", d, REDUCE);
        }
    }

    let x = p.rand(&[3, 13, 17]);
    let mut part = p.out(&[3, 5, 17]);
    p.cpu.slice_tokens(&x.c, 4, &mut part.c).unwrap();
    p.gpu.slice_tokens(&x.g, 4, &mut part.g).unwrap();
    check(&p, "slice", &part, EXACT);
    let mut full = p.rand(&[3, 13, 17]);
    p.cpu.unslice_tokens_add(&part.c, 8, &mut full.c).unwrap();
    p.gpu.unslice_tokens_add(&part.g, 8, &mut full.g).unwrap();
    check(&p, "unslice", &full, EXACT);

    let xs: Vec<Both> = (0..3).map(|_| p.rand(&[4, 19])).collect();
    let mut mean = p.out(&[4, 19]);
    p.cpu
        .group_mean_fwd(&xs.iter().map(|t| &t.c).collect::<Vec<_>>(), &mut mean.c)
        .unwrap();
    p.gpu
        .group_mean_fwd(&xs.iter().map(|t| &t.g).collect::<Vec<_>>(), &mut mean.g)
        .unwrap();
    check(&p, "group_mean", &mean, ELEMENTWISE);
    let dout = p.rand(&[4, 19]);
    let mut dxs: Vec<Both> = (0..3).map(|_| p.rand(&[4, 19])).collect();
    p.cpu
        .group_mean_bwd(
            &dout.c,
            &mut dxs.iter_mut().map(|t| &mut t.c).collect::<Vec<_>>(),
        )
        .unwrap();
    p.gpu
        .group_mean_bwd(
            &dout.g,
            &mut dxs.iter_mut().map(|t| &mut t.g).collect::<Vec<_>>(),
        )
        .unwrap();
    for d in &dxs {
        check(&p, "group_mean_bwd", d, EXACT);
    }
}

#[test]
fn cosine_distance_fwd_bwd() {
    let mut p = Pair::new(11);
    let (a, b) = (p.rand(&[3, 13, 37]), p.rand(&[3, 13, 37]));
    let mut d = p.out(&[3, 13]);
    p.cpu.cosine_distance_fwd(&a.c, &b.c, &mut d.c).unwrap();
    p.gpu.cosine_distance_fwd(&a.g, &b.g, &mut d.g).unwrap();
    check(&p, "cosine d", &d, REDUCE);
    let dd = p.rand(&[39]);
    let mut db = p.out(&[3, 13, 37]);
    p.cpu
        .cosine_distance_bwd(&dd.c, &a.c, &b.c, &mut db.c)
        .unwrap();
    p.gpu
        .cosine_distance_bwd(&dd.g, &a.g, &b.g, &mut db.g)
        .unwrap();
    check(&p, "cosine db", &db, REDUCE);
}

#[test]
fn global_cosine_with_hard_mining() {
    // 609 values per image fit one block of the stats reduction; 4757 take two slices.
    for (seed, [bsz, t, c]) in [(12u64, [3usize, 29, 21]), (25, [2, 67, 71])] {
        let mut p = Pair::new(seed);
        let (a, b) = (p.rand(&[bsz, t, c]), p.rand(&[bsz, t, c]));
        let (mut loss, mut pd, mut stats) = (p.out(&[1]), p.out(&[bsz, t]), p.out(&[bsz, 3]));
        p.cpu
            .global_cosine_fwd(&a.c, &b.c, &mut loss.c, &mut pd.c, &mut stats.c)
            .unwrap();
        p.gpu
            .global_cosine_fwd(&a.g, &b.g, &mut loss.g, &mut pd.g, &mut stats.g)
            .unwrap();
        check(&p, "global loss", &loss, REDUCE);
        check(&p, "global point_dist", &pd, REDUCE);
        check(&p, "global stats", &stats, REDUCE);
        // The backward gets the CPU's distances and stats on both sides, so the hard-mining
        // selection sees identical values and only the kernels are compared.
        let pd_h = p.cpu.download(&pd.c).unwrap();
        let stats_h = p.cpu.download(&stats.c).unwrap();
        let (pd, stats) = (p.upload(&pd_h), p.upload(&stats_h));
        for hard in [0.0f32, 0.37, 0.9, 1.0] {
            let mut db = p.out(&[bsz, t, c]);
            p.cpu
                .global_cosine_bwd(&a.c, &b.c, &pd.c, &stats.c, hard, 0.1, 1.7, &mut db.c)
                .unwrap();
            p.gpu
                .global_cosine_bwd(&a.g, &b.g, &pd.g, &stats.g, hard, 0.1, 1.7, &mut db.g)
                .unwrap();
            check(&p, &format!("global db p={hard}"), &db, REDUCE);
        }
    }
}

#[test]
fn adamw_and_stable_adamw() {
    for (seed, stable, amsgrad) in [
        (13u64, false, false),
        (14, false, true),
        (15, true, true),
        (16, true, false),
    ] {
        let mut p = Pair::new(seed);
        let mut param = p.rand(&[37, 11]);
        let grad = p.rand(&[37, 11]);
        let mut m = p.rand_in(&[37, 11], -0.1, 0.1);
        let mut v = p.rand_in(&[37, 11], 0.0, 0.01);
        let mut vmax = amsgrad.then(|| p.rand_in(&[37, 11], 0.0, 0.02));
        let hp = AdamStep {
            lr: 2e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-4,
            t: 3,
            amsgrad,
        };
        let (vmc, vmg) = match vmax.as_mut() {
            Some(t) => (Some(&mut t.c), Some(&mut t.g)),
            None => (None, None),
        };
        if stable {
            p.cpu
                .stable_adamw_step(&mut param.c, &grad.c, &mut m.c, &mut v.c, vmc, &hp)
                .unwrap();
            p.gpu
                .stable_adamw_step(&mut param.g, &grad.g, &mut m.g, &mut v.g, vmg, &hp)
                .unwrap();
        } else {
            p.cpu
                .adamw_step(&mut param.c, &grad.c, &mut m.c, &mut v.c, vmc, &hp)
                .unwrap();
            p.gpu
                .adamw_step(&mut param.g, &grad.g, &mut m.g, &mut v.g, vmg, &hp)
                .unwrap();
        }
        check(&p, "adam param", &param, ELEMENTWISE);
        check(&p, "adam m", &m, ELEMENTWISE);
        check(&p, "adam v", &v, ELEMENTWISE);
        if let Some(vm) = &vmax {
            check(&p, "adam vmax", vm, ELEMENTWISE);
        }
    }
}

#[test]
fn resize_blur_topk() {
    let mut p = Pair::new(17);
    let x = p.rand(&[2, 3, 9, 13]);
    let cases = [
        (
            Interp::Bilinear {
                align_corners: false,
            },
            [2, 3, 23, 7],
        ),
        (
            Interp::Bilinear {
                align_corners: true,
            },
            [2, 3, 5, 29],
        ),
        (Interp::Bicubic { scale: None }, [2, 3, 17, 11]),
        (
            Interp::Bicubic {
                scale: Some((1.9, 0.8)),
            },
            [2, 3, 17, 10],
        ),
    ];
    for (interp, dims) in cases {
        let mut out = p.out(&dims);
        p.cpu.resize(&x.c, interp, &mut out.c).unwrap();
        p.gpu.resize(&x.g, interp, &mut out.g).unwrap();
        check(&p, &format!("resize {interp:?}"), &out, REDUCE);
    }
    let mut out = p.out(&[2, 3, 9, 13]);
    p.cpu.gaussian_blur(&x.c, 4.0, 5, &mut out.c).unwrap();
    p.gpu.gaussian_blur(&x.g, 4.0, 5, &mut out.g).unwrap();
    check(&p, "blur", &out, REDUCE);
    // Values on a grid of 1/8 so that rows have ties at the k-th largest.
    let mut h = p.rng.tensor([7, 301], -4.0, 4.0);
    h.data
        .iter_mut()
        .for_each(|v| *v = (*v * 8.0).round() / 8.0);
    let t = p.upload(&h);
    for k in [1usize, 17, 300, 301] {
        let mut out = p.out(&[7]);
        p.cpu.topk_mean(&t.c, k, &mut out.c).unwrap();
        p.gpu.topk_mean(&t.g, k, &mut out.g).unwrap();
        check(&p, &format!("topk_mean k={k}"), &out, REDUCE);
    }
}

#[test]
fn shape_errors_are_errors_not_panics() {
    let p = Pair::new(18);
    let x = p.gpu.zeros(&[3, 5]).unwrap();
    let mut y = p.gpu.zeros(&[3, 6]).unwrap();
    let e = p.gpu.axpy(1.0, &x, &mut y).unwrap_err();
    assert!(matches!(e, Error::Shape { op: "axpy", .. }), "{e}");
    let e = p
        .gpu
        .dropout_fwd(&y, 1.5, 0, &mut p.gpu.zeros(&[3, 6]).unwrap())
        .unwrap_err();
    assert!(e.to_string().contains("[0, 1)"), "{e}");
}

/// Flash attention rounds q, k, v to bf16 on load, so the reference gets bf16-rounded qkv;
/// it also rounds the probabilities P to bf16 before P·V, which moves each output by at most
/// 2^-9·max|v| = 2e-3 for |v| <= 1 (the softmax weights sum to one): `ATTN` allows that.
const ATTN: Tol = Tol {
    atol: 2.5e-3,
    rtol: 0.0,
};

#[test]
fn flash_attention_fwd_masks_any_length() {
    // 13 tokens: one partial block; 77: a full block and a partial one.
    for (seed, n) in [(19u64, 13usize), (20, 77)] {
        let mut p = Pair::new(seed);
        let (heads, dim) = (2, 128);
        let qkv = p.rng.tensor([2, n, 3 * dim], -1.0, 1.0).round_bf16();
        let qkv = p.upload(&qkv);
        let (mut out, mut lse) = (p.out(&[2, n, dim]), p.out(&[2, heads, n]));
        p.cpu
            .attention_fwd(&qkv.c, heads, 0.125, &mut out.c, &mut lse.c)
            .unwrap();
        p.gpu
            .attention_fwd(&qkv.g, heads, 0.125, &mut out.g, &mut lse.g)
            .unwrap();
        check(&p, &format!("attention out n={n}"), &out, ATTN);
        check(&p, &format!("attention lse n={n}"), &lse, REDUCE);
    }
}

#[test]
fn linear_attention_fwd_bwd() {
    // 3 heads of 24 (not a multiple of 64, the kernels' largest tile) over 37 tokens (one
    // ragged 64-token chunk) and 150 (two whole chunks and a ragged one).
    for (seed, n) in [(21u64, 37usize), (24, 150)] {
        let mut p = Pair::new(seed);
        let (heads, dim) = (3, 72);
        let qkv = p.rand(&[2, n, 3 * dim]);
        let mut out = p.out(&[2, n, dim]);
        p.cpu
            .linear_attention_fwd(&qkv.c, heads, 0.0, &mut out.c)
            .unwrap();
        p.gpu
            .linear_attention_fwd(&qkv.g, heads, 0.0, &mut out.g)
            .unwrap();
        check(&p, "linear attention out", &out, REDUCE);
        let dout = p.rand(&[2, n, dim]);
        let mut dqkv = p.out(&[2, n, 3 * dim]);
        p.cpu
            .linear_attention_bwd(&dout.c, &qkv.c, heads, 1e-6, &mut dqkv.c)
            .unwrap();
        p.gpu
            .linear_attention_bwd(&dout.g, &qkv.g, heads, 1e-6, &mut dqkv.g)
            .unwrap();
        check(&p, "linear attention dqkv", &dqkv, REDUCE);
    }
}

/// The backward recomputes P from bf16 q, k (exact products, f32 sums) and rounds P, dO and
/// dS to bf16 before its tensor-core products: two roundings of 2^-9 each on sums of O(1)
/// terms whose results are below 1 here, so ~2^-8 = 4e-3 (measured: up to 1.1e-3).
const ATTN_BWD: Tol = Tol {
    atol: 4e-3,
    rtol: 4e-3,
};

#[test]
fn flash_attention_bwd_masks_any_length() {
    for (seed, n) in [(22u64, 13usize), (23, 77)] {
        let mut p = Pair::new(seed);
        let (heads, dim) = (2, 128);
        let qkv = p.rng.tensor([2, n, 3 * dim], -1.0, 1.0).round_bf16();
        let dout = p.rng.tensor([2, n, dim], -1.0, 1.0).round_bf16();
        let (qkv, dout) = (p.upload(&qkv), p.upload(&dout));
        let (mut out, mut lse) = (
            p.cpu.zeros(&[2, n, dim]).unwrap(),
            p.cpu.zeros(&[2, heads, n]).unwrap(),
        );
        p.cpu
            .attention_fwd(&qkv.c, heads, 0.125, &mut out, &mut lse)
            .unwrap();
        // Both sides get the reference's out and lse.
        let out = p.upload(&p.cpu.download(&out).unwrap());
        let lse = p.upload(&p.cpu.download(&lse).unwrap());
        let mut dqkv = p.out(&[2, n, 3 * dim]);
        p.cpu
            .attention_bwd(&dout.c, &qkv.c, &out.c, &lse.c, heads, 0.125, &mut dqkv.c)
            .unwrap();
        p.gpu
            .attention_bwd(&dout.g, &qkv.g, &out.g, &lse.g, heads, 0.125, &mut dqkv.g)
            .unwrap();
        check(&p, &format!("attention dqkv n={n}"), &dqkv, ATTN_BWD);
    }
}

/// A pre-norm attention block, `out = x + gamma ⊙ proj(attention(qkv(layernorm(x))))`, run
/// op by op on both backends from the same inputs. Unlike the per-op tests, the GPU side
/// gets unrounded inputs: its bf16 roundings (both GEMMs' operands, attention's q, k, v and P)
/// accumulate along the chain, each ~2^-9 relative, so the block output is compared with
/// 1e-2 of its largest magnitude.
#[test]
fn tiny_attention_block_forward_chain() {
    let mut p = Pair::new(24);
    let (b, n, d, heads) = (2, 29, 128, 2);
    let x = p.rand(&[b, n, d]);
    let (lw, lb) = (p.rand_in(&[d], 0.5, 1.5), p.rand_in(&[d], -0.1, 0.1));
    let (wqkv, bqkv) = (
        p.rand_in(&[3 * d, d], -0.1, 0.1),
        p.rand_in(&[3 * d], -0.1, 0.1),
    );
    let (wproj, bproj) = (p.rand_in(&[d, d], -0.1, 0.1), p.rand_in(&[d], -0.1, 0.1));
    let gamma = p.rand_in(&[d], 0.5, 1.0);
    let mut h = p.out(&[b, n, d]);
    let (mut mean, mut rstd) = (p.out(&[b, n]), p.out(&[b, n]));
    let mut qkv = p.out(&[b, n, 3 * d]);
    let (mut att, mut lse) = (p.out(&[b, n, d]), p.out(&[b, heads, n]));
    let mut proj = p.out(&[b, n, d]);
    let mut out = p.out(&[b, n, d]);
    let scale = 1.0 / ((d / heads) as f32).sqrt();
    macro_rules! block {
        ($be:expr, $f:ident) => {{
            let be = $be;
            be.layernorm_fwd(
                &x.$f,
                &lw.$f,
                &lb.$f,
                1e-6,
                &mut h.$f,
                &mut mean.$f,
                &mut rstd.$f,
            )
            .unwrap();
            be.matmul(
                &h.$f,
                &wqkv.$f,
                Some(&bqkv.$f),
                &mut qkv.$f,
                Layout::NT,
                false,
            )
            .unwrap();
            be.attention_fwd(&qkv.$f, heads, scale, &mut att.$f, &mut lse.$f)
                .unwrap();
            be.matmul(
                &att.$f,
                &wproj.$f,
                Some(&bproj.$f),
                &mut proj.$f,
                Layout::NT,
                false,
            )
            .unwrap();
            be.residual_fwd(&x.$f, &proj.$f, Some(&gamma.$f), &mut out.$f)
                .unwrap();
        }};
    }
    block!(&p.cpu, c);
    block!(&p.gpu, g);
    let want = p.cpu.download(&out.c).unwrap();
    let peak = want.data.iter().fold(0f32, |m, v| m.max(v.abs()));
    check(
        &p,
        "block output",
        &out,
        Tol {
            atol: 1e-2 * peak,
            rtol: 0.0,
        },
    );
}
