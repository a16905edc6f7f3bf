//! CPU op throughput through the Backend trait, at ViT-S / Dinomaly sizes: 4 images of 789
//! tokens (392 px, patch 14, 4 registers), width 384, 6 heads of 64.
//!
//! Run: `cargo bench --bench ops [-- --reps N]` (default 5; `RAYON_NUM_THREADS` for
//! threads). Reports the best of N runs after a warm-up. Bytes count each operand read or written
//! once (the minimum traffic); FLOPs count multiply-adds as 2 and are given only where the
//! op is arithmetic-bound enough for them to mean something.

use kdad::device::cpu::Cpu;
use kdad::device::{AdamStep, Backend, Interp, Tensor};
use kdad::tensor::Rng;

mod common;
use common::{arg, timed};

const B: usize = 4;
const N: usize = 789;
const D: usize = 384;
const H: usize = 6;
const HD: usize = D / H;
const ROWS: usize = B * N;

struct Bench {
    cpu: Cpu,
    rng: Rng,
    reps: usize,
}

impl Bench {
    fn rand(&mut self, dims: &[usize], lo: f32, hi: f32) -> Tensor<Cpu> {
        self.cpu.upload(&self.rng.tensor(dims, lo, hi)).unwrap()
    }
    fn zeros(&self, dims: &[usize]) -> Tensor<Cpu> {
        self.cpu.zeros(dims).unwrap()
    }
    /// Time `f` (best of reps after a warm-up) and print one line: wall time, the implied
    /// bandwidth and FLOP rate, and the CPU time all threads used (on an idle machine the
    /// wall time lies between that divided by the thread count and that itself).
    fn run(&self, what: &str, floats: usize, flops: f64, mut f: impl FnMut(&Cpu)) {
        let cpu = self.cpu;
        let mut g = || f(&cpu);
        g();
        let (mut wall, mut cpu_time) = (f64::INFINITY, f64::INFINITY);
        for _ in 0..self.reps {
            let (w, c) = timed(&mut g);
            wall = wall.min(w);
            cpu_time = cpu_time.min(c.unwrap_or(f64::NAN));
        }
        let gflops = if flops > 0.0 {
            format!("{:>7.1} GFLOP/s", flops / wall / 1e9)
        } else {
            " ".repeat(15)
        };
        println!(
            "{what:<44} {:>9.3} ms {:>7.2} GB/s {gflops} | CPU {:>9.3} ms",
            wall * 1e3,
            4.0 * floats as f64 / wall / 1e9,
            cpu_time * 1e3
        );
    }
}

// Called from the main thread, outside rayon's pool, unlike the command line (see
// `cpu::in_pool`): the CPU-time column reads the threads' scheduler statistics, which are
// current only for threads that are not running when read.
fn main() {
    let mut b = Bench {
        cpu: Cpu::new(),
        rng: Rng::new(7),
        reps: arg("--reps").and_then(|v| v.parse().ok()).unwrap_or(5),
    };
    println!(
        "cpu ops, f32, {} threads, best of {}; B={B} N={N} D={D} heads={H}",
        rayon::current_num_threads(),
        b.reps
    );
    let x = b.rand(&[B, N, D], -1.0, 1.0);
    let y = b.rand(&[B, N, D], -1.0, 1.0);
    let mut out = b.zeros(&[B, N, D]);
    let w = b.rand(&[D], 0.5, 1.5);
    let bias = b.rand(&[D], -0.5, 0.5);
    let (mut mean, mut rstd) = (b.zeros(&[B, N]), b.zeros(&[B, N]));
    let (mut dw, mut db) = (b.zeros(&[D]), b.zeros(&[D]));
    let nd = ROWS * D;

    b.run("layernorm_fwd [3156, 384]", 2 * nd, 0.0, |c| {
        c.layernorm_fwd(&x, &w, &bias, 1e-6, &mut out, &mut mean, &mut rstd)
            .unwrap()
    });
    let mut dx = b.zeros(&[B, N, D]);
    b.run("layernorm_bwd [3156, 384]", 3 * nd, 0.0, |c| {
        c.layernorm_bwd(&y, &x, &w, &mean, &rstd, &mut dx, &mut dw, &mut db, false)
            .unwrap()
    });

    let qkv = b.rand(&[B, N, 3 * D], -1.0, 1.0);
    let mut lse = b.zeros(&[B, H, N]);
    let attn_flops = 4.0 * (B * H * N * N * HD) as f64;
    b.run(
        "attention_fwd [4, 789, 3*384] 6 heads",
        4 * nd,
        attn_flops,
        |c| {
            c.attention_fwd(&qkv, H, (HD as f32).powf(-0.5), &mut out, &mut lse)
                .unwrap()
        },
    );
    let mut dqkv = b.zeros(&[B, N, 3 * D]);
    b.run(
        "attention_bwd [4, 789, 3*384] 6 heads",
        8 * nd,
        2.5 * attn_flops,
        |c| {
            c.attention_bwd(&y, &qkv, &out, &lse, H, (HD as f32).powf(-0.5), &mut dqkv)
                .unwrap()
        },
    );
    let lin_flops = 4.0 * (B * H * N * HD * HD) as f64;
    b.run(
        "linear_attention_fwd [4, 789, 3*384]",
        4 * nd,
        lin_flops,
        |c| c.linear_attention_fwd(&qkv, H, 0.0, &mut out).unwrap(),
    );
    b.run(
        "linear_attention_bwd [4, 789, 3*384]",
        7 * nd,
        3.0 * lin_flops,
        |c| c.linear_attention_bwd(&y, &qkv, H, 0.0, &mut dqkv).unwrap(),
    );

    let h4 = b.rand(&[ROWS, 4 * D], -3.0, 3.0);
    let mut h4_out = b.zeros(&[ROWS, 4 * D]);
    let b4 = b.rand(&[4 * D], -0.5, 0.5);
    let mut db4 = b.zeros(&[4 * D]);
    b.run("gelu_fwd [3156, 1536]", 8 * nd, 0.0, |c| {
        c.gelu_fwd(&h4, &mut h4_out).unwrap()
    });
    b.run("bias_gelu_bwd [3156, 1536]", 12 * nd, 0.0, |c| {
        let mut dh = c.zeros(&[ROWS, 4 * D]).unwrap();
        c.bias_gelu_bwd(&h4, &h4, &b4, &mut dh, &mut db4).unwrap()
    });
    b.run("residual_fwd (LayerScale) [3156, 384]", 3 * nd, 0.0, |c| {
        c.residual_fwd(&x, &y, Some(&w), &mut out).unwrap()
    });
    b.run("residual_bwd (LayerScale) [3156, 384]", 3 * nd, 0.0, |c| {
        c.residual_bwd(&x, &y, Some(&w), &mut dx, Some(&mut dw))
            .unwrap()
    });
    b.run("dropout_fwd p=0.2 [3156, 384]", 2 * nd, 0.0, |c| {
        c.dropout_fwd(&x, 0.2, 1, &mut out).unwrap()
    });
    b.run("bias_grad [3156, 384]", nd, 0.0, |c| {
        c.bias_grad(&x, &mut db).unwrap()
    });

    // Dinomaly's loss on one group: [B, 784, 384] patch tokens.
    let (ta, tb) = (
        b.rand(&[B, 784, D], -1.0, 1.0),
        b.rand(&[B, 784, D], -1.0, 1.0),
    );
    let (mut loss, mut pd, mut stats) = (b.zeros(&[1]), b.zeros(&[B, 784]), b.zeros(&[B, 3]));
    let mut dtb = b.zeros(&[B, 784, D]);
    b.run(
        "global_cosine_fwd [4, 784, 384]",
        2 * B * 784 * D,
        0.0,
        |c| {
            c.global_cosine_fwd(&ta, &tb, &mut loss, &mut pd, &mut stats)
                .unwrap()
        },
    );
    b.run(
        "global_cosine_bwd p=0.9 [4, 784, 384]",
        3 * B * 784 * D,
        0.0,
        |c| {
            c.global_cosine_bwd(&ta, &tb, &pd, &stats, 0.9, 0.1, 1.0, &mut dtb)
                .unwrap()
        },
    );

    // One decoder block's fc1 weight: 384·1536 parameters.
    let np = D * 4 * D;
    let grad = b.rand(&[np], -1.0, 1.0);
    let (mut p, mut m, mut v, mut vmax) = (
        b.rand(&[np], -1.0, 1.0),
        b.zeros(&[np]),
        b.zeros(&[np]),
        b.zeros(&[np]),
    );
    let hp = AdamStep {
        lr: 2e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-10,
        weight_decay: 1e-4,
        t: 1,
        amsgrad: true,
    };
    b.run("stable_adamw_step amsgrad [589824]", 9 * np, 0.0, |c| {
        c.stable_adamw_step(&mut p, &grad, &mut m, &mut v, Some(&mut vmax), &hp)
            .unwrap()
    });

    // Scoring: 28² map → 392² (bilinear, corners) → 256² → blur 5×5 → top 1 % mean.
    let map = b.rand(&[B, 1, 28, 28], 0.0, 1.0);
    let mut big = b.zeros(&[B, 1, 392, 392]);
    let mut small = b.zeros(&[B, 1, 256, 256]);
    let mut blurred = b.zeros(&[B, 1, 256, 256]);
    let mut score = b.zeros(&[B]);
    b.run(
        "resize bilinear 28² → 392² ×4",
        B * (784 + 392 * 392),
        0.0,
        |c| {
            c.resize(
                &map,
                Interp::Bilinear {
                    align_corners: true,
                },
                &mut big,
            )
            .unwrap()
        },
    );
    b.run(
        "resize bilinear 392² → 256² ×4",
        B * (392 * 392 + 65536),
        0.0,
        |c| {
            c.resize(
                &big,
                Interp::Bilinear {
                    align_corners: false,
                },
                &mut small,
            )
            .unwrap()
        },
    );
    b.run(
        "gaussian_blur 5×5 256² ×4",
        2 * B * 65536,
        50.0 * (B * 65536) as f64,
        |c| c.gaussian_blur(&small, 4.0, 5, &mut blurred).unwrap(),
    );
    let flat = b.rand(&[B, 65536], 0.0, 1.0);
    b.run("topk_mean k=655 [4, 65536]", B * 65536, 0.0, |c| {
        c.topk_mean(&flat, 655, &mut score).unwrap()
    });
    let pos = b.rand(&[1, D, 37, 37], -1.0, 1.0);
    let mut pos28 = b.zeros(&[1, D, 28, 28]);
    let s = (28.0 + 0.1) / 37.0;
    b.run(
        "resize bicubic pos-embed 37² → 28² ×384",
        D * (37 * 37 + 28 * 28),
        0.0,
        |c| {
            c.resize(
                &pos,
                Interp::Bicubic {
                    scale: Some((s, s)),
                },
                &mut pos28,
            )
            .unwrap()
        },
    );
}
