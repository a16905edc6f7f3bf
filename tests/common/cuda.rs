//! The CUDA backend for the tests that run on a real GPU, or `None` (after saying why) on a
//! machine without one or a build without kernels, where those tests pass without checking.

use kdad::device::gpu::{cuda::Cuda, GpuBackend};

pub fn gpu() -> Option<GpuBackend<Cuda>> {
    match Cuda::new(0) {
        Ok(cuda) => Some(GpuBackend::new(cuda)),
        Err(e) => {
            eprintln!("skipped: {e}");
            None
        }
    }
}
