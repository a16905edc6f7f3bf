//! The op set every model in kdad is written against, and the backends that run it.
//!
//! Conventions, shared by every backend:
//! * Tensors are logically f32 and row-major. A backend may store them otherwise (the GPU
//!   backends store the tensors from [`Backend::zeros_activation`] as bf16) but
//!   `upload`/`download` speak f32.
//! * Ops write into outputs the caller allocated once (llm.c style arenas); no op allocates
//!   a tensor the caller keeps.
//! * Activation gradients are written (`=`) unless an op says otherwise; **parameter gradients
//!   are always added into** (`+=`), so gradient accumulation needs no extra buffer and the
//!   caller zeroes them at the start of a step.
//! * Every op validates shapes with the helpers in [`check`] before touching memory, so a
//!   wrong shape is an `Error::Shape` naming the op and the shapes, on every backend.

pub mod check;
pub mod cpu;
pub mod gpu;
pub mod rng;

use crate::error::Result;
use crate::tensor::{HostTensor, Shape};

/// A tensor owned by a backend.
pub struct Tensor<B: Backend + ?Sized> {
    pub(crate) shape: Shape,
    pub(crate) storage: B::Storage,
}

impl<B: Backend + ?Sized> Tensor<B> {
    pub fn shape(&self) -> &Shape {
        &self.shape
    }
    pub fn dims(&self) -> &[usize] {
        self.shape.dims()
    }
    pub fn numel(&self) -> usize {
        self.shape.numel()
    }
    /// Reinterpret the same elements under another shape of equal size.
    pub fn reshape(&mut self, dims: &[usize]) -> Result<()> {
        let s = Shape::new(dims);
        if s.numel() != self.shape.numel() {
            return crate::error::shape_err("reshape", format!("{} to {s}", self.shape));
        }
        self.shape = s;
        Ok(())
    }
    /// Build a tensor from a backend's own storage (backends and their tests only).
    pub fn from_parts(shape: Shape, storage: B::Storage) -> Self {
        Tensor { shape, storage }
    }
    pub fn storage(&self) -> &B::Storage {
        &self.storage
    }
    pub fn storage_mut(&mut self) -> &mut B::Storage {
        &mut self.storage
    }
}

impl<B: Backend + ?Sized> std::fmt::Debug for Tensor<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor{}", self.shape)
    }
}

/// Operand layouts of a matmul, as (A, B): N = as stored, T = transposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `out[m,n] = a[m,k] · b[k,n]`
    NN,
    /// `out[m,n] = a[m,k] · b[n,k]ᵀ` (the nn.Linear forward: b is a weight [out, in])
    NT,
    /// `out[m,n] = a[k,m]ᵀ · b[k,n]` (weight gradients: a = dY, b = X)
    TN,
}

/// Interpolation kernels for [`Backend::resize`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Interp {
    /// Bilinear. `align_corners` as in PyTorch `interpolate`.
    Bilinear { align_corners: bool },
    /// Bicubic with a = -0.75 and border-clamped taps, half-pixel centres (PyTorch
    /// `interpolate(mode="bicubic", align_corners=False)`). `scale` = (out/in) per axis when
    /// the caller passed a scale factor instead of a size: PyTorch then maps coordinates with
    /// 1/scale rather than in/out (DINOv2's position-embedding interpolation does this).
    Bicubic { scale: Option<(f64, f64)> },
}

/// Hyper-parameters of one AdamW / StableAdamW step on one tensor.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamStep {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// 1-based step count, for bias correction.
    pub t: u64,
    /// Keep the running maximum of the second moment (AMSGrad) in `vmax`.
    pub amsgrad: bool,
}

/// One parameter tensor of [`Backend::adam_steps`], with its gradient and moment buffers
/// (`vmax` present iff the step uses AMSGrad).
pub struct AdamTensors<'a, B: Backend + ?Sized> {
    pub param: &'a mut Tensor<B>,
    pub grad: &'a Tensor<B>,
    pub m: &'a mut Tensor<B>,
    pub v: &'a mut Tensor<B>,
    pub vmax: Option<&'a mut Tensor<B>>,
}

/// The ops the ViT, the students, their losses and their optimisers need.
///
/// Shapes use these names: `B` images, `N` tokens, `D` width, `H` heads, `R` rows (the
/// product of all leading dimensions).
pub trait Backend: Send + Sync {
    type Storage: Send + Sync;

    /// Short name for logs and reports: `cpu`, `emu`, `cuda:0`.
    fn name(&self) -> String;

    // ---- memory -------------------------------------------------------------------------
    fn zeros(&self, dims: &[usize]) -> Result<Tensor<Self>>;
    /// A zeroed tensor for an activation: any op takes it where it takes a tensor from
    /// [`Backend::zeros`], but a backend may store it with less precision, rounding what is
    /// written to it (the GPU backends store bf16, which halves the memory traffic of the
    /// kernels that read and write activations). Parameters, gradients, optimiser state, row
    /// statistics and losses come from `zeros`. The CPU backend stores f32 either way.
    fn zeros_activation(&self, dims: &[usize]) -> Result<Tensor<Self>> {
        self.zeros(dims)
    }
    /// The storage for a tensor that is only read from now on (a frozen model's weights):
    /// the GPU backends keep it in bf16, as their GEMMs take it, so no GEMM casts it again
    /// and every read moves half the bytes. The CPU backend keeps f32, and packs a 2-D
    /// tensor once for its frozen-weight GEMM (in f32 precision, on AVX-512).
    fn freeze(&self, t: Tensor<Self>) -> Result<Tensor<Self>> {
        Ok(t)
    }
    fn upload(&self, host: &HostTensor) -> Result<Tensor<Self>>;
    fn download(&self, t: &Tensor<Self>) -> Result<HostTensor>;
    /// `dst = src` (equal element counts; shapes may differ).
    fn copy(&self, src: &Tensor<Self>, dst: &mut Tensor<Self>) -> Result<()>;
    fn fill(&self, t: &mut Tensor<Self>, value: f32) -> Result<()>;
    /// Wait for queued work (a no-op on synchronous backends).
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    // ---- elementwise and reductions -------------------------------------------------------
    /// `y += alpha * x`
    fn axpy(&self, alpha: f32, x: &Tensor<Self>, y: &mut Tensor<Self>) -> Result<()>;
    /// `x *= alpha`
    fn scale(&self, x: &mut Tensor<Self>, alpha: f32) -> Result<()>;
    /// Sum of squares of all elements, accumulated in f64 where the backend can.
    fn sum_squares(&self, x: &Tensor<Self>) -> Result<f64>;

    // ---- matmul ---------------------------------------------------------------------------
    /// Matrix product, see [`Layout`]. Shapes:
    /// * NN / NT with a 2-D `b`: `a` is `[.., k]` (all leading dims are rows), `out` is `[.., n]`.
    /// * TN with a 2-D `out`: `a` is `[.., m]`, `b` is `[.., n]` with the same rows (= k).
    /// * Otherwise batched: `a`, `b` and `out` are `[batch.., x, y]` with equal batch dims.
    ///
    /// `bias` `[n]` is added to every row. `accumulate` adds into `out` instead of writing.
    fn matmul(
        &self,
        a: &Tensor<Self>,
        b: &Tensor<Self>,
        bias: Option<&Tensor<Self>>,
        out: &mut Tensor<Self>,
        layout: Layout,
        accumulate: bool,
    ) -> Result<()>;
    /// `db[n] += Σ_rows dy[r, n]` (the bias gradient of a linear layer).
    fn bias_grad(&self, dy: &Tensor<Self>, db: &mut Tensor<Self>) -> Result<()>;

    // ---- layer norm -----------------------------------------------------------------------
    /// `y = (x - mean) * rstd * w + b` per row of `x [R, D]`; saves `mean [R]`, `rstd [R]`.
    #[allow(clippy::too_many_arguments)]
    fn layernorm_fwd(
        &self,
        x: &Tensor<Self>,
        w: &Tensor<Self>,
        b: &Tensor<Self>,
        eps: f32,
        y: &mut Tensor<Self>,
        mean: &mut Tensor<Self>,
        rstd: &mut Tensor<Self>,
    ) -> Result<()>;
    /// Gradients of [`Backend::layernorm_fwd`]: `dx` written (or added if `accumulate_dx`),
    /// `dw`, `db` added into.
    #[allow(clippy::too_many_arguments)]
    fn layernorm_bwd(
        &self,
        dy: &Tensor<Self>,
        x: &Tensor<Self>,
        w: &Tensor<Self>,
        mean: &Tensor<Self>,
        rstd: &Tensor<Self>,
        dx: &mut Tensor<Self>,
        dw: &mut Tensor<Self>,
        db: &mut Tensor<Self>,
        accumulate_dx: bool,
    ) -> Result<()>;

    // ---- attention ------------------------------------------------------------------------
    /// Softmax attention over packed `qkv [B, N, 3·D]` (q, k, v each `[H, D/H]` per token, the
    /// DINOv2/timm fused layout): `out [B, N, D]`, and the log-sum-exp of each score row
    /// `lse [B, H, N]` for the backward. `scale` multiplies q·k.
    fn attention_fwd(
        &self,
        qkv: &Tensor<Self>,
        heads: usize,
        scale: f32,
        out: &mut Tensor<Self>,
        lse: &mut Tensor<Self>,
    ) -> Result<()>;
    /// `dqkv [B, N, 3·D]` (written) from `dout [B, N, D]` and the forward's `out` and `lse`.
    #[allow(clippy::too_many_arguments)]
    fn attention_bwd(
        &self,
        dout: &Tensor<Self>,
        qkv: &Tensor<Self>,
        out: &Tensor<Self>,
        lse: &Tensor<Self>,
        heads: usize,
        scale: f32,
        dqkv: &mut Tensor<Self>,
    ) -> Result<()>;
    /// Dinomaly's linear attention over packed `qkv [B, N, 3·D]`, per head with
    /// φ(t) = elu(t) + 1: `out_s = φ(q_s)ᵀ KV / (φ(q_s) · Σ_s' φ(k_s') + eps)`,
    /// `KV = Σ_s φ(k_s) v_sᵀ`. Dinomaly uses eps = 0.
    fn linear_attention_fwd(
        &self,
        qkv: &Tensor<Self>,
        heads: usize,
        eps: f32,
        out: &mut Tensor<Self>,
    ) -> Result<()>;
    /// `dqkv` (written) for [`Backend::linear_attention_fwd`]; recomputes KV and the
    /// normaliser, which are O(N·d²) and cheaper to redo than to keep.
    fn linear_attention_bwd(
        &self,
        dout: &Tensor<Self>,
        qkv: &Tensor<Self>,
        heads: usize,
        eps: f32,
        dqkv: &mut Tensor<Self>,
    ) -> Result<()>;

    // ---- activations, residuals, dropout --------------------------------------------------
    /// Exact (erf) GELU.
    fn gelu_fwd(&self, x: &Tensor<Self>, y: &mut Tensor<Self>) -> Result<()>;
    fn gelu_bwd(&self, dy: &Tensor<Self>, x: &Tensor<Self>, dx: &mut Tensor<Self>) -> Result<()>;
    /// `y = gelu(x + bias)` with `x [R, n]` (a matmul output without bias), `bias [n]`.
    fn bias_gelu_fwd(
        &self,
        x: &Tensor<Self>,
        bias: &Tensor<Self>,
        y: &mut Tensor<Self>,
    ) -> Result<()>;
    /// `dx = dy · gelu'(x + bias)` (written), `dbias += Σ_rows dx`.
    fn bias_gelu_bwd(
        &self,
        dy: &Tensor<Self>,
        x: &Tensor<Self>,
        bias: &Tensor<Self>,
        dx: &mut Tensor<Self>,
        dbias: &mut Tensor<Self>,
    ) -> Result<()>;
    /// `out = x + gamma ⊙ y` (LayerScale residual; `gamma [D]`, or 1 when `None`).
    fn residual_fwd(
        &self,
        x: &Tensor<Self>,
        y: &Tensor<Self>,
        gamma: Option<&Tensor<Self>>,
        out: &mut Tensor<Self>,
    ) -> Result<()>;
    /// `dy = gamma ⊙ dout` (written), `dgamma += Σ_rows dout ⊙ y`. The gradient of `x` is
    /// `dout` itself, so the caller keeps using it.
    fn residual_bwd(
        &self,
        dout: &Tensor<Self>,
        y: &Tensor<Self>,
        gamma: Option<&Tensor<Self>>,
        dy: &mut Tensor<Self>,
        dgamma: Option<&mut Tensor<Self>>,
    ) -> Result<()>;
    /// Inverted dropout with the counter-based mask of [`rng::dropout_keep`]:
    /// `out = x · keep / (1 - p)`. The same `seed` reproduces the mask in the backward.
    fn dropout_fwd(
        &self,
        x: &Tensor<Self>,
        p: f32,
        seed: u64,
        out: &mut Tensor<Self>,
    ) -> Result<()>;
    fn dropout_bwd(
        &self,
        dout: &Tensor<Self>,
        p: f32,
        seed: u64,
        dx: &mut Tensor<Self>,
    ) -> Result<()>;

    // ---- tokens ---------------------------------------------------------------------------
    /// Cut `img [B, C, H, W]` into non-overlapping `p×p` patches: `out [B, P, C·p·p]`, patches
    /// in row-major grid order, values in (c, y, x) order to match a conv weight `[D, C, p, p]`.
    fn patchify(&self, img: &Tensor<Self>, patch: usize, out: &mut Tensor<Self>) -> Result<()>;
    /// `out [B, 1+R+P, D]` = `[cls + pos[0], regs.., emb[b, i] + pos[1+i]..]` from patch
    /// embeddings `emb [B, P, D]`, `cls [D]`, `pos [1+P, D]` and optional registers `[R, D]`
    /// (registers get no position embedding, as in DINOv2).
    fn embed_tokens_fwd(
        &self,
        emb: &Tensor<Self>,
        cls: &Tensor<Self>,
        pos: &Tensor<Self>,
        regs: Option<&Tensor<Self>>,
        out: &mut Tensor<Self>,
    ) -> Result<()>;
    /// Gradients of [`Backend::embed_tokens_fwd`]: `demb` written; `dcls`, `dpos`, `dregs`
    /// added into.
    fn embed_tokens_bwd(
        &self,
        dout: &Tensor<Self>,
        demb: &mut Tensor<Self>,
        dcls: &mut Tensor<Self>,
        dpos: &mut Tensor<Self>,
        dregs: Option<&mut Tensor<Self>>,
    ) -> Result<()>;
    /// `out [B, M, D] = x[:, start..start+M, :]` from `x [B, N, D]`.
    fn slice_tokens(&self, x: &Tensor<Self>, start: usize, out: &mut Tensor<Self>) -> Result<()>;
    /// `dx[:, start..start+M, :] += dout` (the backward of [`Backend::slice_tokens`]).
    fn unslice_tokens_add(
        &self,
        dout: &Tensor<Self>,
        start: usize,
        dx: &mut Tensor<Self>,
    ) -> Result<()>;
    /// `out = mean(xs)` element-wise over tensors of one shape (Dinomaly's layer groups).
    fn group_mean_fwd(&self, xs: &[&Tensor<Self>], out: &mut Tensor<Self>) -> Result<()>;
    /// `dxs[i] += dout / len(dxs)` for each input of [`Backend::group_mean_fwd`].
    fn group_mean_bwd(&self, dout: &Tensor<Self>, dxs: &mut [&mut Tensor<Self>]) -> Result<()>;

    // ---- distillation losses --------------------------------------------------------------
    /// Per-row cosine distance `d[r] = 1 - a_r·b_r / max(|a_r|·|b_r|, 1e-8)` for `a, b [R, C]`.
    fn cosine_distance_fwd(
        &self,
        a: &Tensor<Self>,
        b: &Tensor<Self>,
        d: &mut Tensor<Self>,
    ) -> Result<()>;
    /// `db` (written) from `dd [R]`; the first operand is the frozen teacher and gets none.
    fn cosine_distance_bwd(
        &self,
        dd: &Tensor<Self>,
        a: &Tensor<Self>,
        b: &Tensor<Self>,
        db: &mut Tensor<Self>,
    ) -> Result<()>;
    /// Dinomaly's global cosine loss for teacher `a` and student `b`, both `[B, T, C]`:
    /// `loss = mean_b (1 - cos(vec a_b, vec b_b))`, written to `loss [1]`. Also writes the
    /// per-token distances `point_dist [B, T]` used for hard mining, and `stats [B, 3]`
    /// (a·b, |a|², |b|² per image) for the backward.
    fn global_cosine_fwd(
        &self,
        a: &Tensor<Self>,
        b: &Tensor<Self>,
        loss: &mut Tensor<Self>,
        point_dist: &mut Tensor<Self>,
        stats: &mut Tensor<Self>,
    ) -> Result<()>;
    /// `db` (written) = `dloss · ∂loss/∂b`, with the gradient of every token whose distance
    /// lies below the k-th largest (k = ⌊B·T·(1-p)⌋, over the whole batch) multiplied by
    /// `factor` (Dinomaly's hard mining; p = 0 keeps every gradient whole). `p` must lie in
    /// [0, 1]; k = B·T puts the threshold at the smallest distance (no token scaled), and
    /// k = 0 (p = 1, where torch.topk would fail) is defined as an infinite threshold (every
    /// token scaled). See [`check::hard_mining_k`] for how k is rounded.
    #[allow(clippy::too_many_arguments)]
    fn global_cosine_bwd(
        &self,
        a: &Tensor<Self>,
        b: &Tensor<Self>,
        point_dist: &Tensor<Self>,
        stats: &Tensor<Self>,
        p: f32,
        factor: f32,
        dloss: f32,
        db: &mut Tensor<Self>,
    ) -> Result<()>;

    // ---- optimisers -----------------------------------------------------------------------
    /// AdamW with decoupled weight decay on one parameter tensor (`vmax` needed iff amsgrad).
    fn adamw_step(
        &self,
        param: &mut Tensor<Self>,
        grad: &Tensor<Self>,
        m: &mut Tensor<Self>,
        v: &mut Tensor<Self>,
        vmax: Option<&mut Tensor<Self>>,
        hp: &AdamStep,
    ) -> Result<()>;
    /// StableAdamW (Dinomaly's): AdamW whose step is divided by max(1, RMS(g / denom)),
    /// computed over the whole tensor.
    fn stable_adamw_step(
        &self,
        param: &mut Tensor<Self>,
        grad: &Tensor<Self>,
        m: &mut Tensor<Self>,
        v: &mut Tensor<Self>,
        vmax: Option<&mut Tensor<Self>>,
        hp: &AdamStep,
    ) -> Result<()>;
    /// [`Backend::adamw_step`] (or, with `stable`, [`Backend::stable_adamw_step`]) on every
    /// tensor of `set` with the same hyper-parameters. Every tensor is checked before any is
    /// updated. This default makes one call per tensor; a GPU backend updates them all in one
    /// or two launches.
    fn adam_steps(
        &self,
        stable: bool,
        set: &mut [AdamTensors<'_, Self>],
        hp: &AdamStep,
    ) -> Result<()> {
        for t in set.iter() {
            check::adam(
                "adam_steps",
                t.param,
                t.grad,
                t.m,
                t.v,
                t.vmax.as_deref(),
                hp,
            )?;
        }
        for t in set.iter_mut() {
            let vmax = t.vmax.as_deref_mut();
            if stable {
                self.stable_adamw_step(t.param, t.grad, t.m, t.v, vmax, hp)?;
            } else {
                self.adamw_step(t.param, t.grad, t.m, t.v, vmax, hp)?;
            }
        }
        Ok(())
    }
    /// Scale all `grads` so their joint L2 norm is at most `max_norm`; returns the norm
    /// before clipping (as `torch.nn.utils.clip_grad_norm_`, with its 1e-6 guard).
    fn clip_grad_norm(&self, grads: &mut [&mut Tensor<Self>], max_norm: f32) -> Result<f32> {
        let mut ss = 0.0f64;
        for g in grads.iter() {
            ss += self.sum_squares(g)?;
        }
        let norm = ss.sqrt() as f32;
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 {
            for g in grads.iter_mut() {
                self.scale(g, coef)?;
            }
        }
        Ok(norm)
    }

    // ---- image ops (scoring) --------------------------------------------------------------
    /// Resize the last two dims of `x [.., H, W]` into `out [.., H2, W2]`.
    fn resize(&self, x: &Tensor<Self>, interp: Interp, out: &mut Tensor<Self>) -> Result<()>;
    /// Gaussian blur of each `[H, W]` plane of `x [.., H, W]` with a normalised `ksize×ksize`
    /// kernel of std `sigma` and zero padding (Dinomaly: ksize 5, sigma 4).
    fn gaussian_blur(
        &self,
        x: &Tensor<Self>,
        sigma: f32,
        ksize: usize,
        out: &mut Tensor<Self>,
    ) -> Result<()>;
    /// `out[r]` = mean of the `k` largest values of row r of `x [R, M]`.
    fn topk_mean(&self, x: &Tensor<Self>, k: usize, out: &mut Tensor<Self>) -> Result<()>;
}
