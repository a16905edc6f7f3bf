//! One Dinomaly-style training step on the CPU backend, split into the phases the PyTorch
//! peer measurement reports (shared/peer/README.md: 1,740 ms = teacher forward 465 + student
//! forward and loss 399 + backward 737 + clip and optimiser 113, batch 2 at 224, 2 threads).
//! The workload is `kdad::bench::train_step` (ViT-B/14 teacher); `kdad bench train-step`
//! runs the same on any device.
//!
//! Run: `cargo bench --bench train_step` (KDAD_BENCH_STEPS timed steps, default 5, after one
//! warm-up step; the rayon pool follows RAYON_NUM_THREADS; KDAD_BENCH_PRECISION=bf16 runs the
//! matmuls on bf16 operands with f32 accumulation, f32 by default). Each phase's on-CPU time
//! (all threads) is printed too: unlike wall time, it is not inflated by other processes.

use kdad::bench::median;
use kdad::bench::train_step::{StepTimes, TrainStep, PHASES};
use kdad::device::Backend;
use kdad::vit::VitConfig;

mod common;

fn main() -> kdad::Result<()> {
    // On a pool thread, as the command line runs the CPU backend (see `cpu::in_pool`).
    kdad::device::cpu::in_pool(steps)
}

fn steps() -> kdad::Result<()> {
    let steps: usize = std::env::var("KDAD_BENCH_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let b = common::cpu_backend();
    let (batch, crop) = (2, 224);
    let mut work = TrainStep::new(&b, VitConfig::vit_b14(), batch, crop)?;
    let mut timed: Vec<StepTimes> = Vec::new();
    for step in 0..=steps {
        let t = work.step(&b, step as u64)?;
        eprintln!(
            "step {step}{}: loss {:.4}, {:.0} ms = {}",
            if step == 0 { " (warm-up)" } else { "" },
            t.loss,
            t.total_ms(),
            phase_list(&t.wall_ms)
        );
        if step > 0 {
            timed.push(t);
        }
    }
    let med = |f: &dyn Fn(&StepTimes) -> Option<f64>| {
        median(&timed.iter().filter_map(f).collect::<Vec<_>>())
    };
    let wall: [f64; 4] = std::array::from_fn(|k| med(&|t| Some(t.wall_ms[k])));
    println!(
        "train_step ViT-B/14 batch {batch} at {crop} on {} ({} threads), median of {steps}: \
         {:.0} ms = {} (PyTorch peer: 1740 = 465 + 399 + 737 + 113)",
        b.name(),
        rayon::current_num_threads(),
        med(&|t| Some(t.total_ms())),
        phase_list(&wall)
    );
    let cpu: [f64; 4] = std::array::from_fn(|k| med(&|t| t.cpu_ms.map(|c| c[k])));
    println!("on-CPU time of all threads, median: {}", phase_list(&cpu));
    Ok(())
}

/// "teacher forward 406 + student forward+loss 340 + ..." in milliseconds.
fn phase_list(ms: &[f64; 4]) -> String {
    PHASES
        .iter()
        .zip(ms)
        .map(|(p, v)| format!("{p} {v:.0}"))
        .collect::<Vec<_>>()
        .join(" + ")
}
