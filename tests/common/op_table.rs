//! The op table, in the style of ggml's test-backend-ops: one list of op calls with their
//! shapes (odd sizes included), run on any backend by [`run_table`]. For every entry:
//! * outputs are poisoned with NaN first (outputs an op adds into, or updates in place, get
//!   random values and the check subtracts them), so an element an op forgets is caught;
//! * the result is compared with a naive f64 reference (`reference.rs`), and with the CPU
//!   backend when the backend under test is another one;
//! * every backward op is compared with central finite differences of the f64 reference
//!   forward (on a sample of elements for the large shapes);
//! * with [`Storage::Activations`], the operands the models keep as activations (see
//!   [`activation_operands`]) come from `zeros_activation`, so a backend that stores those
//!   in bf16 is checked with the storage the models give it. Random inputs are
//!   bf16-representable values, so storing them loses nothing and the check measures the
//!   op's own rounding;
//! * each tensor operand in turn is given a wrong shape, which must be an `Error::Shape`
//!   naming the op, and invalid scalars (a drop probability of 1, an even blur kernel…)
//!   must be an error naming the op.
//!
//! [`TRAIT_OPS`] lists the trait's methods; `coverage` checks it against the trait source
//! and against the table, so an op added to the trait without a table entry fails the tests.

#![allow(clippy::too_many_arguments)]

use super::reference as r;
use kdad::device::cpu::Cpu;
use kdad::device::{AdamStep, AdamTensors, Backend, Interp, Layout, Tensor};
use kdad::tensor::{HostTensor, Rng};
use kdad::Error;

/// Every method of `trait Backend`, kept next to the table (checked by [`coverage`]).
pub const TRAIT_OPS: &[&str] = &[
    "name",
    "zeros",
    "zeros_activation",
    "freeze",
    "upload",
    "download",
    "copy",
    "fill",
    "synchronize",
    "axpy",
    "scale",
    "sum_squares",
    "matmul",
    "bias_grad",
    "layernorm_fwd",
    "layernorm_bwd",
    "attention_fwd",
    "attention_bwd",
    "linear_attention_fwd",
    "linear_attention_bwd",
    "gelu_fwd",
    "gelu_bwd",
    "bias_gelu_fwd",
    "bias_gelu_bwd",
    "residual_fwd",
    "residual_bwd",
    "dropout_fwd",
    "dropout_bwd",
    "patchify",
    "embed_tokens_fwd",
    "embed_tokens_bwd",
    "slice_tokens",
    "unslice_tokens_add",
    "group_mean_fwd",
    "group_mean_bwd",
    "cosine_distance_fwd",
    "cosine_distance_bwd",
    "global_cosine_fwd",
    "global_cosine_bwd",
    "adamw_step",
    "stable_adamw_step",
    "adam_steps",
    "clip_grad_norm",
    "resize",
    "gaussian_blur",
    "topk_mean",
];

/// Ops the runner checks itself (memory and bookkeeping) rather than through table entries.
const RUNNER_OPS: &[&str] = &[
    "name",
    "zeros",
    "zeros_activation",
    "freeze",
    "upload",
    "download",
    "synchronize",
];

/// Ops whose operands may have any shape, so there is no wrong shape to hand them.
const SHAPE_FREE: &[&str] = &["fill", "scale", "sum_squares", "clip_grad_norm"];

/// Largest accepted error, relative to the largest magnitude of the expected values.
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    /// Forward ops and optimiser steps, against the f64 reference.
    pub forward: f64,
    /// Backward ops, against finite differences.
    pub backward: f64,
}

/// What the backend must produce for one output.
#[derive(Clone)]
struct Expect {
    want: Vec<f64>,
    /// Elements to check (None: all). Finite differences are taken on a sample.
    at: Option<Vec<usize>>,
    /// The output's value before the op, subtracted from both sides for outputs an op adds
    /// into, so a small contribution is not hidden by a large starting value.
    base: Option<Vec<f64>>,
    grad: bool,
}

/// Scalar parameters of an op call; each op reads the ones it takes.
#[derive(Clone)]
struct P {
    layout: Layout,
    accumulate: bool,
    /// The optional operand (bias, gamma, registers, vmax, dgamma, dregs) is present.
    opt: bool,
    heads: usize,
    scale: f32,
    eps: f32,
    p: f32,
    seed: u64,
    factor: f32,
    dloss: f32,
    interp: Interp,
    sigma: f32,
    ksize: usize,
    k: usize,
    start: usize,
    patch: usize,
    hp: AdamStep,
    value: f32,
    max_norm: f32,
    /// adam_steps: StableAdamW rather than AdamW.
    stable: bool,
}

impl Default for P {
    fn default() -> Self {
        P {
            layout: Layout::NN,
            accumulate: false,
            opt: false,
            heads: 1,
            scale: 1.0,
            eps: 0.0,
            p: 0.0,
            seed: 0,
            factor: 1.0,
            dloss: 1.0,
            interp: Interp::Bilinear {
                align_corners: false,
            },
            sigma: 1.0,
            ksize: 1,
            k: 1,
            start: 0,
            patch: 1,
            hp: AdamStep {
                lr: 0.0,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.0,
                t: 1,
                amsgrad: false,
            },
            value: 0.0,
            max_norm: 1.0,
            stable: false,
        }
    }
}

/// One table entry: an op, its parameters, its operands and what it must produce.
#[derive(Clone)]
struct Call {
    op: &'static str,
    p: P,
    ins: Vec<HostTensor>,
    /// Outputs with their starting values; `poison` outputs start as NaN instead.
    outs: Vec<(HostTensor, bool)>,
    expect: Vec<Expect>,
    ret: Option<f64>,
    /// Operands (index over ins then outs) whose last dim may legally change; their wrong
    /// shape changes the first dim instead.
    flex: Vec<usize>,
    /// Input 1 (a weight) goes through `freeze` before the op, as a teacher's weights do.
    frozen: bool,
}

impl Call {
    fn new(op: &'static str, p: P) -> Self {
        Call {
            op,
            p,
            ins: vec![],
            outs: vec![],
            expect: vec![],
            ret: None,
            flex: vec![],
            frozen: false,
        }
    }
    /// Freeze input 1 before the op (see [`Call::frozen`]).
    fn frozen_weight(mut self) -> Self {
        self.frozen = true;
        self
    }
    fn input(mut self, t: &HostTensor) -> Self {
        self.ins.push(t.clone());
        self
    }
    /// A written output: poisoned, expected to equal `want` everywhere.
    fn out(mut self, dims: &[usize], want: Vec<f64>) -> Self {
        self.outs.push((HostTensor::zeros(dims), true));
        self.expect.push(Expect {
            want,
            at: None,
            base: None,
            grad: false,
        });
        self
    }
    /// An output updated in place or added into, starting at `init`.
    fn inout(mut self, init: &HostTensor, want: Vec<f64>) -> Self {
        self.outs.push((init.clone(), false));
        self.expect.push(Expect {
            want,
            at: None,
            base: Some(f64s(init)),
            grad: false,
        });
        self
    }
    /// A written gradient checked against finite differences at `at`.
    fn grad(mut self, dims: &[usize], fd: (Vec<f64>, Vec<usize>)) -> Self {
        self.outs.push((HostTensor::zeros(dims), true));
        self.expect.push(Expect {
            want: fd.0,
            at: Some(fd.1),
            base: None,
            grad: true,
        });
        self
    }
    /// A gradient added into `init`.
    fn grad_add(mut self, init: &HostTensor, fd: (Vec<f64>, Vec<usize>)) -> Self {
        let base = f64s(init);
        let want = fd.0.iter().zip(&base).map(|(g, b)| g + b).collect();
        self.outs.push((init.clone(), false));
        self.expect.push(Expect {
            want,
            at: Some(fd.1),
            base: Some(base),
            grad: true,
        });
        self
    }
    fn returns(mut self, v: f64) -> Self {
        self.ret = Some(v);
        self
    }
    fn flex(mut self, operands: &[usize]) -> Self {
        self.flex = operands.to_vec();
        self
    }
    fn label(&self) -> String {
        let ins: Vec<String> = self.ins.iter().map(|t| format!("{:?}", t.dims())).collect();
        let outs: Vec<String> = self
            .outs
            .iter()
            .map(|t| format!("{:?}", t.0.dims()))
            .collect();
        let frozen = if self.frozen { ", frozen weight" } else { "" };
        format!(
            "{}({} -> {}{frozen})",
            self.op,
            ins.join(", "),
            outs.join(", ")
        )
    }
}

// ---- helpers ------------------------------------------------------------------------------

fn f64s(t: &HostTensor) -> Vec<f64> {
    t.data.iter().map(|&v| v as f64).collect()
}

/// Uniform values in [lo, hi], rounded to bf16: exact in any storage a backend picks, so the
/// table measures what an op's own arithmetic and output rounding cost.
fn rand(rng: &mut Rng, dims: &[usize], lo: f32, hi: f32) -> HostTensor {
    rng.tensor(dims, lo, hi).round_bf16()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Elements to finite-difference: all of a small tensor, else the first, the last and 22
/// random ones.
fn sample(n: usize, rng: &mut Rng) -> Vec<usize> {
    if n <= 48 {
        return (0..n).collect();
    }
    let mut at = vec![0, n - 1];
    at.extend((0..22).map(|_| rng.below(n)));
    at
}

/// Central finite differences of `f` at the elements `at` of `x` (NaN elsewhere).
fn fd(x: &HostTensor, rng: &mut Rng, f: impl Fn(&[f64]) -> f64) -> (Vec<f64>, Vec<usize>) {
    const H: f64 = 1e-5;
    let at = sample(x.numel(), rng);
    let mut g = vec![f64::NAN; x.numel()];
    let mut v = f64s(x);
    for &i in &at {
        let x0 = v[i];
        v[i] = x0 + H;
        let up = f(&v);
        v[i] = x0 - H;
        let down = f(&v);
        v[i] = x0;
        g[i] = (up - down) / (2.0 * H);
    }
    (g, at)
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

fn host(dims: &[usize], v: &[f64]) -> HostTensor {
    HostTensor::new(dims, f32s(v)).unwrap()
}

// ---- the table ----------------------------------------------------------------------------

fn matmul_case(
    rng: &mut Rng,
    layout: Layout,
    batch: &[usize],
    m: usize,
    n: usize,
    k: usize,
    shared_b: bool,
    bias: bool,
    acc: bool,
) -> Call {
    let cat = |x: &[usize], y: &[usize]| [x, y].concat();
    let nb: usize = batch.iter().product();
    let a_dims = if layout == Layout::TN {
        cat(batch, &[k, m])
    } else {
        cat(batch, &[m, k])
    };
    let b_mat = if layout == Layout::NT { [n, k] } else { [k, n] };
    let (b_dims, out_dims) = match (shared_b, layout) {
        (true, Layout::TN) => (cat(batch, &[k, n]), vec![m, n]),
        (true, _) => (b_mat.to_vec(), cat(batch, &[m, n])),
        (false, _) => (cat(batch, &b_mat), cat(batch, &[m, n])),
    };
    let a = rand(rng, &a_dims, -1.0, 1.0);
    let b = rand(rng, &b_dims, -1.0, 1.0);
    let bias_t = rand(rng, &[n], -1.0, 1.0);
    let (rb, rm, rk, shared) = match (shared_b, layout) {
        (true, Layout::TN) => (1, m, nb * k, true),
        (true, _) => (1, nb * m, k, true),
        (false, _) => (nb, m, k, false),
    };
    let bias_v = f64s(&bias_t);
    let prod = r::matmul(
        &f64s(&a),
        &f64s(&b),
        bias.then_some(&bias_v[..]),
        rb,
        rm,
        n,
        rk,
        layout == Layout::TN,
        layout == Layout::NT,
        shared,
    );
    let p = P {
        layout,
        accumulate: acc,
        opt: bias,
        ..P::default()
    };
    let mut c = Call::new("matmul", p).input(&a).input(&b);
    if bias {
        c = c.input(&bias_t);
    }
    if acc {
        let init = rand(rng, &out_dims, -1.0, 1.0);
        let want = prod
            .iter()
            .zip(&init.data)
            .map(|(p, &i)| p + i as f64)
            .collect();
        c.inout(&init, want)
    } else {
        c.out(&out_dims, prod)
    }
}

fn matmul_cases(rng: &mut Rng) -> Vec<Call> {
    use Layout::*;
    let mut v = vec![];
    for layout in [NN, NT, TN] {
        v.push(matmul_case(
            rng,
            layout,
            &[],
            13,
            3,
            384,
            true,
            false,
            false,
        ));
        v.push(matmul_case(
            rng,
            layout,
            &[],
            257,
            1,
            768,
            true,
            true,
            false,
        ));
        v.push(matmul_case(rng, layout, &[2], 13, 5, 7, true, true, true));
        v.push(matmul_case(rng, layout, &[], 1, 1, 1, true, false, true));
        v.push(matmul_case(rng, layout, &[], 4, 3, 0, true, true, false));
        v.push(matmul_case(
            rng,
            layout,
            &[2, 3],
            13,
            7,
            5,
            false,
            false,
            false,
        ));
        v.push(matmul_case(rng, layout, &[3], 9, 11, 6, false, true, true));
    }
    // A product big enough for the multi-threaded gemm path.
    v.push(matmul_case(rng, NT, &[], 129, 96, 200, true, true, false));
    // Frozen weights (the CPU's packed kernel): several depth blocks; a partial last panel,
    // an accumulating product and a 4 KB row stride (the padded copy of a); a lone row.
    v.push(matmul_case(rng, NT, &[], 257, 96, 768, true, true, false).frozen_weight());
    v.push(matmul_case(rng, NT, &[], 30, 40, 1024, true, true, true).frozen_weight());
    v.push(matmul_case(rng, NT, &[], 1, 3, 5, true, false, false).frozen_weight());
    v
}

fn bias_grad_case(rng: &mut Rng, dims: &[usize]) -> Call {
    let n = *dims.last().unwrap();
    let dy = rand(rng, dims, -1.0, 1.0);
    let init = rand(rng, &[n], -1.0, 1.0);
    let dyv = f64s(&dy);
    let g = fd(&init, rng, |bias| {
        dyv.chunks(n).map(|row| dot(row, bias)).sum()
    });
    Call::new("bias_grad", P::default())
        .input(&dy)
        .grad_add(&init, g)
}

fn layernorm_cases(rng: &mut Rng, lead: &[usize], d: usize, eps: f32) -> Vec<Call> {
    let dims = [lead, &[d]].concat();
    let rows: usize = lead.iter().product();
    let x = rand(rng, &dims, -2.0, 2.0);
    let w = rand(rng, &[d], 0.5, 1.5);
    let b = rand(rng, &[d], -0.5, 0.5);
    let (xv, wv, bv) = (f64s(&x), f64s(&w), f64s(&b));
    let (y, mean, rstd) = r::layernorm(&xv, &wv, &bv, d, eps as f64);
    let p = P {
        eps,
        ..P::default()
    };
    let fwd = Call::new("layernorm_fwd", p.clone())
        .input(&x)
        .input(&w)
        .input(&b)
        .out(&dims, y)
        .out(lead, mean.clone())
        .out(&[rows], rstd.clone());
    let dy = rand(rng, &dims, -1.0, 1.0);
    let dyv = f64s(&dy);
    let zeros = vec![0.0; d];
    let loss = |x: &[f64], w: &[f64], b: &[f64]| dot(&dyv, &r::layernorm(x, w, b, d, eps as f64).0);
    let gx = fd(&x, rng, |x| loss(x, &wv, &zeros));
    let gw = fd(&w, rng, |w| loss(&xv, w, &zeros));
    let gb = fd(&b, rng, |b| loss(&xv, &wv, b));
    let mut out = vec![fwd];
    for accumulate_dx in [false, true] {
        let p = P {
            eps,
            accumulate: accumulate_dx,
            ..P::default()
        };
        let c = Call::new("layernorm_bwd", p)
            .input(&dy)
            .input(&x)
            .input(&w)
            .input(&host(lead, &mean))
            .input(&host(&[rows], &rstd));
        let c = if accumulate_dx {
            c.grad_add(&rand(rng, &dims, -1.0, 1.0), gx.clone())
        } else {
            c.grad(&dims, gx.clone())
        };
        out.push(
            c.grad_add(&rand(rng, &[d], -1.0, 1.0), gw.clone())
                .grad_add(&rand(rng, &[d], -1.0, 1.0), gb.clone()),
        );
    }
    out
}

fn attention_cases(rng: &mut Rng, b: usize, n: usize, h: usize, dh: usize) -> Vec<Call> {
    let d = h * dh;
    let qkv = rand(rng, &[b, n, 3 * d], -1.5, 1.5);
    let qv = f64s(&qkv);
    let scale = (dh as f32).powf(-0.5);
    let (out, lse) = r::attention(&qv, b, n, h, dh, scale as f64);
    let p = P {
        heads: h,
        scale,
        ..P::default()
    };
    let fwd = Call::new("attention_fwd", p.clone())
        .input(&qkv)
        .out(&[b, n, d], out.clone())
        .out(&[b, h, n], lse.clone());
    let dout = rand(rng, &[b, n, d], -1.0, 1.0);
    let dv = f64s(&dout);
    let g = fd(&qkv, rng, |q| {
        dot(&dv, &r::attention(q, b, n, h, dh, scale as f64).0)
    });
    let bwd = Call::new("attention_bwd", p)
        .input(&dout)
        .input(&qkv)
        .input(&host(&[b, n, d], &out))
        .input(&host(&[b, h, n], &lse))
        .grad(&[b, n, 3 * d], g);
    vec![fwd, bwd]
}

fn linear_attention_cases(
    rng: &mut Rng,
    b: usize,
    n: usize,
    h: usize,
    dh: usize,
    eps: f32,
) -> Vec<Call> {
    let d = h * dh;
    let qkv = rand(rng, &[b, n, 3 * d], -1.5, 1.5);
    let qv = f64s(&qkv);
    let out = r::linear_attention(&qv, b, n, h, dh, eps as f64);
    let p = P {
        heads: h,
        eps,
        ..P::default()
    };
    let fwd = Call::new("linear_attention_fwd", p.clone())
        .input(&qkv)
        .out(&[b, n, d], out);
    let dout = rand(rng, &[b, n, d], -1.0, 1.0);
    let dv = f64s(&dout);
    let g = fd(&qkv, rng, |q| {
        dot(&dv, &r::linear_attention(q, b, n, h, dh, eps as f64))
    });
    let bwd = Call::new("linear_attention_bwd", p)
        .input(&dout)
        .input(&qkv)
        .grad(&[b, n, 3 * d], g);
    vec![fwd, bwd]
}

fn gelu_cases(rng: &mut Rng, dims: &[usize]) -> Vec<Call> {
    let n = *dims.last().unwrap();
    let x = rand(rng, dims, -4.0, 4.0);
    let bias = rand(rng, &[n], -1.0, 1.0);
    let dy = rand(rng, dims, -1.0, 1.0);
    let (xv, bv, dyv) = (f64s(&x), f64s(&bias), f64s(&dy));
    let gx = fd(&x, rng, |x| dot(&dyv, &r::bias_gelu(x, None)));
    let gxb = fd(&x, rng, |x| dot(&dyv, &r::bias_gelu(x, Some(&bv))));
    let gb = fd(&bias, rng, |b| dot(&dyv, &r::bias_gelu(&xv, Some(b))));
    vec![
        Call::new("gelu_fwd", P::default())
            .input(&x)
            .out(dims, r::bias_gelu(&xv, None)),
        Call::new("gelu_bwd", P::default())
            .input(&dy)
            .input(&x)
            .grad(dims, gx),
        Call::new("bias_gelu_fwd", P::default())
            .input(&x)
            .input(&bias)
            .out(dims, r::bias_gelu(&xv, Some(&bv))),
        Call::new("bias_gelu_bwd", P::default())
            .input(&dy)
            .input(&x)
            .input(&bias)
            .grad(dims, gxb)
            .grad_add(&rand(rng, &[n], -1.0, 1.0), gb),
    ]
}

fn residual_cases(rng: &mut Rng, dims: &[usize], with_gamma: bool) -> Vec<Call> {
    let d = *dims.last().unwrap();
    let x = rand(rng, dims, -1.0, 1.0);
    let y = rand(rng, dims, -1.0, 1.0);
    let gamma = rand(rng, &[d], -1.0, 1.0);
    let dout = rand(rng, dims, -1.0, 1.0);
    let (xv, yv, gv, dv) = (f64s(&x), f64s(&y), f64s(&gamma), f64s(&dout));
    let g = with_gamma.then_some(&gv[..]);
    let p = P {
        opt: with_gamma,
        ..P::default()
    };
    let mut fwd = Call::new("residual_fwd", p.clone()).input(&x).input(&y);
    let mut bwd = Call::new("residual_bwd", p).input(&dout).input(&y);
    if with_gamma {
        fwd = fwd.input(&gamma);
        bwd = bwd.input(&gamma);
    }
    let gy = fd(&y, rng, |y| dot(&dv, &r::residual(&xv, y, g)));
    bwd = bwd.grad(dims, gy);
    if with_gamma {
        let gg = fd(&gamma, rng, |gm| dot(&dv, &r::residual(&xv, &yv, Some(gm))));
        bwd = bwd.grad_add(&rand(rng, &[d], -1.0, 1.0), gg);
    }
    vec![fwd.out(dims, r::residual(&xv, &yv, g)), bwd]
}

fn dropout_cases(rng: &mut Rng, dims: &[usize], p: f32, seed: u64) -> Vec<Call> {
    let x = rand(rng, dims, -1.0, 1.0);
    let dout = rand(rng, dims, -1.0, 1.0);
    let dv = f64s(&dout);
    let g = fd(&x, rng, |x| dot(&dv, &r::dropout(x, p as f64, seed)));
    let prm = P {
        p,
        seed,
        ..P::default()
    };
    vec![
        Call::new("dropout_fwd", prm.clone())
            .input(&x)
            .out(dims, r::dropout(&f64s(&x), p as f64, seed)),
        Call::new("dropout_bwd", prm).input(&dout).grad(dims, g),
    ]
}

fn patchify_case(rng: &mut Rng, b: usize, c: usize, h: usize, w: usize, patch: usize) -> Call {
    let img = rand(rng, &[b, c, h, w], -1.0, 1.0);
    let want = r::patchify(&f64s(&img), b, c, h, w, patch);
    let p = P {
        patch,
        ..P::default()
    };
    Call::new("patchify", p)
        .input(&img)
        .out(&[b, (h / patch) * (w / patch), c * patch * patch], want)
}

fn embed_cases(rng: &mut Rng, b: usize, np: usize, d: usize, nregs: usize) -> Vec<Call> {
    let emb = rand(rng, &[b, np, d], -1.0, 1.0);
    let cls = rand(rng, &[d], -1.0, 1.0);
    let pos = rand(rng, &[1 + np, d], -1.0, 1.0);
    let regs = rand(rng, &[nregs, d], -1.0, 1.0);
    let (ev, cv, pv, rv) = (f64s(&emb), f64s(&cls), f64s(&pos), f64s(&regs));
    let n = 1 + nregs + np;
    let p = P {
        opt: nregs > 0,
        ..P::default()
    };
    let mut fwd = Call::new("embed_tokens_fwd", p.clone())
        .input(&emb)
        .input(&cls)
        .input(&pos);
    if nregs > 0 {
        fwd = fwd.input(&regs);
    }
    fwd = fwd.out(&[b, n, d], r::embed_tokens(&ev, &cv, &pv, &rv, b, np, d));
    let dout = rand(rng, &[b, n, d], -1.0, 1.0);
    let dv = f64s(&dout);
    let f = |e: &[f64], c: &[f64], p: &[f64], rg: &[f64]| {
        dot(&dv, &r::embed_tokens(e, c, p, rg, b, np, d))
    };
    let mut bwd = Call::new("embed_tokens_bwd", p)
        .input(&dout)
        .grad(&[b, np, d], fd(&emb, rng, |e| f(e, &cv, &pv, &rv)))
        .grad_add(
            &rand(rng, &[d], -1.0, 1.0),
            fd(&cls, rng, |c| f(&ev, c, &pv, &rv)),
        )
        .grad_add(
            &rand(rng, &[1 + np, d], -1.0, 1.0),
            fd(&pos, rng, |p| f(&ev, &cv, p, &rv)),
        );
    if nregs > 0 {
        bwd = bwd.grad_add(
            &rand(rng, &[nregs, d], -1.0, 1.0),
            fd(&regs, rng, |rg| f(&ev, &cv, &pv, rg)),
        );
    }
    vec![fwd, bwd]
}

fn slice_cases(rng: &mut Rng, b: usize, n: usize, d: usize, start: usize, m: usize) -> Vec<Call> {
    let x = rand(rng, &[b, n, d], -1.0, 1.0);
    let dout = rand(rng, &[b, m, d], -1.0, 1.0);
    let dv = f64s(&dout);
    let p = P {
        start,
        ..P::default()
    };
    let g = fd(&x, rng, |x| {
        dot(&dv, &r::slice_tokens(x, b, n, d, start, m))
    });
    vec![
        Call::new("slice_tokens", p.clone())
            .input(&x)
            .out(&[b, m, d], r::slice_tokens(&f64s(&x), b, n, d, start, m)),
        Call::new("unslice_tokens_add", p)
            .input(&dout)
            .grad_add(&rand(rng, &[b, n, d], -1.0, 1.0), g),
    ]
}

fn group_mean_cases(rng: &mut Rng, dims: &[usize], count: usize) -> Vec<Call> {
    let xs: Vec<HostTensor> = (0..count).map(|_| rand(rng, dims, -1.0, 1.0)).collect();
    let xv: Vec<Vec<f64>> = xs.iter().map(f64s).collect();
    let mut fwd = Call::new("group_mean_fwd", P::default());
    for x in &xs {
        fwd = fwd.input(x);
    }
    let fwd = fwd.out(dims, r::group_mean(&xv));
    let dout = rand(rng, dims, -1.0, 1.0);
    let dv = f64s(&dout);
    let mut bwd = Call::new("group_mean_bwd", P::default()).input(&dout);
    for i in 0..count {
        let g = fd(&xs[i], rng, |x| {
            let mut all = xv.clone();
            all[i] = x.to_vec();
            dot(&dv, &r::group_mean(&all))
        });
        bwd = bwd.grad_add(&rand(rng, dims, -1.0, 1.0), g);
    }
    vec![fwd, bwd]
}

/// How the first row of a cosine case is built.
#[derive(PartialEq)]
enum FirstRow {
    Random,
    /// b = 0: the 1e-8 floor of |a|·|b| makes the distance exactly 1. Not differentiable
    /// there, so forward only.
    Zero,
    /// a and b scaled by 1e-10: inside the floor, where the cosine is a·b / 1e-8, a smooth
    /// function that finite differences with their 1e-5 step do not leave.
    Tiny,
}

fn cosine_cases(rng: &mut Rng, lead: &[usize], c: usize, first: FirstRow) -> Vec<Call> {
    let dims = [lead, &[c]].concat();
    let rows: usize = lead.iter().product();
    let mut a = rand(rng, &dims, -1.0, 1.0);
    let mut b = rand(rng, &dims, -1.0, 1.0);
    match first {
        FirstRow::Random => {}
        FirstRow::Zero => {
            b.data[..c].fill(0.0);
            let d = r::cosine_distance(&f64s(&a), &f64s(&b), c);
            return vec![Call::new("cosine_distance_fwd", P::default())
                .input(&a)
                .input(&b)
                .out(lead, d)];
        }
        FirstRow::Tiny => {
            a.data[..c].iter_mut().for_each(|v| *v *= 1e-10);
            b.data[..c].iter_mut().for_each(|v| *v *= 1e-10);
        }
    }
    let (av, bv) = (f64s(&a), f64s(&b));
    let dd = rand(rng, &[rows], -1.0, 1.0);
    let ddv = f64s(&dd);
    let g = fd(&b, rng, |b| dot(&ddv, &r::cosine_distance(&av, b, c)));
    vec![
        Call::new("cosine_distance_fwd", P::default())
            .input(&a)
            .input(&b)
            .out(lead, r::cosine_distance(&av, &bv, c)),
        Call::new("cosine_distance_bwd", P::default())
            .input(&dd)
            .input(&a)
            .input(&b)
            .grad(&dims, g),
    ]
}

/// Hard mining as the test understands Dinomaly: k = floor(numel·(1-p)) largest distances
/// keep their gradient, the rest (distance strictly below the k-th largest) are scaled.
fn hard_mining_scale(dist: &[f32], p: f32, factor: f64) -> Vec<f64> {
    let k = (dist.len() as f64 * (1.0 - p as f64)).floor() as usize;
    let mut sorted: Vec<f32> = dist.to_vec();
    sorted.sort_by(|a, b| b.partial_cmp(a).unwrap());
    let thresh = if k == 0 { f32::INFINITY } else { sorted[k - 1] };
    dist.iter()
        .map(|&d| if d < thresh { factor } else { 1.0 })
        .collect()
}

fn global_cosine_cases(
    rng: &mut Rng,
    b: usize,
    t: usize,
    c: usize,
    ps: &[f32],
    first: FirstRow,
) -> Vec<Call> {
    let mut a = rand(rng, &[b, t, c], -1.0, 1.0);
    let mut bt = rand(rng, &[b, t, c], -1.0, 1.0);
    if first == FirstRow::Tiny {
        // Image 0 inside the cosine's floor (see FirstRow::Tiny).
        a.data[..t * c].iter_mut().for_each(|v| *v *= 1e-10);
        bt.data[..t * c].iter_mut().for_each(|v| *v *= 1e-10);
    }
    let (av, bv) = (f64s(&a), f64s(&bt));
    let (loss, pd, stats) = r::global_cosine(&av, &bv, b, c);
    let mut v = vec![Call::new("global_cosine_fwd", P::default())
        .input(&a)
        .input(&bt)
        .out(&[1], vec![loss])
        .out(&[b, t], pd.clone())
        .out(&[b, 3], stats.clone())];
    let pd32 = host(&[b, t], &pd);
    let (factor, dloss) = (0.1f32, 0.75f32);
    let g = fd(&bt, rng, |bb| {
        dloss as f64 * r::global_cosine(&av, bb, b, c).0
    });
    for &p in ps {
        let token_scale = hard_mining_scale(&pd32.data, p, factor as f64);
        let mut gp = g.clone();
        for (i, v) in gp.0.iter_mut().enumerate() {
            *v *= token_scale[i / c];
        }
        let prm = P {
            p,
            factor,
            dloss,
            ..P::default()
        };
        v.push(
            Call::new("global_cosine_bwd", prm)
                .input(&a)
                .input(&bt)
                .input(&pd32)
                .input(&host(&[b, 3], &stats))
                .grad(&[b, t, c], gp),
        );
    }
    v
}

fn adam_hp(amsgrad: bool, t: u64, eps: f32) -> AdamStep {
    AdamStep {
        lr: 2e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps,
        weight_decay: 1e-4,
        t,
        amsgrad,
    }
}

/// One tensor of an Adam case: its gradient, then (initial value, expected value) of param,
/// m, v and (AMSGrad) vmax, from the f64 reference.
fn adam_tensor(
    rng: &mut Rng,
    dims: &[usize],
    stable: bool,
    hp: &AdamStep,
    v_hi: f32,
) -> (HostTensor, Vec<(HostTensor, Vec<f64>)>) {
    let param = rand(rng, dims, -1.0, 1.0);
    let grad = rand(rng, dims, -1.0, 1.0);
    let m = rand(rng, dims, -0.1, 0.1);
    let v = rand(rng, dims, 0.0, v_hi);
    let vmax = rand(rng, dims, 0.0, v_hi);
    let vmv = f64s(&vmax);
    let (p2, m2, v2, vm2) = r::adam(
        &f64s(&param),
        &f64s(&grad),
        &f64s(&m),
        &f64s(&v),
        hp.amsgrad.then_some(&vmv[..]),
        hp.lr as f64,
        hp.beta1 as f64,
        hp.beta2 as f64,
        hp.eps as f64,
        hp.weight_decay as f64,
        hp.t as i32,
        stable,
    );
    let mut state = vec![(param, p2), (m, m2), (v, v2)];
    if let Some(vm2) = vm2 {
        state.push((vmax, vm2));
    }
    (grad, state)
}

fn adam_case(
    rng: &mut Rng,
    dims: &[usize],
    stable: bool,
    amsgrad: bool,
    t: u64,
    eps: f32,
    v_hi: f32,
) -> Call {
    let hp = adam_hp(amsgrad, t, eps);
    let (grad, state) = adam_tensor(rng, dims, stable, &hp, v_hi);
    let op = if stable {
        "stable_adamw_step"
    } else {
        "adamw_step"
    };
    let p = P {
        hp,
        opt: amsgrad,
        ..P::default()
    };
    state
        .into_iter()
        .fold(Call::new(op, p).input(&grad), |c, (init, want)| {
            c.inout(&init, want)
        })
}

/// `adam_steps` over tensors of `shapes`: gradients in, then param, m, v (, vmax) of each.
fn adam_steps_case(rng: &mut Rng, shapes: &[&[usize]], stable: bool, amsgrad: bool) -> Call {
    let hp = adam_hp(amsgrad, 2, 1e-8);
    let parts: Vec<_> = shapes
        .iter()
        .map(|d| adam_tensor(rng, d, stable, &hp, 1e-4))
        .collect();
    let p = P {
        hp,
        opt: amsgrad,
        stable,
        ..P::default()
    };
    let mut c = Call::new("adam_steps", p);
    for (grad, _) in &parts {
        c = c.input(grad);
    }
    for (_, state) in parts {
        for (init, want) in state {
            c = c.inout(&init, want);
        }
    }
    c
}

fn clip_case(rng: &mut Rng, shapes: &[&[usize]], max_norm: f32) -> Call {
    let grads: Vec<HostTensor> = shapes.iter().map(|d| rand(rng, d, -1.0, 1.0)).collect();
    let norm = grads
        .iter()
        .map(|g| f64s(g).iter().map(|v| v * v).sum::<f64>())
        .sum::<f64>()
        .sqrt();
    let coef = max_norm as f64 / (norm + 1e-6);
    let mut c = Call::new(
        "clip_grad_norm",
        P {
            max_norm,
            ..P::default()
        },
    );
    for g in &grads {
        let want = f64s(g)
            .iter()
            .map(|v| if coef < 1.0 { v * coef } else { *v })
            .collect();
        c = c.inout(g, want);
    }
    c.returns(norm)
}

fn resize_case(
    rng: &mut Rng,
    lead: &[usize],
    h: usize,
    w: usize,
    h2: usize,
    w2: usize,
    interp: Interp,
) -> Call {
    let x = rand(rng, &[lead, &[h, w]].concat(), -1.0, 1.0);
    let planes: usize = lead.iter().product();
    let mode = match interp {
        Interp::Bilinear { align_corners } => r::Resize::Bilinear(align_corners),
        Interp::Bicubic { scale } => r::Resize::Bicubic(scale),
    };
    let want = r::resize(&f64s(&x), planes, h, w, h2, w2, &mode);
    Call::new(
        "resize",
        P {
            interp,
            ..P::default()
        },
    )
    .input(&x)
    .out(&[lead, &[h2, w2]].concat(), want)
    .flex(&[0, 1])
}

fn blur_case(rng: &mut Rng, dims: &[usize], sigma: f32, ksize: usize) -> Call {
    let x = rand(rng, dims, 0.0, 1.0);
    let (h, w) = (dims[dims.len() - 2], dims[dims.len() - 1]);
    let planes = x.numel() / (h * w);
    let want = r::gaussian_blur(&f64s(&x), planes, h, w, sigma as f64, ksize);
    Call::new(
        "gaussian_blur",
        P {
            sigma,
            ksize,
            ..P::default()
        },
    )
    .input(&x)
    .out(dims, want)
}

fn topk_case(rng: &mut Rng, rows: usize, m: usize, k: usize) -> Call {
    let x = rand(rng, &[rows, m], 0.0, 1.0);
    Call::new("topk_mean", P { k, ..P::default() })
        .input(&x)
        .out(&[rows], r::topk_mean(&f64s(&x), m, k))
        .flex(&[0])
}

fn memory_cases(rng: &mut Rng) -> Vec<Call> {
    let src = rand(rng, &[2, 3, 4], -1.0, 1.0);
    let x = rand(rng, &[13, 3], -1.0, 1.0);
    let y = rand(rng, &[13, 3], -1.0, 1.0);
    let ss: f64 = f64s(&x).iter().map(|v| v * v).sum();
    let axpy_want = f64s(&x)
        .iter()
        .zip(f64s(&y))
        .map(|(a, b)| b + 0.5 * a)
        .collect();
    vec![
        Call::new("copy", P::default())
            .input(&src)
            .out(&[4, 6], f64s(&src)),
        Call::new(
            "fill",
            P {
                value: 0.25,
                ..P::default()
            },
        )
        .out(&[3, 5], vec![0.25; 15]),
        Call::new(
            "axpy",
            P {
                value: 0.5,
                ..P::default()
            },
        )
        .input(&x)
        .inout(&y, axpy_want),
        Call::new(
            "scale",
            P {
                value: -3.0,
                ..P::default()
            },
        )
        .inout(&x, f64s(&x).iter().map(|v| -3.0 * v).collect()),
        Call::new("sum_squares", P::default()).input(&x).returns(ss),
    ]
}

/// The whole table. Sizes follow the model: sequences 789 (ViT-B/S at 392 px with 4
/// registers), 257 and 13; widths 768, 384, 3 and 1; and small odd sizes everywhere.
fn table() -> Vec<Call> {
    let mut rng = Rng::new(20_251_125);
    let g = &mut rng;
    let mut t = memory_cases(g);
    t.extend(matmul_cases(g));
    t.push(bias_grad_case(g, &[2, 13, 768]));
    t.push(bias_grad_case(g, &[257, 1]));
    t.extend(layernorm_cases(g, &[13], 768, 1e-6));
    t.extend(layernorm_cases(g, &[3, 7], 384, 1e-8));
    t.extend(layernorm_cases(g, &[5], 3, 1e-6));
    t.extend(layernorm_cases(g, &[4], 1, 1e-6));
    t.extend(attention_cases(g, 1, 789, 2, 3));
    t.extend(attention_cases(g, 2, 257, 3, 2));
    t.extend(attention_cases(g, 2, 13, 6, 64));
    // Head dim 64 over three key blocks, the last one ragged: with bf16 storage the flash
    // kernels stream the next block in (cp.async) while computing the current one.
    t.extend(attention_cases(g, 1, 141, 2, 64));
    t.extend(attention_cases(g, 1, 1, 1, 1));
    t.extend(linear_attention_cases(g, 1, 789, 2, 4, 0.0));
    t.extend(linear_attention_cases(g, 2, 257, 3, 2, 1e-6));
    t.extend(linear_attention_cases(g, 2, 13, 2, 64, 0.0));
    t.extend(gelu_cases(g, &[13, 768]));
    t.extend(gelu_cases(g, &[7, 3]));
    t.extend(gelu_cases(g, &[5, 1]));
    t.extend(residual_cases(g, &[2, 13, 384], true));
    t.extend(residual_cases(g, &[7, 3], false));
    t.extend(residual_cases(g, &[3, 8], false));
    t.extend(dropout_cases(g, &[13, 768], 0.2, 7));
    t.extend(dropout_cases(g, &[3, 1], 0.0, 8));
    t.push(patchify_case(g, 2, 3, 28, 14, 14));
    t.push(patchify_case(g, 1, 1, 6, 4, 2));
    t.extend(embed_cases(g, 2, 6, 5, 4));
    t.extend(embed_cases(g, 1, 3, 3, 0));
    t.extend(slice_cases(g, 2, 13, 3, 5, 8));
    t.extend(slice_cases(g, 1, 789, 1, 0, 789));
    t.extend(group_mean_cases(g, &[2, 13, 3], 4));
    t.extend(group_mean_cases(g, &[5], 1));
    t.extend(cosine_cases(g, &[2, 13], 768, FirstRow::Random));
    t.extend(cosine_cases(g, &[257], 3, FirstRow::Random));
    t.extend(cosine_cases(g, &[4], 5, FirstRow::Zero));
    t.extend(cosine_cases(g, &[4], 5, FirstRow::Tiny));
    t.extend(global_cosine_cases(
        g,
        2,
        13,
        3,
        &[0.0, 0.5, 0.9, 1.0],
        FirstRow::Random,
    ));
    // Small enough for finite differences on every element, so the token at the threshold
    // itself (kept whole: the mask is `dist < thresh`) is always checked.
    t.extend(global_cosine_cases(
        g,
        2,
        7,
        3,
        &[0.5, 0.9],
        FirstRow::Random,
    ));
    t.extend(global_cosine_cases(g, 2, 7, 3, &[0.0], FirstRow::Tiny));
    t.extend(global_cosine_cases(g, 2, 257, 8, &[0.9], FirstRow::Random));
    for stable in [false, true] {
        for amsgrad in [false, true] {
            t.push(adam_case(g, &[13, 3], stable, amsgrad, 1, 1e-8, 1e-4));
            t.push(adam_case(g, &[257], stable, amsgrad, 7, 1e-10, 1e-4));
        }
        // Second moments large against g: the stable variant's clip is inactive.
        t.push(adam_case(g, &[5, 7], stable, true, 3, 1e-10, 4.0));
    }
    for (stable, amsgrad) in [(false, false), (true, true), (true, false)] {
        // An empty tensor among them: it has no blocks of the fused launches.
        t.push(adam_steps_case(
            g,
            &[&[13, 3], &[0], &[257], &[5]],
            stable,
            amsgrad,
        ));
    }
    t.push(clip_case(g, &[&[13, 3], &[5], &[2, 2, 2]], 0.1));
    t.push(clip_case(g, &[&[3], &[1]], 100.0));
    for ac in [false, true] {
        t.push(resize_case(
            g,
            &[2, 3],
            5,
            7,
            9,
            4,
            Interp::Bilinear { align_corners: ac },
        ));
        t.push(resize_case(
            g,
            &[1],
            1,
            3,
            4,
            1,
            Interp::Bilinear { align_corners: ac },
        ));
    }
    t.push(resize_case(
        g,
        &[1, 1],
        28,
        28,
        392,
        392,
        Interp::Bilinear {
            align_corners: true,
        },
    ));
    t.push(resize_case(
        g,
        &[1, 1],
        392,
        392,
        256,
        256,
        Interp::Bilinear {
            align_corners: false,
        },
    ));
    t.push(resize_case(
        g,
        &[2, 3],
        5,
        7,
        9,
        4,
        Interp::Bicubic { scale: None },
    ));
    t.push(resize_case(
        g,
        &[1, 2],
        13,
        11,
        6,
        5,
        Interp::Bicubic { scale: None },
    ));
    // DINOv2's position-embedding interpolation: 37×37 → 28×28 by scale factor (28 + 0.1)/37.
    let s = (28.0 + 0.1) / 37.0;
    t.push(resize_case(
        g,
        &[1, 3],
        37,
        37,
        28,
        28,
        Interp::Bicubic {
            scale: Some((s, s)),
        },
    ));
    t.push(blur_case(g, &[2, 1, 13, 9], 4.0, 5));
    t.push(blur_case(g, &[1, 3, 4, 5], 1.0, 3));
    t.push(blur_case(g, &[1, 1, 256, 256], 4.0, 5));
    t.push(blur_case(g, &[2, 1, 1, 1], 4.0, 5));
    t.push(topk_case(g, 2, 65536, 655));
    t.push(topk_case(g, 3, 13, 1));
    t.push(topk_case(g, 3, 13, 13));
    t
}

// ---- running it ---------------------------------------------------------------------------

/// Run the op `c.op` with the backend's tensors: `ins` read, `outs` written or updated.
fn invoke<B: Backend>(
    be: &B,
    c: &Call,
    i: &[Tensor<B>],
    o: &mut [Tensor<B>],
) -> kdad::Result<Option<f64>> {
    let p = &c.p;
    let opt = |k: usize| if p.opt { Some(&i[k]) } else { None };
    match c.op {
        "copy" => be.copy(&i[0], &mut o[0])?,
        "fill" => be.fill(&mut o[0], p.value)?,
        "axpy" => be.axpy(p.value, &i[0], &mut o[0])?,
        "scale" => be.scale(&mut o[0], p.value)?,
        "sum_squares" => return be.sum_squares(&i[0]).map(Some),
        "matmul" => be.matmul(&i[0], &i[1], opt(2), &mut o[0], p.layout, p.accumulate)?,
        "bias_grad" => be.bias_grad(&i[0], &mut o[0])?,
        "layernorm_fwd" => {
            let [y, mean, rstd] = o else { unreachable!() };
            be.layernorm_fwd(&i[0], &i[1], &i[2], p.eps, y, mean, rstd)?
        }
        "layernorm_bwd" => {
            let [dx, dw, db] = o else { unreachable!() };
            be.layernorm_bwd(&i[0], &i[1], &i[2], &i[3], &i[4], dx, dw, db, p.accumulate)?
        }
        "attention_fwd" => {
            let [out, lse] = o else { unreachable!() };
            be.attention_fwd(&i[0], p.heads, p.scale, out, lse)?
        }
        "attention_bwd" => {
            be.attention_bwd(&i[0], &i[1], &i[2], &i[3], p.heads, p.scale, &mut o[0])?
        }
        "linear_attention_fwd" => be.linear_attention_fwd(&i[0], p.heads, p.eps, &mut o[0])?,
        "linear_attention_bwd" => {
            be.linear_attention_bwd(&i[0], &i[1], p.heads, p.eps, &mut o[0])?
        }
        "gelu_fwd" => be.gelu_fwd(&i[0], &mut o[0])?,
        "gelu_bwd" => be.gelu_bwd(&i[0], &i[1], &mut o[0])?,
        "bias_gelu_fwd" => be.bias_gelu_fwd(&i[0], &i[1], &mut o[0])?,
        "bias_gelu_bwd" => {
            let [dx, dbias] = o else { unreachable!() };
            be.bias_gelu_bwd(&i[0], &i[1], &i[2], dx, dbias)?
        }
        "residual_fwd" => be.residual_fwd(&i[0], &i[1], opt(2), &mut o[0])?,
        "residual_bwd" => {
            let (dy, rest) = o.split_first_mut().unwrap();
            be.residual_bwd(&i[0], &i[1], opt(2), dy, rest.first_mut())?
        }
        "dropout_fwd" => be.dropout_fwd(&i[0], p.p, p.seed, &mut o[0])?,
        "dropout_bwd" => be.dropout_bwd(&i[0], p.p, p.seed, &mut o[0])?,
        "patchify" => be.patchify(&i[0], p.patch, &mut o[0])?,
        "embed_tokens_fwd" => be.embed_tokens_fwd(&i[0], &i[1], &i[2], opt(3), &mut o[0])?,
        "embed_tokens_bwd" => {
            let (demb, rest) = o.split_first_mut().unwrap();
            let (dcls, rest) = rest.split_first_mut().unwrap();
            let (dpos, rest) = rest.split_first_mut().unwrap();
            be.embed_tokens_bwd(&i[0], demb, dcls, dpos, rest.first_mut())?
        }
        "slice_tokens" => be.slice_tokens(&i[0], p.start, &mut o[0])?,
        "unslice_tokens_add" => be.unslice_tokens_add(&i[0], p.start, &mut o[0])?,
        "group_mean_fwd" => be.group_mean_fwd(&i.iter().collect::<Vec<_>>(), &mut o[0])?,
        "group_mean_bwd" => be.group_mean_bwd(&i[0], &mut o.iter_mut().collect::<Vec<_>>())?,
        "cosine_distance_fwd" => be.cosine_distance_fwd(&i[0], &i[1], &mut o[0])?,
        "cosine_distance_bwd" => be.cosine_distance_bwd(&i[0], &i[1], &i[2], &mut o[0])?,
        "global_cosine_fwd" => {
            let [loss, pd, stats] = o else { unreachable!() };
            be.global_cosine_fwd(&i[0], &i[1], loss, pd, stats)?
        }
        "global_cosine_bwd" => be.global_cosine_bwd(
            &i[0], &i[1], &i[2], &i[3], p.p, p.factor, p.dloss, &mut o[0],
        )?,
        "adamw_step" | "stable_adamw_step" => {
            let (param, rest) = o.split_first_mut().unwrap();
            let (m, rest) = rest.split_first_mut().unwrap();
            let (v, rest) = rest.split_first_mut().unwrap();
            if c.op == "adamw_step" {
                be.adamw_step(param, &i[0], m, v, rest.first_mut(), &p.hp)?
            } else {
                be.stable_adamw_step(param, &i[0], m, v, rest.first_mut(), &p.hp)?
            }
        }
        "adam_steps" => {
            // The inouts are param, m, v (, vmax) of each tensor in turn.
            let per = o.len() / i.len();
            let mut set: Vec<AdamTensors<'_, B>> = o
                .chunks_mut(per)
                .zip(i)
                .map(|(state, grad)| {
                    let (param, rest) = state.split_first_mut().unwrap();
                    let (m, rest) = rest.split_first_mut().unwrap();
                    let (v, rest) = rest.split_first_mut().unwrap();
                    AdamTensors {
                        param,
                        grad,
                        m,
                        v,
                        vmax: rest.first_mut(),
                    }
                })
                .collect();
            be.adam_steps(p.stable, &mut set, &p.hp)?
        }
        "clip_grad_norm" => {
            return be
                .clip_grad_norm(&mut o.iter_mut().collect::<Vec<_>>(), p.max_norm)
                .map(|n| Some(n as f64))
        }
        "resize" => be.resize(&i[0], p.interp, &mut o[0])?,
        "gaussian_blur" => be.gaussian_blur(&i[0], p.sigma, p.ksize, &mut o[0])?,
        "topk_mean" => be.topk_mean(&i[0], p.k, &mut o[0])?,
        other => panic!("op table: no dispatch for {other}"),
    }
    Ok(None)
}

/// Which tensors of a call a backend gets as activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// Every operand from `upload` (f32 on every backend).
    Exact,
    /// The operands the models allocate with `zeros_activation` come from it.
    Activations,
}

/// Operands (indices over ins then outs) that the models keep as activations: inputs and
/// outputs of the forward ops, and the saved activations the backward ops read. Parameters,
/// every gradient, row statistics, losses, images and anomaly maps are not; nor is an output
/// an op adds into (the models add only into gradients).
fn activation_operands(c: &Call) -> Vec<usize> {
    let n = c.ins.len();
    match c.op {
        "copy" | "sum_squares" | "axpy" | "fill" => vec![0],
        "layernorm_bwd"
        | "linear_attention_bwd"
        | "gelu_bwd"
        | "bias_gelu_bwd"
        | "residual_bwd" => vec![1],
        "matmul" => match (c.p.layout, c.p.accumulate) {
            (Layout::TN, _) => vec![1],
            (_, false) => vec![0, n],
            (_, true) => vec![0],
        },
        "layernorm_fwd" => vec![0, 3],
        "attention_fwd"
        | "linear_attention_fwd"
        | "gelu_fwd"
        | "dropout_fwd"
        | "slice_tokens"
        | "cosine_distance_fwd"
        | "global_cosine_fwd"
        | "global_cosine_bwd" => {
            vec![0, 1]
        }
        "attention_bwd" | "cosine_distance_bwd" => vec![1, 2],
        "bias_gelu_fwd" => vec![0, 2],
        "residual_fwd" => vec![0, 1, n],
        "patchify" => vec![1],
        "embed_tokens_fwd" => vec![0, n],
        "group_mean_fwd" => (0..=n).collect(),
        _ => vec![],
    }
}

/// A backend tensor holding `host`: uploaded, or copied into an activation tensor.
fn place<B: Backend>(be: &B, host: &HostTensor, activation: bool) -> Tensor<B> {
    let t = be.upload(host).unwrap();
    if !activation {
        return t;
    }
    let mut a = be.zeros_activation(host.dims()).unwrap();
    be.copy(&t, &mut a).unwrap();
    a
}

/// Place the operands (outputs poisoned with NaN where they are written), run the op and
/// download the outputs.
fn execute<B: Backend>(be: &B, c: &Call, storage: Storage) -> (Vec<HostTensor>, Option<f64>) {
    let acts = match storage {
        Storage::Exact => vec![],
        Storage::Activations => activation_operands(c),
    };
    let n = c.ins.len();
    let ins: Vec<Tensor<B>> = c
        .ins
        .iter()
        .enumerate()
        .map(|(k, t)| {
            let t = place(be, t, acts.contains(&k));
            if c.frozen && k == 1 {
                be.freeze(t).unwrap()
            } else {
                t
            }
        })
        .collect();
    let mut outs: Vec<Tensor<B>> = c
        .outs
        .iter()
        .enumerate()
        .map(|(k, (t, poison))| {
            let init = if *poison {
                HostTensor::filled(t.shape.clone(), f32::NAN)
            } else {
                t.clone()
            };
            place(be, &init, acts.contains(&(n + k)))
        })
        .collect();
    let ret = invoke(be, c, &ins, &mut outs)
        .unwrap_or_else(|e| panic!("{} on {}: {e}", c.label(), be.name()));
    be.synchronize().unwrap();
    (outs.iter().map(|t| be.download(t).unwrap()).collect(), ret)
}

/// Two f32 ulps of a value: what storing a result in f32 (one or two roundings) may cost
/// whatever the op's own accuracy. It matters for outputs updated in place, where the change
/// (an optimiser step of 1e-5) is far smaller than the value it is added to.
const F32_STORE: f64 = 2.0 * f32::EPSILON as f64;

/// Max |got - want| over the checked elements, relative to max |want| there (both minus the
/// starting value for outputs added into, with [`F32_STORE`] of the whole value allowed on
/// top). Non-finite values count as infinite error.
fn rel_err(got: &[f32], want: &[f64], at: Option<&[usize]>, base: Option<&[f64]>) -> f64 {
    let all: Vec<usize>;
    let idx = match at {
        Some(a) => a,
        None => {
            all = (0..want.len()).collect();
            &all
        }
    };
    let b = |i: usize| base.map_or(0.0, |b| b[i]);
    let (mut err, mut mag, mut full) = (0.0f64, 0.0f64, 0.0f64);
    for &i in idx {
        let (g, w) = (got[i] as f64 - b(i), want[i] - b(i));
        if !g.is_finite() {
            return f64::INFINITY;
        }
        err = err.max((g - w).abs());
        mag = mag.max(w.abs());
        full = full.max(want[i].abs());
    }
    let err = (err - F32_STORE * full).max(0.0);
    err / mag.max(1e-6)
}

fn check_outputs(be_name: &str, c: &Call, got: &[HostTensor], ret: Option<f64>, tol: &Tolerance) {
    for (j, (g, e)) in got.iter().zip(&c.expect).enumerate() {
        assert!(
            g.data.iter().all(|v| v.is_finite()),
            "{} on {be_name}: output {j} has non-finite values (unwritten?)",
            c.label()
        );
        let limit = if e.grad { tol.backward } else { tol.forward };
        let err = rel_err(&g.data, &e.want, e.at.as_deref(), e.base.as_deref());
        let what = if e.grad {
            "finite differences"
        } else {
            "the f64 reference"
        };
        assert!(err <= limit, "{} on {be_name}: output {j} differs from {what}: relative error {err:.3e} > {limit:.1e}", c.label());
    }
    if let Some(want) = c.ret {
        let got = ret.unwrap_or_else(|| panic!("{}: no return value", c.label()));
        let err = (got - want).abs() / want.abs().max(1e-6);
        assert!(
            err <= tol.forward,
            "{} on {be_name}: returned {got}, reference {want}",
            c.label()
        );
    }
}

/// The same call with operand `which` (over ins then outs) one larger in its last dimension
/// (its first, for operands marked flexible).
fn with_wrong_shape(c: &Call, which: usize) -> (Vec<HostTensor>, Vec<HostTensor>) {
    let grow = |t: &HostTensor| {
        let mut d = t.dims().to_vec();
        let axis = if c.flex.contains(&which) {
            0
        } else {
            d.len() - 1
        };
        d[axis] += 1;
        HostTensor::zeros(&d[..])
    };
    let n_in = c.ins.len();
    let ins = c
        .ins
        .iter()
        .enumerate()
        .map(|(k, t)| if k == which { grow(t) } else { t.clone() })
        .collect();
    let outs = c
        .outs
        .iter()
        .enumerate()
        .map(|(k, t)| {
            if n_in + k == which {
                grow(&t.0)
            } else {
                t.0.clone()
            }
        })
        .collect();
    (ins, outs)
}

fn check_wrong_shapes<B: Backend>(be: &B, c: &Call) {
    if SHAPE_FREE.contains(&c.op) {
        return;
    }
    for which in 0..c.ins.len() + c.outs.len() {
        let (ins, outs) = with_wrong_shape(c, which);
        let ins: Vec<Tensor<B>> = ins
            .iter()
            .enumerate()
            .map(|(k, t)| {
                let t = be.upload(t).unwrap();
                if c.frozen && k == 1 {
                    be.freeze(t).unwrap()
                } else {
                    t
                }
            })
            .collect();
        let mut outs: Vec<Tensor<B>> = outs.iter().map(|t| be.upload(t).unwrap()).collect();
        match invoke(be, c, &ins, &mut outs) {
            Err(e @ Error::Shape { op, .. }) => {
                assert_eq!(
                    op,
                    c.op,
                    "{}: operand {which} wrong: error names another op: {e}",
                    c.label()
                );
                assert!(e.to_string().contains(c.op), "{e}");
            }
            other => panic!(
                "{} on {}: operand {which} with a wrong shape gave {other:?}, not a shape error",
                c.label(),
                be.name()
            ),
        }
    }
}

/// Variants of an entry's scalar parameters that the op must reject with an error naming it.
fn invalid_params(c: &Call) -> Vec<P> {
    let with = |f: &dyn Fn(&mut P)| {
        let mut p = c.p.clone();
        f(&mut p);
        p
    };
    let m = c.ins.first().map_or(0, |t| t.shape.last());
    match c.op {
        "dropout_fwd" | "dropout_bwd" => vec![with(&|p| p.p = 1.0), with(&|p| p.p = -0.1)],
        "global_cosine_bwd" => vec![with(&|p| p.p = 1.5), with(&|p| p.p = f32::NAN)],
        "adamw_step" | "stable_adamw_step" | "adam_steps" => vec![
            with(&|p| p.hp.t = 0),
            with(&|p| p.hp.amsgrad = !p.hp.amsgrad),
        ],
        "topk_mean" => vec![with(&|p| p.k = 0), with(&|p| p.k = m + 1)],
        "gaussian_blur" => vec![with(&|p| p.ksize = 4), with(&|p| p.sigma = 0.0)],
        "attention_fwd" | "attention_bwd" => vec![with(&|p| p.heads = 0), with(&|p| p.heads += 1)],
        "linear_attention_fwd" | "linear_attention_bwd" => {
            vec![with(&|p| p.heads = 0), with(&|p| p.eps = -1.0)]
        }
        "patchify" => vec![with(&|p| p.patch = 0), with(&|p| p.patch += 1)],
        "resize" => vec![with(&|p| {
            p.interp = Interp::Bicubic {
                scale: Some((0.0, 1.0)),
            }
        })],
        _ => vec![],
    }
}

fn check_invalid_params<B: Backend>(be: &B, c: &Call) {
    for p in invalid_params(c) {
        let bad = Call { p, ..c.clone() };
        let ins: Vec<Tensor<B>> = bad.ins.iter().map(|t| be.upload(t).unwrap()).collect();
        let mut outs: Vec<Tensor<B>> = bad.outs.iter().map(|t| be.upload(&t.0).unwrap()).collect();
        match invoke(be, &bad, &ins, &mut outs) {
            Err(e) => assert!(
                e.to_string().contains(c.op),
                "{}: error does not name the op: {e}",
                c.label()
            ),
            Ok(_) => panic!(
                "{} on {}: accepted invalid parameters",
                c.label(),
                be.name()
            ),
        }
    }
}

/// The memory ops the runner itself relies on.
fn check_memory_ops<B: Backend>(be: &B) {
    assert!(!be.name().is_empty());
    let z = be.download(&be.zeros(&[3, 1, 5]).unwrap()).unwrap();
    assert_eq!(z.dims(), &[3, 1, 5]);
    assert!(z.data.iter().all(|&v| v == 0.0));
    let h = Rng::new(3).tensor([7, 2], -1.0, 1.0);
    let back = be.download(&be.upload(&h).unwrap()).unwrap();
    assert_eq!(back.dims(), h.dims());
    let inconsistent = HostTensor {
        shape: [7, 3].into(),
        data: h.data.clone(),
    };
    match be.upload(&inconsistent) {
        Err(e @ Error::Shape { op: "upload", .. }) => {
            assert!(e.to_string().contains("[7, 3]"), "{e}")
        }
        other => panic!(
            "upload of a shape/data mismatch on {} gave {other:?}",
            be.name()
        ),
    }
    let err = back.max_abs_diff(&h).unwrap() as f64;
    assert!(
        err <= 1e-2 * h.data.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64,
        "upload/download changed values by {err}"
    );
    // An activation starts at zero, and holds a value to at least bf16 precision (2^-8
    // relative: 8 significant bits, rounded to nearest) both ways through copy.
    let mut act = be.zeros_activation(&[7, 2]).unwrap();
    assert!(be.download(&act).unwrap().data.iter().all(|&v| v == 0.0));
    be.copy(&be.upload(&h).unwrap(), &mut act).unwrap();
    let mut again = be.zeros(&[7, 2]).unwrap();
    be.copy(&act, &mut again).unwrap();
    for got in [be.download(&act).unwrap(), be.download(&again).unwrap()] {
        for (g, w) in got.data.iter().zip(&h.data) {
            assert!(
                (g - w).abs() <= w.abs() / 256.0,
                "an activation holds {w} as {g} on {}",
                be.name()
            );
        }
    }
    // A frozen tensor keeps its shape and holds its values to bf16 precision at least.
    let frozen = be.freeze(be.upload(&h).unwrap()).unwrap();
    assert_eq!(frozen.dims(), h.dims());
    for (g, w) in be.download(&frozen).unwrap().data.iter().zip(&h.data) {
        assert!(
            (g - w).abs() <= w.abs() / 256.0,
            "a frozen tensor holds {w} as {g} on {}",
            be.name()
        );
    }
    be.synchronize().unwrap();
}

/// Run every entry of the table on `be`: against the f64 reference and finite differences
/// within `tol`, against the CPU backend (when `be` is another backend) within `tol`, and
/// with wrong shapes. Panics with the entry's ops and shapes on the first failure.
pub fn run_table<B: Backend>(be: &B, storage: Storage, tol: &Tolerance) {
    check_memory_ops(be);
    let cpu = Cpu::new();
    let is_cpu = be.name() == cpu.name();
    for c in table() {
        let (got, ret) = execute(be, &c, storage);
        check_outputs(&be.name(), &c, &got, ret, tol);
        if !is_cpu {
            let (want, _) = execute(&cpu, &c, Storage::Exact);
            for (j, (g, w)) in got.iter().zip(&want).enumerate() {
                let limit = if c.expect[j].grad {
                    tol.backward
                } else {
                    tol.forward
                };
                let err = rel_err(&g.data, &f64s(w), None, c.expect[j].base.as_deref());
                assert!(
                    err <= limit,
                    "{} on {}: output {j} differs from the CPU backend: {err:.3e} > {limit:.1e}",
                    c.label(),
                    be.name()
                );
            }
        }
        check_wrong_shapes(be, &c);
        check_invalid_params(be, &c);
    }
}

/// The trait's methods as written in the trait's source, in order.
pub fn trait_methods(source: &str) -> Vec<String> {
    let start = source
        .find("pub trait Backend")
        .expect("no `pub trait Backend` in the source");
    let body = &source[start..];
    // The trait ends at the first line that is exactly "}".
    let end = body.find("\n}").expect("unterminated trait");
    body[..end]
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("fn "))
        .map(|rest| rest.split(['(', '<']).next().unwrap().trim().to_string())
        .collect()
}

/// Fails if [`TRAIT_OPS`] differs from the trait's methods in `trait_source`, or if an op is
/// neither in the table nor checked by the runner, or if the table names an unknown op.
pub fn coverage(trait_source: &str) {
    let parsed = trait_methods(trait_source);
    let listed: Vec<String> = TRAIT_OPS.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        parsed, listed,
        "TRAIT_OPS is out of date with trait Backend"
    );
    let tabled: std::collections::BTreeSet<&str> = table()
        .iter()
        .map(|c| c.op)
        .chain(RUNNER_OPS.iter().copied())
        .collect();
    for op in TRAIT_OPS {
        assert!(
            tabled.contains(op),
            "op {op} of trait Backend has no entry in the op table"
        );
    }
    for op in &tabled {
        assert!(
            TRAIT_OPS.contains(op),
            "the op table names {op}, which is not a Backend method"
        );
    }
}
