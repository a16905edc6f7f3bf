//! The op set on a GPU, written once over a small [`Launcher`] trait: `cuda.rs` drives a real
//! device through cudarc, `emu.rs` runs the same kernels on the emulated device. Everything
//! that decides *what* runs (kernel choice, launch shapes, argument order, scratch sizes) is
//! in the shared code here and in `backend.rs`, so the emulator exercises all of it and only
//! the thin cudarc adapter goes untested on a machine without a GPU.
//!
//! **Storage: bf16 for activations, f32 for the rest, f32 arithmetic everywhere.** Each
//! tensor's storage [`DType`] is fixed when it is allocated: [`Backend::zeros_activation`]
//! gives bf16 (activations: half the bytes of every bandwidth-bound kernel that touches
//! them), and so does [`Backend::freeze`] (a frozen model's weights), [`Backend::zeros`] and [`Backend::upload`] give f32 (parameters and their
//! gradients, optimiser state, activation gradients, row statistics such as layer norm's
//! mean/rstd and attention's lse, losses, images and anomaly maps). `upload`/`download` speak
//! f32 either way, `copy` converts between storages. Kernels take every tensor as an
//! `In`/`Out` operand (kernels/common.cuh) that carries its dtype, load it as f32, compute in
//! f32 and round a bf16 store to nearest even once; so any mix of storages is valid for the
//! element-wise, layer norm, attention, token and loss kernels. The kernels that need f32 (the
//! optimisers, the resizes, blur and top-k of the anomaly maps, and outputs that are
//! statistics or atomically accumulated) say so with an error naming the op and operand.
//! GEMMs take bf16 operands (a bf16 tensor directly, an f32 one through a cast into scratch),
//! accumulate in f32 and write f32 or bf16 as the output is stored.
//!
//! [`DType`]: crate::tensor::DType
//! [`Backend::zeros_activation`]: crate::device::Backend::zeros_activation
//! [`Backend::zeros`]: crate::device::Backend::zeros
//! [`Backend::freeze`]: crate::device::Backend::freeze
//! [`Backend::upload`]: crate::device::Backend::upload
//!
//! Use: `GpuBackend::new(emu::Emu::new())` (always available) or
//! `GpuBackend::new(cuda::Cuda::new(0)?)` (an `Error::Unavailable` saying why when there is
//! no driver, no device or no compiled kernels). Flash attention takes head dims up to 64;
//! larger heads get `Error::Unavailable` naming the op.

mod backend;
pub mod bench;
pub mod cuda;
pub mod emu;
mod launch;
mod ops_attention;
mod ops_loss;
mod ops_misc;
mod ops_optim;
pub mod profile;
mod scratch;

use std::sync::Arc;

use crate::error::Result;
use crate::tensor::DType;

pub use backend::GpuBackend;

/// An address in device memory (a `CUdeviceptr` on CUDA, a host address on the emulator).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DevicePtr(pub u64);

impl DevicePtr {
    pub const NULL: DevicePtr = DevicePtr(0);
    /// The address `bytes` further on.
    pub fn offset(self, bytes: usize) -> DevicePtr {
        DevicePtr(self.0 + bytes as u64)
    }
}

/// One kernel argument, passed by value as `cuLaunchKernel` takes it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KernelArg {
    Ptr(DevicePtr),
    I32(i32),
    U32(u32),
    U64(u64),
    F32(f32),
}

impl KernelArg {
    /// The argument's bytes, little-endian, padded to 8: `cuLaunchKernel` and the emulator
    /// read exactly the kernel parameter's size from the start of the slot.
    pub fn to_slot(self) -> [u8; 8] {
        let mut s = [0u8; 8];
        match self {
            KernelArg::Ptr(p) => s.copy_from_slice(&p.0.to_le_bytes()),
            KernelArg::U64(v) => s.copy_from_slice(&v.to_le_bytes()),
            KernelArg::I32(v) => s[..4].copy_from_slice(&v.to_le_bytes()),
            KernelArg::U32(v) => s[..4].copy_from_slice(&v.to_le_bytes()),
            KernelArg::F32(v) => s[..4].copy_from_slice(&v.to_le_bytes()),
        }
        s
    }
}

/// Grid, block and dynamic shared memory of one launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchCfg {
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    pub smem: u32,
}

/// One (batched) GEMM, row-major: `c[i] = op(a[i]) · op(b[i]) (+ c[i]) (+ bias)` for
/// `i < batch`, with `op(a)` of shape `[m, k]` and `op(b)` of shape `[k, n]`. `a` and `b` hold
/// bf16, `c` f32 or bf16 (`c_bf16`: read when accumulating, written rounded once); the
/// products, the accumulation and the bias are f32. Operands are packed: `a` is stored
/// `[m, k]`, or `[k, m]` when `a_trans`; `b` is stored `[k, n]`, or `[n, k]` when `b_trans`.
/// Strides are in elements; a zero stride shares one operand across the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub batch: usize,
    pub a: DevicePtr,
    pub a_trans: bool,
    pub stride_a: usize,
    pub b: DevicePtr,
    pub b_trans: bool,
    pub stride_b: usize,
    pub c: DevicePtr,
    pub c_bf16: bool,
    pub stride_c: usize,
    /// Add into `c` (beta = 1) instead of overwriting it.
    pub accumulate: bool,
    /// `[n]` in `c`'s type (bf16 when `c_bf16`, else f32: the bias type cuBLASLt's bias
    /// epilogue takes by default, and the one it supports for every output type), added in
    /// f32 to every output row of every batch after the accumulation and before the store, so
    /// a bf16 `c` is still rounded once.
    pub bias: Option<DevicePtr>,
}

/// What a device must offer the shared GPU code. Every call is ordered after the previous
/// ones (one stream); `dtoh` waits for queued work.
pub trait Launcher: Send + Sync + 'static {
    /// For logs: `emu`, `cuda:0`.
    fn name(&self) -> String;
    fn alloc(&self, bytes: usize) -> Result<DevicePtr>;
    /// Release memory from [`Launcher::alloc`]. Called from `Drop`, so it cannot return an
    /// error; a launcher records a failure and reports it from its next `synchronize`.
    fn free(&self, ptr: DevicePtr);
    fn htod(&self, src: &[u8], dst: DevicePtr) -> Result<()>;
    fn dtoh(&self, src: DevicePtr, dst: &mut [u8]) -> Result<()>;
    fn dtod(&self, src: DevicePtr, dst: DevicePtr, bytes: usize) -> Result<()>;
    fn memset(&self, dst: DevicePtr, byte: u8, bytes: usize) -> Result<()>;
    /// Launch the `extern "C"` kernel `kernel` with plain-data arguments in declaration order.
    fn launch(&self, kernel: &'static str, cfg: LaunchCfg, args: &[KernelArg]) -> Result<()>;
    fn gemm(&self, g: &Gemm) -> Result<()>;
    fn synchronize(&self) -> Result<()>;
    /// Time `work` on the device in milliseconds, or `None` where time means nothing (the
    /// emulator). `work` is run exactly once either way.
    fn time_ms(&self, work: &mut dyn FnMut() -> Result<()>) -> Result<Option<f64>>;
}

/// Device memory owned by a tensor (or scratch); freed on drop.
pub struct DeviceBuffer<L: Launcher> {
    ptr: DevicePtr,
    bytes: usize,
    dtype: DType,
    launcher: Arc<L>,
}

impl<L: Launcher> DeviceBuffer<L> {
    /// `bytes` of raw memory, counted as f32 elements.
    pub fn new(launcher: &Arc<L>, bytes: usize) -> Result<Self> {
        Self::with_dtype(launcher, bytes, DType::F32)
    }
    fn with_dtype(launcher: &Arc<L>, bytes: usize, dtype: DType) -> Result<Self> {
        // At least 4 bytes, so that every buffer has a distinct, even address: the emulator
        // ends each allocation at a guard page, which aligns it only as far as its size
        // does, and bit 0 of a tensor's address must stay free for the bf16 tag of kernel
        // operands (backend.rs, `p`).
        let ptr = launcher.alloc(bytes.max(4))?;
        Ok(DeviceBuffer {
            ptr,
            bytes,
            dtype,
            launcher: launcher.clone(),
        })
    }
    /// Room for `numel` elements stored as `dtype`.
    pub fn elements(launcher: &Arc<L>, numel: usize, dtype: DType) -> Result<Self> {
        Self::with_dtype(launcher, numel * dtype_bytes(dtype), dtype)
    }
    pub fn ptr(&self) -> DevicePtr {
        self.ptr
    }
    pub fn bytes(&self) -> usize {
        self.bytes
    }
    /// How the elements are stored.
    pub fn dtype(&self) -> DType {
        self.dtype
    }
}

/// Bytes per element of a storage type.
pub fn dtype_bytes(dtype: DType) -> usize {
    match dtype {
        DType::F32 => 4,
        DType::BF16 => 2,
    }
}

impl<L: Launcher> Drop for DeviceBuffer<L> {
    fn drop(&mut self) {
        self.launcher.free(self.ptr);
    }
}

/// One line for `kdad info`: whether a CUDA device can be used, and why not.
pub fn cuda_status() -> String {
    cuda::status()
}

/// Names of the kernel modules compiled into this binary for real GPUs (empty when it was
/// built without nvcc).
pub fn kernels_compiled() -> Vec<&'static str> {
    cuda::FATBINS.iter().map(|(name, _)| *name).collect()
}
