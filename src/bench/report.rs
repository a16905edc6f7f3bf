//! `kdad bench vit` and `kdad bench train-step`: run the benchmarks and print what they
//! measured, with the context a reader needs to judge it (device, threads, FLOP rate).

use super::train_step::{StepTimes, TrainStep, PHASES};
use super::vit::{random_frozen, time_forward};
use crate::device::Backend;
use crate::vit::VitConfig;

/// A FLOP rate with the unit that keeps it readable on a CPU and on a GPU alike.
fn rate(flops_per_s: f64) -> String {
    if flops_per_s >= 1e12 {
        format!("{:.1} TFLOP/s", flops_per_s / 1e12)
    } else {
        format!("{:.1} GFLOP/s", flops_per_s / 1e9)
    }
}

fn where_it_ran<B: Backend>(be: &B) -> String {
    format!(
        "{} ({} CPU threads)",
        be.name(),
        rayon::current_num_threads()
    )
}

pub fn vit<B: Backend>(
    be: &B,
    cfg: &VitConfig,
    size: usize,
    batches: &[usize],
    reps: usize,
) -> anyhow::Result<()> {
    // Sizes first, so that a bad one is an error before the model is built.
    let gflop = cfg.forward_flops(size, size, cfg.depth)? as f64 / 1e9;
    anyhow::ensure!(
        batches.iter().all(|&b| b > 0),
        "batch sizes must be at least 1"
    );
    println!(
        "ViT forward (dim {}, depth {}, {size}x{size}, frozen, random weights) on {}",
        cfg.dim,
        cfg.depth,
        where_it_ran(be)
    );
    println!(
        "{:>6} {:>10} {:>10} {:>9} {:>9} {:>15}",
        "batch", "best ms", "median ms", "ms/img", "img/s", "best rate"
    );
    let mut vit = random_frozen(be, cfg)?;
    for &batch in batches {
        let t = time_forward(be, &mut vit, batch, size, reps)?;
        let best = t.best();
        println!(
            "{batch:>6} {:>10.2} {:>10.2} {:>9.3} {:>9.1} {:>15}",
            best * 1e3,
            t.median() * 1e3,
            best * 1e3 / batch as f64,
            batch as f64 / best,
            rate(t.flop_rate(best))
        );
    }
    println!("{gflop:.2} GFLOP per image; rate = FLOPs / best time");
    Ok(())
}

pub fn train_step<B: Backend>(
    be: &B,
    cfg: VitConfig,
    batch: usize,
    size: usize,
    steps: usize,
) -> anyhow::Result<()> {
    anyhow::ensure!(batch > 0, "--batch must be at least 1");
    let mut work = TrainStep::new(be, cfg, batch, size)?;
    let mut timed: Vec<StepTimes> = Vec::with_capacity(steps);
    for step in 0..=steps {
        let t = work.step(be, step as u64)?;
        anyhow::ensure!(t.loss.is_finite(), "step {step}: loss is {}", t.loss);
        if step > 0 {
            timed.push(t);
        }
    }
    let med =
        |f: &dyn Fn(&StepTimes) -> f64| super::median(&timed.iter().map(f).collect::<Vec<_>>());
    let total = med(&|t| t.total_ms());
    let phases: Vec<String> = PHASES
        .iter()
        .enumerate()
        .map(|(k, p)| format!("{p} {:.1}", med(&|t| t.wall_ms[k])))
        .collect();
    println!(
        "train step (teacher dim {}, batch {batch} at {size}) on {}, median of {steps}: \
         {total:.1} ms = {} ms; {:.1} images/s",
        cfg.dim,
        where_it_ran(be),
        phases.join(" + "),
        batch as f64 / total * 1e3
    );
    Ok(())
}
