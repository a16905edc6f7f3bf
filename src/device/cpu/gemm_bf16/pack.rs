//! Packing for the bf16 GEMM: a strided f32 block into k-major 32-bit slots, each a pair of
//! consecutive k rounded to bf16 (nearest even).
//!
//! Both operands pack the same way: an "index" axis (rows of `lhs`, columns of `rhs`) that
//! becomes the slot's lanes, and the depth axis k that becomes the slot sequence. When either
//! axis is contiguous in memory the copy runs on 16-wide vectors; at ViT batch 1 a weight
//! strip is reused by only 9 row panels, so a scalar pack would cost a third of the kernel
//! time (measured).

use super::{slot, K_PER_SLOT};
use std::arch::x86_64::*;

/// A strided f32 block: element (i, kk) is `data[i·is + kk·ks]`.
#[derive(Clone, Copy)]
pub(super) struct Block<'a> {
    pub data: &'a [f32],
    /// Stride of the index axis.
    pub is: usize,
    /// Stride of the depth axis.
    pub ks: usize,
}

/// `dst[s·ld + i] = slot(x(i0 + i, k0 + 2s), x(i0 + i, k0 + 2s + 1))` for `i < count ≤ ld`
/// and every slot of depth `kc` (depth past `kc` reads as zero). The caller has checked the
/// CPU features ([`super::available`]).
pub(super) fn pack(
    src: Block,
    (i0, count): (usize, usize),
    (k0, kc): (usize, usize),
    dst: &mut [u32],
    ld: usize,
) {
    let slots = kc.div_ceil(K_PER_SLOT);
    assert!(count <= ld && count <= MAX_COUNT && dst.len() >= slots * ld);
    if count == 0 || kc == 0 {
        return;
    }
    let last = (i0 + count - 1) * src.is + (k0 + kc - 1) * src.ks;
    assert!(last < src.data.len(), "gemm pack: block out of bounds");
    let base = src.data[i0 * src.is + k0 * src.ks..].as_ptr();
    // SAFETY: every element read is (i, kk) with i < count, kk < kc, inside `src.data` by the
    // assert above (masked-off vector lanes are not accessed); every write is below
    // slots·ld ≤ dst.len(); the CPU features were checked by the caller.
    unsafe {
        match (src.ks == 1, src.is == 1) {
            (true, _) => runs(base, src.is, count, kc, dst.as_mut_ptr(), ld),
            (_, true) => lines(base, src.ks, count, kc, dst.as_mut_ptr(), ld),
            _ => scalar(src, (i0, count), (k0, kc), dst, ld),
        }
    }
}

/// The most index lanes one pack writes (a row panel of the kernel).
const MAX_COUNT: usize = 32;

/// Any strides, one element at a time.
fn scalar(
    src: Block,
    (i0, count): (usize, usize),
    (k0, kc): (usize, usize),
    dst: &mut [u32],
    ld: usize,
) {
    let unit = K_PER_SLOT;
    let at = |i: usize, kk: usize| {
        if kk < kc {
            src.data[(i0 + i) * src.is + (k0 + kk) * src.ks]
        } else {
            0.0
        }
    };
    for (s, out) in dst.chunks_exact_mut(ld).take(kc.div_ceil(unit)).enumerate() {
        for (i, o) in out[..count].iter_mut().enumerate() {
            *o = slot(at(i, s * unit), at(i, s * unit + 1));
        }
    }
}

/// Lanes `0 .. n` of a 16-lane mask.
fn mask(n: usize) -> __mmask16 {
    if n >= 16 {
        0xffff
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}

/// Depth contiguous (each index is a run along k): 16 slots (32 k) of every run are
/// rounded in one vector and go through a small transpose buffer.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn runs(base: *const f32, is: usize, count: usize, kc: usize, dst: *mut u32, ld: usize) {
    let slots = kc.div_ceil(K_PER_SLOT);
    let mut tmp = [[0u32; 16]; MAX_COUNT];
    for s0 in (0..slots).step_by(16) {
        let avail = kc - s0 * K_PER_SLOT;
        for (i, t) in tmp.iter_mut().enumerate().take(count) {
            let p = base.wrapping_add(i * is + s0 * K_PER_SLOT);
            // SAFETY: masked loads touch only the `avail` elements left in the run; `t` is 16
            // u32; the bf16 and integer vectors are the same 64 bytes. Element order is kept:
            // u16 lane 2s is k = 2s, the low half of slot s.
            unsafe {
                let lo = _mm512_maskz_loadu_ps(mask(avail), p);
                let hi = _mm512_maskz_loadu_ps(mask(avail.saturating_sub(16)), p.wrapping_add(16));
                let v = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo));
                _mm512_storeu_si512(t.as_mut_ptr().cast(), v);
            }
        }
        for s in 0..16.min(slots - s0) {
            for (i, t) in tmp.iter().enumerate().take(count) {
                // SAFETY: (s0 + s)·ld + i < slots·ld (the caller's bound).
                unsafe { *dst.add((s0 + s) * ld + i) = t[s] };
            }
        }
    }
}

/// Index contiguous (each k is a line across the index): two lines (k, k+1) rounded
/// together and interleaved into pairs.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn lines(base: *const f32, ks: usize, count: usize, kc: usize, dst: *mut u32, ld: usize) {
    // u16 lane 2i takes line k's element i (lane i), lane 2i+1 line k+1's (lane 16 + i).
    let idx: [i16; 32] = std::array::from_fn(|l| ((l % 2) * 16 + l / 2) as i16);
    // SAFETY: a plain 64-byte load of a local array.
    let idx = unsafe { _mm512_loadu_si512(idx.as_ptr().cast()) };
    for s in 0..kc.div_ceil(2) {
        let kk = 2 * s;
        for c in (0..count).step_by(16) {
            let m = mask(count - c);
            let m1 = if kk + 1 < kc { m } else { 0 };
            // SAFETY: lanes below `count` of lines kk and kk + 1 (when inside the block);
            // dst row s has ld ≥ count slots.
            unsafe {
                let a = _mm512_maskz_loadu_ps(m, base.wrapping_add(kk * ks + c));
                let b = _mm512_maskz_loadu_ps(m1, base.wrapping_add((kk + 1) * ks + c));
                let both = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(b, a));
                let pairs = _mm512_permutexvar_epi16(idx, both);
                _mm512_mask_storeu_epi32(dst.add(s * ld + c).cast(), m, pairs);
            }
        }
    }
}
