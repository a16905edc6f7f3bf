//! bf16 GEMM for CPUs with AVX512-BF16: `dst (+)= alpha · lhs · rhs` on strided f32 views,
//! operands rounded to bf16 (nearest even) while packing, products summed in f32 by
//! `vdpbf16ps` (two products per lane per instruction: twice the f32 FMA rate, 467 vs 233
//! GFLOP/s peak on this project's 2-core Zen 4 machines). These are the numerics of the GPU
//! backends, whose GEMMs take bf16 operands on tensor cores. f32 products stay on the `gemm`
//! crate, which an f32 build of this same kernel did not beat.
//!
//! The roles are swapped relative to BLIS: the *activation* side (`lhs`, m rows) is packed
//! into panels of 32 rows stored k-major and read as vectors; the *weight* side (`rhs`, n
//! columns) is copied 12 columns at a time into a small k-major strip and broadcast. Packing
//! `lhs` costs O(m·k), 1/n of the work, and no weight matrix is ever repacked whole, so
//! frozen weights need no cached copy.
//!
//! Micro-kernel: a 32 × 12 tile of `dst` in 24 zmm accumulators (2 vectors of 16 rows × 12
//! columns); per pair of k: 2 vector loads, 12 broadcasts, 24 `vdpbf16ps`. Tiles come out
//! column-major and are added into `dst` through its strides, so every layout (NN, NT, TN)
//! and any `dst` stride is the same code. A last panel of at most `ROW_TAIL` rows runs one
//! row at a time with the roles turned (ViT batch 1 has 257 = 8·32 + 1 rows).
//!
//! Blocking: `lhs` in blocks of at most `BLOCK_BYTES` packed, shared by all threads; threads
//! split the n columns, so each reads half of the weights and all of the packed block.

mod pack;

use super::matmul::{Product, View};
use std::arch::x86_64::*;
use std::cell::Cell;
use std::sync::OnceLock;

/// Rows of `lhs` per vector (one zmm of f32 accumulators).
const LANES: usize = 16;
/// Rows per packed panel: two vectors.
const MR: usize = 2 * LANES;
/// Columns of `dst` per tile (broadcast operands).
const NR: usize = 12;
/// Consecutive k per packed 32-bit slot (a bf16 pair).
const K_PER_SLOT: usize = 2;
/// Depth of one packed block. Each extra depth block costs a scalar read-modify-write of
/// every tile, so blocks are as deep as ViT layers get.
const KC_MAX: usize = 3072;
/// Bytes of one packed `lhs` block: its panels stream from L3 at ~3 bytes per cycle, well
/// inside a Zen 4 core's share, so the block is sized to stay resident in the 32 MB L3
/// rather than in a 2 MB L2.
const BLOCK_BYTES: usize = 2 << 20;
/// Rows of a last panel at most that run one row at a time ([`row_kernel`]) instead of a
/// 16-row kernel mostly multiplying padding.
const ROW_TAIL: usize = 4;

/// Whether this CPU can run the kernel (checked once): AVX-512F, BW (the pair interleave of
/// the packer) and BF16.
pub fn available() -> bool {
    static BF16: OnceLock<bool> = OnceLock::new();
    *BF16.get_or_init(|| {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512bf16")
    })
}

/// The packed slot of the pair `(x, y)` of consecutive k: `x` rounded in the low half, as
/// `vdpbf16ps` pairs them.
fn slot(x: f32, y: f32) -> u32 {
    half::bf16::from_f32(x).to_bits() as u32 | (half::bf16::from_f32(y).to_bits() as u32) << 16
}

thread_local! {
    /// The packed `lhs` block, kept per calling thread so repeated products reuse the pages.
    static PACKED_LHS: Cell<Vec<u32>> = const { Cell::new(Vec::new()) };
    /// One thread's k-major strip of `NR` columns of `rhs`.
    static RHS_STRIP: Cell<Vec<u32>> = const { Cell::new(Vec::new()) };
}

/// `dst` as a raw pointer that the worker threads share. Each task writes a disjoint set of
/// columns, which a `&mut [f32]` split cannot express for a row-major matrix.
#[derive(Clone, Copy)]
struct DstPtr {
    ptr: *mut f32,
    rs: usize,
    cs: usize,
}
// SAFETY: tasks write disjoint elements of `dst` (disjoint column ranges), and the borrow the
// pointer came from outlives the parallel region (`gemm` joins before returning).
unsafe impl Send for DstPtr {}
unsafe impl Sync for DstPtr {}

impl DstPtr {
    /// The same matrix starting at element (r, c).
    ///
    /// # Safety
    /// (r, c) must be inside the matrix.
    unsafe fn at(self, r: usize, c: usize) -> DstPtr {
        DstPtr {
            // SAFETY: forwarded from this function's contract.
            ptr: unsafe { self.ptr.add(r * self.rs + c * self.cs) },
            ..self
        }
    }
}

/// Split `total` into `parts` nearly equal pieces, each a multiple of `unit` except the last.
fn split(total: usize, max: usize, unit: usize) -> Vec<(usize, usize)> {
    let parts = total.div_ceil(max).max(1);
    let size = total.div_ceil(parts).div_ceil(unit) * unit;
    (0..total)
        .step_by(size.max(1))
        .map(|s| (s, (s + size).min(total)))
        .collect()
}

/// `dst = alpha·lhs·rhs` (`+=` when `accumulate`) for `lhs [m, k]`, `rhs [k, n]`,
/// `dst [m, n]`, k > 0. The caller has bounds-checked the views.
pub fn gemm(p: Product) {
    let Product {
        m,
        n,
        k,
        lhs,
        rhs,
        dst,
        alpha,
        accumulate,
        parallel,
    } = p;
    assert!(available(), "bf16 GEMM needs AVX512-BF16");
    let out = DstPtr {
        ptr: dst.data.as_mut_ptr(),
        rs: dst.rs,
        cs: dst.cs,
    };
    let threads = if parallel {
        rayon::current_num_threads()
    } else {
        1
    };
    let unit = K_PER_SLOT;
    // The buffers are taken out of their thread-locals while in use, not borrowed: a rayon
    // worker waiting in the scope below may run another product on this same thread, which
    // then starts from an empty buffer of its own.
    let mut buf = PACKED_LHS.take();
    for (k0, k1) in split(k, KC_MAX, unit) {
        // Later depth blocks add onto the partial sums of the earlier ones.
        let add = accumulate || k0 > 0;
        let row_bytes = 4 * (k1 - k0).div_ceil(unit);
        let mc_max = (BLOCK_BYTES / row_bytes / MR).max(1) * MR;
        for (m0, m1) in split(m, mc_max, MR) {
            let rows = m1 - m0;
            let panels = rows.div_ceil(MR);
            let kc = k1 - k0;
            let slots = kc.div_ceil(unit);
            buf.clear();
            buf.resize(panels * MR * slots, 0);
            pack_lhs(lhs, (m0, rows), (k0, kc), &mut buf, threads);
            let packed: &[u32] = &buf;
            let tiles = n.div_ceil(NR);
            let per_task = tiles.div_ceil(threads);
            let task = |t: usize| {
                let (j0, j1) = (t * per_task * NR, ((t + 1) * per_task * NR).min(n));
                let mut strip = RHS_STRIP.take();
                strip.resize(slots * NR, 0);
                for c0 in (j0..j1).step_by(NR) {
                    let cols = NR.min(j1 - c0);
                    pack_rhs(rhs, (k0, kc), (c0, cols), &mut strip);
                    for p in 0..panels {
                        let r0 = p * MR;
                        let tile = Tile {
                            rows: MR.min(rows - r0),
                            cols,
                            // SAFETY: (m0 + r0, c0) is inside `dst`, which the
                            // caller bounds-checked for the whole product.
                            dst: unsafe { out.at(m0 + r0, c0) },
                            alpha,
                            add,
                        };
                        let panel = &packed[p * MR * slots..(p + 1) * MR * slots];
                        // SAFETY: the CPU features were asserted above; the panel
                        // holds MR·slots values and the strip NR·slots.
                        unsafe { run_tile(panel, &strip, tile) };
                    }
                }
                RHS_STRIP.set(strip);
            };
            if threads > 1 && tiles > 1 {
                rayon::scope(|s| {
                    for t in 1..threads.min(tiles) {
                        s.spawn(move |_| task(t));
                    }
                    task(0);
                });
            } else {
                task(0);
            }
        }
    }
    PACKED_LHS.set(buf);
}

/// Pack `lhs[m0 .. m0+rows, k0 .. k0+kc]` into panels of `MR` rows (`panel[slot·MR + r]`);
/// rows past the end stay as the caller zeroed them.
fn pack_lhs(
    lhs: View,
    (m0, rows): (usize, usize),
    (k0, kc): (usize, usize),
    buf: &mut [u32],
    threads: usize,
) {
    let block = pack::Block {
        data: lhs.data,
        is: lhs.rs,
        ks: lhs.cs,
    };
    let one = |(p, panel): (usize, &mut [u32])| {
        let r0 = m0 + p * MR;
        let live = MR.min(m0 + rows - r0);
        pack::pack(block, (r0, live), (k0, kc), panel, MR);
    };
    let panel_len = MR * kc.div_ceil(K_PER_SLOT);
    if threads > 1 {
        use rayon::prelude::*;
        buf.par_chunks_mut(panel_len).enumerate().for_each(one);
    } else {
        buf.chunks_mut(panel_len).enumerate().for_each(one);
    }
}

/// Pack `rhs[k0 .. k0+kc, c0 .. c0+cols]` into `strip[slot·NR + j]`.
fn pack_rhs(rhs: View, (k0, kc): (usize, usize), (c0, cols): (usize, usize), strip: &mut [u32]) {
    let block = pack::Block {
        data: rhs.data,
        is: rhs.cs,
        ks: rhs.rs,
    };
    pack::pack(block, (c0, cols), (k0, kc), strip, NR);
}

/// Where one tile's result goes and how.
struct Tile {
    rows: usize,
    cols: usize,
    dst: DstPtr,
    alpha: f32,
    add: bool,
}

/// `acc += a · b` lane-wise on bf16 pairs: `a` holds 16 lanes' packed slots and `b` one
/// packed slot broadcast.
///
/// # Safety
/// The CPU must have AVX512-BF16.
#[inline(always)]
unsafe fn dot(acc: __m512, a: __m512i, b: u32) -> __m512 {
    // SAFETY: avx512bf16 per the contract; __m512i and __m512bh are both 64 bytes of plain
    // bits, so the transmutes only retype the pairs.
    unsafe {
        let b = _mm512_set1_epi32(b as i32);
        _mm512_dpbf16_ps(
            acc,
            std::mem::transmute::<__m512i, __m512bh>(a),
            std::mem::transmute::<__m512i, __m512bh>(b),
        )
    }
}

/// Dispatch a tile to the kernel instance for its shape (full tiles are the hot path; the
/// others occur once per product at most).
///
/// # Safety
/// The CPU must have AVX512-BF16; `panel` holds `MR·s` slots and `strip` at least `NR·s`,
/// for the same `s`; `tile.dst` points at a `tile.rows × tile.cols` block of the destination.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn run_tile(panel: &[u32], strip: &[u32], tile: Tile) {
    let slots = panel.len() / MR;
    assert!(strip.len() >= NR * slots);
    let mut acc = [[0f32; MR]; NR];
    let (a, b) = (panel.as_ptr(), strip.as_ptr());
    // SAFETY: forwarded from this function's contract.
    unsafe {
        match (tile.rows > LANES, tile.cols > 6) {
            _ if tile.rows <= ROW_TAIL => {
                for r in 0..tile.rows {
                    row_kernel(slots, a.add(r), b, r, &mut acc);
                }
            }
            (true, true) => kernel::<2, NR>(slots, a, b, &mut acc),
            (false, true) => kernel::<1, NR>(slots, a, b, &mut acc),
            (true, false) => kernel::<2, 6>(slots, a, b, &mut acc),
            (false, false) => kernel::<1, 6>(slots, a, b, &mut acc),
        }
        store(&acc, &tile);
    }
}

/// The micro-kernel: `acc[j][v·16 + i] = Σ_s panel[s·MR + v·16 + i] · strip[s·NR + j]` for
/// `V` vectors of rows and `C` columns, in `V·C` zmm accumulators.
///
/// # Safety
/// The CPU must have AVX512-BF16; `a` holds `MR·slots` values and `b` `NR·slots`.
#[inline(always)]
unsafe fn kernel<const V: usize, const C: usize>(
    slots: usize,
    a: *const u32,
    b: *const u32,
    acc: &mut [[f32; MR]; NR],
) {
    let mut r = [[_mm512_setzero_ps(); V]; C];
    for s in 0..slots {
        // SAFETY: s < slots, so every read is inside the panel and the strip.
        unsafe {
            let av: [__m512i; V] =
                std::array::from_fn(|v| _mm512_loadu_si512(a.add(s * MR + v * LANES).cast()));
            let bs = b.add(s * NR);
            for (j, rj) in r.iter_mut().enumerate() {
                let bj = *bs.add(j);
                for (acc, &a) in rj.iter_mut().zip(&av) {
                    *acc = dot(*acc, a, bj);
                }
            }
        }
    }
    for (out, rj) in acc.iter_mut().zip(&r) {
        for (v, &x) in rj.iter().enumerate() {
            // SAFETY: `out` holds MR = 2·LANES floats, v < V ≤ 2.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(v * LANES), x) };
        }
    }
}

/// One row of a tile with the roles turned: the strip's 12 columns are the vector lanes and
/// the row's packed values are broadcast, so a lone row costs one FMA per slot, not twelve.
/// Four independent sums hide the FMA latency. Writes `acc[j][r]` for every column j.
///
/// # Safety
/// The CPU must have AVX512-BF16; `a` points at the row's first slot in a panel (stride `MR`) of
/// `slots` slots and `b` at a strip of `NR·slots`.
#[inline(always)]
unsafe fn row_kernel(
    slots: usize,
    a: *const u32,
    b: *const u32,
    r: usize,
    acc: &mut [[f32; MR]; NR],
) {
    const CHAINS: usize = 4;
    let cols: __mmask16 = (1 << NR) - 1;
    let mut sums = [_mm512_setzero_ps(); CHAINS];
    for s in 0..slots {
        // SAFETY: s < slots; the masked load reads only the strip's NR slots of row s.
        unsafe {
            let bv = _mm512_maskz_loadu_epi32(cols, b.add(s * NR).cast());
            sums[s % CHAINS] = dot(sums[s % CHAINS], bv, *a.add(s * MR));
        }
    }
    let mut total = [0f32; LANES];
    // SAFETY: `total` holds 16 floats.
    unsafe {
        let t = _mm512_add_ps(
            _mm512_add_ps(sums[0], sums[1]),
            _mm512_add_ps(sums[2], sums[3]),
        );
        _mm512_storeu_ps(total.as_mut_ptr(), t);
    }
    for (col, &t) in acc.iter_mut().zip(&total) {
        col[r] = t;
    }
}

/// Add (or write) a finished tile into `dst`.
///
/// # Safety
/// `tile.dst` points at a `tile.rows × tile.cols` block of the destination.
unsafe fn store(acc: &[[f32; MR]; NR], tile: &Tile) {
    let d = tile.dst;
    for i in 0..tile.rows {
        for (j, col) in acc.iter().enumerate().take(tile.cols) {
            // SAFETY: (i, j) is inside the tile's block.
            let y = unsafe { &mut *d.ptr.add(i * d.rs + j * d.cs) };
            let v = tile.alpha * col[i];
            *y = if tile.add { *y + v } else { v };
        }
    }
}
