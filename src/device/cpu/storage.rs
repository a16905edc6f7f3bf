//! What a CPU tensor holds: its f32 values, and for a frozen weight the same values packed
//! once for the frozen GEMM ([`super::frozen_gemm`]).

use std::ops::{Deref, DerefMut};

#[cfg(target_arch = "x86_64")]
use super::frozen_gemm::PackedWeight;

/// A CPU tensor's storage. It reads as the `Vec<f32>` of its values; any mutable access drops
/// the packed copy, so the copy can never disagree with the values.
#[derive(Default)]
pub struct CpuStorage {
    values: Vec<f32>,
    #[cfg(target_arch = "x86_64")]
    packed: Option<PackedWeight>,
}

impl CpuStorage {
    pub fn new(values: Vec<f32>) -> Self {
        CpuStorage {
            values,
            #[cfg(target_arch = "x86_64")]
            packed: None,
        }
    }
    /// The values packed as a linear layer's weight `[n, k]`, if [`CpuStorage::pack`] made them.
    #[cfg(target_arch = "x86_64")]
    pub fn packed(&self) -> Option<&PackedWeight> {
        self.packed.as_ref()
    }
    /// Keep a packed copy of the values read as a weight `[n, k]`.
    #[cfg(target_arch = "x86_64")]
    pub fn pack(&mut self, n: usize, k: usize) {
        self.packed = Some(PackedWeight::new(&self.values, n, k));
    }
}

impl Deref for CpuStorage {
    type Target = Vec<f32>;
    fn deref(&self) -> &Vec<f32> {
        &self.values
    }
}

impl DerefMut for CpuStorage {
    fn deref_mut(&mut self) -> &mut Vec<f32> {
        #[cfg(target_arch = "x86_64")]
        {
            self.packed = None;
        }
        &mut self.values
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::cpu::Cpu;
    use crate::device::{Backend, Layout};
    use crate::tensor::Rng;

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn any_mutable_access_drops_the_packed_copy() {
        let mut s = CpuStorage::new(vec![1.0; 6]);
        s.pack(2, 3);
        assert_eq!(s.packed().map(|p| p.dims()), Some((2, 3)));
        assert_eq!(s.len(), 6, "reads keep it");
        assert!(s.packed().is_some());
        s[0] = 2.0;
        assert!(s.packed().is_none());
    }

    /// A frozen weight changed afterwards (here by an op) gives the product of its new
    /// values, as the same weight unfrozen does.
    #[test]
    fn products_follow_a_frozen_weight_that_changes() {
        let cpu = Cpu::new();
        let mut rng = Rng::new(3);
        let x = cpu.upload(&rng.tensor([5, 40], -1.0, 1.0)).unwrap();
        let host_w = rng.tensor([33, 40], -1.0, 1.0);
        let mut frozen = cpu.freeze(cpu.upload(&host_w).unwrap()).unwrap();
        let mut plain = cpu.upload(&host_w).unwrap();
        let mut y = cpu.zeros(&[5, 33]).unwrap();
        let mut want = cpu.zeros(&[5, 33]).unwrap();
        for _ in 0..2 {
            cpu.matmul(&x, &frozen, None, &mut y, Layout::NT, false)
                .unwrap();
            cpu.matmul(&x, &plain, None, &mut want, Layout::NT, false)
                .unwrap();
            let (got, want) = (cpu.download(&y).unwrap(), cpu.download(&want).unwrap());
            for (g, w) in got.data.iter().zip(&want.data) {
                assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "{g} vs {w}");
            }
            cpu.scale(&mut frozen, -2.0).unwrap();
            cpu.scale(&mut plain, -2.0).unwrap();
        }
    }
}
