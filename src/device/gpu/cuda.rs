//! The CUDA launcher: a thin adapter from [`Launcher`] to the cudarc driver API and cuBLASLt.
//! It only moves bytes, looks kernels up by name and runs GEMMs on cuBLASLt (bf16 operands,
//! f32 accumulation, the bias added by its epilogue); every decision about what to launch is
//! in the shared code that the emulator runs too.
//!
//! cudarc loads `libcuda` lazily and panics when it is missing, so nothing here touches the
//! driver before `is_culib_present()` said it can be loaded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cudarc::cublaslt::result::{self as lt, CublasError};
use cudarc::cublaslt::sys::{
    cublasComputeType_t, cublasLtEpilogue_t, cublasLtHandle_t, cublasLtMatmulAlgo_t,
    cublasLtMatmulDescAttributes_t, cublasLtMatmulDesc_t, cublasLtMatmulPreferenceAttributes_t,
    cublasLtMatrixLayoutAttribute_t, cublasLtMatrixLayout_t, cudaDataType,
};
use cudarc::driver::sys::{CUdevice_attribute, CUevent_flags, CUfunction_attribute_enum};
use cudarc::driver::{
    result, CudaContext, CudaEvent, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr as _,
};
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
    blas: Mutex<Option<BlasLt>>,
    /// First failure of a `free` (which runs in `Drop`), reported by `synchronize`.
    deferred: Mutex<Option<String>>,
    /// With `KDAD_CUDA_PROFILE` set: (kernel or GEMM shape, start, end) of every launch,
    /// reported per kernel when the launcher is dropped (see [`super::profile`]).
    spans: Option<Mutex<Vec<(String, CudaEvent, CudaEvent)>>>,
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
            spans: std::env::var_os("KDAD_CUDA_PROFILE")
                .filter(|v| !v.is_empty() && v != "0")
                .map(|_| Mutex::default()),
        })
    }

    /// Run `work` (which enqueues on the stream), bracketed by events when profiling.
    fn profiled(
        &self,
        name: impl FnOnce() -> String,
        work: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        let Some(spans) = &self.spans else {
            return work();
        };
        let event = || {
            let e = self
                .ctx
                .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(|e| dev_err("profiling event", e))?;
            e.record(&self.stream)
                .map_err(|e| dev_err("profiling event", e))?;
            Ok::<_, Error>(e)
        };
        let start = event()?;
        work()?;
        let end = event()?;
        spans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((name(), start, end));
        Ok(())
    }

    /// The function `kernel`, from whichever embedded module defines it.
    fn function(&self, kernel: &'static str) -> Result<CudaFunction> {
        let mut functions = self.functions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = functions.get(kernel) {
            return Ok(f.clone());
        }
        let no_kernel =
            || Error::Device(format!("cuda: no embedded module defines kernel {kernel}"));
        let module_name = KERNEL_MODULES
            .iter()
            .find(|(k, _)| *k == kernel)
            .map(|(_, m)| *m)
            .ok_or_else(no_kernel)?;
        let mut modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        let module = match modules.get(module_name) {
            Some(m) => m.clone(),
            None => {
                let fatbin = FATBINS
                    .iter()
                    .find(|(name, _)| *name == module_name)
                    .map(|(_, f)| *f)
                    .ok_or_else(no_kernel)?;
                let m = self
                    .ctx
                    .load_module(Ptx::from_binary(fatbin.to_vec()))
                    .map_err(|e| dev_err(&format!("loading module {module_name}"), e))?;
                modules.insert(module_name, m.clone());
                m
            }
        };
        let f = module
            .load_function(kernel)
            .map_err(|e| dev_err(&format!("{kernel} in module {module_name}"), e))?;
        functions.insert(kernel, f.clone());
        Ok(f)
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
        self.profiled(
            || kernel.to_string(),
            || {
                // SAFETY: `params` holds one pointer per kernel parameter, in order, each to a
                // value of the parameter's size; the driver copies them before returning.
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
            },
        )
    }

    fn gemm(&self, g: &Gemm) -> Result<()> {
        self.bind()?;
        let mut blas = self.blas.lock().unwrap_or_else(|p| p.into_inner());
        if blas.is_none() {
            *blas = Some(BlasLt::new(&self.ctx, &self.stream)?);
        }
        let Some(blas) = blas.as_mut() else {
            return Err(Error::Device("cuda: cuBLASLt handle missing".into()));
        };
        let shape = || {
            let batch = if g.batch > 1 {
                format!("{}x", g.batch)
            } else {
                String::new()
            };
            let bias = if g.bias.is_some() { " +bias" } else { "" };
            format!("gemm {batch}{}x{}x{}{bias}", g.m, g.n, g.k)
        };
        self.profiled(shape, || {
            blas.gemm(g, &self.stream).map_err(|e| {
                dev_err(
                    "cuBLASLt",
                    format!(
                        "{e} (m {}, n {}, k {}, batch {}, {} C, bias {}, accumulate {}; \
                     CUBLASLT_LOG_LEVEL=2 makes cuBLASLt print why)",
                        g.m,
                        g.n,
                        g.k,
                        g.batch,
                        if g.c_bf16 { "bf16" } else { "f32" },
                        g.bias.is_some(),
                        g.accumulate
                    ),
                )
            })
        })
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

impl Drop for Cuda {
    /// Prints the profile, if one was recorded: the one place that sees every launch of a
    /// run, whichever command or embedder drove it.
    fn drop(&mut self) {
        let Some(spans) = self.spans.take() else {
            return;
        };
        let spans = spans.into_inner().unwrap_or_else(|p| p.into_inner());
        if self.stream.synchronize().is_err() {
            return;
        }
        let timed = spans
            .iter()
            .filter_map(|(name, a, b)| Some((name.clone(), a.elapsed_ms(b).ok()? as f64)));
        eprint!(
            "{}",
            super::profile::format(&super::profile::aggregate(timed))
        );
    }
}

/// A cuBLASLt handle and the workspace its GEMMs may use.
///
/// cudarc's safe `Matmul<T>` takes one element type for A, B, C and the bias and typed
/// `CudaSlice`s; our GEMMs mix types (bf16 A/B, f32 or bf16 C/D, an f32 bias) on raw device
/// addresses, so this drives cudarc's `cublaslt::result` layer directly, as `Matmul` does.
struct BlasLt {
    handle: cublasLtHandle_t,
    workspace: CudaSlice<u8>,
    /// Descriptors and algorithm per GEMM shape: building them and asking the heuristic
    /// costs more CPU time than launching a small GEMM, and a model repeats a few shapes.
    plans: HashMap<PlanKey, Plan>,
}

/// Bounds the plan cache: a workload that keeps changing shapes rebuilds instead of growing.
const MAX_PLANS: usize = 512;

/// What a plan depends on: everything of a [`Gemm`] but its addresses (except their
/// alignments, which the heuristic is told) and beta.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct PlanKey {
    m: usize,
    n: usize,
    k: usize,
    batch: usize,
    a_trans: bool,
    b_trans: bool,
    strides: [usize; 3],
    c_bf16: bool,
    bias: bool,
    /// Of a, b, c and the bias (0 without one).
    alignments: [u32; 4],
}

impl PlanKey {
    fn of(g: &Gemm) -> Self {
        PlanKey {
            m: g.m,
            n: g.n,
            k: g.k,
            batch: g.batch,
            a_trans: g.a_trans,
            b_trans: g.b_trans,
            strides: [g.stride_a, g.stride_b, g.stride_c],
            c_bf16: g.c_bf16,
            bias: g.bias.is_some(),
            alignments: [
                alignment(g.a.0),
                alignment(g.b.0),
                alignment(g.c.0),
                g.bias.map_or(0, |p| alignment(p.0)),
            ],
        }
    }
}

/// cuBLASLt's A, B and C/D layouts (our b, a and c), the matmul descriptor and the chosen
/// algorithm for one [`PlanKey`].
struct Plan {
    a: Desc<cublasLtMatrixLayout_t>,
    b: Desc<cublasLtMatrixLayout_t>,
    c: Desc<cublasLtMatrixLayout_t>,
    desc: Desc<cublasLtMatmulDesc_t>,
    algo: cublasLtMatmulAlgo_t,
}

// SAFETY: the handle is used under `Cuda::blas`'s lock only, on the context's one stream.
unsafe impl Send for BlasLt {}
unsafe impl Sync for BlasLt {}

impl Drop for BlasLt {
    fn drop(&mut self) {
        // SAFETY: created by `BlasLt::new`, destroyed once. A failure cannot be reported
        // from here and leaves nothing to clean up.
        let _ = unsafe { lt::destroy_handle(self.handle) };
    }
}

/// Destroys a cuBLASLt descriptor when it goes out of scope, error paths included.
struct Desc<H: Copy>(H, unsafe fn(H) -> std::result::Result<(), CublasError>);

impl<H: Copy> Drop for Desc<H> {
    fn drop(&mut self) {
        // SAFETY: each descriptor is wrapped once, right after its creation.
        let _ = unsafe { (self.1)(self.0) };
    }
}

/// The largest power of two (up to 256) that divides `addr`: the alignment to promise
/// cuBLASLt's heuristic, which by default assumes 256 and may otherwise pick a kernel that
/// faults on a less aligned operand.
fn alignment(addr: u64) -> u32 {
    1 << addr.trailing_zeros().min(8)
}

impl BlasLt {
    fn new(ctx: &Arc<CudaContext>, stream: &Arc<CudaStream>) -> Result<Self> {
        // SAFETY: only tries to dlopen cuBLASLt.
        if !unsafe { cudarc::cublaslt::sys::is_culib_present() } {
            return Err(unavailable(
                "cuBLASLt (libcublasLt) could not be loaded; set LD_LIBRARY_PATH",
            ));
        }
        // NVIDIA's recommended workspace: 32 MiB on Hopper and later, 4 MiB before.
        let major = ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)
            .map_err(|e| dev_err("compute capability", e))?;
        let bytes = if major >= 9 { 32 << 20 } else { 4 << 20 };
        // SAFETY: cuBLASLt only uses the workspace as scratch, never reading unset bytes.
        let workspace =
            unsafe { stream.alloc::<u8>(bytes) }.map_err(|e| dev_err("cuBLASLt workspace", e))?;
        let handle = lt::create_handle().map_err(|e| dev_err("cuBLASLt", e))?;
        Ok(BlasLt {
            handle,
            workspace,
            plans: HashMap::new(),
        })
    }

    /// `g` as one `cublasLtMatmul`: `D = alpha·op(A)·op(B) + beta·C`, then the bias epilogue,
    /// with C = D = `g.c` (in place, which cuBLASLt allows when C and D share a layout).
    ///
    /// cuBLASLt is column-major, and a row-major matrix read as column-major is its
    /// transpose. So row-major `C = op(a)·op(b)` is column-major `Cᵀ = op(b)ᵀ·op(a)ᵀ`:
    /// cuBLASLt's A is our `b`, its B our `a`, and "not transposed" maps to OP_N. Our `b`,
    /// row-major `[k, n]` (or `[n, k]` when `b_trans`), is column-major `[n, k]` with ld n
    /// (or `[k, n]` with ld k, taken with OP_T); our `a`, row-major `[m, k]` (or `[k, m]`),
    /// is column-major `[k, m]` with ld k (or `[m, k]` with ld m, OP_T); D is column-major
    /// `[n, m]` with ld n. cuBLASLt's bias has one value per row of D, broadcast along its
    /// columns: per column of our row-major C, as [`Gemm::bias`] says.
    ///
    /// The bias is in D's type, cuBLASLt's default bias type: on an H200 (cuBLAS 13.0) an f32
    /// bias with a bf16 D, asked for through `BIAS_DATA_TYPE`, made every such matmul fail
    /// with `CUBLAS_STATUS_INVALID_VALUE`, and with the bias in D's type the op table passes.
    /// Assumed from NVIDIA's documentation and checked by the op table on that device: the epilogue adds the bias after `beta·C` (so accumulating
    /// adds `op(a)·op(b) + bias` into `c`), in f32, before the one rounding of a bf16 D; the
    /// bias batch stride defaults to 0 (one bias for every batch); a zero batch stride of A or
    /// B (one operand shared by the batch) is valid; and k = 0 gives `beta·C + bias`.
    ///
    /// The descriptors and the heuristic's algorithm are built once per [`PlanKey`] and
    /// reused; errors name the call that failed.
    fn gemm(&mut self, g: &Gemm, stream: &Arc<CudaStream>) -> std::result::Result<(), String> {
        let key = PlanKey::of(g);
        if !self.plans.contains_key(&key) {
            if self.plans.len() >= MAX_PLANS {
                self.plans.clear();
            }
            let plan = self.plan(g)?;
            self.plans.insert(key, plan);
        }
        let plan = &self.plans[&key];
        let (workspace, _in_use) = self.workspace.device_ptr(stream);
        let (alpha, beta) = (1f32, if g.accumulate { 1f32 } else { 0f32 });
        // SAFETY: the plan's descriptors are alive (owned by the cache) and were made for this
        // shape, transposes, types, strides and alignments; the bias pointer attribute is a
        // device address (8 bytes), set on this plan right before its one use here, under
        // `Cuda::blas`'s lock; the shared code sized every operand for `g`.
        unsafe {
            if let Some(bias) = g.bias {
                lt::set_matmul_desc_attribute(
                    plan.desc.0,
                    cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                    ptr_of(&bias.0),
                    8,
                )
                .map_err(at("BIAS_POINTER"))?;
            }
            lt::matmul(
                self.handle,
                plan.desc.0,
                ptr_of(&alpha),
                ptr_of(&beta),
                g.b.0 as *const _,
                plan.a.0,
                g.a.0 as *const _,
                plan.b.0,
                g.c.0 as *const _,
                plan.c.0,
                g.c.0 as *mut _,
                plan.c.0,
                &plan.algo,
                workspace as *mut _,
                self.workspace.len(),
                stream.cu_stream() as *mut _,
            )
            .map_err(at("matmul"))
        }
    }

    /// The descriptors and algorithm for GEMMs like `g` (all but its addresses and beta).
    fn plan(&self, g: &Gemm) -> std::result::Result<Plan, String> {
        let bf16 = cudaDataType::CUDA_R_16BF;
        let c_type = if g.c_bf16 {
            bf16
        } else {
            cudaDataType::CUDA_R_32F
        };
        let (b_rows, b_cols) = if g.b_trans { (g.k, g.n) } else { (g.n, g.k) };
        let (a_rows, a_cols) = if g.a_trans { (g.m, g.k) } else { (g.k, g.m) };
        // SAFETY (whole block): every descriptor is created here, wrapped for destruction,
        // and used only while alive; attribute buffers are values of the attribute's type
        // (32-bit for transposes, the epilogue and the batch count; int64 for batch strides;
        // uint64 for the workspace size; uint32 for alignments).
        unsafe {
            let layout = |dtype, rows: usize, cols: usize, stride: usize| {
                let l = Desc(
                    lt::create_matrix_layout(dtype, rows as u64, cols as u64, rows.max(1) as i64)?,
                    lt::destroy_matrix_layout,
                );
                if g.batch > 1 {
                    use cublasLtMatrixLayoutAttribute_t as L;
                    let (count, stride) = (g.batch as i32, stride as i64);
                    let set =
                        |attr, buf, size| lt::set_matrix_layout_attribute(l.0, attr, buf, size);
                    set(L::CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, ptr_of(&count), 4)?;
                    set(
                        L::CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                        ptr_of(&stride),
                        8,
                    )?;
                }
                Ok::<_, CublasError>(l)
            };
            let a = layout(bf16, b_rows, b_cols, g.stride_b).map_err(at("layout of A"))?;
            let b = layout(bf16, a_rows, a_cols, g.stride_a).map_err(at("layout of B"))?;
            let c = layout(c_type, g.n, g.m, g.stride_c).map_err(at("layout of C"))?;

            let desc = Desc(
                lt::create_matmul_desc(
                    cublasComputeType_t::CUBLAS_COMPUTE_32F,
                    cudaDataType::CUDA_R_32F,
                )
                .map_err(at("matmul descriptor"))?,
                lt::destroy_matmul_desc,
            );
            let set = |attr, buf: *const std::ffi::c_void, size| {
                lt::set_matmul_desc_attribute(desc.0, attr, buf, size)
            };
            use cublasLtMatmulDescAttributes_t as D;
            let (trans_a, trans_b) = (g.b_trans as i32, g.a_trans as i32);
            set(D::CUBLASLT_MATMUL_DESC_TRANSA, ptr_of(&trans_a), 4).map_err(at("TRANSA"))?;
            set(D::CUBLASLT_MATMUL_DESC_TRANSB, ptr_of(&trans_b), 4).map_err(at("TRANSB"))?;
            if let Some(bias) = g.bias {
                let epilogue = cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS;
                set(D::CUBLASLT_MATMUL_DESC_EPILOGUE, ptr_of(&epilogue), 4)
                    .map_err(at("EPILOGUE"))?;
                // The heuristic may look at the pointer; `gemm` sets each call's own.
                set(D::CUBLASLT_MATMUL_DESC_BIAS_POINTER, ptr_of(&bias.0), 8)
                    .map_err(at("BIAS_POINTER"))?;
            }
            let pref = Desc(
                lt::create_matmul_pref().map_err(at("preference"))?,
                lt::destroy_matmul_pref,
            );
            use cublasLtMatmulPreferenceAttributes_t as P;
            let bytes = self.workspace.len() as u64;
            let pref_set =
                |attr, v: &u32| lt::set_matmul_pref_attribute(pref.0, attr, ptr_of(v), 4);
            lt::set_matmul_pref_attribute(
                pref.0,
                P::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                ptr_of(&bytes),
                8,
            )
            .map_err(at("workspace preference"))?;
            pref_set(
                P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                &alignment(g.b.0),
            )
            .map_err(at("alignment of A"))?;
            pref_set(
                P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                &alignment(g.a.0),
            )
            .map_err(at("alignment of B"))?;
            pref_set(
                P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                &alignment(g.c.0),
            )
            .map_err(at("alignment of C"))?;
            pref_set(
                P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                &alignment(g.c.0),
            )
            .map_err(at("alignment of D"))?;

            let heuristic =
                lt::get_matmul_algo_heuristic(self.handle, desc.0, a.0, b.0, c.0, c.0, pref.0)
                    .map_err(at("algorithm heuristic"))?;
            Ok(Plan {
                a,
                b,
                c,
                desc,
                algo: heuristic.algo,
            })
        }
    }
}

/// Maps a cuBLASLt error to a message naming the call that failed.
fn at(what: &'static str) -> impl Fn(CublasError) -> String {
    move |e| format!("{what}: {e:?}")
}

/// `v` as the untyped attribute buffer cuBLASLt's setters take.
fn ptr_of<V>(v: &V) -> *const std::ffi::c_void {
    (v as *const V).cast()
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
