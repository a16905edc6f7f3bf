//! The CUDA launcher: a thin adapter from [`Launcher`] to the cudarc driver API and cuBLAS.
//! It only moves bytes, looks kernels up by name and calls cuBLAS; every decision about what
//! to launch is in the shared code that the emulator runs too.
//!
//! cudarc loads `libcuda` lazily and panics when it is missing, so nothing here touches the
//! driver before `is_culib_present()` said it can be loaded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};
use cudarc::driver::sys::{CUevent_flags, CUfunction_attribute_enum};
use cudarc::driver::{result, CudaContext, CudaFunction, CudaModule, CudaStream};
use cudarc::nvrtc::Ptx;

use super::{DevicePtr, Gemm, KernelArg, LaunchCfg, Launcher};
use crate::error::{Error, Result};

include!(concat!(env!("OUT_DIR"), "/fatbins.rs"));

/// Dynamic shared memory a kernel may use without opting in.
const DEFAULT_SMEM_LIMIT: u32 = 48 * 1024;

fn unavailable(reason: impl Into<String>) -> Error {
    Error::Unavailable {
        backend: "cuda",
        reason: reason.into(),
    }
}

fn dev_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Device(format!("cuda: {what}: {e}"))
}

/// Why CUDA cannot be used, if it cannot: checked without any call that could panic.
fn unusable() -> Option<String> {
    if FATBINS.is_empty() {
        return Some("built without kernels (nvcc was not found at build time)".into());
    }
    // SAFETY: only tries to dlopen the driver library.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Some("no driver found (libcuda could not be loaded)".into());
    }
    None
}

/// One line for `kdad info`.
pub(super) fn status() -> String {
    if let Some(why) = unusable() {
        return format!("unavailable: {why}");
    }
    match CudaContext::device_count() {
        Ok(0) => "unavailable: the driver reports no CUDA device".into(),
        Ok(n) => {
            let name = CudaContext::new(0)
                .and_then(|c| c.name())
                .unwrap_or_else(|e| format!("({e})"));
            format!("{n} device(s); cuda:0 is {name}")
        }
        Err(e) => format!("unavailable: {e}"),
    }
}

/// A CUDA device: one context, one stream, modules loaded on first use.
pub struct Cuda {
    ordinal: usize,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    functions: Mutex<HashMap<&'static str, CudaFunction>>,
    blas: Mutex<Option<cudarc::cublas::CudaBlas>>,
    /// First failure of a `free` (which runs in `Drop`), reported by `synchronize`.
    deferred: Mutex<Option<String>>,
}

impl Cuda {
    pub fn new(ordinal: usize) -> Result<Self> {
        if let Some(why) = unusable() {
            return Err(unavailable(why));
        }
        let ctx =
            CudaContext::new(ordinal).map_err(|e| unavailable(format!("cuda:{ordinal}: {e}")))?;
        let stream = ctx
            .new_stream()
            .map_err(|e| dev_err("creating a stream", e))?;
        Ok(Cuda {
            ordinal,
            ctx,
            stream,
            modules: Mutex::default(),
            functions: Mutex::default(),
            blas: Mutex::default(),
            deferred: Mutex::default(),
        })
    }

    /// The function `kernel`, from whichever embedded module defines it.
    fn function(&self, kernel: &'static str) -> Result<CudaFunction> {
        let mut functions = self.functions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = functions.get(kernel) {
            return Ok(f.clone());
        }
        let mut modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        for (name, fatbin) in FATBINS {
            let module = match modules.get(name) {
                Some(m) => m.clone(),
                None => {
                    let m = self
                        .ctx
                        .load_module(Ptx::from_binary(fatbin.to_vec()))
                        .map_err(|e| dev_err(&format!("loading module {name}"), e))?;
                    modules.insert(name, m.clone());
                    m
                }
            };
            if let Ok(f) = module.load_function(kernel) {
                functions.insert(kernel, f.clone());
                return Ok(f);
            }
        }
        Err(Error::Device(format!(
            "cuda: no embedded module defines kernel {kernel}"
        )))
    }

    fn bind(&self) -> Result<()> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| dev_err("binding the context", e))
    }
}

impl Launcher for Cuda {
    fn name(&self) -> String {
        format!("cuda:{}", self.ordinal)
    }

    fn alloc(&self, bytes: usize) -> Result<DevicePtr> {
        self.bind()?;
        // SAFETY: stream-ordered allocation on our stream, used only on it.
        let p = unsafe { result::malloc_async(self.stream.cu_stream(), bytes) }
            .map_err(|e| dev_err(&format!("allocating {bytes} bytes"), e))?;
        Ok(DevicePtr(p))
    }

    fn free(&self, ptr: DevicePtr) {
        let freed = self.bind().and_then(|_| {
            // SAFETY: `ptr` came from `alloc` and is freed once, ordered after its last use.
            unsafe { result::free_async(ptr.0, self.stream.cu_stream()) }
                .map_err(|e| dev_err("free", e))
        });
        if let Err(e) = freed {
            self.deferred
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert(e.to_string());
        }
    }

    fn htod(&self, src: &[u8], dst: DevicePtr) -> Result<()> {
        self.bind()?;
        // SAFETY: `dst` has room for `src` (the shared code sizes every copy); the stream is
        // synchronised before `src` can go away.
        unsafe { result::memcpy_htod_async(dst.0, src, self.stream.cu_stream()) }
            .map_err(|e| dev_err("htod", e))?;
        self.stream.synchronize().map_err(|e| dev_err("htod", e))
    }

    fn dtoh(&self, src: DevicePtr, dst: &mut [u8]) -> Result<()> {
        self.bind()?;
        // SAFETY: as in `htod`.
        unsafe { result::memcpy_dtoh_async(dst, src.0, self.stream.cu_stream()) }
            .map_err(|e| dev_err("dtoh", e))?;
        self.stream.synchronize().map_err(|e| dev_err("dtoh", e))
    }

    fn dtod(&self, src: DevicePtr, dst: DevicePtr, bytes: usize) -> Result<()> {
        self.bind()?;
        // SAFETY: both ranges lie in live allocations of this context.
        unsafe { result::memcpy_dtod_async(dst.0, src.0, bytes, self.stream.cu_stream()) }
            .map_err(|e| dev_err("dtod", e))
    }

    fn memset(&self, dst: DevicePtr, byte: u8, bytes: usize) -> Result<()> {
        self.bind()?;
        // SAFETY: the range lies in a live allocation.
        unsafe { result::memset_d8_async(dst.0, byte, bytes, self.stream.cu_stream()) }
            .map_err(|e| dev_err("memset", e))
    }

    fn launch(&self, kernel: &'static str, cfg: LaunchCfg, args: &[KernelArg]) -> Result<()> {
        let f = self.function(kernel)?;
        self.bind()?;
        if cfg.smem > DEFAULT_SMEM_LIMIT {
            let attr = CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES;
            f.set_attribute(attr, cfg.smem as i32)
                .map_err(|e| dev_err(&format!("{kernel}: shared memory"), e))?;
        }
        let mut slots: Vec<[u8; 8]> = args.iter().map(|a| a.to_slot()).collect();
        let mut params: Vec<*mut std::ffi::c_void> =
            slots.iter_mut().map(|s| s.as_mut_ptr().cast()).collect();
        // SAFETY: `params` holds one pointer per kernel parameter, in order, each to a value
        // of the parameter's size; the driver copies them before returning.
        unsafe {
            result::launch_kernel(
                f.cu_function(),
                cfg.grid,
                cfg.block,
                cfg.smem,
                self.stream.cu_stream(),
                &mut params,
            )
        }
        .map_err(|e| dev_err(&format!("launching {kernel}"), e))
    }

    fn gemm(&self, g: &Gemm) -> Result<()> {
        self.bind()?;
        let mut blas = self.blas.lock().unwrap_or_else(|p| p.into_inner());
        if blas.is_none() {
            // SAFETY: only tries to dlopen cuBLAS.
            if !unsafe { cudarc::cublas::sys::is_culib_present() } {
                return Err(unavailable(
                    "cuBLAS (libcublas) could not be loaded; set LD_LIBRARY_PATH",
                ));
            }
            *blas = Some(
                cudarc::cublas::CudaBlas::new(self.stream.clone())
                    .map_err(|e| dev_err("cuBLAS", e))?,
            );
        }
        let Some(handle) = blas.as_ref().map(|b| *b.handle()) else {
            return Err(Error::Device("cuda: cuBLAS handle missing".into()));
        };
        // Row-major C = A·B is column-major Cᵀ = Bᵀ·Aᵀ: pass B first. A row-major matrix
        // read as column-major is its transpose, so "not transposed" maps to OP_N.
        let op = |t: bool| {
            if t {
                cublasOperation_t::CUBLAS_OP_T
            } else {
                cublasOperation_t::CUBLAS_OP_N
            }
        };
        let ldb = if g.b_trans { g.k } else { g.n };
        let lda = if g.a_trans { g.m } else { g.k };
        let (alpha, beta) = (1f32, if g.accumulate { 1f32 } else { 0f32 });
        let i = |v: usize| v as i32;
        // SAFETY: the shared code sized every operand for these dimensions and strides.
        unsafe {
            cudarc::cublas::result::gemm_strided_batched_ex(
                handle,
                op(g.b_trans),
                op(g.a_trans),
                i(g.n),
                i(g.m),
                i(g.k),
                (&alpha as *const f32).cast(),
                g.b.0 as *const _,
                cudaDataType::CUDA_R_16BF,
                i(ldb),
                g.stride_b as i64,
                g.a.0 as *const _,
                cudaDataType::CUDA_R_16BF,
                i(lda),
                g.stride_a as i64,
                (&beta as *const f32).cast(),
                g.c.0 as *mut _,
                if g.c_bf16 {
                    cudaDataType::CUDA_R_16BF
                } else {
                    cudaDataType::CUDA_R_32F
                },
                i(g.n),
                g.stride_c as i64,
                i(g.batch),
                cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cublasGemmAlgo_t::CUBLAS_GEMM_DFALT,
            )
        }
        .map_err(|e| dev_err("cuBLAS gemm", e))
    }

    fn synchronize(&self) -> Result<()> {
        self.bind()?;
        self.stream
            .synchronize()
            .map_err(|e| dev_err("synchronize", e))?;
        match self
            .deferred
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            Some(msg) => Err(Error::Device(msg)),
            None => Ok(()),
        }
    }

    fn time_ms(&self, work: &mut dyn FnMut() -> Result<()>) -> Result<Option<f64>> {
        let flags = Some(CUevent_flags::CU_EVENT_DEFAULT);
        let start = self.ctx.new_event(flags).map_err(|e| dev_err("event", e))?;
        let end = self.ctx.new_event(flags).map_err(|e| dev_err("event", e))?;
        start
            .record(&self.stream)
            .map_err(|e| dev_err("event", e))?;
        work()?;
        end.record(&self.stream).map_err(|e| dev_err("event", e))?;
        let ms = start.elapsed_ms(&end).map_err(|e| dev_err("event", e))?;
        Ok(Some(ms as f64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without a driver (or without kernels) asking for the device is an error that says
    /// why; cudarc would panic if anything touched the driver first.
    #[test]
    fn missing_driver_or_kernels_is_an_error_not_a_panic() {
        let Some(why) = unusable() else {
            return; // a usable CUDA setup: nothing to check here
        };
        let e = Cuda::new(0)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("cuda") && e.contains(&why), "{e}");
        assert!(status().starts_with("unavailable: "), "{}", status());
    }
}
