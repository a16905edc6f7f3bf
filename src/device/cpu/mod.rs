//! Placeholder: replaced by the real CPU backend.
use crate::device::*;
use crate::error::Result;
use crate::tensor::HostTensor;
pub struct Cpu;
impl Cpu { pub fn new() -> Self { Cpu } }
impl Default for Cpu { fn default() -> Self { Cpu } }
#[allow(unused_variables)]
impl Backend for Cpu {
 type Storage = Vec<f32>;
 fn name(&self) -> String { unimplemented!() }
 fn zeros(&self, dims: &[usize]) -> Result<Tensor<Cpu>> { unimplemented!() }
 fn upload(&self, host: &HostTensor) -> Result<Tensor<Cpu>> { unimplemented!() }
 fn download(&self, t: &Tensor<Cpu>) -> Result<HostTensor> { unimplemented!() }
 fn copy(&self, src: &Tensor<Cpu>, dst: &mut Tensor<Cpu>) -> Result<()> { unimplemented!() }
 fn fill(&self, t: &mut Tensor<Cpu>, value: f32) -> Result<()> { unimplemented!() }
 fn axpy(&self, alpha: f32, x: &Tensor<Cpu>, y: &mut Tensor<Cpu>) -> Result<()> { unimplemented!() }
 fn scale(&self, x: &mut Tensor<Cpu>, alpha: f32) -> Result<()> { unimplemented!() }
 fn sum_squares(&self, x: &Tensor<Cpu>) -> Result<f64> { unimplemented!() }
 fn matmul(
        &self,
        a: &Tensor<Cpu>,
        b: &Tensor<Cpu>,
        bias: Option<&Tensor<Cpu>>,
        out: &mut Tensor<Cpu>,
        layout: Layout,
        accumulate: bool,
    ) -> Result<()> { unimplemented!() }
 fn bias_grad(&self, dy: &Tensor<Cpu>, db: &mut Tensor<Cpu>) -> Result<()> { unimplemented!() }
 fn layernorm_fwd(
        &self,
        x: &Tensor<Cpu>,
        w: &Tensor<Cpu>,
        b: &Tensor<Cpu>,
        eps: f32,
        y: &mut Tensor<Cpu>,
        mean: &mut Tensor<Cpu>,
        rstd: &mut Tensor<Cpu>,
    ) -> Result<()> { unimplemented!() }
 fn layernorm_bwd(
        &self,
        dy: &Tensor<Cpu>,
        x: &Tensor<Cpu>,
        w: &Tensor<Cpu>,
        mean: &Tensor<Cpu>,
        rstd: &Tensor<Cpu>,
        dx: &mut Tensor<Cpu>,
        dw: &mut Tensor<Cpu>,
        db: &mut Tensor<Cpu>,
        accumulate_dx: bool,
    ) -> Result<()> { unimplemented!() }
 fn attention_fwd(
        &self,
        qkv: &Tensor<Cpu>,
        heads: usize,
        scale: f32,
        out: &mut Tensor<Cpu>,
        lse: &mut Tensor<Cpu>,
    ) -> Result<()> { unimplemented!() }
 fn attention_bwd(
        &self,
        dout: &Tensor<Cpu>,
        qkv: &Tensor<Cpu>,
        out: &Tensor<Cpu>,
        lse: &Tensor<Cpu>,
        heads: usize,
        scale: f32,
        dqkv: &mut Tensor<Cpu>,
    ) -> Result<()> { unimplemented!() }
 fn linear_attention_fwd(
        &self,
        qkv: &Tensor<Cpu>,
        heads: usize,
        eps: f32,
        out: &mut Tensor<Cpu>,
    ) -> Result<()> { unimplemented!() }
 fn linear_attention_bwd(
        &self,
        dout: &Tensor<Cpu>,
        qkv: &Tensor<Cpu>,
        heads: usize,
        eps: f32,
        dqkv: &mut Tensor<Cpu>,
    ) -> Result<()> { unimplemented!() }
 fn gelu_fwd(&self, x: &Tensor<Cpu>, y: &mut Tensor<Cpu>) -> Result<()> { unimplemented!() }
 fn gelu_bwd(&self, dy: &Tensor<Cpu>, x: &Tensor<Cpu>, dx: &mut Tensor<Cpu>) -> Result<()> { unimplemented!() }
 fn bias_gelu_fwd(
        &self,
        x: &Tensor<Cpu>,
        bias: &Tensor<Cpu>,
        y: &mut Tensor<Cpu>,
    ) -> Result<()> { unimplemented!() }
 fn bias_gelu_bwd(
        &self,
        dy: &Tensor<Cpu>,
        x: &Tensor<Cpu>,
        bias: &Tensor<Cpu>,
        dx: &mut Tensor<Cpu>,
        dbias: &mut Tensor<Cpu>,
    ) -> Result<()> { unimplemented!() }
 fn residual_fwd(
        &self,
        x: &Tensor<Cpu>,
        y: &Tensor<Cpu>,
        gamma: Option<&Tensor<Cpu>>,
        out: &mut Tensor<Cpu>,
    ) -> Result<()> { unimplemented!() }
 fn residual_bwd(
        &self,
        dout: &Tensor<Cpu>,
        y: &Tensor<Cpu>,
        gamma: Option<&Tensor<Cpu>>,
        dy: &mut Tensor<Cpu>,
        dgamma: Option<&mut Tensor<Cpu>>,
    ) -> Result<()> { unimplemented!() }
 fn dropout_fwd(
        &self,
        x: &Tensor<Cpu>,
        p: f32,
        seed: u64,
        out: &mut Tensor<Cpu>,
    ) -> Result<()> { unimplemented!() }
 fn dropout_bwd(
        &self,
        dout: &Tensor<Cpu>,
        p: f32,
        seed: u64,
        dx: &mut Tensor<Cpu>,
    ) -> Result<()> { unimplemented!() }
 fn patchify(&self, img: &Tensor<Cpu>, patch: usize, out: &mut Tensor<Cpu>) -> Result<()> { unimplemented!() }
 fn embed_tokens_fwd(
        &self,
        emb: &Tensor<Cpu>,
        cls: &Tensor<Cpu>,
        pos: &Tensor<Cpu>,
        regs: Option<&Tensor<Cpu>>,
        out: &mut Tensor<Cpu>,
    ) -> Result<()> { unimplemented!() }
 fn embed_tokens_bwd(
        &self,
        dout: &Tensor<Cpu>,
        demb: &mut Tensor<Cpu>,
        dcls: &mut Tensor<Cpu>,
        dpos: &mut Tensor<Cpu>,
        dregs: Option<&mut Tensor<Cpu>>,
    ) -> Result<()> { unimplemented!() }
 fn slice_tokens(&self, x: &Tensor<Cpu>, start: usize, out: &mut Tensor<Cpu>) -> Result<()> { unimplemented!() }
 fn unslice_tokens_add(
        &self,
        dout: &Tensor<Cpu>,
        start: usize,
        dx: &mut Tensor<Cpu>,
    ) -> Result<()> { unimplemented!() }
 fn group_mean_fwd(&self, xs: &[&Tensor<Cpu>], out: &mut Tensor<Cpu>) -> Result<()> { unimplemented!() }
 fn group_mean_bwd(&self, dout: &Tensor<Cpu>, dxs: &mut [&mut Tensor<Cpu>]) -> Result<()> { unimplemented!() }
 fn cosine_distance_fwd(
        &self,
        a: &Tensor<Cpu>,
        b: &Tensor<Cpu>,
        d: &mut Tensor<Cpu>,
    ) -> Result<()> { unimplemented!() }
 fn cosine_distance_bwd(
        &self,
        dd: &Tensor<Cpu>,
        a: &Tensor<Cpu>,
        b: &Tensor<Cpu>,
        db: &mut Tensor<Cpu>,
    ) -> Result<()> { unimplemented!() }
 fn global_cosine_fwd(
        &self,
        a: &Tensor<Cpu>,
        b: &Tensor<Cpu>,
        loss: &mut Tensor<Cpu>,
        point_dist: &mut Tensor<Cpu>,
        stats: &mut Tensor<Cpu>,
    ) -> Result<()> { unimplemented!() }
 fn global_cosine_bwd(
        &self,
        a: &Tensor<Cpu>,
        b: &Tensor<Cpu>,
        point_dist: &Tensor<Cpu>,
        stats: &Tensor<Cpu>,
        p: f32,
        factor: f32,
        dloss: f32,
        db: &mut Tensor<Cpu>,
    ) -> Result<()> { unimplemented!() }
 fn adamw_step(
        &self,
        param: &mut Tensor<Cpu>,
        grad: &Tensor<Cpu>,
        m: &mut Tensor<Cpu>,
        v: &mut Tensor<Cpu>,
        vmax: Option<&mut Tensor<Cpu>>,
        hp: &AdamStep,
    ) -> Result<()> { unimplemented!() }
 fn stable_adamw_step(
        &self,
        param: &mut Tensor<Cpu>,
        grad: &Tensor<Cpu>,
        m: &mut Tensor<Cpu>,
        v: &mut Tensor<Cpu>,
        vmax: Option<&mut Tensor<Cpu>>,
        hp: &AdamStep,
    ) -> Result<()> { unimplemented!() }
 fn resize(&self, x: &Tensor<Cpu>, interp: Interp, out: &mut Tensor<Cpu>) -> Result<()> { unimplemented!() }
 fn gaussian_blur(
        &self,
        x: &Tensor<Cpu>,
        sigma: f32,
        ksize: usize,
        out: &mut Tensor<Cpu>,
    ) -> Result<()> { unimplemented!() }
 fn topk_mean(&self, x: &Tensor<Cpu>, k: usize, out: &mut Tensor<Cpu>) -> Result<()> { unimplemented!() }
}
