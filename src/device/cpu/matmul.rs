//! Matrix products through the `gemm` crate. Every layout is one strided product: a
//! transposed operand is the same memory read with its row and column strides swapped.

use super::par;
use super::Precision;
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

/// The kernel a product runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    /// Our AVX-512 kernel (f32 or bf16 operands).
    #[cfg(target_arch = "x86_64")]
    Avx512(super::gemm512::Operands),
    /// The `gemm` crate (f32; runtime-dispatched AVX2/FMA or SSE).
    Crate,
}

impl Kernel {
    /// The fastest f32 kernel this CPU runs.
    fn f32() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        if super::gemm512::available() {
            return Kernel::Avx512(super::gemm512::Operands::F32);
        }
        Kernel::Crate
    }
}

/// `dst = alpha·lhs·rhs` (or `dst += …` when `accumulate`) for `lhs [m, k]`, `rhs [k, n]`,
/// `dst [m, n]`, all strided, in f32. Threads: rayon's pool when `parallel` and the product
/// is big.
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
    let kernel = Kernel::f32();
    gemm_on(
        kernel,
        (m, n, k),
        lhs,
        rhs,
        dst,
        alpha,
        accumulate,
        parallel,
    );
}

/// [`gemm_strided`] with both operands rounded to bf16 (nearest even) and f32 accumulation:
/// the AVX512-BF16 kernel where the CPU has it, else the rounded operands through the f32
/// kernel (the same products, exact in f32; only the summation order differs).
#[allow(clippy::too_many_arguments)]
fn gemm_bf16(
    m: usize,
    n: usize,
    k: usize,
    lhs: View,
    rhs: View,
    dst: ViewMut,
    accumulate: bool,
    parallel: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if super::gemm512::bf16_available() {
        let kernel = Kernel::Avx512(super::gemm512::Operands::Bf16);
        gemm_on(kernel, (m, n, k), lhs, rhs, dst, 1.0, accumulate, parallel);
        return;
    }
    let round = |v: View| -> Vec<f32> {
        v.data
            .iter()
            .map(|&x| half::bf16::from_f32(x).to_f32())
            .collect()
    };
    let (l, r) = (round(lhs), round(rhs));
    let lhs = View { data: &l, ..lhs };
    let rhs = View { data: &r, ..rhs };
    gemm_strided(m, n, k, lhs, rhs, dst, 1.0, accumulate, parallel);
}

/// One product on a chosen kernel, after checking the views hold the extents it touches.
#[allow(clippy::too_many_arguments)]
fn gemm_on(
    kernel: Kernel,
    (m, n, k): (usize, usize, usize),
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
        // An empty sum: the kernels may leave dst untouched, so write the zero product here.
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    dst.data[i * dst.rs + j * dst.cs] = 0.0;
                }
            }
        }
        return;
    }
    let parallel = parallel && rayon::current_num_threads() > 1 && m * n * k >= PARALLEL_MIN_FLOPS;
    match kernel {
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512(ops) => {
            super::gemm512::gemm(m, n, k, lhs, rhs, dst, alpha, accumulate, parallel, ops)
        }
        Kernel::Crate => {
            let parallelism = if parallel {
                Parallelism::Rayon(rayon::current_num_threads())
            } else {
                Parallelism::None
            };
            // SAFETY: the three views were bounds-checked above for exactly the (m, n, k)
            // extents gemm reads and writes, `dst` is borrowed mutably so it aliases neither
            // input, and gemm only reads `dst` when `read_dst` is set.
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
    }
}

/// The Backend's matmul on validated dims (see [`crate::device::Backend::matmul`]).
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    layout: Layout,
    d: MatmulDims,
    accumulate: bool,
    precision: Precision,
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
        let lhs = View {
            data: &a[i * m * k..(i + 1) * m * k],
            rs: a_rs,
            cs: a_cs,
        };
        let rhs = View {
            data: &b[i * b_size..i * b_size + k * n],
            rs: b_rs,
            cs: b_cs,
        };
        let dst = ViewMut {
            data: o,
            rs: n,
            cs: 1,
        };
        match precision {
            Precision::F32 => gemm_strided(m, n, k, lhs, rhs, dst, 1.0, read_dst, batch == 1),
            Precision::Bf16 => gemm_bf16(m, n, k, lhs, rhs, dst, read_dst, batch == 1),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Rng;

    /// One strided product checked against an f64 reference on the operands as the kernel
    /// sees them (rounded to bf16 first for bf16), to the worst-case bound of an f32 sum of k
    /// terms: |error| ≤ k·2⁻²⁴·Σ|a·b| per element (plus the rounding of the stored result).
    fn check(kernel: Kernel, bf16: bool, (m, n, k): (usize, usize, usize), layout: Layout) {
        let mut rng = Rng::new((m * 31 + n * 7 + k) as u64);
        let a = rng.tensor([m * k], -1.0, 1.0).data;
        let b = rng.tensor([k * n], -1.0, 1.0).data;
        // dst is a column block of a wider matrix, so the kernel's strides are exercised.
        let ld = n + 3;
        let init = rng.tensor([m * ld], -1.0, 1.0).data;
        let (a_rs, a_cs) = if layout == Layout::TN { (1, m) } else { (k, 1) };
        let (b_rs, b_cs) = if layout == Layout::NT { (1, k) } else { (n, 1) };
        let (alpha, accumulate) = (0.75f32, m % 2 == 1);
        let mut dst = init.clone();
        let lhs = View {
            data: &a,
            rs: a_rs,
            cs: a_cs,
        };
        let rhs = View {
            data: &b,
            rs: b_rs,
            cs: b_cs,
        };
        let out = ViewMut {
            data: &mut dst[1..],
            rs: ld,
            cs: 1,
        };
        if bf16 {
            gemm_bf16(m, n, k, lhs, rhs, out, accumulate, true);
        } else {
            gemm_on(kernel, (m, n, k), lhs, rhs, out, alpha, accumulate, true);
        }
        let alpha = if bf16 { 1.0 } else { alpha as f64 };
        let q = |x: f32| -> f64 {
            if bf16 {
                half::bf16::from_f32(x).to_f64()
            } else {
                x as f64
            }
        };
        for i in 0..m {
            for j in 0..ld {
                let got = dst[i * ld + j] as f64;
                if j == 0 || j > n {
                    assert_eq!(
                        got,
                        init[i * ld + j] as f64,
                        "({i},{j}) outside dst written"
                    );
                    continue;
                }
                let c = j - 1;
                let (mut sum, mut mag) = (0.0f64, 0.0f64);
                for kk in 0..k {
                    let p = q(a[i * a_rs + kk * a_cs]) * q(b[kk * b_rs + c * b_cs]);
                    sum += p;
                    mag += p.abs();
                }
                let base = if accumulate {
                    init[i * ld + j] as f64
                } else {
                    0.0
                };
                let want = base + alpha * sum;
                let tol = (k as f64 + 2.0) * 2f64.powi(-24) * (alpha * mag + base.abs());
                assert!(
                    (got - want).abs() <= tol,
                    "{kernel:?} bf16={bf16} {layout:?} m={m} n={n} k={k} ({i},{c}): {got} vs {want}"
                );
            }
        }
    }

    /// Sizes off every tile and block edge: rows around the 16/32-row panels and the 384-row
    /// block, columns around the 12-column tile, depths around the 768 block and odd (a bf16
    /// pair half empty), and k = 0.
    const SIZES: &[(usize, usize, usize)] = &[
        (1, 1, 1),
        (5, 7, 3),
        (17, 13, 31),
        (33, 25, 0),
        (257, 12, 64),
        (31, 6, 770),
        (390, 29, 1537),
        (64, 100, 769),
    ];

    fn check_all(kernel: Kernel, bf16: bool) {
        for &mnk in SIZES {
            for layout in [Layout::NN, Layout::NT, Layout::TN] {
                check(kernel, bf16, mnk, layout);
            }
        }
    }

    #[test]
    fn gemm_crate_kernel_matches_f64_reference() {
        check_all(Kernel::Crate, false);
    }

    #[test]
    fn fastest_f32_kernel_matches_f64_reference() {
        check_all(Kernel::f32(), false);
    }

    /// On a CPU with AVX512-BF16 this runs `vdpbf16ps`; elsewhere the rounded-operand path.
    #[test]
    fn bf16_products_match_f64_reference_on_rounded_operands() {
        check_all(Kernel::f32(), true);
    }
}
