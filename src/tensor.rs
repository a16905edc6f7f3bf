//! Shapes and host-side tensors. Device tensors are `device::Tensor<B>`; this module holds
//! what lives in ordinary memory: f32 and bf16 buffers with a shape.

use crate::error::{shape_err, Result};
use half::bf16;

/// A row-major shape. Dimensions are listed outermost first.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Shape(pub Vec<usize>);

impl Shape {
    pub fn new(dims: &[usize]) -> Self {
        Shape(dims.to_vec())
    }
    pub fn dims(&self) -> &[usize] {
        &self.0
    }
    pub fn rank(&self) -> usize {
        self.0.len()
    }
    pub fn numel(&self) -> usize {
        self.0.iter().product()
    }
    /// Size of the last dimension (1 for a scalar).
    pub fn last(&self) -> usize {
        self.0.last().copied().unwrap_or(1)
    }
    /// Product of all dimensions but the last: the number of rows of a row-major matrix view.
    pub fn rows(&self) -> usize {
        // Not numel / last: that is 0 for a last dimension of 0.
        self.0.iter().rev().skip(1).product()
    }
}

impl std::fmt::Debug for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl From<&[usize]> for Shape {
    fn from(d: &[usize]) -> Self {
        Shape(d.to_vec())
    }
}

impl<const N: usize> From<[usize; N]> for Shape {
    fn from(d: [usize; N]) -> Self {
        Shape(d.to_vec())
    }
}

/// Element types a host buffer can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F32,
    BF16,
}

/// An f32 tensor in host memory: the exchange format between backends, files and tests.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Shape,
    pub data: Vec<f32>,
}

impl HostTensor {
    pub fn new(shape: impl Into<Shape>, data: Vec<f32>) -> Result<Self> {
        let shape = shape.into();
        if shape.numel() != data.len() {
            return shape_err(
                "HostTensor::new",
                format!(
                    "shape {shape} holds {} values, data has {}",
                    shape.numel(),
                    data.len()
                ),
            );
        }
        Ok(HostTensor { shape, data })
    }
    pub fn zeros(shape: impl Into<Shape>) -> Self {
        let shape = shape.into();
        let n = shape.numel();
        HostTensor {
            shape,
            data: vec![0.0; n],
        }
    }
    pub fn filled(shape: impl Into<Shape>, v: f32) -> Self {
        let shape = shape.into();
        let n = shape.numel();
        HostTensor {
            shape,
            data: vec![v; n],
        }
    }
    pub fn dims(&self) -> &[usize] {
        self.shape.dims()
    }
    pub fn numel(&self) -> usize {
        self.data.len()
    }
    /// Same data, another shape with the same number of elements.
    pub fn reshape(mut self, shape: impl Into<Shape>) -> Result<Self> {
        let shape = shape.into();
        if shape.numel() != self.data.len() {
            return shape_err("reshape", format!("{} to {shape}", self.shape));
        }
        self.shape = shape;
        Ok(self)
    }
    /// Round every value to bf16 and back: what a bf16 store does to it.
    pub fn round_bf16(&self) -> HostTensor {
        HostTensor {
            shape: self.shape.clone(),
            data: self
                .data
                .iter()
                .map(|&v| bf16::from_f32(v).to_f32())
                .collect(),
        }
    }
    pub fn to_bf16(&self) -> Vec<bf16> {
        self.data.iter().map(|&v| bf16::from_f32(v)).collect()
    }
    pub fn from_bf16(shape: impl Into<Shape>, data: &[bf16]) -> Result<Self> {
        HostTensor::new(shape, data.iter().map(|v| v.to_f32()).collect())
    }
    /// Largest absolute element-wise difference to another tensor of the same shape.
    pub fn max_abs_diff(&self, other: &HostTensor) -> Result<f32> {
        if self.shape != other.shape {
            return shape_err("max_abs_diff", format!("{} vs {}", self.shape, other.shape));
        }
        Ok(self
            .data
            .iter()
            .zip(&other.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max))
    }
}

/// A small deterministic RNG (SplitMix64) for tests, initialisation and data order: the same
/// seed gives the same numbers on every machine, with no dependency on a crate's version.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rng {
    pub state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng { state: seed }
    }
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let u2 = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }
    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
    /// A tensor of values uniform in [lo, hi).
    pub fn tensor(&mut self, shape: impl Into<Shape>, lo: f32, hi: f32) -> HostTensor {
        let shape = shape.into();
        let data = (0..shape.numel())
            .map(|_| lo + (hi - lo) * self.uniform())
            .collect();
        HostTensor { shape, data }
    }
    /// In-place Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_rows_and_numel() {
        let s = Shape::new(&[2, 3, 5]);
        assert_eq!(s.numel(), 30);
        assert_eq!(s.rows(), 6);
        assert_eq!(s.last(), 5);
        assert_eq!(Shape::new(&[4, 0]).rows(), 4);
        assert_eq!(Shape::new(&[]).rows(), 1);
    }

    #[test]
    fn host_tensor_rejects_wrong_length() {
        let e = HostTensor::new([2, 3], vec![0.0; 5])
            .unwrap_err()
            .to_string();
        assert!(e.contains("[2, 3]") && e.contains('5'), "{e}");
    }

    #[test]
    fn rng_is_reproducible_and_roughly_uniform() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let xs: Vec<f32> = (0..10_000).map(|_| a.uniform()).collect();
        let ys: Vec<f32> = (0..10_000).map(|_| b.uniform()).collect();
        assert_eq!(xs, ys);
        let mean = xs.iter().sum::<f32>() / xs.len() as f32;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
        assert!(xs.iter().all(|&x| (0.0..1.0).contains(&x)));
    }
}
