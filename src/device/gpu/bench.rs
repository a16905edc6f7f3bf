//! `kdad bench kernels`: each GPU kernel family run once against the CPU backend (its largest
//! error relative to the largest reference value) and then timed. On CUDA the time comes from
//! events around `reps` launches and is reported with the achieved TFLOP/s (tensor-core ops)
//! or GB/s (bandwidth-bound ops) and the fraction of an H100 SXM's peak; the emulator reports
//! correctness only. kernels/README.md gives the fraction each kernel is expected to reach,
//! and why.

use super::{GpuBackend, Launcher};
use crate::device::cpu::Cpu;
use crate::device::{AdamStep, Backend, Interp, Layout, Tensor};
use crate::error::{Error, Result};
use crate::tensor::{HostTensor, Rng};

/// H100 SXM dense bf16 tensor-core peak, FLOP/s.
pub const H100_BF16_FLOPS: f64 = 989e12;
/// H100 SXM HBM3 bandwidth, bytes/s.
pub const H100_HBM_BYTES: f64 = 3.35e12;

/// What one launch of a case does: FLOPs for the tensor-core ops, DRAM bytes for the rest.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Work {
    Flops(f64),
    Bytes(f64),
}

/// Problem sizes: `Small` for the emulator, `Vit` for a real GPU (ViT-B/14 at 392 px,
/// batch 8: 8 × 785 tokens of width 768, 12 heads of 64).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchSize {
    Small,
    Vit,
}

/// One benchmarked op.
#[derive(Clone, Debug)]
pub struct BenchRow {
    pub op: &'static str,
    pub shape: String,
    /// max |gpu - cpu| / max |cpu| over the op's outputs after one call.
    pub rel_err: f64,
    /// Milliseconds per call, where the launcher can time.
    pub ms: Option<f64>,
    pub work: Work,
}

impl BenchRow {
    /// Achieved rate and the fraction of the H100's peak, where timed.
    pub fn rate(&self) -> Option<(String, f64)> {
        let s = self.ms? / 1e3;
        Some(match self.work {
            Work::Flops(f) => (
                format!("{:.1} TFLOP/s", f / s / 1e12),
                f / s / H100_BF16_FLOPS,
            ),
            Work::Bytes(b) => (format!("{:.0} GB/s", b / s / 1e9), b / s / H100_HBM_BYTES),
        })
    }
}

/// One case: the op, its inputs (uploaded to both backends) and output shapes.
struct Case {
    op: &'static str,
    shape: String,
    ins: Vec<HostTensor>,
    outs: Vec<Vec<usize>>,
    /// Operands (indices over ins then outs) the models keep as activations: the GPU gets
    /// them in its activation storage (bf16), and `work` counts their bytes as such.
    acts: Vec<usize>,
    work: Work,
}

fn cases(size: BenchSize, cpu: &Cpu) -> Result<Vec<Case>> {
    let (b, n, d, heads) = match size {
        BenchSize::Small => (2, 37, 128, heads(size)),
        BenchSize::Vit => (8, 785, 768, heads(size)),
    };
    let r = b * n;
    let mut rng = Rng::new(7);
    // bf16-representable inputs: activation storage holds them exactly, so the error column
    // shows the ops' own rounding.
    let mut t = |dims: &[usize]| rng.tensor(dims, -1.0, 1.0).round_bf16();
    let el = |n: usize, bytes_per: usize| Work::Bytes((n * bytes_per) as f64);
    let dh = d / heads;
    let attn_flops = 4.0 * (b * heads) as f64 * (n * n * dh) as f64;
    let shape = |dims: &[usize]| format!("{dims:?}");
    // The backward's saved forward state comes from the reference.
    let qkv = t(&[b, n, 3 * d]);
    let (mut o, mut lse) = (cpu.zeros(&[b, n, d])?, cpu.zeros(&[b, heads, n])?);
    cpu.attention_fwd(&cpu.upload(&qkv)?, heads, ATTN_SCALE, &mut o, &mut lse)?;
    let (o, lse) = (cpu.download(&o)?, cpu.download(&lse)?);
    Ok(vec![
        Case {
            op: "matmul",
            shape: format!("[{r}, {d}] x [{}, {d}]ᵀ", 3 * d),
            ins: vec![t(&[r, d]), t(&[3 * d, d]), t(&[3 * d])],
            outs: vec![vec![r, 3 * d]],
            acts: vec![0, 3],
            work: Work::Flops(2.0 * (r * d * 3 * d) as f64),
        },
        Case {
            op: "layernorm_fwd",
            shape: shape(&[r, d]),
            ins: vec![t(&[r, d]), t(&[d]), t(&[d])],
            outs: vec![vec![r, d], vec![r], vec![r]],
            acts: vec![0, 3],
            work: el(r * d, 4),
        },
        Case {
            op: "layernorm_bwd",
            shape: shape(&[r, d]),
            ins: vec![t(&[r, d]), t(&[r, d]), t(&[d]), t(&[r]), t(&[r])],
            outs: vec![vec![r, d], vec![d], vec![d]],
            acts: vec![1],
            work: el(r * d, 16),
        },
        Case {
            op: "attention_fwd",
            shape: format!("B {b}, N {n}, H {heads}, dh {dh}"),
            ins: vec![t(&[b, n, 3 * d])],
            outs: vec![vec![b, n, d], vec![b, heads, n]],
            acts: vec![0, 1],
            work: Work::Flops(attn_flops),
        },
        Case {
            op: "attention_bwd",
            shape: format!("B {b}, N {n}, H {heads}, dh {dh}"),
            ins: vec![t(&[b, n, d]), qkv, o, lse],
            outs: vec![vec![b, n, 3 * d]],
            acts: vec![1, 2],
            work: Work::Flops(2.5 * attn_flops),
        },
        Case {
            op: "linear_attention_fwd",
            shape: format!("B {b}, N {n}, H {heads}, dh {dh}"),
            ins: vec![t(&[b, n, 3 * d])],
            outs: vec![vec![b, n, d]],
            acts: vec![0, 1],
            work: el(r * 4 * d, 2),
        },
        Case {
            op: "bias_gelu_fwd",
            shape: shape(&[r, 4 * d]),
            ins: vec![t(&[r, 4 * d]), t(&[4 * d])],
            outs: vec![vec![r, 4 * d]],
            acts: vec![0, 2],
            work: el(r * 4 * d, 4),
        },
        Case {
            op: "residual_fwd",
            shape: shape(&[r, d]),
            ins: vec![t(&[r, d]), t(&[r, d]), t(&[d])],
            outs: vec![vec![r, d]],
            acts: vec![0, 1, 3],
            work: el(r * d, 6),
        },
        Case {
            op: "dropout_fwd",
            shape: shape(&[r, d]),
            ins: vec![t(&[r, d])],
            outs: vec![vec![r, d]],
            acts: vec![0, 1],
            work: el(r * d, 4),
        },
        Case {
            op: "cosine_distance_fwd",
            shape: shape(&[r, d]),
            ins: vec![t(&[r, d]), t(&[r, d])],
            outs: vec![vec![r]],
            acts: vec![0, 1],
            work: el(r * d, 4),
        },
        Case {
            op: "global_cosine_fwd",
            shape: shape(&[b, n, d]),
            ins: vec![t(&[b, n, d]), t(&[b, n, d])],
            outs: vec![vec![1], vec![b, n], vec![b, 3]],
            acts: vec![0, 1],
            work: el(r * d, 8),
        },
        Case {
            op: "stable_adamw_step",
            shape: shape(&[d, 4 * d]),
            ins: vec![
                t(&[d, 4 * d]),
                t(&[d, 4 * d]),
                t(&[d, 4 * d]),
                t(&[d, 4 * d]),
                t(&[d, 4 * d]),
            ],
            outs: vec![],
            acts: vec![],
            work: el(d * 4 * d, 48),
        },
        Case {
            op: "gaussian_blur",
            shape: shape(&[b, 1, 4 * n / 13, 4 * n / 13]),
            ins: vec![t(&[b, 1, 4 * n / 13, 4 * n / 13])],
            outs: vec![vec![b, 1, 4 * n / 13, 4 * n / 13]],
            acts: vec![],
            work: el(b * (4 * n / 13).pow(2), 8),
        },
        Case {
            op: "resize",
            shape: format!("[{b}, 1, 28, 28] -> [{b}, 1, {0}, {0}]", 8 * n / 13),
            ins: vec![t(&[b, 1, 28, 28])],
            outs: vec![vec![b, 1, 8 * n / 13, 8 * n / 13]],
            acts: vec![],
            work: el(b * (8 * n / 13).pow(2), 4),
        },
        Case {
            op: "topk_mean",
            shape: shape(&[b, 8 * n]),
            ins: vec![t(&[b, 8 * n])],
            outs: vec![vec![b]],
            acts: vec![],
            work: el(b * 8 * n, 4),
        },
    ])
}

/// Heads of the attention cases (head dim 64 at both sizes).
fn heads(size: BenchSize) -> usize {
    match size {
        BenchSize::Small => 2,
        BenchSize::Vit => 12,
    }
}

/// 1/sqrt(64), the attention scale of a 64-wide head.
const ATTN_SCALE: f32 = 0.125;

/// Run `op` on `be` over its inputs and outputs. Inputs that the op updates in place (the
/// optimiser state) are among `ins`.
fn exec<B: Backend>(
    be: &B,
    op: &str,
    ins: &mut [Tensor<B>],
    outs: &mut [Tensor<B>],
    heads: usize,
) -> Result<()> {
    let hp = AdamStep {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 1e-4,
        t: 10,
        amsgrad: true,
    };
    match (op, ins, outs) {
        ("matmul", [a, w, bias], [y]) => be.matmul(a, w, Some(bias), y, Layout::NT, false),
        ("layernorm_fwd", [x, w, b], [y, m, r]) => be.layernorm_fwd(x, w, b, 1e-6, y, m, r),
        ("layernorm_bwd", [dy, x, w, m, r], [dx, dw, db]) => {
            be.layernorm_bwd(dy, x, w, m, r, dx, dw, db, false)
        }
        ("attention_fwd", [qkv], [o, lse]) => be.attention_fwd(qkv, heads, ATTN_SCALE, o, lse),
        ("attention_bwd", [dout, qkv, o, lse], [dqkv]) => {
            be.attention_bwd(dout, qkv, o, lse, heads, ATTN_SCALE, dqkv)
        }
        ("linear_attention_fwd", [qkv], [o]) => be.linear_attention_fwd(qkv, heads, 0.0, o),
        ("bias_gelu_fwd", [x, bias], [y]) => be.bias_gelu_fwd(x, bias, y),
        ("residual_fwd", [x, y, g], [o]) => be.residual_fwd(x, y, Some(g), o),
        ("dropout_fwd", [x], [o]) => be.dropout_fwd(x, 0.2, 42, o),
        ("cosine_distance_fwd", [a, b], [d]) => be.cosine_distance_fwd(a, b, d),
        ("global_cosine_fwd", [a, b], [l, pd, s]) => be.global_cosine_fwd(a, b, l, pd, s),
        ("stable_adamw_step", [p, g, m, v, vm], []) => {
            be.stable_adamw_step(p, g, m, v, Some(vm), &hp)
        }
        ("gaussian_blur", [x], [o]) => be.gaussian_blur(x, 4.0, 5, o),
        ("resize", [x], [o]) => be.resize(
            x,
            Interp::Bilinear {
                align_corners: false,
            },
            o,
        ),
        ("topk_mean", [x], [o]) => be.topk_mean(x, 17, o),
        (op, ..) => Err(Error::Invalid(format!(
            "bench: no runner for {op} with these operands"
        ))),
    }
}

/// The largest |got - want| over the largest |want|.
fn rel_err(got: &HostTensor, want: &HostTensor) -> f64 {
    let peak = want
        .data
        .iter()
        .fold(0f64, |m, v| m.max(v.abs() as f64))
        .max(f64::MIN_POSITIVE);
    let worst = got
        .data
        .iter()
        .zip(&want.data)
        .fold(0f64, |m, (g, w)| m.max((*g as f64 - *w as f64).abs()));
    if got.data.iter().any(|v| v.is_nan()) {
        f64::NAN
    } else {
        worst / peak
    }
}

/// Benchmark every case on `gpu`: correctness against the CPU backend, then `reps` timed calls.
pub fn bench_kernels<L: Launcher>(
    gpu: &GpuBackend<L>,
    size: BenchSize,
    reps: usize,
) -> Result<Vec<BenchRow>> {
    let cpu = Cpu::new();
    let heads = heads(size);
    let mut rows = Vec::new();
    for case in cases(size, &cpu)? {
        let n_ins = case.ins.len();
        let mut gi: Vec<Tensor<GpuBackend<L>>> = case
            .ins
            .iter()
            .enumerate()
            .map(|(k, h)| {
                let t = gpu.upload(h)?;
                if !case.acts.contains(&k) {
                    return Ok(t);
                }
                let mut a = gpu.zeros_activation(h.dims())?;
                gpu.copy(&t, &mut a)?;
                Ok(a)
            })
            .collect::<Result<_>>()?;
        let mut ci: Vec<Tensor<Cpu>> = case
            .ins
            .iter()
            .map(|h| cpu.upload(h))
            .collect::<Result<_>>()?;
        let mut go: Vec<Tensor<GpuBackend<L>>> = case
            .outs
            .iter()
            .enumerate()
            .map(|(k, d)| {
                if case.acts.contains(&(n_ins + k)) {
                    gpu.zeros_activation(d)
                } else {
                    gpu.zeros(d)
                }
            })
            .collect::<Result<_>>()?;
        let mut co: Vec<Tensor<Cpu>> = case
            .outs
            .iter()
            .map(|d| cpu.zeros(d))
            .collect::<Result<_>>()?;
        exec(gpu, case.op, &mut gi, &mut go, heads)?;
        exec(&cpu, case.op, &mut ci, &mut co, heads)?;
        // Outputs, or for in-place ops the updated inputs.
        let (g_res, c_res) = if case.outs.is_empty() {
            (&gi, &ci)
        } else {
            (&go, &co)
        };
        let mut err = 0f64;
        for (g, c) in g_res.iter().zip(c_res) {
            let e = rel_err(&gpu.download(g)?, &cpu.download(c)?);
            err = if e.is_nan() { e } else { err.max(e) };
        }
        let ms = gpu.launcher().time_ms(&mut || {
            for _ in 0..reps {
                exec(gpu, case.op, &mut gi, &mut go, heads)?;
            }
            Ok(())
        })?;
        rows.push(BenchRow {
            op: case.op,
            shape: case.shape,
            rel_err: err,
            ms: ms.map(|t| t / reps.max(1) as f64),
            work: case.work,
        });
    }
    Ok(rows)
}

/// `kdad bench kernels --device DEVICE`: `cuda` (ViT-B sizes, timed on GPU 0) or `emu` (small
/// sizes, correctness only).
pub fn run(device: &str, reps: usize) -> Result<Vec<BenchRow>> {
    match device {
        "emu" => bench_kernels(
            &GpuBackend::new(super::emu::Emu::new()),
            BenchSize::Small,
            reps,
        ),
        "cuda" => bench_kernels(
            &GpuBackend::new(super::cuda::Cuda::new(0)?),
            BenchSize::Vit,
            reps,
        ),
        other => Err(Error::Invalid(format!(
            "bench kernels: device {other:?} must be cuda or emu"
        ))),
    }
}

/// The rows as an aligned text table.
pub fn format_rows(rows: &[BenchRow]) -> String {
    let mut out = format!(
        "{:<22} {:<34} {:>10} {:>10} {:>16} {:>8}\n",
        "op", "shape", "rel err", "ms", "rate", "of peak"
    );
    for r in rows {
        let (ms, rate, frac) = match (r.ms, r.rate()) {
            (Some(ms), Some((rate, frac))) => {
                (format!("{ms:.3}"), rate, format!("{:.1} %", 100.0 * frac))
            }
            _ => ("-".into(), "-".into(), "-".into()),
        };
        out += &format!(
            "{:<22} {:<34} {:>10.2e} {:>10} {:>16} {:>8}\n",
            r.op, r.shape, r.rel_err, ms, rate, frac
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::gpu::emu::Emu;

    #[test]
    fn emulator_bench_checks_correctness_and_reports_no_time() {
        let rows = bench_kernels(&GpuBackend::new(Emu::new()), BenchSize::Small, 1).unwrap();
        assert_eq!(
            rows.len(),
            cases(BenchSize::Small, &Cpu::new()).unwrap().len()
        );
        for r in &rows {
            assert!(
                r.ms.is_none() && r.rate().is_none(),
                "{}: the emulator has no clock",
                r.op
            );
            // bf16 tensor-core ops within 1e-2 of the largest reference value, f32 ops far
            // below; a bf16 activation output adds one rounding, at most 2^-8 = 3.9e-3 of
            // the largest value (tests/op_table_emu.rs derives the same bound).
            assert!(
                r.rel_err <= 1.4e-2,
                "{} {}: relative error {}",
                r.op,
                r.shape,
                r.rel_err
            );
        }
    }

    #[test]
    fn rates_are_fractions_of_the_h100_peaks() {
        let row = BenchRow {
            op: "x",
            shape: String::new(),
            rel_err: 0.0,
            ms: Some(1.0),
            work: Work::Bytes(3.35e9),
        };
        let (text, frac) = row.rate().unwrap();
        assert_eq!(text, "3350 GB/s");
        assert!((frac - 1.0).abs() < 1e-12);
        let row = BenchRow {
            work: Work::Flops(989e9),
            ..row
        };
        assert!((row.rate().unwrap().1 - 1.0).abs() < 1e-12);
        assert!(format_rows(&[row]).contains("100.0 %"));
    }

    #[test]
    fn unknown_device_is_an_error() {
        let e = run("tpu", 1).unwrap_err().to_string();
        assert!(e.contains("tpu") && e.contains("cuda or emu"), "{e}");
    }
}
