//! CPU matmul throughput through the Backend trait, at the sizes the model runs, next to
//! the same product through the `gemm` crate called directly.
//!
//! Run: `cargo bench --bench gemm [-- --reps N --filter NAME --bf16 --frozen]` (threads: rayon's default,
//! one per core; `RAYON_NUM_THREADS` changes it). Each size runs N times (default 10) after
//! a warm-up and reports the best run, since a shared machine adds noise but never speed.
//! The last column divides the FLOPs by the CPU time each thread actually ran: on a loaded
//! machine it estimates the idle-machine speed, which the wall-clock columns cannot show.

use kdad::device::cpu::{Cpu, Precision};
use kdad::device::{Backend, Layout};
use kdad::tensor::Rng;

mod common;
use common::{arg, timed};

/// Best of `reps` alternating runs of `f` and `g` after one warm-up of each (alternating gives
/// both the same share of a noisy machine): of each, the best wall time and the best CPU time
/// per thread, which is what the wall time would be if every thread had a core to
/// itself (an estimate for a loaded machine; rayon's brief spinning makes it pessimistic).
fn best_of_pair(
    reps: usize,
    threads: usize,
    mut f: impl FnMut(),
    mut g: impl FnMut(),
) -> [(f64, Option<f64>); 2] {
    f();
    g();
    let mut best = [(f64::INFINITY, None::<f64>); 2];
    for _ in 0..reps {
        for (b, h) in best.iter_mut().zip([&mut f as &mut dyn FnMut(), &mut g]) {
            let (wall, cpu) = timed(h);
            b.0 = b.0.min(wall);
            if let Some(cpu) = cpu {
                let per_thread = cpu / threads as f64;
                b.1 = Some(b.1.map_or(per_thread, |c: f64| c.min(per_thread)));
            }
        }
    }
    best
}

/// The same product through the `gemm` crate directly, with the strides the layout implies:
/// the baseline that shows what the Backend's wrapper costs.
fn gemm_direct(
    a: &[f32],
    b: &[f32],
    out: &mut [f32],
    (m, k, n): (usize, usize, usize),
    layout: Layout,
) {
    let (a_rs, a_cs) = if layout == Layout::TN { (1, m) } else { (k, 1) };
    let (b_rs, b_cs) = if layout == Layout::NT { (1, k) } else { (n, 1) };
    // SAFETY: a, b and out hold exactly the m×k, k×n and m×n matrices these strides address.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(rayon::current_num_threads()),
        )
    }
}

fn bench(
    cpu: &Cpu,
    rng: &mut Rng,
    reps: usize,
    what: &str,
    mkn: (usize, usize, usize),
    layout: Layout,
    frozen: bool,
) {
    let (m, k, n) = mkn;
    let a_dims = if layout == Layout::TN { [k, m] } else { [m, k] };
    let b_dims = if layout == Layout::NT { [n, k] } else { [k, n] };
    let a = cpu.upload(&rng.tensor(a_dims, -1.0, 1.0)).unwrap();
    let mut b = cpu.upload(&rng.tensor(b_dims, -1.0, 1.0)).unwrap();
    if frozen {
        b = cpu.freeze(b).unwrap();
    }
    let mut out = cpu.zeros(&[m, n]).unwrap();
    let mut direct_out = vec![0.0f32; m * n];
    let threads = rayon::current_num_threads();
    let [(secs, cpu_secs), (direct, direct_cpu)] = best_of_pair(
        reps,
        threads,
        || cpu.matmul(&a, &b, None, &mut out, layout, false).unwrap(),
        || gemm_direct(a.storage(), b.storage(), &mut direct_out, mkn, layout),
    );
    let flops = 2.0 * (m * n * k) as f64;
    let bytes = 4.0 * (m * k + k * n + m * n) as f64;
    let per_core =
        |c: Option<f64>| c.map_or("n/a".to_string(), |c| format!("{:.1}", flops / c / 1e9));
    println!(
        "{what:<18} {layout:?} m={m:<5} k={k:<5} n={n:<5} {:>9.3} ms {:>7.1} GFLOP/s {:>6.1} GB/s | \
         gemm direct {:>6.1} GFLOP/s | on {threads} own cores (CPU time) kdad {:>6} gemm {:>6} GFLOP/s",
        secs * 1e3,
        flops / secs / 1e9,
        bytes / secs / 1e9,
        flops / direct / 1e9,
        per_core(cpu_secs),
        per_core(direct_cpu),
    );
}

// Called from the main thread, outside rayon's pool, unlike the command line (see
// `cpu::in_pool`): the CPU-time column reads the threads' scheduler statistics, which are
// current only for threads that are not running when read.
fn main() {
    let reps = arg("--reps").and_then(|v| v.parse().ok()).unwrap_or(10);
    // Only the sizes whose name contains this (e.g. `--filter ViT-B`).
    let filter = arg("--filter").unwrap_or_default();
    // `--frozen`: the weight operand frozen first, as a teacher's are (the CPU then packs it
    // once for its frozen GEMM, which NT products in f32 use).
    let frozen = std::env::args().any(|a| a == "--frozen");
    // `--bf16`: the Backend's products with bf16 operands (f32 accumulation).
    let (cpu, operands) = if std::env::args().any(|a| a == "--bf16") {
        (Cpu::with_precision(Precision::Bf16), "bf16 operands")
    } else {
        (Cpu::new(), "f32")
    };
    let mut rng = Rng::new(1);
    let threads = rayon::current_num_threads();
    let weights = if frozen { "frozen" } else { "trainable" };
    println!(
        "cpu matmul, {operands}, {weights} weights, {threads} threads, best of {reps} (gemm direct: f32)"
    );
    let mut run = |what: &str, mkn, layout| {
        if what.contains(&filter) {
            bench(&cpu, &mut rng, reps, what, mkn, layout, frozen)
        }
    };
    // The acceptance size: ViT-B MLP fc1 over 2056 tokens (8 images of 257).
    for layout in [Layout::NN, Layout::NT, Layout::TN] {
        run("mlp fc1 (ViT-B)", (2056, 768, 3072), layout);
    }
    // ViT-B/14 at 224, batch 1 (257 tokens): the four linear layers of a block.
    run("qkv (ViT-B b1)", (257, 768, 2304), Layout::NT);
    run("proj (ViT-B b1)", (257, 768, 768), Layout::NT);
    run("fc1 (ViT-B b1)", (257, 768, 3072), Layout::NT);
    run("fc2 (ViT-B b1)", (257, 3072, 768), Layout::NT);
    // ViT-S at 392 px (789 tokens), batch 4: qkv, fc1, fc2 and fc1's two gradients.
    let rows = 4 * 789;
    run("qkv (ViT-S)", (rows, 384, 1152), Layout::NT);
    run("fc1 (ViT-S)", (rows, 384, 1536), Layout::NT);
    run("fc2 (ViT-S)", (rows, 1536, 384), Layout::NT);
    run("fc1 dW (ViT-S)", (1536, rows, 384), Layout::TN);
    run("fc1 dX (ViT-S)", (rows, 1536, 384), Layout::NN);
}
