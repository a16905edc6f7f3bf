//! ViT forward on the CPU backend with random weights (frozen teacher mode, every block and
//! the final norm): ms per image and GFLOP/s (FLOPs counted by `VitConfig::forward_flops`),
//! plus the peak resident memory of the batch-8 ViT-B/14 forward at 224, measured in a child
//! process that runs nothing else.
//!
//! The best repetition's on-CPU and run-queue-wait times (all threads) are printed too: on a
//! shared machine, wall time ≈ (cpu + wait) / threads, and the wait is other processes' doing.
//!
//! `cargo bench --bench vit` runs every case; `cargo bench --bench vit -- b14-224-b1` runs the
//! cases whose name contains the argument. `KDAD_BENCH_REPS` sets the timed repetitions (3),
//! `KDAD_BENCH_PRECISION=bf16` runs the matmuls on bf16 operands (f32 by default).

use kdad::bench::vit::random_frozen;
use kdad::device::Backend;
use kdad::tensor::Rng;
use kdad::vit::{ForwardSpec, VitConfig};
use std::time::Instant;

mod common;

struct Case {
    name: &'static str,
    cfg: VitConfig,
    batch: usize,
    size: usize,
}

fn cases() -> Vec<Case> {
    let (s, b) = (VitConfig::vit_s14(), VitConfig::vit_b14());
    vec![
        Case {
            name: "b14-224-b1",
            cfg: b,
            batch: 1,
            size: 224,
        },
        Case {
            name: "b14-224-b8",
            cfg: b,
            batch: 8,
            size: 224,
        },
        Case {
            name: "b14-392-b1",
            cfg: b,
            batch: 1,
            size: 392,
        },
        Case {
            name: "s14-224-b1",
            cfg: s,
            batch: 1,
            size: 224,
        },
    ]
}

const FULL: ForwardSpec = ForwardSpec {
    taps: &[],
    final_norm: true,
    train: false,
};

/// One timed forward: wall seconds, and the CPU and run-queue-wait seconds of all threads.
struct Sample {
    wall: f64,
    cpu: Option<f64>,
    wait: Option<f64>,
}

/// (on-CPU, waiting-to-run) nanoseconds summed over this process's threads, from
/// `/proc/self/task/*/schedstat`. On a shared machine the wait shows how much of the wall
/// time other processes took.
fn sched_ns() -> Option<(u64, u64)> {
    let mut total = (0, 0);
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let text = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        let mut f = text.split_whitespace().map(|v| v.parse::<u64>().ok());
        total.0 += f.next()??;
        total.1 += f.next()??;
    }
    Some(total)
}

/// Timed forwards after one untimed warm-up.
fn time(case: &Case, reps: usize) -> kdad::Result<Vec<Sample>> {
    let be = common::cpu_backend();
    let mut vit = random_frozen(&be, &case.cfg)?;
    let img = be.upload(&Rng::new(1).tensor([case.batch, 3, case.size, case.size], -2.0, 2.0))?;
    vit.forward(&be, &img, &FULL)?;
    (0..reps)
        .map(|_| {
            let s0 = sched_ns();
            let t = Instant::now();
            vit.forward(&be, &img, &FULL)?;
            be.synchronize()?;
            let wall = t.elapsed().as_secs_f64();
            let d = s0
                .zip(sched_ns())
                .map(|(a, b)| ((b.0 - a.0) as f64 * 1e-9, (b.1 - a.1) as f64 * 1e-9));
            Ok(Sample {
                wall,
                cpu: d.map(|d| d.0),
                wait: d.map(|d| d.1),
            })
        })
        .collect()
}

/// `VmHWM` (peak resident set) of this process, in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

const CHILD_FLAG: &str = "--peak-rss-child";

/// In the child: one batch-8 ViT-B/14 forward at 224, then print the peak RSS.
fn child() -> kdad::Result<()> {
    let case = &cases()[1];
    time(case, 0)?;
    match peak_rss_mib() {
        Some(m) => println!("{m:.0}"),
        None => println!("unavailable"),
    }
    Ok(())
}

fn run() -> kdad::Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--bench"))
        .collect();
    if args.iter().any(|a| a == CHILD_FLAG) {
        return child();
    }
    let filter = args.first().cloned().unwrap_or_default();
    let reps = std::env::var("KDAD_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    println!(
        "ViT forward, {} backend ({} threads), random weights",
        common::cpu_backend().name(),
        rayon::current_num_threads()
    );
    if "b14-224-b8-peak-rss".contains(&filter) {
        let exe = std::env::current_exe().map_err(|e| kdad::Error::io("current_exe", e))?;
        let out = std::process::Command::new(exe)
            .arg(CHILD_FLAG)
            .output()
            .map_err(|e| kdad::Error::io("bench child", e))?;
        let text = String::from_utf8_lossy(&out.stdout);
        println!(
            "peak RSS of one ViT-B/14 224 batch-8 forward (VmHWM, own process): {} MiB",
            text.trim()
        );
    }
    println!(
        "{:<12} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>5}",
        "case", "GFLOP", "ms/img", "ms/img", "GFLOP/s", "cpu ms", "wait ms", "reps"
    );
    println!(
        "{:<12} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>5}",
        "", "/img", "best", "median", "best", "/img", "/img", ""
    );
    for case in cases().iter().filter(|c| c.name.contains(&filter)) {
        let flops = case
            .cfg
            .forward_flops(case.size, case.size, case.cfg.depth)? as f64;
        let mut t = time(case, reps)?;
        t.sort_by(|a, b| a.wall.total_cmp(&b.wall));
        let per_img = |s: f64| s * 1e3 / case.batch as f64;
        let (best, median) = (&t[0], &t[t.len() / 2]);
        let opt = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:.1}", per_img(v)));
        println!(
            "{:<12} {:>6.1} {:>8.1} {:>8.1} {:>8.1} {:>8} {:>8} {:>5}",
            case.name,
            flops / 1e9,
            per_img(best.wall),
            per_img(median.wall),
            flops * case.batch as f64 / best.wall / 1e9,
            opt(best.cpu),
            opt(best.wait),
            reps
        );
    }
    println!("cpu ms: on-CPU time of all threads; wait ms: time runnable but waiting for a core");
    Ok(())
}

fn main() {
    // On a pool thread, as the command line runs the CPU backend (see `cpu::in_pool`).
    if let Err(e) = kdad::device::cpu::in_pool(run) {
        eprintln!("vit bench: {e}");
        std::process::exit(1);
    }
}
