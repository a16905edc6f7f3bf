//! Tests of the emulated CUDA device itself (kernels/emu), through its C ABI and the test
//! kernels of kernels/emu/selftest.cu. The expected values are computed here, from our own
//! reading of the CUDA and PTX ISA documentation, never by the emulator.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};

// The emulator is a static library of the kdad crate; naming the crate links it in.
use kdad as _;

// Minimal FFI shim for these tests; the product's launcher lives in src/device/gpu/emu.rs.
extern "C" {
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
    fn kdad_emu_set_shuffle_seed(seed: u64);
}

/// A device buffer (guard-paged) holding a copy of `data`.
struct Buf<T: Copy> {
    ptr: *mut T,
    len: usize,
}

impl<T: Copy> Buf<T> {
    fn new(data: &[T]) -> Self {
        let bytes = std::mem::size_of_val(data);
        let ptr = unsafe { kdad_emu_alloc(bytes) } as *mut T;
        assert!(!ptr.is_null(), "kdad_emu_alloc({bytes}) failed");
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), ptr, data.len()) };
        Buf {
            ptr,
            len: data.len(),
        }
    }
    fn read(&self) -> Vec<T> {
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }.to_vec()
    }
}

impl<T: Copy> Drop for Buf<T> {
    fn drop(&mut self) {
        unsafe { kdad_emu_free(self.ptr as *mut c_void) };
    }
}

/// A pointer to one kernel argument's value, as cuLaunchKernel takes it.
fn arg<T>(value: &mut T) -> *mut c_void {
    value as *mut T as *mut c_void
}

fn launch(
    name: &str,
    grid: (u32, u32, u32),
    block: (u32, u32, u32),
    smem: u32,
    args: &mut [*mut c_void],
) -> Result<(), String> {
    let name = CString::new(name).unwrap();
    let mut err = vec![0 as c_char; 1024];
    let rc = unsafe {
        kdad_emu_launch(
            name.as_ptr(),
            grid.0,
            grid.1,
            grid.2,
            block.0,
            block.1,
            block.2,
            smem,
            args.as_mut_ptr(),
            args.len() as c_uint,
            err.as_mut_ptr(),
            err.len(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(unsafe { CStr::from_ptr(err.as_ptr()) }
            .to_string_lossy()
            .into_owned())
    }
}

fn expect_error(result: Result<(), String>, needles: &[&str]) {
    let message = result.expect_err("the launch should have failed");
    for needle in needles {
        assert!(
            message.contains(needle),
            "error {message:?} does not mention {needle:?}"
        );
    }
}

fn bf16_bits(x: f32) -> u16 {
    // Only small integers are converted here, which bf16 holds exactly.
    let bits = x.to_bits();
    assert_eq!(bits & 0xffff, 0, "{x} is not exact in bf16");
    (bits >> 16) as u16
}

#[test]
fn selftest_kernels_are_registered_by_name() {
    let names: Vec<String> = (0..unsafe { kdad_emu_kernel_count() })
        .map(|i| {
            unsafe { CStr::from_ptr(kdad_emu_kernel_name(i)) }
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    for name in ["emu_selftest_mma", "emu_selftest_gemm", "emu_selftest_race"] {
        assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
    }
    assert!(unsafe { kdad_emu_kernel_name(-1) }.is_null());
    assert!(unsafe { kdad_emu_kernel_name(names.len() as c_int) }.is_null());
}

/// PTX ISA, "Matrix Fragments for mma.m16n8k16" for .bf16 (groupID = lane >> 2,
/// threadID_in_group = lane % 4), element j of the lane's fragment -> (row, col).
fn a_elem(lane: usize, j: usize) -> (usize, usize) {
    let (g, t) = (lane >> 2, lane % 4);
    let row = if matches!(j, 0 | 1 | 4 | 5) { g } else { g + 8 };
    let col = t * 2 + (j & 1) + if j >= 4 { 8 } else { 0 };
    (row, col)
}
fn b_elem(lane: usize, j: usize) -> (usize, usize) {
    let (g, t) = (lane >> 2, lane % 4);
    (t * 2 + (j & 1) + if j >= 2 { 8 } else { 0 }, g)
}
fn c_elem(lane: usize, j: usize) -> (usize, usize) {
    let (g, t) = (lane >> 2, lane % 4);
    (if j < 2 { g } else { g + 8 }, t * 2 + (j & 1))
}

#[test]
fn mma_fragments_follow_the_ptx_tables() {
    // Distinct small integers: every product and sum is exact in f32, so any element that
    // comes from the wrong fragment position changes the result.
    let a = |r: usize, k: usize| ((r * 16 + k) % 17) as f32 - 8.0;
    let b = |k: usize, n: usize| ((k * 8 + n) % 13) as f32 - 6.0;
    let c = |r: usize, n: usize| (r * 8 + n) as f32;
    let pack = |lo: f32, hi: f32| bf16_bits(lo) as u32 | (bf16_bits(hi) as u32) << 16;
    let (mut a_regs, mut b_regs, mut c_regs) = (vec![0u32; 128], vec![0u32; 64], vec![0f32; 128]);
    for lane in 0..32 {
        for reg in 0..4 {
            let (lo, hi) = (a_elem(lane, 2 * reg), a_elem(lane, 2 * reg + 1));
            a_regs[4 * lane + reg] = pack(a(lo.0, lo.1), a(hi.0, hi.1));
            let (r, n) = c_elem(lane, reg);
            c_regs[4 * lane + reg] = c(r, n);
        }
        for reg in 0..2 {
            let (lo, hi) = (b_elem(lane, 2 * reg), b_elem(lane, 2 * reg + 1));
            b_regs[2 * lane + reg] = pack(b(lo.0, lo.1), b(hi.0, hi.1));
        }
    }
    let (da, db, dc) = (Buf::new(&a_regs), Buf::new(&b_regs), Buf::new(&c_regs));
    let dd = Buf::new(&[f32::NAN; 128]);
    let (mut pa, mut pb, mut pc, mut pd) = (da.ptr, db.ptr, dc.ptr, dd.ptr);
    let mut args = [arg(&mut pa), arg(&mut pb), arg(&mut pc), arg(&mut pd)];
    launch("emu_selftest_mma", (1, 1, 1), (32, 1, 1), 0, &mut args).unwrap();
    let d = dd.read();
    for lane in 0..32 {
        for j in 0..4 {
            let (r, n) = c_elem(lane, j);
            let want: f64 = c(r, n) as f64
                + (0..16)
                    .map(|k| a(r, k) as f64 * b(k, n) as f64)
                    .sum::<f64>();
            assert_eq!(
                d[4 * lane + j] as f64,
                want,
                "lane {lane} element {j} (D[{r}][{n}])"
            );
        }
    }
}

#[test]
fn ldmatrix_fragments_follow_the_ptx_tables() {
    // 32 rows of 8 b16 values, each value its own (row, col) id; lane l points at a row of
    // a scrambled order, so the test also checks whose address each matrix row comes from.
    let rows = 32usize;
    let src: Vec<u16> = (0..rows * 8).map(|i| i as u16).collect();
    let id = |row: i32, col: usize| (row as usize * 8 + col) as u32;
    let row_of_lane: Vec<i32> = (0..32).map(|l| (l * 5 + 3) % 32).collect();
    let (dsrc, drows) = (Buf::new(&src), Buf::new(&row_of_lane));
    for count in [1, 2, 4] {
        for trans in [0, 1] {
            let dout = Buf::new(&[0xdead_beefu32; 128]);
            let (mut ps, mut pr, mut po) = (dsrc.ptr, drows.ptr, dout.ptr);
            let (mut nrows, mut cnt, mut tr) = (rows as i32, count, trans);
            let mut args = [
                arg(&mut ps),
                arg(&mut nrows),
                arg(&mut pr),
                arg(&mut cnt),
                arg(&mut tr),
                arg(&mut po),
            ];
            launch(
                "emu_selftest_ldmatrix",
                (1, 1, 1),
                (32, 1, 1),
                512,
                &mut args,
            )
            .unwrap();
            let out = dout.read();
            for lane in 0..32usize {
                for i in 0..4usize {
                    let got = out[4 * lane + i];
                    // Matrix i's row r is at the address lane 8i + r gave. Without .trans
                    // lane l holds row l/4, columns 2(l%4), 2(l%4)+1; with .trans the
                    // elements at column l/4 of rows 2(l%4) and 2(l%4)+1.
                    let want = if i >= count as usize {
                        0
                    } else if trans == 0 {
                        let row = row_of_lane[8 * i + lane / 4];
                        id(row, 2 * (lane % 4)) | id(row, 2 * (lane % 4) + 1) << 16
                    } else {
                        let (r0, r1) = (
                            row_of_lane[8 * i + 2 * (lane % 4)],
                            row_of_lane[8 * i + 2 * (lane % 4) + 1],
                        );
                        id(r0, lane / 4) | id(r1, lane / 4) << 16
                    };
                    assert_eq!(got, want, "x{count} trans={trans} lane {lane} register {i}");
                }
            }
        }
    }
}

#[test]
fn tensor_core_gemm_tile_is_exact_on_small_integers() {
    let (m, n, k) = (64usize, 64usize, 48usize);
    let a: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 9) as f32 - 4.0).collect();
    let b_kn: Vec<f32> = (0..k * n).map(|i| ((i * 5) % 9) as f32 - 4.0).collect();
    let mut want = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            want[i * n + j] = (0..k)
                .map(|p| a[i * k + p] as f64 * b_kn[p * n + j] as f64)
                .sum();
        }
    }
    let a16: Vec<u16> = a.iter().map(|&x| bf16_bits(x)).collect();
    let kn16: Vec<u16> = b_kn.iter().map(|&x| bf16_bits(x)).collect();
    let mut nk16 = vec![0u16; n * k];
    for p in 0..k {
        for j in 0..n {
            nk16[j * k + p] = kn16[p * n + j];
        }
    }
    let da = Buf::new(&a16);
    for (layout, b16) in [(0, &nk16), (1, &kn16)] {
        let db = Buf::new(b16);
        let dc = Buf::new(&vec![f32::NAN; m * n]);
        let (mut pa, mut pb, mut pc) = (da.ptr, db.ptr, dc.ptr);
        let (mut mm, mut nn, mut kk, mut kn) = (m as i32, n as i32, k as i32, layout);
        let mut args = [
            arg(&mut pa),
            arg(&mut pb),
            arg(&mut pc),
            arg(&mut mm),
            arg(&mut nn),
            arg(&mut kk),
            arg(&mut kn),
        ];
        let grid = ((n / 32) as u32, (m / 32) as u32, 1);
        launch("emu_selftest_gemm", grid, (128, 1, 1), 2048, &mut args).unwrap();
        let got = dc.read();
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g as f64, w, "b_is_kn={layout}: C[{}][{}]", i / n, i % n);
        }
    }
}

#[test]
fn warp_shuffles_ballots_and_reductions() {
    let n = 64usize; // two warps, so no lane may see the other warp
    let input: Vec<f32> = (0..n).map(|t| t as f32 - 20.0).collect();
    let (din, dout, dbits) = (
        Buf::new(&input),
        Buf::new(&vec![f32::NAN; 10 * n]),
        Buf::new(&vec![0u32; 4 * n]),
    );
    let (mut pi, mut po, mut pb) = (din.ptr, dout.ptr, dbits.ptr);
    let mut args = [arg(&mut pi), arg(&mut po), arg(&mut pb)];
    launch(
        "emu_selftest_shuffles",
        (1, 1, 1),
        (n as u32, 1, 1),
        0,
        &mut args,
    )
    .unwrap();
    let (out, bits) = (dout.read(), dbits.read());
    for t in 0..n {
        let (base, lane) = (t / 32 * 32, t % 32);
        let at = |l: usize| input[base + l];
        let own = input[t];
        // CUDA programming guide, warp shuffle functions: a source outside the lane's
        // width-group gives the caller's own value (down/up), xor may only look back.
        let want = [
            at((lane * 7 + 3) % 32),
            at(lane / 8 * 8 + 5),
            at(lane ^ 5),
            if lane ^ 12 >= lane / 8 * 8 + 8 {
                own
            } else {
                at(lane ^ 12)
            },
            if lane + 3 < 32 { at(lane + 3) } else { own },
            if lane % 16 + 3 < 16 {
                at(lane + 3)
            } else {
                own
            },
            if lane >= 2 { at(lane - 2) } else { own },
            if lane % 8 >= 2 { at(lane - 2) } else { own },
            (0..32).map(at).sum(),
            (0..32).map(at).fold(f32::MIN, f32::max),
        ];
        for (kind, w) in want.iter().enumerate() {
            assert_eq!(out[kind * n + t], *w, "kind {kind}, thread {t}");
        }
        let ballot = (0..32)
            .filter(|&l| at(l) > 0.0)
            .fold(0u32, |m, l| m | 1 << l);
        assert_eq!(bits[t], ballot, "ballot, thread {t}");
        assert_eq!(bits[n + t], 0, "any, thread {t}");
        assert_eq!(bits[2 * n + t], 1, "all, thread {t}");
        assert_eq!(bits[3 * n + t], u32::MAX, "activemask, thread {t}");
    }
}

#[test]
fn a_partial_warp_cannot_read_missing_lanes() {
    // 48 threads: the second warp has lanes 0..15 only.
    let n = 48usize;
    let (din, dout) = (Buf::new(&vec![1f32; n]), Buf::new(&vec![0f32; 10 * n]));
    let dbits = Buf::new(&vec![0u32; 4 * n]);
    let (mut pi, mut po, mut pb) = (din.ptr, dout.ptr, dbits.ptr);
    let mut args = [arg(&mut pi), arg(&mut po), arg(&mut pb)];
    expect_error(
        launch(
            "emu_selftest_shuffles",
            (1, 1, 1),
            (n as u32, 1, 1),
            0,
            &mut args,
        ),
        &[
            "emu_selftest_shuffles",
            "which does not exist in this partial warp of 16 lanes",
        ],
    );
}

#[test]
fn block_reductions() {
    let (blocks, threads) = (5usize, 256usize);
    let x: Vec<f32> = (0..blocks * threads)
        .map(|i| ((i * 37) % 101) as f32 - 50.0)
        .collect();
    let (dx, ds, dm) = (
        Buf::new(&x),
        Buf::new(&[f32::NAN; 5]),
        Buf::new(&[f32::NAN; 5]),
    );
    let (mut px, mut ps, mut pm) = (dx.ptr, ds.ptr, dm.ptr);
    let mut args = [arg(&mut px), arg(&mut ps), arg(&mut pm)];
    launch(
        "emu_selftest_block_reduce",
        (5, 1, 1),
        (256, 1, 1),
        0,
        &mut args,
    )
    .unwrap();
    let (sums, maxes) = (ds.read(), dm.read());
    for b in 0..blocks {
        let block = &x[b * threads..(b + 1) * threads];
        assert_eq!(sums[b], block.iter().sum::<f32>(), "sum of block {b}");
        assert_eq!(
            maxes[b],
            block.iter().copied().fold(f32::MIN, f32::max),
            "max of block {b}"
        );
    }
}

#[test]
fn syncthreads_count_and_or() {
    let n = 96usize;
    for (n_true, one) in [(96, 5), (95, -1)] {
        let out = Buf::new(&vec![-1i32; 4 * n]);
        let (mut po, mut nt, mut o) = (out.ptr, n_true, one);
        let mut args = [arg(&mut po), arg(&mut nt), arg(&mut o)];
        launch(
            "emu_selftest_sync_count",
            (1, 1, 1),
            (n as u32, 1, 1),
            0,
            &mut args,
        )
        .unwrap();
        let got = out.read();
        for t in 0..n {
            let want = [32, (n_true == 96) as i32, (one >= 0) as i32, 48];
            assert_eq!(
                got[4 * t..4 * t + 4],
                want,
                "thread {t}, n_true {n_true}, one {one}"
            );
        }
    }
}

#[test]
fn atomics_across_blocks_on_two_os_threads() {
    unsafe { kdad_emu_set_threads(2) };
    let (blocks, threads) = (64u32, 128u32);
    let total = (blocks * threads) as i32;
    let count = Buf::new(&[0i32]);
    let fsum = Buf::new(&[0f32]);
    let usum = Buf::new(&[0u32]);
    let imax = Buf::new(&[i32::MIN]);
    let imin = Buf::new(&[i32::MAX]);
    let cas = Buf::new(&[0u32]);
    let exch = Buf::new(&[0i32]);
    let mut p = (
        count.ptr, fsum.ptr, usum.ptr, imax.ptr, imin.ptr, cas.ptr, exch.ptr,
    );
    let mut args = [
        arg(&mut p.0),
        arg(&mut p.1),
        arg(&mut p.2),
        arg(&mut p.3),
        arg(&mut p.4),
        arg(&mut p.5),
        arg(&mut p.6),
    ];
    launch(
        "emu_selftest_atomics",
        (blocks, 1, 1),
        (threads, 1, 1),
        0,
        &mut args,
    )
    .unwrap();
    assert_eq!(count.read()[0], total);
    assert_eq!(fsum.read()[0], total as f32 * 0.5);
    assert_eq!(usum.read()[0], (0..total as u32).sum::<u32>());
    assert_eq!(imax.read()[0], total - 1);
    assert_eq!(imin.read()[0], -(total - 1));
    assert_eq!(cas.read()[0], total as u32);
    assert_eq!(exch.read()[0], 7);
}

#[test]
fn dynamic_shared_memory_is_poisoned_and_private_per_block() {
    let (blocks, threads) = (3usize, 256usize);
    let input: Vec<f32> = (0..blocks * threads).map(|i| i as f32).collect();
    let (din, dout) = (
        Buf::new(&input),
        Buf::new(&vec![f32::NAN; blocks * threads]),
    );
    let dpoison = Buf::new(&vec![0u32; blocks * threads]);
    let (mut pi, mut po, mut pp) = (din.ptr, dout.ptr, dpoison.ptr);
    let mut args = [arg(&mut pi), arg(&mut po), arg(&mut pp)];
    // More than the 48 KB a kernel gets without opting in, to use the large-smem path.
    launch(
        "emu_selftest_dyn_smem",
        (3, 1, 1),
        (256, 1, 1),
        100_000,
        &mut args,
    )
    .unwrap();
    assert!(
        dpoison.read().iter().all(|&w| w == u32::MAX),
        "shared memory not poisoned"
    );
    let out = dout.read();
    for b in 0..blocks {
        for t in 0..threads {
            assert_eq!(out[b * threads + t], input[b * threads + threads - 1 - t]);
        }
    }
}

#[test]
fn divergent_barriers_are_errors_naming_the_kernel() {
    let out = Buf::new(&[0f32; 64]);
    for (kernel, what) in [
        ("emu_selftest_divergent_exit", "divergent barrier"),
        (
            "emu_selftest_divergent_sites",
            "two different __syncthreads",
        ),
        ("emu_selftest_divergent_warp", "divergent warp"),
        (
            "emu_selftest_deadlock",
            "deadlock: 32 threads wait at __syncthreads",
        ),
    ] {
        let mut po = out.ptr;
        let mut args = [arg(&mut po)];
        expect_error(
            launch(kernel, (1, 1, 1), (64, 1, 1), 0, &mut args),
            &[kernel, what],
        );
    }
}

#[test]
fn out_of_bounds_global_accesses_are_errors_not_crashes() {
    let n = 100usize;
    let din = Buf::new(&vec![1f32; n]);
    let dout = Buf::new(&vec![0f32; n]);
    let run = |read_offset: i32, write_offset: i32| {
        let (mut pi, mut po, mut r, mut w) = (din.ptr, dout.ptr, read_offset, write_offset);
        let mut args = [arg(&mut pi), arg(&mut po), arg(&mut r), arg(&mut w)];
        launch(
            "emu_selftest_copy",
            (1, 1, 1),
            (n as u32, 1, 1),
            0,
            &mut args,
        )
    };
    let past_end = "0 bytes past the end of a 400-byte device buffer";
    expect_error(
        run(1, 0),
        &[
            "emu_selftest_copy",
            "out-of-bounds read",
            past_end,
            "thread (99,0,0)",
        ],
    );
    expect_error(
        run(0, 1),
        &["emu_selftest_copy", "out-of-bounds write", past_end],
    );
    // Only accesses that reach the page before the buffer are caught below its start.
    expect_error(
        run(-1100, 0),
        &[
            "emu_selftest_copy",
            "out-of-bounds read",
            "before the start of a 400-byte",
        ],
    );
    // The emulator is still usable after a fault.
    run(0, 0).unwrap();
    assert_eq!(dout.read(), vec![1f32; n]);
}

#[test]
fn a_thread_stack_overflow_is_an_error() {
    let out = Buf::new(&[0f32; 32]);
    let (mut po, mut n) = (out.ptr, 32 * 1024);
    let mut args = [arg(&mut po), arg(&mut n)];
    expect_error(
        launch(
            "emu_selftest_stack_overflow",
            (1, 1, 1),
            (32, 1, 1),
            0,
            &mut args,
        ),
        &["emu_selftest_stack_overflow", "stack overflow"],
    );
}

#[test]
fn a_failed_device_assert_is_an_error() {
    let mut n = 0i32;
    let mut args = [arg(&mut n)];
    expect_error(
        launch("emu_selftest_assert", (1, 1, 1), (32, 1, 1), 0, &mut args),
        &["emu_selftest_assert", "assertion failed: n > 0"],
    );
    n = 1;
    let mut args = [arg(&mut n)];
    launch("emu_selftest_assert", (1, 1, 1), (32, 1, 1), 0, &mut args).unwrap();
}

#[test]
fn bad_launches_are_refused_with_a_reason() {
    let out = Buf::new(&[0f32; 64]);
    let mut po = out.ptr;
    let mut args = [arg(&mut po)];
    expect_error(
        launch(
            "emu_selftest_divergent_exit",
            (1, 1, 1),
            (64, 1, 1),
            300_000,
            &mut args,
        ),
        &[
            "emu_selftest_divergent_exit",
            "300000 bytes of dynamic shared memory",
        ],
    );
    expect_error(
        launch("no_such_kernel", (1, 1, 1), (64, 1, 1), 0, &mut args),
        &["unknown kernel 'no_such_kernel'"],
    );
    expect_error(
        launch("emu_selftest_race", (1, 1, 1), (64, 1, 1), 256, &mut args),
        &["emu_selftest_race", "takes 2 arguments"],
    );
    expect_error(
        launch(
            "emu_selftest_divergent_exit",
            (1, 1, 1),
            (2048, 1, 1),
            0,
            &mut args,
        ),
        &["emu_selftest_divergent_exit", "block (2048,1,1) is invalid"],
    );
}

#[test]
fn shuffled_schedule_exposes_a_missing_barrier() {
    // The seed is process-wide: other tests may run shuffled meanwhile, which their race-free
    // kernels must survive; this is the only test that sets it.
    let n = 256usize;
    let want: Vec<f32> = (0..n).map(|t| t.saturating_sub(1) as f32).collect();
    let run = |seed: u64, sync: i32| {
        unsafe { kdad_emu_set_shuffle_seed(seed) };
        let out = Buf::new(&vec![0f32; n]);
        let (mut po, mut s) = (out.ptr, sync);
        let mut args = [arg(&mut po), arg(&mut s)];
        launch(
            "emu_selftest_race",
            (1, 1, 1),
            (n as u32, 1, 1),
            (4 * n) as u32,
            &mut args,
        )
        .unwrap();
        out.read()
    };
    // In order, thread t - 1 always runs before thread t: the race stays hidden.
    assert_eq!(run(0, 0), want);
    // Shuffled, some threads read their neighbour's slot before it is written.
    let shuffled = run(12345, 0);
    let wrong = shuffled.iter().zip(&want).filter(|(g, w)| g != w).count();
    assert!(
        wrong > n / 4,
        "only {wrong} of {n} outputs wrong under shuffle"
    );
    // With the barrier the same shuffled schedule is correct.
    assert_eq!(run(12345, 1), want);
    unsafe { kdad_emu_set_shuffle_seed(0) };
}

#[test]
fn cp_async_data_arrives_only_after_the_wait() {
    let n = 64usize;
    let input: Vec<f32> = (0..4 * n).map(|i| i as f32).collect();
    let din = Buf::new(&input);
    for wait in [1, 0] {
        let dout = Buf::new(&vec![0f32; 4 * n]);
        let (mut pi, mut po, mut w) = (din.ptr, dout.ptr, wait);
        let mut args = [arg(&mut pi), arg(&mut po), arg(&mut w)];
        launch(
            "emu_selftest_cp_async",
            (1, 1, 1),
            (n as u32, 1, 1),
            (16 * n) as u32,
            &mut args,
        )
        .unwrap();
        let out = dout.read();
        if wait == 1 {
            assert_eq!(out, input);
        } else {
            // Without the wait the reads see the poison of shared memory (NaN).
            assert!(
                out.iter().all(|x| x.is_nan()),
                "read before cp.async wait saw data"
            );
        }
    }
}

/// Seconds this thread has spent on a CPU (Linux schedstat): a load-independent time for
/// launches on one OS thread, which run all their blocks on the calling thread.
fn thread_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
    stat.split_whitespace()
        .next()
        .unwrap()
        .parse::<f64>()
        .unwrap()
        * 1e-9
}

/// CPU seconds of one launch on one OS thread, after a warm-up launch.
fn cpu_time(
    name: &str,
    grid: (u32, u32, u32),
    block: (u32, u32, u32),
    smem: u32,
    args: &mut [*mut c_void],
) -> f64 {
    launch(name, grid, block, smem, args).unwrap();
    let start = thread_cpu_seconds();
    launch(name, grid, block, smem, args).unwrap();
    thread_cpu_seconds() - start
}

/// Emulator speed, not correctness: `cargo test --release --test emu_selftest -- --ignored
/// --nocapture emulator_speed`. Times are CPU time of the one OS thread that runs the blocks,
/// so that a busy machine does not inflate them.
#[test]
#[ignore]
fn emulator_speed() {
    unsafe { kdad_emu_set_threads(1) };

    let n = 1 << 20;
    let (dx, dy) = (Buf::new(&vec![1f32; n]), Buf::new(&vec![2f32; n]));
    let (mut py, mut px, mut a, mut nn) = (dy.ptr, dx.ptr, 3f32, n as i32);
    let mut args = [arg(&mut py), arg(&mut px), arg(&mut a), arg(&mut nn)];
    let t = cpu_time(
        "emu_selftest_axpy",
        ((n / 256) as u32, 1, 1),
        (256, 1, 1),
        0,
        &mut args,
    );
    println!(
        "axpy, 1M threads, no barrier: {:.1} ms, {:.1} ns per thread",
        t * 1e3,
        t * 1e9 / n as f64
    );

    let (blocks, threads) = (2056usize, 256usize);
    let dx = Buf::new(&vec![1f32; blocks * threads]);
    let (ds, dm) = (Buf::new(&vec![0f32; blocks]), Buf::new(&vec![0f32; blocks]));
    let (mut px, mut ps, mut pm) = (dx.ptr, ds.ptr, dm.ptr);
    let mut args = [arg(&mut px), arg(&mut ps), arg(&mut pm)];
    let t = cpu_time(
        "emu_selftest_block_reduce",
        (blocks as u32, 1, 1),
        (threads as u32, 1, 1),
        0,
        &mut args,
    );
    // Per thread: block_sum and block_max, each 2 x 5 shuffles and 2 barriers.
    let points = (blocks * threads * 24) as f64;
    println!(
        "block sum + max, 2056 blocks x 256: {:.1} ms, {:.1} ns per thread and sync point",
        t * 1e3,
        t * 1e9 / points
    );

    let (m, n, k) = (256usize, 64usize, 768usize);
    let (da, db) = (Buf::new(&vec![0u16; m * k]), Buf::new(&vec![0u16; n * k]));
    let dc = Buf::new(&vec![0f32; m * n]);
    let (mut pa, mut pb, mut pc) = (da.ptr, db.ptr, dc.ptr);
    let (mut mm, mut nn, mut kk, mut kn) = (m as i32, n as i32, k as i32, 0i32);
    let mut args = [
        arg(&mut pa),
        arg(&mut pb),
        arg(&mut pc),
        arg(&mut mm),
        arg(&mut nn),
        arg(&mut kk),
        arg(&mut kn),
    ];
    let grid = ((n / 32) as u32, (m / 32) as u32, 1);
    let t = cpu_time("emu_selftest_gemm", grid, (128, 1, 1), 2048, &mut args);
    let flops = 2.0 * (m * n * k) as f64;
    println!(
        "mma GEMM 256x64x768: {:.1} ms, {:.2} GFLOP/s",
        t * 1e3,
        flops / t / 1e9
    );

    // Launch overhead: one block runs on the calling thread; two blocks on two OS threads
    // start one helper thread per launch.
    let (dx, dy) = (Buf::new(&[1f32; 64]), Buf::new(&[2f32; 64]));
    let (mut py, mut px, mut a, mut nn) = (dy.ptr, dx.ptr, 3f32, 64i32);
    let mut args = [arg(&mut py), arg(&mut px), arg(&mut a), arg(&mut nn)];
    for (threads, blocks) in [(1u32, 1u32), (2, 2)] {
        unsafe { kdad_emu_set_threads(threads) };
        let start = std::time::Instant::now();
        for _ in 0..1000 {
            launch(
                "emu_selftest_axpy",
                (blocks, 1, 1),
                (32, 1, 1),
                0,
                &mut args,
            )
            .unwrap();
        }
        println!(
            "launch of {blocks} block(s) of 32 threads on {threads} OS thread(s): {:.1} us wall",
            start.elapsed().as_secs_f64() * 1e3
        );
    }

    unsafe { kdad_emu_set_threads(0) };
}
