//! Launch shapes and argument conversion shared by every GPU op.

use super::{DevicePtr, KernelArg, LaunchCfg};
use crate::error::{Error, Result};

/// Threads per block of the element-wise and grid-stride kernels: 8 warps, enough to hide
/// latency with several blocks per SM, small enough that a 1-D grid stays busy on tiny ops.
pub(crate) const BLOCK: u32 = 256;

/// Most blocks a grid-stride kernel gets: 132 SMs × 16 resident blocks of 256 threads on an
/// H100 is ~2100; more blocks only add scheduling work, and the cap keeps `i + stride` far
/// from `i32` overflow in the kernels' index arithmetic.
pub(crate) const MAX_GRID: usize = 4096;

/// Rows (one warp each) per block of the warp-per-row kernels (layer norm, cosine).
pub(crate) const WARPS_PER_BLOCK: u32 = 8;

/// The most elements a grid-stride kernel takes: its `int` index plus one grid's stride must
/// not overflow.
const MAX_GRID_STRIDE_ELEMS: usize = i32::MAX as usize - MAX_GRID * BLOCK as usize;

/// `n` as the element count of a grid-stride kernel, or an error naming the kernel.
pub(crate) fn grid_stride_count(kernel: &'static str, n: usize) -> Result<KernelArg> {
    if n > MAX_GRID_STRIDE_ELEMS {
        return Err(Error::Invalid(format!(
            "{kernel}: {n} elements exceed the GPU kernels' 32-bit index range ({MAX_GRID_STRIDE_ELEMS})"
        )));
    }
    int(kernel, n)
}

/// A 1-D grid-stride launch over `n` elements.
pub(crate) fn grid_1d(n: usize) -> LaunchCfg {
    let blocks = n.div_ceil(BLOCK as usize).clamp(1, MAX_GRID) as u32;
    LaunchCfg {
        grid: (blocks, 1, 1),
        block: (BLOCK, 1, 1),
        smem: 0,
    }
}

/// One warp per row, [`WARPS_PER_BLOCK`] rows per block.
pub(crate) fn warp_per_row(rows: usize) -> LaunchCfg {
    let blocks = rows.div_ceil(WARPS_PER_BLOCK as usize).max(1) as u32;
    LaunchCfg {
        grid: (blocks, 1, 1),
        block: (32 * WARPS_PER_BLOCK, 1, 1),
        smem: 0,
    }
}

/// Rows one block of a column reduction sums, and the most row slices: D = 768 columns make
/// 24 column tiles, which alone would leave most of an H100's 132 SMs idle.
const COL_ROWS_PER_SLICE: usize = 64;
const COL_MAX_SLICES: usize = 128;

/// Column reductions (`kernels/reduce.cu: col_sum`, `layernorm.cu: layernorm_bwd_params`):
/// blocks of 32×8 threads, each owning 32 adjacent columns (every warp reads 128 contiguous
/// bytes of a row) of one slice of rows. Returns the launch, the number of slices (each
/// writes one row of partial sums) and the rows per slice.
pub(crate) fn col_tiles(rows: usize, cols: usize) -> (LaunchCfg, usize, usize) {
    let slices = rows.div_ceil(COL_ROWS_PER_SLICE).clamp(1, COL_MAX_SLICES);
    let cfg = LaunchCfg {
        grid: (cols.div_ceil(32).max(1) as u32, slices as u32, 1),
        block: (32, 8, 1),
        smem: 0,
    };
    (cfg, slices, rows.div_ceil(slices))
}

/// A size as the `int` the kernels take, or an error naming the op when it does not fit.
pub(crate) fn int(op: &'static str, v: usize) -> Result<KernelArg> {
    int32(op, v).map(KernelArg::I32)
}

/// `v` as a kernel's 32-bit size or index, or an error naming `op`.
pub(crate) fn int32(op: &'static str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| {
        Error::Invalid(format!(
            "{op}: size {v} exceeds the GPU kernels' 32-bit index range"
        ))
    })
}

pub(crate) fn ptr(p: DevicePtr) -> KernelArg {
    KernelArg::Ptr(p)
}

pub(crate) fn f32(v: f32) -> KernelArg {
    KernelArg::F32(v)
}
