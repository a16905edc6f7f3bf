//! Shape validation shared by every backend. Each function checks one op's operands and
//! returns the sizes the op's loops need, or an `Error::Shape` naming the op and the shapes.

use super::{AdamStep, Backend, Interp, Layout, Tensor};
use crate::error::{shape_err, Error, Result};
use crate::tensor::HostTensor;

fn fmt_dims(d: &[usize]) -> String {
    format!("{d:?}")
}

/// Require `t` to have exactly the dims `want`.
pub fn exact<B: Backend + ?Sized>(
    op: &'static str,
    what: &str,
    t: &Tensor<B>,
    want: &[usize],
) -> Result<()> {
    if t.dims() != want {
        return shape_err(
            op,
            format!(
                "{what} is {} but must be {}",
                fmt_dims(t.dims()),
                fmt_dims(want)
            ),
        );
    }
    Ok(())
}

/// Require two tensors to have the same dims.
pub fn same<B: Backend + ?Sized>(
    op: &'static str,
    a: (&str, &Tensor<B>),
    b: (&str, &Tensor<B>),
) -> Result<()> {
    if a.1.dims() != b.1.dims() {
        return shape_err(
            op,
            format!(
                "{} {} and {} {} must have the same shape",
                a.0,
                fmt_dims(a.1.dims()),
                b.0,
                fmt_dims(b.1.dims())
            ),
        );
    }
    Ok(())
}

/// Require two tensors to hold the same number of elements.
pub fn same_numel<B: Backend + ?Sized>(
    op: &'static str,
    a: (&str, &Tensor<B>),
    b: (&str, &Tensor<B>),
) -> Result<()> {
    if a.1.numel() != b.1.numel() {
        return shape_err(
            op,
            format!(
                "{} {} and {} {} must hold the same number of elements",
                a.0,
                fmt_dims(a.1.dims()),
                b.0,
                fmt_dims(b.1.dims())
            ),
        );
    }
    Ok(())
}

/// Require rank >= `min`.
pub fn min_rank<B: Backend + ?Sized>(
    op: &'static str,
    what: &str,
    t: &Tensor<B>,
    min: usize,
) -> Result<()> {
    if t.dims().len() < min {
        return shape_err(
            op,
            format!(
                "{what} {} must have at least {min} dimensions",
                fmt_dims(t.dims())
            ),
        );
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
            format!(
                "{layout:?}: a {} b {} out {}: {why}",
                fmt_dims(ad),
                fmt_dims(bd),
                fmt_dims(od)
            ),
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
            let (n, kb) = if layout == Layout::NN {
                (bd[1], bd[0])
            } else {
                (bd[0], bd[1])
            };
            if kb != k {
                return err(&format!("inner sizes differ ({k} vs {kb})"));
            }
            if od[..od.len() - 1] != ad[..ad.len() - 1] || od[od.len() - 1] != n {
                return err(&format!(
                    "out must be {:?}",
                    [&ad[..ad.len() - 1], &[n]].concat()
                ));
            }
            MatmulDims {
                batch: 1,
                m,
                n,
                k,
                b_batched: false,
            }
        }
        Layout::TN if od.len() == 2 => {
            let m = a.shape.last();
            let n = b.shape.last();
            let k = a.shape.rows();
            if b.shape.rows() != k {
                return err(&format!(
                    "a and b must have the same rows ({k} vs {})",
                    b.shape.rows()
                ));
            }
            if od != [m, n] {
                return err(&format!("out must be [{m}, {n}]"));
            }
            MatmulDims {
                batch: 1,
                m,
                n,
                k,
                b_batched: false,
            }
        }
        _ => {
            let batch_a = &ad[..ad.len() - 2];
            if batch_a != &bd[..bd.len() - 2] || batch_a != &od[..od.len() - 2] {
                return err("batch dimensions differ");
            }
            let batch = batch_a.iter().product();
            let (a0, a1) = last2(ad);
            let (b0, b1) = last2(bd);
            let (m, k) = if layout == Layout::TN {
                (a1, a0)
            } else {
                (a0, a1)
            };
            let (kb, n) = if layout == Layout::NT {
                (b1, b0)
            } else {
                (b0, b1)
            };
            if k != kb {
                return err(&format!("inner sizes differ ({k} vs {kb})"));
            }
            if last2(od) != (m, n) {
                return err(&format!("out must end in [{m}, {n}]"));
            }
            MatmulDims {
                batch,
                m,
                n,
                k,
                b_batched: true,
            }
        }
    };
    if let Some(bias) = bias {
        if bias.dims() != [dims.n] {
            return err(&format!(
                "bias is {} but must be [{}]",
                fmt_dims(bias.dims()),
                dims.n
            ));
        }
    }
    Ok(dims)
}

/// A per-row op over `x [R, D]` with a `[D]` vector: returns (R, D).
pub fn rows_and_vec<B: Backend + ?Sized>(
    op: &'static str,
    x: &Tensor<B>,
    v: &Tensor<B>,
    vname: &str,
) -> Result<(usize, usize)> {
    min_rank(op, "x", x, 1)?;
    let d = x.shape.last();
    exact(op, vname, v, &[d])?;
    Ok((x.shape.rows(), d))
}

/// Packed qkv `[B, N, 3·D]` with `heads` heads: returns (B, N, D, head_dim).
pub fn qkv<B: Backend + ?Sized>(
    op: &'static str,
    qkv: &Tensor<B>,
    heads: usize,
) -> Result<(usize, usize, usize, usize)> {
    let d = qkv.dims();
    if d.len() != 3 || !d[2].is_multiple_of(3) {
        return shape_err(op, format!("qkv {} must be [B, N, 3*D]", fmt_dims(d)));
    }
    let dim = d[2] / 3;
    if heads == 0 || !dim.is_multiple_of(heads) {
        return shape_err(
            op,
            format!(
                "width {dim} of qkv {} is not divisible by {heads} heads",
                fmt_dims(d)
            ),
        );
    }
    Ok((d[0], d[1], dim, dim / heads))
}

/// `[.., H, W]` planes: returns (planes, H, W).
pub fn planes<B: Backend + ?Sized>(
    op: &'static str,
    what: &str,
    t: &Tensor<B>,
) -> Result<(usize, usize, usize)> {
    min_rank(op, what, t, 2)?;
    let d = t.dims();
    let (h, w) = (d[d.len() - 2], d[d.len() - 1]);
    Ok((d[..d.len() - 2].iter().product(), h, w))
}

/// Require `t` to hold exactly `n` elements (per-row outputs such as `mean [R]` may keep the
/// leading dims of their input, e.g. `[B, N]` for `x [B, N, D]`).
pub fn numel<B: Backend + ?Sized>(
    op: &'static str,
    what: &str,
    t: &Tensor<B>,
    n: usize,
) -> Result<()> {
    if t.numel() != n {
        return shape_err(
            op,
            format!("{what} {} must hold {n} elements", fmt_dims(t.dims())),
        );
    }
    Ok(())
}

/// An invalid scalar argument (a probability, a kernel size, a step count).
pub fn arg(op: &'static str, ok: bool, why: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!("{op}: {}", why())))
    }
}

/// `upload`: a HostTensor's fields are public, so its data may disagree with its shape;
/// copying it would then read or write past one of the two buffers.
pub fn upload(host: &HostTensor) -> Result<()> {
    if host.data.len() != host.shape.numel() {
        return shape_err(
            "upload",
            format!(
                "shape {} holds {} values, data has {}",
                host.shape,
                host.shape.numel(),
                host.data.len()
            ),
        );
    }
    Ok(())
}

/// `layernorm_fwd`: returns (R, D).
pub fn layernorm_fwd<B: Backend + ?Sized>(
    x: &Tensor<B>,
    w: &Tensor<B>,
    b: &Tensor<B>,
    y: &Tensor<B>,
    mean: &Tensor<B>,
    rstd: &Tensor<B>,
) -> Result<(usize, usize)> {
    const OP: &str = "layernorm_fwd";
    let (r, d) = rows_and_vec(OP, x, w, "w")?;
    exact(OP, "b", b, &[d])?;
    same(OP, ("x", x), ("y", y))?;
    numel(OP, "mean", mean, r)?;
    numel(OP, "rstd", rstd, r)?;
    Ok((r, d))
}

/// `layernorm_bwd`: returns (R, D).
#[allow(clippy::too_many_arguments)]
pub fn layernorm_bwd<B: Backend + ?Sized>(
    dy: &Tensor<B>,
    x: &Tensor<B>,
    w: &Tensor<B>,
    mean: &Tensor<B>,
    rstd: &Tensor<B>,
    dx: &Tensor<B>,
    dw: &Tensor<B>,
    db: &Tensor<B>,
) -> Result<(usize, usize)> {
    const OP: &str = "layernorm_bwd";
    let (r, d) = rows_and_vec(OP, x, w, "w")?;
    same(OP, ("dy", dy), ("x", x))?;
    same(OP, ("dx", dx), ("x", x))?;
    exact(OP, "dw", dw, &[d])?;
    exact(OP, "db", db, &[d])?;
    numel(OP, "mean", mean, r)?;
    numel(OP, "rstd", rstd, r)?;
    Ok((r, d))
}

/// Sizes of one attention call over packed qkv.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnDims {
    pub batch: usize,
    pub n: usize,
    pub dim: usize,
    pub heads: usize,
    pub head_dim: usize,
}

fn attn_dims<B: Backend + ?Sized>(
    op: &'static str,
    t: &Tensor<B>,
    heads: usize,
) -> Result<AttnDims> {
    let (batch, n, dim, head_dim) = qkv(op, t, heads)?;
    Ok(AttnDims {
        batch,
        n,
        dim,
        heads,
        head_dim,
    })
}

/// `attention_fwd`.
pub fn attention_fwd<B: Backend + ?Sized>(
    qkv_t: &Tensor<B>,
    heads: usize,
    out: &Tensor<B>,
    lse: &Tensor<B>,
) -> Result<AttnDims> {
    const OP: &str = "attention_fwd";
    let s = attn_dims(OP, qkv_t, heads)?;
    exact(OP, "out", out, &[s.batch, s.n, s.dim])?;
    exact(OP, "lse", lse, &[s.batch, heads, s.n])?;
    Ok(s)
}

/// `attention_bwd`.
pub fn attention_bwd<B: Backend + ?Sized>(
    dout: &Tensor<B>,
    qkv_t: &Tensor<B>,
    out: &Tensor<B>,
    lse: &Tensor<B>,
    heads: usize,
    dqkv: &Tensor<B>,
) -> Result<AttnDims> {
    const OP: &str = "attention_bwd";
    let s = attn_dims(OP, qkv_t, heads)?;
    exact(OP, "dout", dout, &[s.batch, s.n, s.dim])?;
    exact(OP, "out", out, &[s.batch, s.n, s.dim])?;
    exact(OP, "lse", lse, &[s.batch, heads, s.n])?;
    same(OP, ("dqkv", dqkv), ("qkv", qkv_t))?;
    Ok(s)
}

/// `linear_attention_fwd`.
pub fn linear_attention_fwd<B: Backend + ?Sized>(
    qkv_t: &Tensor<B>,
    heads: usize,
    eps: f32,
    out: &Tensor<B>,
) -> Result<AttnDims> {
    const OP: &str = "linear_attention_fwd";
    let s = attn_dims(OP, qkv_t, heads)?;
    exact(OP, "out", out, &[s.batch, s.n, s.dim])?;
    arg(OP, eps >= 0.0, || format!("eps {eps} must be >= 0"))?;
    Ok(s)
}

/// `linear_attention_bwd`.
pub fn linear_attention_bwd<B: Backend + ?Sized>(
    dout: &Tensor<B>,
    qkv_t: &Tensor<B>,
    heads: usize,
    eps: f32,
    dqkv: &Tensor<B>,
) -> Result<AttnDims> {
    const OP: &str = "linear_attention_bwd";
    let s = attn_dims(OP, qkv_t, heads)?;
    exact(OP, "dout", dout, &[s.batch, s.n, s.dim])?;
    same(OP, ("dqkv", dqkv), ("qkv", qkv_t))?;
    arg(OP, eps >= 0.0, || format!("eps {eps} must be >= 0"))?;
    Ok(s)
}

/// `bias_gelu_bwd`: returns (R, n).
pub fn bias_gelu_bwd<B: Backend + ?Sized>(
    dy: &Tensor<B>,
    x: &Tensor<B>,
    bias: &Tensor<B>,
    dx: &Tensor<B>,
    dbias: &Tensor<B>,
) -> Result<(usize, usize)> {
    const OP: &str = "bias_gelu_bwd";
    let (r, n) = rows_and_vec(OP, x, bias, "bias")?;
    same(OP, ("dy", dy), ("x", x))?;
    same(OP, ("dx", dx), ("x", x))?;
    exact(OP, "dbias", dbias, &[n])?;
    Ok((r, n))
}

/// `residual_fwd` / `residual_bwd`: `x`, `y`, `out` of one shape and an optional `gamma [D]`;
/// returns (R, D).
pub fn residual<B: Backend + ?Sized>(
    op: &'static str,
    x: (&str, &Tensor<B>),
    y: (&str, &Tensor<B>),
    out: (&str, &Tensor<B>),
    gamma: Option<(&str, &Tensor<B>)>,
) -> Result<(usize, usize)> {
    same(op, x, y)?;
    same(op, x, out)?;
    min_rank(op, x.0, x.1, 1)?;
    let d = x.1.shape.last();
    if let Some((name, g)) = gamma {
        exact(op, name, g, &[d])?;
    }
    Ok((x.1.shape.rows(), d))
}

/// `dropout_fwd` / `dropout_bwd`.
pub fn dropout<B: Backend + ?Sized>(
    op: &'static str,
    x: (&str, &Tensor<B>),
    out: (&str, &Tensor<B>),
    p: f32,
) -> Result<()> {
    same(op, x, out)?;
    arg(op, (0.0..1.0).contains(&p), || {
        format!("drop probability {p} must be in [0, 1)")
    })
}

/// `patchify`: returns (B, C, H, W).
pub fn patchify<B: Backend + ?Sized>(
    img: &Tensor<B>,
    patch: usize,
    out: &Tensor<B>,
) -> Result<(usize, usize, usize, usize)> {
    const OP: &str = "patchify";
    let d = img.dims();
    if d.len() != 4 || patch == 0 || !d[2].is_multiple_of(patch) || !d[3].is_multiple_of(patch) {
        return shape_err(
            OP,
            format!(
                "img {} must be [B, C, H, W] with H and W multiples of the patch {patch}",
                fmt_dims(d)
            ),
        );
    }
    let (b, c, h, w) = (d[0], d[1], d[2], d[3]);
    exact(
        OP,
        "out",
        out,
        &[b, (h / patch) * (w / patch), c * patch * patch],
    )?;
    Ok((b, c, h, w))
}

/// Sizes of the token embedding: `batch` images, `patches` patch tokens, `regs` registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EmbedDims {
    pub batch: usize,
    pub patches: usize,
    pub regs: usize,
    pub dim: usize,
}

/// `embed_tokens_fwd` and, with the gradients in the same places, `embed_tokens_bwd`.
pub fn embed_tokens<B: Backend + ?Sized>(
    op: &'static str,
    emb: &Tensor<B>,
    cls: &Tensor<B>,
    pos: &Tensor<B>,
    regs: Option<&Tensor<B>>,
    out: &Tensor<B>,
) -> Result<EmbedDims> {
    let d = emb.dims();
    if d.len() != 3 {
        return shape_err(
            op,
            format!("patch embeddings {} must be [B, P, D]", fmt_dims(d)),
        );
    }
    let (batch, patches, dim) = (d[0], d[1], d[2]);
    exact(op, "cls", cls, &[dim])?;
    exact(op, "pos", pos, &[1 + patches, dim])?;
    let nregs = match regs {
        Some(r) => {
            let rd = r.dims();
            if rd.len() != 2 || rd[1] != dim {
                return shape_err(op, format!("registers {} must be [R, {dim}]", fmt_dims(rd)));
            }
            rd[0]
        }
        None => 0,
    };
    exact(op, "out", out, &[batch, 1 + nregs + patches, dim])?;
    Ok(EmbedDims {
        batch,
        patches,
        regs: nregs,
        dim,
    })
}

/// `slice_tokens` / `unslice_tokens_add`: `full [B, N, D]`, `part [B, M, D]` with
/// `start + M <= N`; returns (B, N, M, D).
pub fn token_slice<B: Backend + ?Sized>(
    op: &'static str,
    full: (&str, &Tensor<B>),
    part: (&str, &Tensor<B>),
    start: usize,
) -> Result<(usize, usize, usize, usize)> {
    let (fd, pd) = (full.1.dims(), part.1.dims());
    if fd.len() != 3 || pd.len() != 3 || fd[0] != pd[0] || fd[2] != pd[2] || start + pd[1] > fd[1] {
        return shape_err(
            op,
            format!(
                "{} {} and {} {} must be [B, N, D] and [B, M, D] with start {start} + M <= N",
                full.0,
                fmt_dims(fd),
                part.0,
                fmt_dims(pd)
            ),
        );
    }
    Ok((fd[0], fd[1], pd[1], fd[2]))
}

/// `group_mean_fwd` / `group_mean_bwd`: a non-empty list of tensors shaped like `one`.
pub fn group<B: Backend + ?Sized>(
    op: &'static str,
    list: &[&Tensor<B>],
    one: (&str, &Tensor<B>),
) -> Result<()> {
    if list.is_empty() {
        return shape_err(
            op,
            format!("the group is empty ({} {})", one.0, fmt_dims(one.1.dims())),
        );
    }
    for t in list {
        same(op, ("group member", t), one)?;
    }
    Ok(())
}

/// `cosine_distance_fwd` / `_bwd`: `a`, `b [R, C]` and a per-row `d` of R elements;
/// returns (R, C).
pub fn cosine_distance<B: Backend + ?Sized>(
    op: &'static str,
    a: &Tensor<B>,
    b: &Tensor<B>,
    d: (&str, &Tensor<B>),
) -> Result<(usize, usize)> {
    same(op, ("a", a), ("b", b))?;
    min_rank(op, "a", a, 1)?;
    numel(op, d.0, d.1, a.shape.rows())?;
    Ok((a.shape.rows(), a.shape.last()))
}

/// `global_cosine_fwd` / `_bwd`: `a`, `b [B, T, C]`, `point_dist [B, T]`, `stats [B, 3]`;
/// returns (B, T, C).
pub fn global_cosine<B: Backend + ?Sized>(
    op: &'static str,
    a: &Tensor<B>,
    b: &Tensor<B>,
    point_dist: &Tensor<B>,
    stats: &Tensor<B>,
) -> Result<(usize, usize, usize)> {
    same(op, ("a", a), ("b", b))?;
    let d = a.dims();
    if d.len() != 3 {
        return shape_err(op, format!("a {} must be [B, T, C]", fmt_dims(d)));
    }
    exact(op, "point_dist", point_dist, &[d[0], d[1]])?;
    exact(op, "stats", stats, &[d[0], 3])?;
    Ok((d[0], d[1], d[2]))
}

/// The number of tokens that keep their whole gradient under Dinomaly's hard mining:
/// `k = ⌊numel · (1 - p)⌋` (Python's `int(numel * (1 - p))`, here from an f32 `p` widened
/// to f64, so at exact multiples it can differ by one from a run that kept p in f64).
pub fn hard_mining_k(op: &'static str, numel: usize, p: f32) -> Result<usize> {
    arg(op, (0.0..=1.0).contains(&p), || {
        format!("hard-mining fraction {p} must be in [0, 1]")
    })?;
    Ok((numel as f64 * (1.0 - p as f64)).floor() as usize)
}

/// `adamw_step` / `stable_adamw_step`: returns the element count.
pub fn adam<B: Backend + ?Sized>(
    op: &'static str,
    param: &Tensor<B>,
    grad: &Tensor<B>,
    m: &Tensor<B>,
    v: &Tensor<B>,
    vmax: Option<&Tensor<B>>,
    hp: &AdamStep,
) -> Result<usize> {
    same(op, ("grad", grad), ("param", param))?;
    same(op, ("m", m), ("param", param))?;
    same(op, ("v", v), ("param", param))?;
    match (vmax, hp.amsgrad) {
        (Some(vm), true) => same(op, ("vmax", vm), ("param", param))?,
        (None, false) => {}
        (None, true) => {
            return shape_err(
                op,
                format!(
                    "amsgrad needs vmax shaped like param {}",
                    fmt_dims(param.dims())
                ),
            )
        }
        (Some(vm), false) => {
            return shape_err(
                op,
                format!("vmax {} given but amsgrad is off", fmt_dims(vm.dims())),
            )
        }
    }
    arg(op, hp.t >= 1, || {
        "the step count t is 1-based and must be >= 1".into()
    })?;
    Ok(param.numel())
}

/// `resize`: returns (planes, H, W, H2, W2).
pub fn resize<B: Backend + ?Sized>(
    x: &Tensor<B>,
    out: &Tensor<B>,
) -> Result<(usize, usize, usize, usize, usize)> {
    const OP: &str = "resize";
    let (p, h, w) = planes(OP, "x", x)?;
    let (_, h2, w2) = planes(OP, "out", out)?;
    let (xd, od) = (x.dims(), out.dims());
    if xd[..xd.len() - 2] != od[..od.len() - 2] || h == 0 || w == 0 || h2 == 0 || w2 == 0 {
        return shape_err(
            OP,
            format!(
                "x {} and out {} must share leading dims and have non-empty planes",
                fmt_dims(xd),
                fmt_dims(od)
            ),
        );
    }
    Ok((p, h, w, h2, w2))
}

/// `resize`'s interpolation parameters: scale factors, when given, must be positive.
pub fn resize_interp(interp: Interp) -> Result<()> {
    if let Interp::Bicubic {
        scale: Some((sh, sw)),
    } = interp
    {
        arg("resize", sh > 0.0 && sw > 0.0, || {
            format!("scale factors ({sh}, {sw}) must be positive")
        })?;
    }
    Ok(())
}

/// `gaussian_blur`: returns (planes, H, W).
pub fn gaussian_blur<B: Backend + ?Sized>(
    x: &Tensor<B>,
    sigma: f32,
    ksize: usize,
    out: &Tensor<B>,
) -> Result<(usize, usize, usize)> {
    const OP: &str = "gaussian_blur";
    same(OP, ("x", x), ("out", out))?;
    let dims = planes(OP, "x", x)?;
    // An even kernel with padding ksize/2 would change the plane size.
    arg(OP, ksize % 2 == 1, || {
        format!("kernel size {ksize} must be odd")
    })?;
    arg(OP, sigma > 0.0 && sigma.is_finite(), || {
        format!("sigma {sigma} must be positive")
    })?;
    Ok(dims)
}

/// `topk_mean`: returns (R, M).
pub fn topk_mean<B: Backend + ?Sized>(
    x: &Tensor<B>,
    k: usize,
    out: &Tensor<B>,
) -> Result<(usize, usize)> {
    const OP: &str = "topk_mean";
    min_rank(OP, "x", x, 1)?;
    let (r, m) = (x.shape.rows(), x.shape.last());
    numel(OP, "out", out, r)?;
    arg(OP, (1..=m).contains(&k), || {
        format!("k {k} must be in 1..={m} for x {}", fmt_dims(x.dims()))
    })?;
    Ok((r, m))
}

/// `gelu_bwd`.
pub fn gelu_bwd<B: Backend + ?Sized>(dy: &Tensor<B>, x: &Tensor<B>, dx: &Tensor<B>) -> Result<()> {
    same("gelu_bwd", ("dy", dy), ("x", x))?;
    same("gelu_bwd", ("dx", dx), ("x", x))
}

/// `bias_gelu_fwd`: returns (R, n).
pub fn bias_gelu_fwd<B: Backend + ?Sized>(
    x: &Tensor<B>,
    bias: &Tensor<B>,
    y: &Tensor<B>,
) -> Result<(usize, usize)> {
    let dims = rows_and_vec("bias_gelu_fwd", x, bias, "bias")?;
    same("bias_gelu_fwd", ("x", x), ("y", y))?;
    Ok(dims)
}

/// `residual_bwd`: like [`residual`], plus `dgamma [D]`, which needs a `gamma`.
pub fn residual_bwd<B: Backend + ?Sized>(
    dout: &Tensor<B>,
    y: &Tensor<B>,
    gamma: Option<&Tensor<B>>,
    dy: &Tensor<B>,
    dgamma: Option<&Tensor<B>>,
) -> Result<(usize, usize)> {
    const OP: &str = "residual_bwd";
    let (r, d) = residual(
        OP,
        ("dout", dout),
        ("y", y),
        ("dy", dy),
        gamma.map(|g| ("gamma", g)),
    )?;
    match (gamma, dgamma) {
        (None, Some(dg)) => {
            return shape_err(
                OP,
                format!("dgamma {} given without gamma", fmt_dims(dg.dims())),
            )
        }
        (Some(_), Some(dg)) => exact(OP, "dgamma", dg, &[d])?,
        _ => {}
    }
    Ok((r, d))
}

/// `cosine_distance_bwd`: returns (R, C).
pub fn cosine_distance_bwd<B: Backend + ?Sized>(
    dd: &Tensor<B>,
    a: &Tensor<B>,
    b: &Tensor<B>,
    db: &Tensor<B>,
) -> Result<(usize, usize)> {
    let dims = cosine_distance("cosine_distance_bwd", a, b, ("dd", dd))?;
    same("cosine_distance_bwd", ("db", db), ("b", b))?;
    Ok(dims)
}

/// `global_cosine_fwd`: returns (B, T, C).
pub fn global_cosine_fwd<B: Backend + ?Sized>(
    a: &Tensor<B>,
    b: &Tensor<B>,
    loss: &Tensor<B>,
    point_dist: &Tensor<B>,
    stats: &Tensor<B>,
) -> Result<(usize, usize, usize)> {
    const OP: &str = "global_cosine_fwd";
    let dims = global_cosine(OP, a, b, point_dist, stats)?;
    exact(OP, "loss", loss, &[1])?;
    Ok(dims)
}

/// `global_cosine_bwd`: returns ((B, T, C), k) with k from [`hard_mining_k`].
pub fn global_cosine_bwd<B: Backend + ?Sized>(
    a: &Tensor<B>,
    b: &Tensor<B>,
    point_dist: &Tensor<B>,
    stats: &Tensor<B>,
    p: f32,
    db: &Tensor<B>,
) -> Result<((usize, usize, usize), usize)> {
    const OP: &str = "global_cosine_bwd";
    let dims = global_cosine(OP, a, b, point_dist, stats)?;
    same(OP, ("db", db), ("b", b))?;
    let k = hard_mining_k(OP, dims.0 * dims.1, p)?;
    Ok((dims, k))
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
        let d = matmul(
            &t(&c, &[2, 5, 7]),
            &t(&c, &[3, 7]),
            None,
            &t(&c, &[2, 5, 3]),
            Layout::NT,
        )
        .unwrap();
        assert_eq!(
            d,
            MatmulDims {
                batch: 1,
                m: 10,
                n: 3,
                k: 7,
                b_batched: false
            }
        );
        let d = matmul(
            &t(&c, &[2, 5, 7]),
            &t(&c, &[2, 5, 3]),
            None,
            &t(&c, &[7, 3]),
            Layout::TN,
        )
        .unwrap();
        assert_eq!(
            d,
            MatmulDims {
                batch: 1,
                m: 7,
                n: 3,
                k: 10,
                b_batched: false
            }
        );
        let d = matmul(
            &t(&c, &[4, 5, 7]),
            &t(&c, &[4, 7, 3]),
            None,
            &t(&c, &[4, 5, 3]),
            Layout::NN,
        )
        .unwrap();
        assert_eq!(
            d,
            MatmulDims {
                batch: 4,
                m: 5,
                n: 3,
                k: 7,
                b_batched: true
            }
        );
        let e = matmul(
            &t(&c, &[5, 7]),
            &t(&c, &[3, 6]),
            None,
            &t(&c, &[5, 3]),
            Layout::NT,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("matmul") && e.contains("[5, 7]") && e.contains("[3, 6]"),
            "{e}"
        );
        let bias = t(&c, &[4]);
        let e = matmul(
            &t(&c, &[5, 7]),
            &t(&c, &[3, 7]),
            Some(&bias),
            &t(&c, &[5, 3]),
            Layout::NT,
        )
        .unwrap_err();
        assert!(e.to_string().contains("bias"), "{e}");
    }
}
