//! f32 GEMM against a frozen weight packed once, for CPUs with AVX-512F: `y (+)= x·Wᵀ (+ b)`
//! for activations `x [m, k]`, a linear layer's weight `W [n, k]` and `y [m, n]`, all
//! row-major. This is the teacher's forward, the hot path of scoring.
//!
//! Why a kernel of our own: the `gemm` crate must re-pack a row-major `W` (transpose it into
//! panels of its vector side) on every call. At ViT batch 1 that re-pack cost ~10 % of the
//! whole forward, since every weight is used by only 257 tokens. A frozen weight never
//! changes, so it is packed once when the model is frozen ([`PackedWeight::new`]) and every
//! product after that reads it as it lies; the activations need no packing at all.
//!
//! Micro-kernel: a tile of `ROWS` = 12 tokens × 32 features of `y` in 24 zmm accumulators
//! (one token's 32 features = 2 vectors). Per k: 2 aligned vector loads of the packed weight,
//! 12 broadcasts of `x[row, k]` straight from the activation rows, 24 FMAs. Since a row of
//! the tile is contiguous in `y`, the tile is added into `y` with vector loads and stores,
//! and the bias comes in with the first depth block for free.
//!
//! Blocking: rows in blocks of `MC`, whose slabs of x stay in L2; depth blocks of `KC`, so
//! that a panel's `KC × 32` weights (24 KB) stay in the 32 KB L1 while every tile of the row
//! block passes over them. The activations are read in place, except when their row stride
//! is a multiple of 4 KB (fc2's 3072): such rows all fall into one L1 set, so they are first
//! copied to a padded stride. Threads take chunks of whole panels (whole columns of `y`) as
//! they come free, and write nothing in common.

use std::arch::x86_64::*;
use std::sync::OnceLock;

/// Features per panel: two zmm vectors of f32.
const PANEL: usize = 32;
/// Tokens per tile: 24 accumulators, 2 weight vectors and a broadcast fit the 32 zmm
/// registers.
const ROWS: usize = 12;
/// Depth of one block: `KC × PANEL × 4` bytes of weights = 24 KB, resident in L1.
const KC: usize = 192;

/// Whether this CPU can run the kernel (checked once).
pub fn available() -> bool {
    static AVX512: OnceLock<bool> = OnceLock::new();
    *AVX512.get_or_init(|| is_x86_feature_detected!("avx512f"))
}

/// One cache line of f32: the unit of the packed layout, so every vector load is aligned.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// A weight `W [n, k]` packed for [`gemm`]: panel `j` holds features `32j .. 32j+32` as
/// `k` consecutive groups of 32 (feature-minor), the features past `n` zero.
pub struct PackedWeight {
    n: usize,
    k: usize,
    lines: Vec<Line>,
}

impl PackedWeight {
    /// Pack the row-major `w [n, k]`.
    pub fn new(w: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(
            w.len(),
            n * k,
            "packed weight: {n}x{k} from {} values",
            w.len()
        );
        let panels = n.div_ceil(PANEL);
        let per_panel = k * PANEL / 16;
        let mut lines = vec![Line::default(); panels * per_panel];
        use rayon::prelude::*;
        lines
            .par_chunks_mut(per_panel.max(1))
            .enumerate()
            .for_each(|(j, panel)| {
                for f in 0..PANEL.min(n - j * PANEL) {
                    let row = &w[(j * PANEL + f) * k..][..k];
                    for (p, &v) in row.iter().enumerate() {
                        panel[p * 2 + f / 16].0[f % 16] = v;
                    }
                }
            });
        PackedWeight { n, k, lines }
    }
    /// The row-major `w [n, k]` it was packed from.
    pub fn unpack(&self) -> Vec<f32> {
        let (n, k) = (self.n, self.k);
        let mut w = vec![0.0; n * k];
        for (f, row) in w.chunks_exact_mut(k.max(1)).take(n).enumerate() {
            let panel = &self.lines[(f / PANEL) * 2 * k..];
            let lane = f % PANEL;
            for (p, v) in row.iter_mut().enumerate() {
                *v = panel[p * 2 + lane / 16].0[lane % 16];
            }
        }
        w
    }
    /// The shape `[n, k]` of the weight it was packed from.
    pub fn dims(&self) -> (usize, usize) {
        (self.n, self.k)
    }
}

/// `y` as a raw pointer that the worker threads share: each writes a disjoint range of
/// columns, which a `&mut [f32]` split cannot express for a row-major matrix.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: threads write disjoint columns of `y`, and the borrow the pointer came from
// outlives the parallel region (`gemm` joins before returning).
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

/// `y = x·Wᵀ (+ bias)`, or `y += …` when `accumulate`, for `x [m, k]` and `y [m, n]`
/// row-major with `k` and `n` from `w`. Threads: rayon's pool when `parallel`.
pub fn gemm(
    x: &[f32],
    m: usize,
    w: &PackedWeight,
    bias: Option<&[f32]>,
    y: &mut [f32],
    accumulate: bool,
    parallel: bool,
) {
    let (n, k) = (w.n, w.k);
    assert!(available(), "frozen GEMM needs AVX-512F");
    assert!(
        x.len() >= m * k,
        "frozen GEMM: x holds {} < {m}x{k}",
        x.len()
    );
    assert!(
        y.len() >= m * n,
        "frozen GEMM: y holds {} < {m}x{n}",
        y.len()
    );
    if let Some(b) = bias {
        assert_eq!(
            b.len(),
            n,
            "frozen GEMM: bias of {} for {n} features",
            b.len()
        );
    }
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // An empty sum: only the bias (or nothing) lands in y.
        for row in y[..m * n].chunks_mut(n) {
            for (j, v) in row.iter_mut().enumerate() {
                let b = bias.map_or(0.0, |b| b[j]);
                *v = if accumulate { *v + b } else { b };
            }
        }
        return;
    }
    // Rows of x whose stride is a multiple of 4 KB share one L1 set at equal depth, so a
    // tile's 12 rows would evict one another (and the weights) at every step: such an x is
    // first copied to a padded stride, once for all threads.
    let mut padded = if aliased(k) {
        PADDED_X.take()
    } else {
        Vec::new()
    };
    let (xp, xs) = if aliased(k) {
        let xs = k + X_PAD;
        padded.resize(m * xs, 0.0);
        use rayon::prelude::*;
        let rows = padded.par_chunks_mut(xs).zip(x.par_chunks(k));
        if parallel {
            rows.for_each(|(to, from)| to[..k].copy_from_slice(from));
        } else {
            rows.with_min_len(m)
                .for_each(|(to, from)| to[..k].copy_from_slice(from));
        }
        (padded.as_slice(), xs)
    } else {
        (x, k)
    };
    let out = Out(y.as_mut_ptr());
    let panels = n.div_ceil(PANEL);
    let threads = if parallel {
        rayon::current_num_threads()
    } else {
        1
    };
    // A few chunks of panels per thread, handed out as threads come free, so one thread
    // held up (a busy machine) does not hold up the product.
    let chunk = panels.div_ceil(CHUNKS_PER_THREAD * threads).max(1);
    let run = |c: usize| {
        let (j0, j1) = (c * chunk, ((c + 1) * chunk).min(panels));
        // SAFETY: AVX-512F was asserted; x (or its padded copy, the same m rows at stride
        // xs), y and the bias were checked to hold m×k, m×n and n values, and chunk c
        // writes only the columns of panels j0..j1.
        unsafe { columns((xp, xs), m, w, bias, out, accumulate, (j0, j1)) };
    };
    let chunks = panels.div_ceil(chunk);
    if threads > 1 && chunks > 1 {
        use rayon::prelude::*;
        (0..chunks).into_par_iter().with_max_len(1).for_each(run);
    } else {
        (0..chunks).for_each(run);
    }
    if aliased(k) {
        PADDED_X.set(padded);
    }
}

/// Chunks of panels per thread: enough to even out a thread that falls behind, few enough
/// that each chunk streams a long run of weights.
const CHUNKS_PER_THREAD: usize = 4;

/// Zeros after each row of a padded copy of x: its stride is then no multiple of 4 KB.
const X_PAD: usize = 16;

thread_local! {
    /// The calling thread's padded copy of x, kept to reuse its pages. Taken out while in
    /// use, so a product nested in a rayon wait on this thread starts from its own.
    static PADDED_X: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Whether rows `k` floats apart fall into so few L1 sets (64 sets of 64 bytes: 4 KB per
/// way) that a tile's rows would crowd out the weights: more than 4 rows to a set.
fn aliased(k: usize) -> bool {
    let sets = 4096 / gcd(4 * k, 4096);
    ROWS.div_ceil(sets) > 4
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Panels `j0..j1` of the product: for each block of rows, each depth block, each panel, its
/// tiles. The hardware prefetcher follows the packed weights (prefetching the next block in
/// software made no difference, with the weights cold or not).
///
/// # Safety
/// The CPU has AVX-512F; `x` holds `m` rows of stride `xs` with `w.k` values each, `out`
/// points at `m × w.n` values that nothing else touches in these panels' columns; `bias`
/// (if any) holds `w.n` values.
#[target_feature(enable = "avx512f")]
unsafe fn columns(
    (x, xs): (&[f32], usize),
    m: usize,
    w: &PackedWeight,
    bias: Option<&[f32]>,
    out: Out,
    accumulate: bool,
    (j0, j1): (usize, usize),
) {
    let (n, k) = (w.n, w.k);
    for r0 in (0..m).step_by(MC) {
        let rows = r0..m.min(r0 + MC);
        for k0 in (0..k).step_by(KC) {
            let kc = KC.min(k - k0);
            let first = k0 == 0;
            for j in j0..j1 {
                let f0 = j * PANEL;
                let live = PANEL.min(n - f0);
                let panel = w.lines[(j * k + k0) * 2..].as_ptr();
                let epilogue = Epilogue {
                    masks: [lane_mask(live), lane_mask(live.saturating_sub(16))],
                    add: accumulate || !first,
                    bias: bias.filter(|_| first).map(|b| b[f0..].as_ptr()),
                };
                for i0 in rows.clone().step_by(ROWS) {
                    // SAFETY: rows i0.. of x from depth k0 hold kc values each, and the
                    // tile's rows of y from column f0 lie inside y (function contract); the
                    // panel holds kc·2 lines from here.
                    unsafe {
                        let tile = Tile {
                            kc,
                            x: x.as_ptr().add(i0 * xs + k0),
                            xs,
                            w: panel,
                            y: out.0.add(i0 * n + f0),
                            ys: n,
                            e: epilogue,
                        };
                        tile_any(rows.end - i0, tile);
                    }
                }
            }
        }
    }
}

/// Rows per block of x: the block's `MC × KC` slabs (200 KB) stay in L2 while every panel
/// of the chunk passes over them, and its rows of the chunk's columns of y stay there through
/// all depth blocks. (ViT batch 1 is 257 rows, one block; at batch 8, 2056 rows, blocks made
/// the products 5-10 % faster.)
const MC: usize = 22 * ROWS;

/// The lanes of a 16-wide vector that hold one of `live` features.
fn lane_mask(live: usize) -> __mmask16 {
    ((1u32 << live.min(16)) - 1) as __mmask16
}

/// How a tile's sums land in `y`.
#[derive(Clone, Copy)]
struct Epilogue {
    /// The features of the panel that exist (a last panel may be partial).
    masks: [__mmask16; 2],
    /// Add onto `y` (a later depth block, or an accumulating product) instead of writing.
    add: bool,
    /// The panel's bias, added by the first depth block.
    bias: Option<*const f32>,
}

/// One tile's operands: `x` at `R` rows of stride `xs` with `kc` values each, `w` at the
/// panel's `2·kc` lines, `y` at `R` rows of stride `ys`.
#[derive(Clone, Copy)]
struct Tile {
    kc: usize,
    x: *const f32,
    xs: usize,
    w: *const Line,
    y: *mut f32,
    ys: usize,
    e: Epilogue,
}

/// A tile of `min(rows, ROWS)` tokens, dispatched to the kernel instance for that count.
///
/// # Safety
/// As [`tile`], for `min(rows, ROWS)` rows.
#[inline(always)]
unsafe fn tile_any(rows: usize, t: Tile) {
    // SAFETY: forwarded.
    unsafe {
        match rows.min(ROWS) {
            12 => tile::<12>(t),
            11 => tile::<11>(t),
            10 => tile::<10>(t),
            9 => tile::<9>(t),
            8 => tile::<8>(t),
            7 => tile::<7>(t),
            6 => tile::<6>(t),
            5 => tile::<5>(t),
            4 => tile::<4>(t),
            3 => tile::<3>(t),
            2 => tile::<2>(t),
            _ => tile::<1>(t),
        }
    }
}

/// The micro-kernel: `y[r, 0..32] (+)= Σ_p x[r, p] · panel[p, 0..32]` for `R` rows.
///
/// # Safety
/// The CPU has AVX-512F; the operands of `t` hold `R` rows (see [`Tile`]), of which the
/// first 32 columns of `y` (those in the masks) are writable; the bias, if any, holds the 32
/// values in the masks.
// Never inlined: in a function of its own the 24 accumulators are sure to get registers,
// whatever the loops around it keep live (inlined, they were once spilled, at half speed).
#[target_feature(enable = "avx512f")]
#[inline(never)]
unsafe fn tile<const R: usize>(t: Tile) {
    let Tile {
        kc,
        x,
        xs,
        w,
        y,
        ys,
        e,
    } = t;
    // SAFETY: every access below stays inside the extents of the contract.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        let rows: [*const f32; R] = std::array::from_fn(|r| x.add(r * xs));
        for p in 0..kc {
            let w0 = _mm512_load_ps(w.add(2 * p).cast());
            let w1 = _mm512_load_ps(w.add(2 * p + 1).cast());
            for (a, row) in acc.iter_mut().zip(&rows) {
                let b = _mm512_set1_ps(*row.add(p));
                a[0] = _mm512_fmadd_ps(w0, b, a[0]);
                a[1] = _mm512_fmadd_ps(w1, b, a[1]);
            }
        }
        let bias = e
            .bias
            .map(|b| [0, 1].map(|h| _mm512_maskz_loadu_ps(e.masks[h], b.wrapping_add(16 * h))));
        for (r, a) in acc.iter().enumerate() {
            for h in 0..2 {
                // The second half of a partial panel may lie past the end of y: its mask is empty.
                let at = y.wrapping_add(r * ys + 16 * h);
                let mut v = a[h];
                if let Some(b) = bias {
                    v = _mm512_add_ps(v, b[h]);
                }
                if e.add {
                    v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(e.masks[h], at));
                }
                _mm512_mask_storeu_ps(at, e.masks[h], v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Rng;

    /// `y (+)= x·Wᵀ (+ b)` against an f64 reference, to the worst-case bound of an f32 sum of
    /// k terms (|error| ≤ (k + 2)·2⁻²⁴·Σ|terms|), with y poisoned past its m rows so a write
    /// outside them shows.
    fn check((m, n, k): (usize, usize, usize), with_bias: bool, accumulate: bool, parallel: bool) {
        let mut rng = Rng::new((m * 131 + n * 17 + k) as u64);
        let x = rng.tensor([m * k], -1.0, 1.0).data;
        let w = rng.tensor([n * k], -1.0, 1.0).data;
        let b = rng.tensor([n], -1.0, 1.0).data;
        let spare = 7;
        let init = rng.tensor([(m + spare) * n], -1.0, 1.0).data;
        let mut y = init.clone();
        let packed = PackedWeight::new(&w, n, k);
        assert_eq!(packed.dims(), (n, k));
        let bias = with_bias.then_some(b.as_slice());
        gemm(&x, m, &packed, bias, &mut y, accumulate, parallel);
        for i in 0..m {
            for j in 0..n {
                let (mut sum, mut mag) = (0.0f64, 0.0f64);
                for p in 0..k {
                    let t = x[i * k + p] as f64 * w[j * k + p] as f64;
                    sum += t;
                    mag += t.abs();
                }
                let mut want = sum;
                if with_bias {
                    want += b[j] as f64;
                    mag += (b[j] as f64).abs();
                }
                if accumulate {
                    want += init[i * n + j] as f64;
                    mag += (init[i * n + j] as f64).abs();
                }
                let got = y[i * n + j] as f64;
                let tol = (k as f64 + 2.0) * 2f64.powi(-24) * mag;
                assert!(
                    (got - want).abs() <= tol,
                    "m={m} n={n} k={k} bias={with_bias} acc={accumulate} ({i},{j}): {got} vs {want}"
                );
            }
        }
        assert_eq!(
            &y[m * n..],
            &init[m * n..],
            "m={m} n={n} k={k}: rows past m written"
        );
    }

    /// Sizes on and off every edge: rows around the 12-row tile (a lone row, a 5-row tail)
    /// and past the 264-row block,
    /// features around the 32-wide panel (one lane, half a panel, one past), depths around
    /// the 192-deep block, and depths of 1024 and 3072, whose 4 KB row strides take the
    /// padded-copy path.
    const SIZES: &[(usize, usize, usize)] = &[
        (1, 1, 1),
        (12, 32, 192),
        (13, 33, 193),
        (5, 17, 7),
        (25, 48, 385),
        (11, 100, 64),
        (30, 64, 1024),
        (13, 40, 3072),
        (257, 96, 96),
        (290, 33, 200),
    ];

    #[test]
    fn products_match_f64_reference() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512F");
            return;
        }
        for &mnk in SIZES {
            for (bias, acc, par) in [
                (false, false, true),
                (true, false, false),
                (true, true, true),
            ] {
                check(mnk, bias, acc, par);
            }
        }
    }

    /// An empty sum writes the bias (or adds it), and touches nothing when there are no rows.
    #[test]
    fn empty_depth_writes_the_bias() {
        if !available() {
            return;
        }
        let w = PackedWeight::new(&[], 3, 0);
        let mut y = vec![5.0; 6];
        gemm(&[], 2, &w, Some(&[1.0, 2.0, 3.0]), &mut y, false, true);
        assert_eq!(y, [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
        gemm(&[], 2, &w, Some(&[1.0, 2.0, 3.0]), &mut y, true, true);
        assert_eq!(y, [2.0, 4.0, 6.0, 2.0, 4.0, 6.0]);
        gemm(&[], 0, &w, None, &mut y, false, true);
        assert_eq!(y, [2.0, 4.0, 6.0, 2.0, 4.0, 6.0]);
    }

    /// The row strides that put a tile's rows in too few L1 sets, and only those.
    #[test]
    fn aliased_strides() {
        for k in [512, 1024, 1536, 3072, 4096] {
            assert!(aliased(k), "k={k}");
        }
        for k in [64, 192, 256, 384, 768, 1000] {
            assert!(!aliased(k), "k={k}");
        }
    }
}
