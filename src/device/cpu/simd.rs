//! Explicit SIMD for the CPU ops' element-wise and row loops.
//!
//! The crate is built for generic x86-64, where the compiler vectorises only with SSE2 and
//! cannot vectorise a loop that calls `exp`. The hot loops are therefore written once,
//! generic over [`Simd`] (a vector of `LANES` f32 and a matching vector of f64 for
//! accumulations), and [`dispatch!`] runs them with the widest instruction set this CPU has:
//! AVX-512 (16 lanes), AVX2 + FMA (8 lanes), or scalar code (1 lane) anywhere else. The level
//! is detected once.
//!
//! Results depend on the level (the lane count sets the order of sums, FMA rounds once) but
//! never on the thread count. `KDAD_SIMD=scalar` or `KDAD_SIMD=avx2` caps the level (any
//! other value: no cap), so the narrower paths can be tested on a wide CPU.
//!
//! A loop that fails to inline shows up as calls to `core::core_arch` functions in the
//! disassembly (`objdump -d -C <binary> | grep 'call.*core_arch'`), and runs several times
//! slower than scalar code.

use std::sync::OnceLock;

/// One instruction set: a vector `V` of `LANES` f32 and a vector `D` of `LANES` f64.
///
/// Every method is `#[inline(always)]`: the generic loops built from them must be inlined,
/// all the way down to the intrinsics, into the `#[target_feature]` entry point of their
/// level, or they would be compiled without the vector instructions.
pub trait Simd: Copy {
    const LANES: usize;
    type V: Copy;
    type D: Copy;

    fn splat(self, x: f32) -> Self::V;
    /// The first `LANES` elements of `x` (which must have that many).
    fn load(self, x: &[f32]) -> Self::V;
    /// Into the first `LANES` elements of `out`.
    fn store(self, v: Self::V, out: &mut [f32]);
    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    fn sub(self, a: Self::V, b: Self::V) -> Self::V;
    fn mul(self, a: Self::V, b: Self::V) -> Self::V;
    fn div(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a·b + c`, rounded once where the CPU has FMA.
    fn mul_add(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// The larger of a and b; `b` when either is NaN (the x86 `max` rule).
    fn max(self, a: Self::V, b: Self::V) -> Self::V;
    /// The smaller of a and b; `b` when either is NaN.
    fn min(self, a: Self::V, b: Self::V) -> Self::V;
    fn sqrt(self, a: Self::V) -> Self::V;
    fn abs(self, a: Self::V) -> Self::V;
    /// `x` where `a < b`, else `y` (so `y` where either is NaN).
    fn select_lt(self, a: Self::V, b: Self::V, x: Self::V, y: Self::V) -> Self::V;
    /// `2^n` for integral `n` with `n + 127` in 1..=254 (a normal exponent).
    fn pow2i(self, n: Self::V) -> Self::V;

    fn dsplat(self, x: f64) -> Self::D;
    /// The first `LANES` elements of `x`.
    fn dload(self, x: &[f64]) -> Self::D;
    fn dstore(self, v: Self::D, out: &mut [f64]);
    fn widen(self, a: Self::V) -> Self::D;
    fn narrow(self, a: Self::D) -> Self::V;
    fn dadd(self, a: Self::D, b: Self::D) -> Self::D;
    fn dsub(self, a: Self::D, b: Self::D) -> Self::D;
    fn dmul(self, a: Self::D, b: Self::D) -> Self::D;

    /// The largest lane (`max` folded from lane 0 up).
    #[inline(always)]
    fn reduce_max(self, a: Self::V) -> f32 {
        let mut b = [0.0f32; MAX_LANES];
        self.store(a, &mut b);
        b[1..Self::LANES]
            .iter()
            .fold(b[0], |m, &x| if m > x { m } else { x })
    }
    /// The sum of the lanes, added from lane 0 up.
    #[inline(always)]
    fn reduce_sum(self, a: Self::D) -> f64 {
        let mut b = [0.0f64; MAX_LANES];
        self.dstore(a, &mut b);
        b[..Self::LANES].iter().sum()
    }
}

/// The widest vector, in f32 lanes: the size of the staging buffers for partial vectors.
pub const MAX_LANES: usize = 16;

/// `x` (at most `LANES` elements) as a vector padded with `pad`.
#[inline(always)]
pub fn load_part<S: Simd>(s: S, x: &[f32], pad: f32) -> S::V {
    let mut b = [pad; MAX_LANES];
    b[..x.len()].copy_from_slice(x);
    s.load(&b)
}

/// The first `out.len()` (at most `LANES`) lanes of `v` into `out`.
#[inline(always)]
pub fn store_part<S: Simd>(s: S, v: S::V, out: &mut [f32]) {
    let mut b = [0.0f32; MAX_LANES];
    s.store(v, &mut b);
    out.copy_from_slice(&b[..out.len()]);
}

// The loops below call their element function `f` from exactly one place, the tail (a
// zero-padded vector) included: `f` is a closure without the level's target features, and
// LLVM inlines it into the vectorised entry point (where its intrinsics can be inlined in
// turn) only when it is the closure's sole caller.

/// The vector at element `i` of `x` (`x[i..n]` zero-padded when shorter than a vector).
#[inline(always)]
fn load_at<S: Simd>(s: S, x: &[f32], i: usize, n: usize) -> S::V {
    if n - i >= S::LANES {
        s.load(&x[i..])
    } else {
        load_part(s, &x[i..n], 0.0)
    }
}

/// [`load_at`] of each input.
#[inline(always)]
fn load_all<S: Simd, const K: usize>(s: S, ins: &[&[f32]; K], i: usize, n: usize) -> [S::V; K] {
    let mut v = [s.splat(0.0); K];
    for (v, x) in v.iter_mut().zip(ins) {
        *v = load_at(s, x, i, n);
    }
    v
}

/// `x[i] = f(x[i], ins[0][i], ins[1][i], …)` for every `i`, a vector at a time. Each input
/// must be at least as long as `x`.
#[inline(always)]
pub fn update<S: Simd, const K: usize>(
    s: S,
    x: &mut [f32],
    ins: [&[f32]; K],
    f: impl Fn(S::V, [S::V; K]) -> S::V,
) {
    let n = x.len();
    for i in (0..n).step_by(S::LANES) {
        let v = f(load_at(s, x, i, n), load_all(s, &ins, i, n));
        if n - i >= S::LANES {
            s.store(v, &mut x[i..]);
        } else {
            store_part(s, v, &mut x[i..]);
        }
    }
}

/// `Σ_i f(ins[0][i], ins[1][i], …)` in f64 lanes, added up lane by lane at the end; the
/// lanes of `f`'s result for the tail's padding are dropped. Equal input lengths.
#[inline(always)]
pub fn sum<S: Simd, const K: usize>(s: S, ins: [&[f32]; K], f: impl Fn([S::V; K]) -> S::D) -> f64 {
    let n = ins.first().map_or(0, |a| a.len());
    let mut acc = s.dsplat(0.0);
    for i in (0..n).step_by(S::LANES) {
        let mut v = f(load_all(s, &ins, i, n));
        if n - i < S::LANES {
            let mut b = [0.0f64; MAX_LANES];
            s.dstore(v, &mut b);
            b[n - i..].fill(0.0);
            v = s.dload(&b);
        }
        acc = s.dadd(acc, v);
    }
    s.reduce_sum(acc)
}

/// `acc[j] += f(ins[0][j], ins[1][j], …)` in f64 for every `j` (the column sums' row step).
#[inline(always)]
pub fn accumulate<S: Simd, const K: usize>(
    s: S,
    acc: &mut [f64],
    ins: [&[f32]; K],
    f: impl Fn([S::V; K]) -> S::D,
) {
    let n = acc.len();
    for i in (0..n).step_by(S::LANES) {
        let v = f(load_all(s, &ins, i, n));
        if n - i >= S::LANES {
            s.dstore(s.dadd(s.dload(&acc[i..]), v), &mut acc[i..]);
        } else {
            let mut b = [0.0f64; MAX_LANES];
            s.dstore(v, &mut b);
            for (a, v) in acc[i..].iter_mut().zip(b) {
                *a += v;
            }
        }
    }
}

/// The instruction set the ops run with, holding the token that proves the CPU has it.
#[derive(Clone, Copy, Debug)]
pub enum Level {
    Scalar(Scalar),
    #[cfg(target_arch = "x86_64")]
    Avx2(Avx2),
    #[cfg(target_arch = "x86_64")]
    Avx512(Avx512),
}

/// The widest level this CPU supports, capped by `KDAD_SIMD`; detected once.
pub fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let all = levels();
        let cap = std::env::var("KDAD_SIMD").ok();
        let allowed = |l: &Level| match cap.as_deref() {
            Some("scalar") => matches!(l, Level::Scalar(_)),
            #[cfg(target_arch = "x86_64")]
            Some("avx2") => !matches!(l, Level::Avx512(_)),
            _ => true,
        };
        all.into_iter()
            .rfind(allowed)
            .unwrap_or(Level::Scalar(Scalar))
    })
}

/// Every level this CPU supports, narrowest first (tests run each of them).
pub fn levels() -> Vec<Level> {
    #[allow(unused_mut)]
    let mut all = vec![Level::Scalar(Scalar)];
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            all.push(Level::Avx2(Avx2(())));
            if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512dq") {
                all.push(Level::Avx512(Avx512(())));
            }
        }
    }
    all
}

/// A loop body generic over [`Simd`], for [`run`]: the alternative to [`dispatch!`] for
/// bodies too large for the compiler to inline a closure into the `#[target_feature]` entry
/// point (then every intrinsic in the closure becomes a call, slower than scalar code; the
/// softmax loops of the attention were such bodies). `apply` must be `#[inline(always)]`,
/// which is honoured whatever the body's size.
pub trait Vectorized {
    type Output;
    fn apply<S: Simd>(self, s: S) -> Self::Output;
}

/// `v.apply` with the token of [`level`], compiled for that level's instruction set.
pub fn run<V: Vectorized>(v: V) -> V::Output {
    match level() {
        Level::Scalar(s) => v.apply(s),
        #[cfg(target_arch = "x86_64")]
        Level::Avx2(t) => t.vectorize_op(v),
        #[cfg(target_arch = "x86_64")]
        Level::Avx512(t) => t.vectorize_op(v),
    }
}

/// `dispatch!(s => body)` evaluates `body` with `s` bound to the token of [`level`]
/// (`dispatch!(level, s => body)` to name the level), inside a function compiled for that
/// level's instruction set. Everything `body` calls on `s` must be `#[inline(always)]`.
macro_rules! dispatch {
    ($s:ident => $body:expr) => {
        $crate::device::cpu::simd::dispatch!($crate::device::cpu::simd::level(), $s => $body)
    };
    ($level:expr, $s:ident => $body:expr) => {
        match $level {
            $crate::device::cpu::simd::Level::Scalar($s) => $body,
            #[cfg(target_arch = "x86_64")]
            $crate::device::cpu::simd::Level::Avx2(t) => t.vectorize(|$s| $body),
            #[cfg(target_arch = "x86_64")]
            $crate::device::cpu::simd::Level::Avx512(t) => t.vectorize(|$s| $body),
        }
    };
}
pub(crate) use dispatch;

/// Plain f32 arithmetic, one lane: the path for CPUs without the vector levels. `mul_add`
/// is not fused (a software FMA would be slow).
#[derive(Clone, Copy, Debug)]
pub struct Scalar;

impl Simd for Scalar {
    const LANES: usize = 1;
    type V = f32;
    type D = f64;

    #[inline(always)]
    fn splat(self, x: f32) -> f32 {
        x
    }
    #[inline(always)]
    fn load(self, x: &[f32]) -> f32 {
        x[0]
    }
    #[inline(always)]
    fn store(self, v: f32, out: &mut [f32]) {
        out[0] = v;
    }
    #[inline(always)]
    fn add(self, a: f32, b: f32) -> f32 {
        a + b
    }
    #[inline(always)]
    fn sub(self, a: f32, b: f32) -> f32 {
        a - b
    }
    #[inline(always)]
    fn mul(self, a: f32, b: f32) -> f32 {
        a * b
    }
    #[inline(always)]
    fn div(self, a: f32, b: f32) -> f32 {
        a / b
    }
    #[inline(always)]
    fn mul_add(self, a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
    #[inline(always)]
    fn max(self, a: f32, b: f32) -> f32 {
        if a > b {
            a
        } else {
            b
        }
    }
    #[inline(always)]
    fn min(self, a: f32, b: f32) -> f32 {
        if a < b {
            a
        } else {
            b
        }
    }
    #[inline(always)]
    fn sqrt(self, a: f32) -> f32 {
        a.sqrt()
    }
    #[inline(always)]
    fn abs(self, a: f32) -> f32 {
        a.abs()
    }
    #[inline(always)]
    fn select_lt(self, a: f32, b: f32, x: f32, y: f32) -> f32 {
        if a < b {
            x
        } else {
            y
        }
    }
    #[inline(always)]
    fn pow2i(self, n: f32) -> f32 {
        f32::from_bits(((n as i32 + 127) as u32) << 23)
    }
    #[inline(always)]
    fn dsplat(self, x: f64) -> f64 {
        x
    }
    #[inline(always)]
    fn dload(self, x: &[f64]) -> f64 {
        x[0]
    }
    #[inline(always)]
    fn dstore(self, v: f64, out: &mut [f64]) {
        out[0] = v;
    }
    #[inline(always)]
    fn widen(self, a: f32) -> f64 {
        a as f64
    }
    #[inline(always)]
    fn narrow(self, a: f64) -> f32 {
        a as f32
    }
    #[inline(always)]
    fn dadd(self, a: f64, b: f64) -> f64 {
        a + b
    }
    #[inline(always)]
    fn dsub(self, a: f64, b: f64) -> f64 {
        a - b
    }
    #[inline(always)]
    fn dmul(self, a: f64, b: f64) -> f64 {
        a * b
    }
}

#[cfg(target_arch = "x86_64")]
pub use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Simd;
    use std::arch::x86_64::*;

    /// Runs intrinsics in a method of a level token.
    macro_rules! intrinsics {
        ($e:expr) => {
            // SAFETY: the token (`self`) is created only by `levels()`, after
            // `is_x86_feature_detected!` found every feature its level's intrinsics need;
            // loads and stores go through slices indexed (bounds-checked) to their full width.
            unsafe { $e }
        };
    }

    /// AVX2 + FMA, 8 lanes. Only [`super::levels`] creates it, after detecting both.
    #[derive(Clone, Copy, Debug)]
    pub struct Avx2(pub(super) ());

    impl Avx2 {
        /// `f(self)` compiled for AVX2 + FMA (see [`super::dispatch!`]).
        #[inline]
        pub fn vectorize<R>(self, f: impl FnOnce(Self) -> R) -> R {
            #[target_feature(enable = "avx2,fma")]
            fn run<R>(t: Avx2, f: impl FnOnce(Avx2) -> R) -> R {
                f(t)
            }
            // SAFETY: the token exists only when the CPU has AVX2 and FMA.
            unsafe { run(self, f) }
        }

        /// `v.apply(self)` compiled for AVX2 + FMA (see [`super::run`]).
        #[inline]
        pub fn vectorize_op<V: super::Vectorized>(self, v: V) -> V::Output {
            #[target_feature(enable = "avx2,fma")]
            fn run<V: super::Vectorized>(t: Avx2, v: V) -> V::Output {
                v.apply(t)
            }
            // SAFETY: the token exists only when the CPU has AVX2 and FMA.
            unsafe { run(self, v) }
        }
    }

    impl Simd for Avx2 {
        const LANES: usize = 8;
        type V = __m256;
        type D = [__m256d; 2];

        #[inline(always)]
        fn splat(self, x: f32) -> __m256 {
            intrinsics!(_mm256_set1_ps(x))
        }
        #[inline(always)]
        fn load(self, x: &[f32]) -> __m256 {
            intrinsics!(_mm256_loadu_ps(x[..8].as_ptr()))
        }
        #[inline(always)]
        fn store(self, v: __m256, out: &mut [f32]) {
            intrinsics!(_mm256_storeu_ps(out[..8].as_mut_ptr(), v))
        }
        #[inline(always)]
        fn add(self, a: __m256, b: __m256) -> __m256 {
            intrinsics!(_mm256_add_ps(a, b))
        }
        #[inline(always)]
        fn sub(self, a: __m256, b: __m256) -> __m256 {
            intrinsics!(_mm256_sub_ps(a, b))
        }
        #[inline(always)]
        fn mul(self, a: __m256, b: __m256) -> __m256 {
            intrinsics!(_mm256_mul_ps(a, b))
        }
        #[inline(always)]
        fn div(self, a: __m256, b: __m256) -> __m256 {
            intrinsics!(_mm256_div_ps(a, b))
        }
        #[inline(always)]
        fn mul_add(self, a: __m256, b: __m256, c: __m256) -> __m256 {
            intrinsics!(_mm256_fmadd_ps(a, b, c))
        }
        #[inline(always)]
        fn max(self, a: __m256, b: __m256) -> __m256 {
            intrinsics!(_mm256_max_ps(a, b))
        }
        #[inline(always)]
        fn min(self, a: __m256, b: __m256) -> __m256 {
            intrinsics!(_mm256_min_ps(a, b))
        }
        #[inline(always)]
        fn sqrt(self, a: __m256) -> __m256 {
            intrinsics!(_mm256_sqrt_ps(a))
        }
        #[inline(always)]
        fn abs(self, a: __m256) -> __m256 {
            intrinsics!(_mm256_andnot_ps(_mm256_set1_ps(-0.0), a))
        }
        #[inline(always)]
        fn select_lt(self, a: __m256, b: __m256, x: __m256, y: __m256) -> __m256 {
            intrinsics!(_mm256_blendv_ps(y, x, _mm256_cmp_ps::<_CMP_LT_OQ>(a, b)))
        }
        #[inline(always)]
        fn pow2i(self, n: __m256) -> __m256 {
            intrinsics!(_mm256_castsi256_ps(_mm256_slli_epi32::<23>(
                _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127))
            )))
        }
        #[inline(always)]
        fn dsplat(self, x: f64) -> [__m256d; 2] {
            intrinsics!([_mm256_set1_pd(x); 2])
        }
        #[inline(always)]
        fn dload(self, x: &[f64]) -> [__m256d; 2] {
            let x = &x[..8];
            intrinsics!([
                _mm256_loadu_pd(x.as_ptr()),
                _mm256_loadu_pd(x[4..].as_ptr())
            ])
        }
        #[inline(always)]
        fn dstore(self, v: [__m256d; 2], out: &mut [f64]) {
            let out = &mut out[..8];
            intrinsics!({
                _mm256_storeu_pd(out.as_mut_ptr(), v[0]);
                _mm256_storeu_pd(out[4..].as_mut_ptr(), v[1]);
            })
        }
        #[inline(always)]
        fn widen(self, a: __m256) -> [__m256d; 2] {
            intrinsics!([
                _mm256_cvtps_pd(_mm256_castps256_ps128(a)),
                _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(a))
            ])
        }
        #[inline(always)]
        fn narrow(self, a: [__m256d; 2]) -> __m256 {
            intrinsics!(_mm256_set_m128(
                _mm256_cvtpd_ps(a[1]),
                _mm256_cvtpd_ps(a[0])
            ))
        }
        #[inline(always)]
        fn dadd(self, a: [__m256d; 2], b: [__m256d; 2]) -> [__m256d; 2] {
            intrinsics!([_mm256_add_pd(a[0], b[0]), _mm256_add_pd(a[1], b[1])])
        }
        #[inline(always)]
        fn dsub(self, a: [__m256d; 2], b: [__m256d; 2]) -> [__m256d; 2] {
            intrinsics!([_mm256_sub_pd(a[0], b[0]), _mm256_sub_pd(a[1], b[1])])
        }
        #[inline(always)]
        fn dmul(self, a: [__m256d; 2], b: [__m256d; 2]) -> [__m256d; 2] {
            intrinsics!([_mm256_mul_pd(a[0], b[0]), _mm256_mul_pd(a[1], b[1])])
        }
    }

    /// AVX-512 F + DQ, 16 lanes. Only [`super::levels`] creates it, after detecting both
    /// (and AVX2 + FMA).
    #[derive(Clone, Copy, Debug)]
    pub struct Avx512(pub(super) ());

    impl Avx512 {
        /// `f(self)` compiled for AVX-512 (see [`super::dispatch!`]).
        #[inline]
        pub fn vectorize<R>(self, f: impl FnOnce(Self) -> R) -> R {
            #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
            fn run<R>(t: Avx512, f: impl FnOnce(Avx512) -> R) -> R {
                f(t)
            }
            // SAFETY: the token exists only when the CPU has AVX-512 F and DQ, AVX2 and FMA.
            unsafe { run(self, f) }
        }

        /// `v.apply(self)` compiled for AVX-512 (see [`super::run`]).
        #[inline]
        pub fn vectorize_op<V: super::Vectorized>(self, v: V) -> V::Output {
            #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
            fn run<V: super::Vectorized>(t: Avx512, v: V) -> V::Output {
                v.apply(t)
            }
            // SAFETY: the token exists only when the CPU has AVX-512 F and DQ, AVX2 and FMA.
            unsafe { run(self, v) }
        }
    }

    impl Simd for Avx512 {
        const LANES: usize = 16;
        type V = __m512;
        type D = [__m512d; 2];

        #[inline(always)]
        fn splat(self, x: f32) -> __m512 {
            intrinsics!(_mm512_set1_ps(x))
        }
        #[inline(always)]
        fn load(self, x: &[f32]) -> __m512 {
            intrinsics!(_mm512_loadu_ps(x[..16].as_ptr()))
        }
        #[inline(always)]
        fn store(self, v: __m512, out: &mut [f32]) {
            intrinsics!(_mm512_storeu_ps(out[..16].as_mut_ptr(), v))
        }
        #[inline(always)]
        fn add(self, a: __m512, b: __m512) -> __m512 {
            intrinsics!(_mm512_add_ps(a, b))
        }
        #[inline(always)]
        fn sub(self, a: __m512, b: __m512) -> __m512 {
            intrinsics!(_mm512_sub_ps(a, b))
        }
        #[inline(always)]
        fn mul(self, a: __m512, b: __m512) -> __m512 {
            intrinsics!(_mm512_mul_ps(a, b))
        }
        #[inline(always)]
        fn div(self, a: __m512, b: __m512) -> __m512 {
            intrinsics!(_mm512_div_ps(a, b))
        }
        #[inline(always)]
        fn mul_add(self, a: __m512, b: __m512, c: __m512) -> __m512 {
            intrinsics!(_mm512_fmadd_ps(a, b, c))
        }
        #[inline(always)]
        fn max(self, a: __m512, b: __m512) -> __m512 {
            intrinsics!(_mm512_max_ps(a, b))
        }
        #[inline(always)]
        fn min(self, a: __m512, b: __m512) -> __m512 {
            intrinsics!(_mm512_min_ps(a, b))
        }
        #[inline(always)]
        fn sqrt(self, a: __m512) -> __m512 {
            intrinsics!(_mm512_sqrt_ps(a))
        }
        #[inline(always)]
        fn abs(self, a: __m512) -> __m512 {
            intrinsics!(_mm512_abs_ps(a))
        }
        #[inline(always)]
        fn select_lt(self, a: __m512, b: __m512, x: __m512, y: __m512) -> __m512 {
            intrinsics!(_mm512_mask_blend_ps(
                _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, b),
                y,
                x
            ))
        }
        #[inline(always)]
        fn pow2i(self, n: __m512) -> __m512 {
            intrinsics!(_mm512_castsi512_ps(_mm512_slli_epi32::<23>(
                _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127))
            )))
        }
        #[inline(always)]
        fn dsplat(self, x: f64) -> [__m512d; 2] {
            intrinsics!([_mm512_set1_pd(x); 2])
        }
        #[inline(always)]
        fn dload(self, x: &[f64]) -> [__m512d; 2] {
            let x = &x[..16];
            intrinsics!([
                _mm512_loadu_pd(x.as_ptr()),
                _mm512_loadu_pd(x[8..].as_ptr())
            ])
        }
        #[inline(always)]
        fn dstore(self, v: [__m512d; 2], out: &mut [f64]) {
            let out = &mut out[..16];
            intrinsics!({
                _mm512_storeu_pd(out.as_mut_ptr(), v[0]);
                _mm512_storeu_pd(out[8..].as_mut_ptr(), v[1]);
            })
        }
        #[inline(always)]
        fn widen(self, a: __m512) -> [__m512d; 2] {
            intrinsics!([
                _mm512_cvtps_pd(_mm512_castps512_ps256(a)),
                _mm512_cvtps_pd(_mm512_extractf32x8_ps::<1>(a))
            ])
        }
        #[inline(always)]
        fn narrow(self, a: [__m512d; 2]) -> __m512 {
            intrinsics!(_mm512_insertf32x8::<1>(
                _mm512_castps256_ps512(_mm512_cvtpd_ps(a[0])),
                _mm512_cvtpd_ps(a[1])
            ))
        }
        #[inline(always)]
        fn dadd(self, a: [__m512d; 2], b: [__m512d; 2]) -> [__m512d; 2] {
            intrinsics!([_mm512_add_pd(a[0], b[0]), _mm512_add_pd(a[1], b[1])])
        }
        #[inline(always)]
        fn dsub(self, a: [__m512d; 2], b: [__m512d; 2]) -> [__m512d; 2] {
            intrinsics!([_mm512_sub_pd(a[0], b[0]), _mm512_sub_pd(a[1], b[1])])
        }
        #[inline(always)]
        fn dmul(self, a: [__m512d; 2], b: [__m512d; 2]) -> [__m512d; 2] {
            intrinsics!([_mm512_mul_pd(a[0], b[0]), _mm512_mul_pd(a[1], b[1])])
        }
    }
}
