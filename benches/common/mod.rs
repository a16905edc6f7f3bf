//! Helpers shared by the benchmarks: command-line values and timing that also reports the
//! CPU time the process's threads actually got, so numbers from a loaded machine can be
//! read for what an idle one would do.

// Each bench binary compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use kdad::bench::process_cpu_ns;
use std::time::Instant;

/// The value after `--name` on the command line.
pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// One timed run: (wall seconds, CPU seconds of all threads if known).
pub fn timed(f: &mut dyn FnMut()) -> (f64, Option<f64>) {
    let cpu0 = process_cpu_ns();
    let t = Instant::now();
    f();
    let wall = t.elapsed().as_secs_f64();
    let cpu = process_cpu_ns()
        .zip(cpu0)
        .map(|(b, a)| (b - a) as f64 * 1e-9);
    (wall, cpu)
}

/// The CPU backend the benchmarks run: `KDAD_BENCH_PRECISION=bf16` gives bf16 matmul
/// operands (f32 accumulation), anything else or unset the f32 reference.
pub fn cpu_backend() -> kdad::device::cpu::Cpu {
    use kdad::device::cpu::{Cpu, Precision};
    match std::env::var("KDAD_BENCH_PRECISION").as_deref() {
        Ok("bf16") => Cpu::with_precision(Precision::Bf16),
        _ => Cpu::new(),
    }
}
