//! Shape validation shared by every backend. Each function checks one op's operands and
//! returns the sizes the op's loops need, or an `Error::Shape` naming the op and the shapes.

use super::{Backend, Layout, Tensor};
use crate::error::{shape_err, Result};

fn fmt_dims(d: &[usize]) -> String {
    format!("{d:?}")
}

/// Require `t` to have exactly the dims `want`.
pub fn exact<B: Backend + ?Sized>(op: &'static str, what: &str, t: &Tensor<B>, want: &[usize]) -> Result<()> {
    if t.dims() != want {
        return shape_err(op, format!("{what} is {} but must be {}", fmt_dims(t.dims()), fmt_dims(want)));
    }
    Ok(())
}

/// Require two tensors to have the same dims.
pub fn same<B: Backend + ?Sized>(op: &'static str, a: (&str, &Tensor<B>), b: (&str, &Tensor<B>)) -> Result<()> {
    if a.1.dims() != b.1.dims() {
        return shape_err(
            op,
            format!("{} {} and {} {} must have the same shape", a.0, fmt_dims(a.1.dims()), b.0, fmt_dims(b.1.dims())),
        );
    }
    Ok(())
}

/// Require two tensors to hold the same number of elements.
pub fn same_numel<B: Backend + ?Sized>(op: &'static str, a: (&str, &Tensor<B>), b: (&str, &Tensor<B>)) -> Result<()> {
    if a.1.numel() != b.1.numel() {
        return shape_err(
            op,
            format!("{} {} and {} {} must hold the same number of elements", a.0, fmt_dims(a.1.dims()), b.0, fmt_dims(b.1.dims())),
        );
    }
    Ok(())
}

/// Require rank >= `min`.
pub fn min_rank<B: Backend + ?Sized>(op: &'static str, what: &str, t: &Tensor<B>, min: usize) -> Result<()> {
    if t.dims().len() < min {
        return shape_err(op, format!("{what} {} must have at least {min} dimensions", fmt_dims(t.dims())));
    }
    Ok(())
}

/// Sizes of one matmul: `batch` independent products of `[m,k]·[k,n]`. `b_batched` is false
/// when one `b` is shared by all rows/batches; `a_stride`, `b_stride`, `out_stride` are the
/// element distances between consecutive batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulDims {
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub b_batched: bool,
}

pub fn matmul<B: Backend + ?Sized>(
    a: &Tensor<B>,
    b: &Tensor<B>,
    bias: Option<&Tensor<B>>,
    out: &Tensor<B>,
    layout: Layout,
) -> Result<MatmulDims> {
    const OP: &str = "matmul";
    let (ad, bd, od) = (a.dims(), b.dims(), out.dims());
    let err = |why: &str| {
        shape_err::<MatmulDims>(
            OP,
            format!("{layout:?}: a {} b {} out {}: {why}", fmt_dims(ad), fmt_dims(bd), fmt_dims(od)),
        )
    };
    if ad.len() < 2 || bd.len() < 2 || od.len() < 2 {
        return err("every operand needs at least 2 dimensions");
    }
    let last2 = |d: &[usize]| (d[d.len() - 2], d[d.len() - 1]);
    let dims = match layout {
        Layout::NN | Layout::NT if bd.len() == 2 => {
            let k = a.shape.last();
            let m = a.shape.rows();
            let (n, kb) = if layout == Layout::NN { (bd[1], bd[0]) } else { (bd[0], bd[1]) };
            if kb != k {
                return err(&format!("inner sizes differ ({k} vs {kb})"));
            }
            if od[..od.len() - 1] != ad[..ad.len() - 1] || od[od.len() - 1] != n {
                return err(&format!("out must be {:?}", [&ad[..ad.len() - 1], &[n]].concat()));
            }
            MatmulDims { batch: 1, m, n, k, b_batched: false }
        }
        Layout::TN if od.len() == 2 => {
            let m = a.shape.last();
            let n = b.shape.last();
            let k = a.shape.rows();
            if b.shape.rows() != k {
                return err(&format!("a and b must have the same rows ({k} vs {})", b.shape.rows()));
            }
            if od != [m, n] {
                return err(&format!("out must be [{m}, {n}]"));
            }
            MatmulDims { batch: 1, m, n, k, b_batched: false }
        }
        _ => {
            let batch_a = &ad[..ad.len() - 2];
            if batch_a != &bd[..bd.len() - 2] || batch_a != &od[..od.len() - 2] {
                return err("batch dimensions differ");
            }
            let batch = batch_a.iter().product();
            let (a0, a1) = last2(ad);
            let (b0, b1) = last2(bd);
            let (m, k) = if layout == Layout::TN { (a1, a0) } else { (a0, a1) };
            let (kb, n) = if layout == Layout::NT { (b1, b0) } else { (b0, b1) };
            if k != kb {
                return err(&format!("inner sizes differ ({k} vs {kb})"));
            }
            if last2(od) != (m, n) {
                return err(&format!("out must end in [{m}, {n}]"));
            }
            MatmulDims { batch, m, n, k, b_batched: true }
        }
    };
    if let Some(bias) = bias {
        if bias.dims() != [dims.n] {
            return err(&format!("bias is {} but must be [{}]", fmt_dims(bias.dims()), dims.n));
        }
    }
    Ok(dims)
}

/// A per-row op over `x [R, D]` with a `[D]` vector: returns (R, D).
pub fn rows_and_vec<B: Backend + ?Sized>(op: &'static str, x: &Tensor<B>, v: &Tensor<B>, vname: &str) -> Result<(usize, usize)> {
    min_rank(op, "x", x, 1)?;
    let d = x.shape.last();
    exact(op, vname, v, &[d])?;
    Ok((x.shape.rows(), d))
}

/// Packed qkv `[B, N, 3·D]` with `heads` heads: returns (B, N, D, head_dim).
pub fn qkv<B: Backend + ?Sized>(op: &'static str, qkv: &Tensor<B>, heads: usize) -> Result<(usize, usize, usize, usize)> {
    let d = qkv.dims();
    if d.len() != 3 || d[2] % 3 != 0 {
        return shape_err(op, format!("qkv {} must be [B, N, 3*D]", fmt_dims(d)));
    }
    let dim = d[2] / 3;
    if heads == 0 || dim % heads != 0 {
        return shape_err(op, format!("width {dim} of qkv {} is not divisible by {heads} heads", fmt_dims(d)));
    }
    Ok((d[0], d[1], dim, dim / heads))
}

/// `[.., H, W]` planes: returns (planes, H, W).
pub fn planes<B: Backend + ?Sized>(op: &'static str, what: &str, t: &Tensor<B>) -> Result<(usize, usize, usize)> {
    min_rank(op, what, t, 2)?;
    let d = t.dims();
    let (h, w) = (d[d.len() - 2], d[d.len() - 1]);
    Ok((d[..d.len() - 2].iter().product(), h, w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::cpu::Cpu;

    fn t(c: &Cpu, d: &[usize]) -> Tensor<Cpu> {
        c.zeros(d).unwrap()
    }

    #[test]
    fn matmul_shapes() {
        let c = Cpu::new();
        let d = matmul(&t(&c, &[2, 5, 7]), &t(&c, &[3, 7]), None, &t(&c, &[2, 5, 3]), Layout::NT).unwrap();
        assert_eq!(d, MatmulDims { batch: 1, m: 10, n: 3, k: 7, b_batched: false });
        let d = matmul(&t(&c, &[2, 5, 7]), &t(&c, &[2, 5, 3]), None, &t(&c, &[7, 3]), Layout::TN).unwrap();
        assert_eq!(d, MatmulDims { batch: 1, m: 7, n: 3, k: 10, b_batched: false });
        let d = matmul(&t(&c, &[4, 5, 7]), &t(&c, &[4, 7, 3]), None, &t(&c, &[4, 5, 3]), Layout::NN).unwrap();
        assert_eq!(d, MatmulDims { batch: 4, m: 5, n: 3, k: 7, b_batched: true });
        let e = matmul(&t(&c, &[5, 7]), &t(&c, &[3, 6]), None, &t(&c, &[5, 3]), Layout::NT).unwrap_err().to_string();
        assert!(e.contains("matmul") && e.contains("[5, 7]") && e.contains("[3, 6]"), "{e}");
        let bias = t(&c, &[4]);
        let e = matmul(&t(&c, &[5, 7]), &t(&c, &[3, 7]), Some(&bias), &t(&c, &[5, 3]), Layout::NT).unwrap_err();
        assert!(e.to_string().contains("bias"), "{e}");
    }
}
