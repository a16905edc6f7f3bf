//! `kdad info`: what this build can run on this machine.

/// Print version, backends and threads to stdout.
pub fn print() -> anyhow::Result<()> {
    println!("kdad {}", env!("CARGO_PKG_VERSION"));
    println!("threads: {} (rayon pool)", rayon::current_num_threads());
    println!("backends:");
    println!(
        "  cpu: available (matmul kernels: {}; --precision f32|bf16)",
        crate::device::cpu::Cpu::kernels()
    );
    println!(
        "  emu: available (the emulated GPU device, {} kernels)",
        crate::device::gpu::emu::Emu::kernels().len()
    );
    println!("  cuda: {}", crate::device::gpu::cuda_status());
    let compiled = crate::device::gpu::kernels_compiled();
    if compiled.is_empty() {
        println!("GPU kernels compiled: none (built without nvcc)");
    } else {
        println!("GPU kernels compiled: {}", compiled.join(", "));
    }
    Ok(())
}
