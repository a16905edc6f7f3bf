//! The emulated device: the same `.cu` kernels, compiled by the host compiler against
//! `kernels/emu/` and linked into the crate by build.rs, launched by name through a C ABI.
//! Device memory is host memory with guard pages, so copies are `memcpy` and the GEMM runs
//! on the CPU (f32 products of the bf16 operands, f32 accumulation, as tensor cores do).

use std::ffi::{c_char, c_int, c_uint, c_ulonglong, c_void, CStr};
use std::sync::Mutex;

use half::bf16;
use rayon::prelude::*;

use super::{DevicePtr, Gemm, KernelArg, LaunchCfg, Launcher};
use crate::error::{Error, Result};

extern "C" {
    #[allow(clippy::too_many_arguments)]
    fn kdad_emu_launch(
        name: *const c_char,
        gx: c_uint,
        gy: c_uint,
        gz: c_uint,
        bx: c_uint,
        by: c_uint,
        bz: c_uint,
        smem_bytes: c_uint,
        args: *mut *mut c_void,
        n_args: c_uint,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    fn kdad_emu_alloc(bytes: usize) -> *mut c_void;
    fn kdad_emu_free(ptr: *mut c_void);
    fn kdad_emu_kernel_count() -> c_int;
    fn kdad_emu_kernel_name(i: c_int) -> *const c_char;
    fn kdad_emu_set_threads(n: c_uint);
    fn kdad_emu_set_shuffle_seed(seed: c_ulonglong);
}

/// The emulator runs one launch at a time (its worker threads and shared-memory arenas are
/// global), so launches from several host threads take turns.
static LAUNCH_LOCK: Mutex<()> = Mutex::new(());

/// The emulated device. Cheap to create; all instances share the emulator.
#[derive(Default)]
pub struct Emu;

impl Emu {
    pub fn new() -> Self {
        Emu
    }

    /// OS threads that run blocks in parallel (default: the emulator's choice).
    pub fn set_threads(n: u32) {
        // SAFETY: plain setter of the emulator's configuration.
        unsafe { kdad_emu_set_threads(n) }
    }

    /// Run the threads of a block in an order shuffled by `seed` (0: in order), to expose
    /// races that a fixed order hides.
    pub fn set_shuffle_seed(seed: u64) {
        // SAFETY: plain setter of the emulator's configuration.
        unsafe { kdad_emu_set_shuffle_seed(seed) }
    }

    /// Names of every kernel the emulator can launch.
    pub fn kernels() -> Vec<String> {
        // SAFETY: indices below the count name static NUL-terminated strings.
        unsafe {
            (0..kdad_emu_kernel_count())
                .map(|i| {
                    CStr::from_ptr(kdad_emu_kernel_name(i))
                        .to_string_lossy()
                        .into_owned()
                })
                .collect()
        }
    }
}

fn host<'a>(p: DevicePtr, bytes: usize) -> &'a [u8] {
    // SAFETY: every DevicePtr handed out by `Emu::alloc` addresses host memory of the
    // allocation's size, and the shared GPU code only passes ranges inside its buffers.
    unsafe { std::slice::from_raw_parts(p.0 as *const u8, bytes) }
}

fn host_mut<'a>(p: DevicePtr, bytes: usize) -> &'a mut [u8] {
    // SAFETY: as in `host`; the callers hold no other reference to the range.
    unsafe { std::slice::from_raw_parts_mut(p.0 as *mut u8, bytes) }
}

impl Launcher for Emu {
    fn name(&self) -> String {
        "emu".into()
    }

    fn alloc(&self, bytes: usize) -> Result<DevicePtr> {
        // SAFETY: returns fresh memory or null.
        let p = unsafe { kdad_emu_alloc(bytes) };
        if p.is_null() {
            return Err(Error::Device(format!(
                "emu: out of memory allocating {bytes} bytes"
            )));
        }
        Ok(DevicePtr(p as u64))
    }

    fn free(&self, ptr: DevicePtr) {
        // SAFETY: `ptr` came from `kdad_emu_alloc` and is freed once (by its buffer's Drop).
        unsafe { kdad_emu_free(ptr.0 as *mut c_void) }
    }

    fn htod(&self, src: &[u8], dst: DevicePtr) -> Result<()> {
        host_mut(dst, src.len()).copy_from_slice(src);
        Ok(())
    }

    fn dtoh(&self, src: DevicePtr, dst: &mut [u8]) -> Result<()> {
        dst.copy_from_slice(host(src, dst.len()));
        Ok(())
    }

    fn dtod(&self, src: DevicePtr, dst: DevicePtr, bytes: usize) -> Result<()> {
        // SAFETY: both ranges lie in live allocations; `copy` tolerates overlap.
        unsafe { std::ptr::copy(src.0 as *const u8, dst.0 as *mut u8, bytes) };
        Ok(())
    }

    fn memset(&self, dst: DevicePtr, byte: u8, bytes: usize) -> Result<()> {
        host_mut(dst, bytes).fill(byte);
        Ok(())
    }

    fn launch(&self, kernel: &'static str, cfg: LaunchCfg, args: &[KernelArg]) -> Result<()> {
        let name = std::ffi::CString::new(kernel)
            .map_err(|_| Error::Device(format!("kernel name {kernel:?} contains a NUL byte")))?;
        let mut slots: Vec<[u8; 8]> = args.iter().map(|a| a.to_slot()).collect();
        let mut ptrs: Vec<*mut c_void> = slots
            .iter_mut()
            .map(|s| s.as_mut_ptr() as *mut c_void)
            .collect();
        let mut err = vec![0 as c_char; 1024];
        let _turn = LAUNCH_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let (g, b) = (cfg.grid, cfg.block);
        // SAFETY: `ptrs` points at one 8-byte slot per argument, alive for the call; the
        // emulator checks the name and the argument count against the kernel's signature.
        let rc = unsafe {
            kdad_emu_launch(
                name.as_ptr(),
                g.0,
                g.1,
                g.2,
                b.0,
                b.1,
                b.2,
                cfg.smem,
                ptrs.as_mut_ptr(),
                ptrs.len() as c_uint,
                err.as_mut_ptr(),
                err.len(),
            )
        };
        if rc != 0 {
            // SAFETY: the emulator writes a NUL-terminated message into `err`.
            let msg = unsafe { CStr::from_ptr(err.as_ptr()) }
                .to_string_lossy()
                .into_owned();
            return Err(Error::Device(format!(
                "emu launch of {kernel} failed: {msg}"
            )));
        }
        Ok(())
    }

    fn gemm(&self, g: &Gemm) -> Result<()> {
        let bf = |p: DevicePtr, n: usize| -> &[bf16] { bytemuck::cast_slice(host(p, n * 2)) };
        let a_len = if g.stride_a == 0 {
            g.m * g.k
        } else {
            g.stride_a * (g.batch - 1) + g.m * g.k
        };
        let b_len = if g.stride_b == 0 {
            g.k * g.n
        } else {
            g.stride_b * (g.batch - 1) + g.k * g.n
        };
        let (a, b) = (bf(g.a, a_len), bf(g.b, b_len));
        let c_len = g.stride_c * (g.batch - 1) + g.m * g.n;
        // The bias in `c`'s type, widened to f32 as cuBLASLt's epilogue reads it.
        let bias: Option<Vec<f32>> = g.bias.map(|p| {
            if g.c_bf16 {
                bf(p, g.n).iter().map(|v| v.to_f32()).collect()
            } else {
                bytemuck::cast_slice(host(p, g.n * 4)).to_vec()
            }
        });
        // Row r, column col of batch i: the f32 sum of the bf16 products, added to the old
        // value when accumulating, then the bias; a bf16 output is rounded once, at the end,
        // as cuBLASLt's bias epilogue does.
        let dot = |i: usize, r: usize, col: usize| -> f32 {
            let (a, b) = (&a[i * g.stride_a..], &b[i * g.stride_b..]);
            let mut acc = 0f32;
            for kk in 0..g.k {
                let av = if g.a_trans {
                    a[kk * g.m + r]
                } else {
                    a[r * g.k + kk]
                };
                let bv = if g.b_trans {
                    b[col * g.k + kk]
                } else {
                    b[kk * g.n + col]
                };
                acc += av.to_f32() * bv.to_f32();
            }
            acc
        };
        let value = |old: f32, i: usize, r: usize, col: usize| -> f32 {
            let v = if g.accumulate { old } else { 0.0 } + dot(i, r, col);
            bias.as_ref().map_or(v, |b| v + b[col])
        };
        for i in 0..g.batch {
            let rows = i * g.stride_c..i * g.stride_c + g.m * g.n;
            if g.c_bf16 {
                let c: &mut [bf16] = bytemuck::cast_slice_mut(host_mut(g.c, c_len * 2));
                c[rows]
                    .par_chunks_mut(g.n)
                    .enumerate()
                    .for_each(|(r, row)| {
                        for (col, out) in row.iter_mut().enumerate() {
                            *out = bf16::from_f32(value(out.to_f32(), i, r, col));
                        }
                    });
            } else {
                let c: &mut [f32] = bytemuck::cast_slice_mut(host_mut(g.c, c_len * 4));
                c[rows]
                    .par_chunks_mut(g.n)
                    .enumerate()
                    .for_each(|(r, row)| {
                        for (col, out) in row.iter_mut().enumerate() {
                            *out = value(*out, i, r, col);
                        }
                    });
            }
        }
        Ok(())
    }

    fn synchronize(&self) -> Result<()> {
        // Launches and copies complete before they return.
        Ok(())
    }

    fn time_ms(&self, work: &mut dyn FnMut() -> Result<()>) -> Result<Option<f64>> {
        work()?;
        Ok(None)
    }
}
