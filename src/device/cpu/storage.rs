//! What a CPU tensor holds: its f32 values, or, for a frozen weight, the same values packed
//! once for the frozen GEMM ([`super::frozen_gemm`]) and unpacked again only if read.

use std::ops::{Deref, DerefMut};
use std::sync::OnceLock;

#[cfg(target_arch = "x86_64")]
use super::frozen_gemm::PackedWeight;

/// A CPU tensor's storage. It reads as the `Vec<f32>` of its values. A packed weight keeps
/// only the packed copy (a frozen teacher's weights are not held twice); its values come back
/// from that copy on the first read, which nothing in a forward does. Any mutable access drops
/// the packed copy, so it can never disagree with the values.
pub struct CpuStorage {
    /// The values; empty while only the packed copy holds them.
    values: OnceLock<Vec<f32>>,
    #[cfg(target_arch = "x86_64")]
    packed: Option<PackedWeight>,
}

impl CpuStorage {
    pub fn new(values: Vec<f32>) -> Self {
        CpuStorage {
            values: OnceLock::from(values),
            #[cfg(target_arch = "x86_64")]
            packed: None,
        }
    }
    /// The values packed as a linear layer's weight `[n, k]`, if [`CpuStorage::pack`] made them.
    #[cfg(target_arch = "x86_64")]
    pub fn packed(&self) -> Option<&PackedWeight> {
        self.packed.as_ref()
    }
    /// Hold the values read as a weight `[n, k]` packed, instead of as they are.
    #[cfg(target_arch = "x86_64")]
    pub fn pack(&mut self, n: usize, k: usize) {
        self.packed = Some(PackedWeight::new(self, n, k));
        self.values = OnceLock::new();
    }
    /// The values, rebuilt from the packed copy.
    fn unpacked(&self) -> Vec<f32> {
        #[cfg(target_arch = "x86_64")]
        if let Some(p) = &self.packed {
            return p.unpack();
        }
        unreachable!("CPU storage holds neither values nor a packed copy")
    }
}

impl Deref for CpuStorage {
    type Target = Vec<f32>;
    fn deref(&self) -> &Vec<f32> {
        self.values.get_or_init(|| self.unpacked())
    }
}

impl DerefMut for CpuStorage {
    fn deref_mut(&mut self) -> &mut Vec<f32> {
        if self.values.get().is_none() {
            self.values = OnceLock::from(self.unpacked());
        }
        #[cfg(target_arch = "x86_64")]
        {
            self.packed = None;
        }
        self.values.get_mut().expect("values were just set")
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
    fn a_packed_weight_is_held_once_and_reads_back_unchanged() {
        let values: Vec<f32> = (0..70 * 3).map(|i| i as f32 * 0.5 - 7.0).collect();
        let mut s = CpuStorage::new(values.clone());
        s.pack(70, 3);
        assert_eq!(s.packed().map(|p| p.dims()), Some((70, 3)));
        assert!(s.values.get().is_none(), "the values are held twice");
        assert_eq!(*s, values, "a read rebuilds the values");
        assert!(s.packed().is_some(), "a read keeps the packed copy");
        s[0] = 2.0;
        assert!(s.packed().is_none(), "a write drops it");
        assert_eq!(s[..3], [2.0, values[1], values[2]]);

        let mut t = CpuStorage::new(values.clone());
        t.pack(70, 3);
        t[1] = 5.0;
        assert!(t.packed().is_none());
        assert_eq!(
            t[..3],
            [values[0], 5.0, values[2]],
            "a first access that writes"
        );
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
