//! `kdad info`: what this build can run on this machine.

/// Print version, backends and threads to stdout.
pub fn print() -> anyhow::Result<()> {
    println!("kdad {}", env!("CARGO_PKG_VERSION"));
    println!("threads: {} (rayon pool)", rayon::current_num_threads());
    println!("backends:");
    println!("  cpu: available (f32, gemm + rayon)");
    Ok(())
}
