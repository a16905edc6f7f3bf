//! f32 GEMM for AVX-512 CPUs: `dst (+)= alpha · lhs · rhs` on strided views, f32 accumulate.
//!
//! Why our own: at ViT batch 1 (m = 257 tokens) the `gemm` crate repacks the whole weight
//! matrix on every call (8% of a ViT-B forward), and its AVX2 kernel leaves AVX-512's 32
//! registers unused. Here the roles are swapped relative to BLIS: the *activation* side
//! (`lhs`, m rows) is packed, into panels of 32 rows stored k-major, and is read as vectors;
//! the *weight* side (`rhs`, n columns) is only copied 12 columns at a time into a small
//! k-major strip and broadcast element by element. Packing `lhs` costs O(m·k), 1/n of the
//! work, so no weight is ever repacked whole and frozen weights need no cached copy.
//!
//! Micro-kernel: a 32 × 12 tile of `dst` in 24 zmm accumulators (2 vectors of 16 rows × 12
//! columns); per k step 2 vector loads, 12 broadcasts and 24 FMAs, i.e. 0.23 bytes of cache
//! traffic per flop, so it runs from L2 at the FMA units' rate (Zen 4: one 512-bit FMA per
//! cycle per core, 32 flop/cycle). Tiles come out column-major and are added into `dst`
//! through its strides, which makes every layout (NN, NT, TN) and any `dst` stride the same
//! code; that scatter is ~3% of a tile at k = 768.
//!
//! Operands are f32, or bf16 with f32 accumulation (`vdpbf16ps`, AVX512-BF16: two
//! products per lane per instruction, so twice the f32 rate; the numerics of the GPU path,
//! whose GEMMs run bf16 on tensor cores). Both are packed the same way, one 32-bit slot per
//! element (f32) or per pair of consecutive k (bf16), so one driver serves both.
//!
//! Blocking: `lhs` in blocks of at most `MC × KC` (≈1.2 MB packed, inside a Zen 4 core's
//! 2 MB L2) shared by all threads; threads split the n columns, so each reads half of the
//! weights and all of the packed block.

mod pack;

use super::matmul::{View, ViewMut};
use std::arch::x86_64::*;
use std::cell::RefCell;
use std::sync::OnceLock;

/// Rows of `lhs` per vector (one zmm of f32).
const LANES: usize = 16;
/// Rows per packed panel: two vectors.
const MR: usize = 2 * LANES;
/// Columns of `dst` per tile (broadcast operands).
const NR: usize = 12;
/// Depth of one packed block.
const KC_MAX: usize = 768;
/// Rows of one packed block (multiple of `MR`).
const MC_MAX: usize = 384;

/// Whether this CPU can run the f32 kernel (checked once).
pub fn available() -> bool {
    static AVX512: OnceLock<bool> = OnceLock::new();
    *AVX512.get_or_init(|| is_x86_feature_detected!("avx512f"))
}

/// Whether this CPU can run the bf16 kernel (checked once).
pub fn bf16_available() -> bool {
    static BF16: OnceLock<bool> = OnceLock::new();
    *BF16.get_or_init(|| available() && is_x86_feature_detected!("avx512bf16"))
}

/// The operand type the products run in; accumulation is f32 either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operands {
    F32,
    /// Operands rounded to bf16 (nearest even) while packing.
    Bf16,
}

impl Operands {
    /// Consecutive k per packed 32-bit slot.
    fn per_slot(self) -> usize {
        match self {
            Operands::F32 => 1,
            Operands::Bf16 => 2,
        }
    }
    /// The slot holding `x` (f32) or the pair `(x, y)` (bf16, `x` in the low half as
    /// `vdpbf16ps` pairs them).
    #[inline(always)]
    fn slot(self, x: f32, y: impl FnOnce() -> f32) -> u32 {
        match self {
            Operands::F32 => x.to_bits(),
            Operands::Bf16 => {
                let lo = half::bf16::from_f32(x).to_bits() as u32;
                lo | (half::bf16::from_f32(y()).to_bits() as u32) << 16
            }
        }
    }
}

thread_local! {
    /// The packed `lhs` block, kept per calling thread so repeated products reuse the pages.
    static PACKED_LHS: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    /// One thread's k-major strip of `NR` columns of `rhs`.
    static RHS_STRIP: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
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
/// `dst [m, n]`. The caller has bounds-checked the views and checked [`available`] (and
/// [`bf16_available`] for bf16 operands).
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    n: usize,
    k: usize,
    lhs: View,
    rhs: View,
    dst: ViewMut,
    alpha: f32,
    accumulate: bool,
    parallel: bool,
    ops: Operands,
) {
    assert!(match ops {
        Operands::F32 => available(),
        Operands::Bf16 => bf16_available(),
    });
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
    let unit = ops.per_slot();
    PACKED_LHS.with(|buf| {
        let mut buf = buf.borrow_mut();
        for (k0, k1) in split(k, KC_MAX, unit) {
            // Later depth blocks add onto the partial sums of the earlier ones.
            let add = accumulate || k0 > 0;
            for (m0, m1) in split(m, MC_MAX, MR) {
                let rows = m1 - m0;
                let panels = rows.div_ceil(MR);
                let kc = k1 - k0;
                let slots = kc.div_ceil(unit);
                buf.clear();
                buf.resize(panels * MR * slots, 0);
                pack_lhs(lhs, (m0, rows), (k0, kc), ops, &mut buf, threads);
                let packed: &[u32] = &buf;
                let tiles = n.div_ceil(NR);
                let per_task = tiles.div_ceil(threads);
                let task = |t: usize| {
                    let (j0, j1) = (t * per_task * NR, ((t + 1) * per_task * NR).min(n));
                    RHS_STRIP.with(|strip| {
                        let mut strip = strip.borrow_mut();
                        strip.resize(slots * NR, 0);
                        for c0 in (j0..j1).step_by(NR) {
                            let cols = NR.min(j1 - c0);
                            pack_rhs(rhs, (k0, kc), (c0, cols), ops, &mut strip);
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
                                unsafe {
                                    match ops {
                                        Operands::F32 => run_tile_f32(panel, &strip, tile),
                                        Operands::Bf16 => run_tile_bf16(panel, &strip, tile),
                                    }
                                };
                            }
                        }
                    });
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
    });
}

/// Pack `lhs[m0 .. m0+rows, k0 .. k0+kc]` into panels of `MR` rows (`panel[slot·MR + r]`);
/// rows past the end stay as the caller zeroed them.
fn pack_lhs(
    lhs: View,
    (m0, rows): (usize, usize),
    (k0, kc): (usize, usize),
    ops: Operands,
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
        pack::pack(block, (r0, live), (k0, kc), ops, panel, MR);
    };
    let panel_len = MR * kc.div_ceil(ops.per_slot());
    if threads > 1 {
        use rayon::prelude::*;
        buf.par_chunks_mut(panel_len).enumerate().for_each(one);
    } else {
        buf.chunks_mut(panel_len).enumerate().for_each(one);
    }
}

/// Pack `rhs[k0 .. k0+kc, c0 .. c0+cols]` into `strip[slot·NR + j]`.
fn pack_rhs(
    rhs: View,
    (k0, kc): (usize, usize),
    (c0, cols): (usize, usize),
    ops: Operands,
    strip: &mut [u32],
) {
    let block = pack::Block {
        data: rhs.data,
        is: rhs.cs,
        ks: rhs.rs,
    };
    pack::pack(block, (c0, cols), (k0, kc), ops, strip, NR);
}

/// Where one tile's result goes and how.
struct Tile {
    rows: usize,
    cols: usize,
    dst: DstPtr,
    alpha: f32,
    add: bool,
}

/// One k slot of the micro-kernel: `acc += a · b` lane-wise, where `a` holds 16 rows' packed
/// slots and `b` one packed slot broadcast.
trait Dot {
    /// # Safety
    /// The CPU must have the instruction set the implementation uses.
    unsafe fn dot(acc: __m512, a: __m512i, b: u32) -> __m512;
}

struct F32Dot;
impl Dot for F32Dot {
    #[inline(always)]
    unsafe fn dot(acc: __m512, a: __m512i, b: u32) -> __m512 {
        // SAFETY: avx512f, per the trait's contract.
        unsafe {
            _mm512_fmadd_ps(
                _mm512_castsi512_ps(a),
                _mm512_set1_ps(f32::from_bits(b)),
                acc,
            )
        }
    }
}

struct Bf16Dot;
impl Dot for Bf16Dot {
    #[inline(always)]
    unsafe fn dot(acc: __m512, a: __m512i, b: u32) -> __m512 {
        // SAFETY: avx512bf16, per the trait's contract; __m512i and __m512bh are both 64
        // bytes of plain bits, so the transmutes only retype the pairs.
        unsafe {
            let b = _mm512_set1_epi32(b as i32);
            _mm512_dpbf16_ps(
                acc,
                std::mem::transmute::<__m512i, __m512bh>(a),
                std::mem::transmute::<__m512i, __m512bh>(b),
            )
        }
    }
}

/// [`run_tile`] compiled for AVX-512F.
///
/// # Safety
/// As [`run_tile`], on a CPU with avx512f.
#[target_feature(enable = "avx512f")]
unsafe fn run_tile_f32(panel: &[u32], strip: &[u32], tile: Tile) {
    // SAFETY: forwarded.
    unsafe { run_tile::<F32Dot>(panel, strip, tile) }
}

/// [`run_tile`] compiled for AVX-512F + BF16.
///
/// # Safety
/// As [`run_tile`], on a CPU with avx512f and avx512bf16.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn run_tile_bf16(panel: &[u32], strip: &[u32], tile: Tile) {
    // SAFETY: forwarded.
    unsafe { run_tile::<Bf16Dot>(panel, strip, tile) }
}

/// Dispatch a tile to the kernel instance for its shape (full tiles are the hot path; the
/// others occur once per product at most). Always inlined into the `run_tile_*` wrapper whose
/// target features its instructions need.
///
/// # Safety
/// The CPU must support `D`; `panel` holds `MR·s` slots and `strip` at least `NR·s`, for the
/// same `s`; `tile.dst` points at a `tile.rows × tile.cols` block of the destination.
#[inline(always)]
unsafe fn run_tile<D: Dot>(panel: &[u32], strip: &[u32], tile: Tile) {
    let slots = panel.len() / MR;
    assert!(strip.len() >= NR * slots);
    let mut acc = [[0f32; MR]; NR];
    let (a, b) = (panel.as_ptr(), strip.as_ptr());
    // SAFETY: forwarded from this function's contract.
    unsafe {
        match (tile.rows > LANES, tile.cols > 6) {
            (true, true) => kernel::<D, 2, NR>(slots, a, b, &mut acc),
            (false, true) => kernel::<D, 1, NR>(slots, a, b, &mut acc),
            (true, false) => kernel::<D, 2, 6>(slots, a, b, &mut acc),
            (false, false) => kernel::<D, 1, 6>(slots, a, b, &mut acc),
        }
        store(&acc, &tile);
    }
}

/// The micro-kernel: `acc[j][v·16 + i] = Σ_s panel[s·MR + v·16 + i] · strip[s·NR + j]` for
/// `V` vectors of rows and `C` columns, in `V·C` zmm accumulators.
///
/// # Safety
/// The CPU must support `D`; `a` holds `MR·slots` values and `b` `NR·slots`.
#[inline(always)]
unsafe fn kernel<D: Dot, const V: usize, const C: usize>(
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
                    *acc = D::dot(*acc, a, bj);
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
