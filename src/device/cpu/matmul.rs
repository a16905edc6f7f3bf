//! Matrix products through the `gemm` crate. Every layout is one strided product: a
//! transposed operand is the same memory read with its row and column strides swapped.

use super::par;
use crate::device::check::MatmulDims;
use crate::device::Layout;
use gemm::Parallelism;
use rayon::prelude::*;

/// Products with fewer multiply-adds than this run on one thread: splitting them costs more
/// than it saves.
const PARALLEL_MIN_FLOPS: usize = 1 << 21;

/// A read-only strided matrix view: element (i, j) is `data[i·rs + j·cs]`.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

/// A writable strided matrix view.
pub struct ViewMut<'a> {
    pub data: &'a mut [f32],
    pub rs: usize,
    pub cs: usize,
}

/// Extent of the last element of an `rows × cols` strided view, plus one.
fn span(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * rs + (cols - 1) * cs + 1
    }
}

/// `dst = alpha·lhs·rhs` (or `dst += …` when `accumulate`) for `lhs [m, k]`, `rhs [k, n]`,
/// `dst [m, n]`, all strided. Threads: rayon's pool when `parallel` and the product is big.
#[allow(clippy::too_many_arguments)]
pub fn gemm_strided(
    m: usize,
    n: usize,
    k: usize,
    lhs: View,
    rhs: View,
    dst: ViewMut,
    alpha: f32,
    accumulate: bool,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        span(m, k, lhs.rs, lhs.cs) <= lhs.data.len(),
        "gemm: lhs view out of bounds"
    );
    assert!(
        span(k, n, rhs.rs, rhs.cs) <= rhs.data.len(),
        "gemm: rhs view out of bounds"
    );
    assert!(
        span(m, n, dst.rs, dst.cs) <= dst.data.len(),
        "gemm: dst view out of bounds"
    );
    if k == 0 {
        // An empty sum: gemm may leave dst untouched, so write the zero product here.
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    dst.data[i * dst.rs + j * dst.cs] = 0.0;
                }
            }
        }
        return;
    }
    let threads = rayon::current_num_threads();
    let parallelism = if parallel && threads > 1 && m * n * k >= PARALLEL_MIN_FLOPS {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: the three views were bounds-checked above for exactly the (m, n, k) extents gemm
    // reads and writes, `dst` is borrowed mutably so it aliases neither input, and gemm only
    // reads `dst` when `read_dst` is set.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr(),
            dst.cs as isize,
            dst.rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            alpha,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// The Backend's matmul on validated dims (see [`crate::device::Backend::matmul`]).
pub fn matmul(
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    layout: Layout,
    d: MatmulDims,
    accumulate: bool,
) {
    let MatmulDims {
        batch,
        m,
        n,
        k,
        b_batched,
    } = d;
    // Strides of a [m, k] as stored ([k, m] for TN) and b [k, n] as stored ([n, k] for NT).
    let (a_rs, a_cs) = if layout == Layout::TN { (1, m) } else { (k, 1) };
    let (b_rs, b_cs) = if layout == Layout::NT { (1, k) } else { (n, 1) };
    let b_size = if b_batched { k * n } else { 0 };
    let one = |i: usize, o: &mut [f32]| {
        // The bias is written (or added) first so the product can always accumulate onto it.
        let read_dst = match bias {
            Some(bias) => {
                for row in o.chunks_mut(n) {
                    for (y, &c) in row.iter_mut().zip(bias) {
                        *y = if accumulate { *y + c } else { c };
                    }
                }
                true
            }
            None => accumulate,
        };
        gemm_strided(
            m,
            n,
            k,
            View {
                data: &a[i * m * k..(i + 1) * m * k],
                rs: a_rs,
                cs: a_cs,
            },
            View {
                data: &b[i * b_size..i * b_size + k * n],
                rs: b_rs,
                cs: b_cs,
            },
            ViewMut {
                data: o,
                rs: n,
                cs: 1,
            },
            1.0,
            read_dst,
            batch == 1,
        );
    };
    if batch == 1 {
        one(0, out);
    } else if m * n > 0 {
        // Many small products: one per task, each single-threaded.
        out.par_chunks_mut(m * n)
            .enumerate()
            .for_each(|(i, o)| one(i, o));
    }
}

/// `db[j] += Σ_r dy[r, j]` over `rows` rows of width `n`.
pub fn bias_grad(dy: &[f32], rows: usize, n: usize, db: &mut [f32]) {
    par::column_sums(
        rows,
        n,
        |r, acc| {
            for (a, &g) in acc.iter_mut().zip(&dy[r * n..(r + 1) * n]) {
                *a += g as f64;
            }
        },
        db,
    );
}
