//! The counter-based random numbers that dropout uses. A mask element is a pure function of
//! (seed, index), so the forward and the backward, and every backend (the CUDA kernels
//! implement the same function), draw the same mask without storing it.

/// SplitMix64's finaliser: a bijective 64-bit mix with good avalanche.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Uniform in [0, 1) with 24 bits, for element `index` of the stream `seed`.
#[inline]
pub fn uniform_at(seed: u64, index: u64) -> f32 {
    let z = mix64(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    (z >> 40) as f32 * (1.0 / 16_777_216.0)
}

/// Whether dropout with drop probability `p` keeps element `index` under `seed`.
#[inline]
pub fn dropout_keep(seed: u64, index: u64, p: f32) -> bool {
    uniform_at(seed, index) >= p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_rate_matches_p() {
        let n = 200_000u64;
        let kept = (0..n).filter(|&i| dropout_keep(42, i, 0.2)).count() as f64 / n as f64;
        assert!((kept - 0.8).abs() < 0.005, "kept {kept}");
        let other = (0..n).filter(|&i| dropout_keep(43, i, 0.2)).count() as f64 / n as f64;
        assert!((other - 0.8).abs() < 0.005);
        // Different seeds give different masks.
        let same = (0..1000).filter(|&i| dropout_keep(42, i, 0.5) == dropout_keep(43, i, 0.5));
        assert!(same.count() < 600);
    }
}
