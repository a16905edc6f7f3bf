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

/// The kernels this CPU gets, in words.
pub fn kernels() -> String {
    #[cfg(target_arch = "x86_64")]
    let (frozen, bf16) = (
        super::frozen_gemm::available(),
        super::gemm_bf16::available(),
    );
    #[cfg(not(target_arch = "x86_64"))]
    let (frozen, bf16) = (false, false);
    let frozen = if frozen {
        " (frozen weights: packed, AVX-512)"
    } else {
        ""
    };
    let bf16 = if bf16 {
        ", bf16 on AVX512-BF16"
    } else {
        "; bf16 operands are rounded, then multiplied in f32"
    };
    format!("f32 via the gemm crate{frozen}{bf16}")
}

/// One strided product: `dst = alpha·lhs·rhs` (or `dst += …` when `accumulate`) for
/// `lhs [m, k]`, `rhs [k, n]`, `dst [m, n]`. Threads: rayon's pool when `parallel` and the
/// product is big.
pub struct Product<'a> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub lhs: View<'a>,
    pub rhs: View<'a>,
    pub dst: ViewMut<'a>,
    pub alpha: f32,
    pub accumulate: bool,
    pub parallel: bool,
}

/// A [`Product`] in f32.
pub fn gemm_strided(mut p: Product) {
    if !has_work(&mut p) {
        return;
    }
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
    let threads = rayon::current_num_threads();
    let parallel = parallel && threads > 1 && m * n * k >= PARALLEL_MIN_FLOPS;
    // Columns j0..j1 on the calling thread.
    let cols = |j0: usize, j1: usize| {
        // SAFETY: the three views were bounds-checked by `has_work` for exactly the (m, n, k)
        // extents gemm reads and writes, and columns j0..j1 of dst and rhs lie inside them;
        // the threads write disjoint columns of dst, which aliases neither input; gemm reads
        // dst only when `accumulate` is set.
        unsafe {
            gemm::gemm(
                m,
                j1 - j0,
                k,
                dst.data.as_ptr().add(j0 * dst.cs) as *mut f32,
                dst.cs as isize,
                dst.rs as isize,
                accumulate,
                lhs.data.as_ptr(),
                lhs.cs as isize,
                lhs.rs as isize,
                rhs.data.as_ptr().add(j0 * rhs.cs),
                rhs.cs as isize,
                rhs.rs as isize,
                1.0,
                alpha,
                false,
                false,
                false,
                Parallelism::None,
            );
        }
    };
    if !parallel {
        return cols(0, n);
    }
    // One block of whole columns per thread, each a single-threaded product: every thread
    // packs only its own share of `rhs` (the weights, in a linear layer) and there is one
    // join per product. At ViT batch 1 this is 3-5 % faster than the crate's own split.
    let per = n.div_ceil(threads).div_ceil(16) * 16;
    rayon::scope(|s| {
        for t in 1..threads {
            let cols = &cols;
            if t * per < n {
                s.spawn(move |_| cols(t * per, ((t + 1) * per).min(n)));
            }
        }
        cols(0, per.min(n));
    });
}

/// A [`Product`] with both operands rounded to bf16 (nearest even) and f32
/// accumulation: the AVX512-BF16 kernel where the CPU has it, else the rounded operands
/// through the f32 kernel (the same products, exact in f32; only the summation order
/// differs).
fn gemm_bf16(mut p: Product) {
    #[cfg(target_arch = "x86_64")]
    if super::gemm_bf16::available() {
        if has_work(&mut p) {
            p.parallel = p.parallel && p.m * p.n * p.k >= PARALLEL_MIN_FLOPS;
            super::gemm_bf16::gemm(p);
        }
        return;
    }
    gemm_bf16_rounded(p);
}

/// [`gemm_bf16`] for CPUs without AVX512-BF16: round copies of the operands, then the f32
/// kernel.
fn gemm_bf16_rounded(p: Product) {
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
    let round = |v: View| -> Vec<f32> {
        v.data
            .iter()
            .map(|&x| half::bf16::from_f32(x).to_f32())
            .collect()
    };
    let (l, r) = (round(lhs), round(rhs));
    gemm_strided(Product {
        m,
        n,
        k,
        lhs: View { data: &l, ..lhs },
        rhs: View { data: &r, ..rhs },
        dst,
        alpha,
        accumulate,
        parallel,
    });
}

/// [`gemm_strided`] with operands in `precision`.
pub fn gemm_with(precision: Precision, p: Product) {
    match precision {
        Precision::F32 => gemm_strided(p),
        Precision::Bf16 => gemm_bf16(p),
    }
}

/// Check that the views hold the extents an (m, n, k) product touches, and settle the
/// products with nothing to multiply (an empty sum writes zeros unless accumulating). True
/// when a kernel still has work to do.
fn has_work(p: &mut Product) -> bool {
    let Product {
        m,
        n,
        k,
        lhs,
        rhs,
        dst,
        accumulate,
        ..
    } = p;
    let (m, n, k) = (*m, *n, *k);
    if m == 0 || n == 0 {
        return false;
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
    if k == 0 && !*accumulate {
        for i in 0..m {
            for j in 0..n {
                dst.data[i * dst.rs + j * dst.cs] = 0.0;
            }
        }
    }
    k > 0
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
        let p = Product {
            m,
            n,
            k,
            lhs,
            rhs,
            dst,
            alpha: 1.0,
            accumulate: read_dst,
            parallel: batch == 1,
        };
        gemm_with(precision, p);
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
    /// Which product [`check`] runs.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Path {
        F32,
        /// The backend's bf16 product (the AVX512-BF16 kernel where the CPU has it).
        Bf16,
        /// The rounded-operand fallback, whatever this CPU has.
        Bf16Rounded,
    }

    fn check(path: Path, (m, n, k): (usize, usize, usize), layout: Layout) {
        let bf16 = path != Path::F32;
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
        let p = Product {
            m,
            n,
            k,
            lhs,
            rhs,
            dst: out,
            alpha,
            accumulate,
            parallel: true,
        };
        match path {
            Path::F32 => gemm_strided(p),
            Path::Bf16 => gemm_bf16(p),
            Path::Bf16Rounded => gemm_bf16_rounded(p),
        }
        let alpha = alpha as f64;
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
                    "{path:?} {layout:?} m={m} n={n} k={k} ({i},{c}): {got} vs {want}"
                );
            }
        }
    }

    /// Sizes off every tile and block edge: rows around the 16/32-row panels (a last panel of
    /// 1 or 3 rows runs the row kernel), columns around the 12-column tile, depths odd (a
    /// bf16 pair half empty) and past the 3072-deep block, and k = 0.
    const SIZES: &[(usize, usize, usize)] = &[
        (1, 1, 1),
        (35, 14, 33),
        (40, 13, 3100),
        (5, 7, 3),
        (17, 13, 31),
        (33, 25, 0),
        (257, 12, 64),
        (31, 6, 770),
        (390, 29, 1537),
        (64, 100, 769),
    ];

    fn check_all(path: Path) {
        for &mnk in SIZES {
            for layout in [Layout::NN, Layout::NT, Layout::TN] {
                check(path, mnk, layout);
            }
        }
    }

    #[test]
    fn f32_products_match_f64_reference() {
        check_all(Path::F32);
    }

    /// On a CPU with AVX512-BF16 this runs `vdpbf16ps`; elsewhere the rounded-operand path.
    #[test]
    fn bf16_products_match_f64_reference_on_rounded_operands() {
        check_all(Path::Bf16);
    }

    /// Parallel products started from inside rayon jobs, on a pool wider than the machine: a
    /// worker waiting for its own product's tasks may run another job's product on the same
    /// thread, which must find buffers of its own and give correct results. (That interleaving
    /// depends on timing; this did not catch the held thread-local borrow it guards against,
    /// which was found by reading.)
    #[test]
    fn nested_parallel_products_are_reentrant() {
        use rayon::prelude::*;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .unwrap();
        pool.install(|| {
            (0..96).into_par_iter().with_max_len(1).for_each(|i| {
                for path in [Path::F32, Path::Bf16] {
                    check(path, (40 + i % 7 * 30, 96, 384), Layout::NT);
                }
            })
        });
    }

    #[test]
    fn bf16_fallback_matches_f64_reference_on_rounded_operands() {
        check_all(Path::Bf16Rounded);
    }
}
