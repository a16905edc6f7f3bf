//! A whole tiny ViT on another backend against the f32 CPU backend: forward (taps and final
//! norm), backward into every parameter, then one StableAdamW step, from the same weights and
//! images; and the frozen (teacher) forward with bf16 weights. This runs every kernel the
//! students' training uses in the order a real step does, through the launch code a GPU runs.

use kdad::device::cpu::Cpu;
use kdad::device::gpu::{GpuBackend, Launcher};
use kdad::device::{AdamStep, Backend, Tensor};
use kdad::tensor::{DType, HostTensor, Rng};
use kdad::vit::{ForwardSpec, Init, OutputGrads, PosInterp, Vit, VitConfig, VitParams};
use std::collections::BTreeMap;

/// Everything one training step produces, downloaded.
struct StepResult {
    outputs: Vec<HostTensor>,
    grads: BTreeMap<String, HostTensor>,
    params_after: BTreeMap<String, HostTensor>,
}

pub fn tiny() -> VitConfig {
    VitConfig {
        dim: 48,
        depth: 2,
        heads: 2,
        mlp_hidden: 96,
        patch: 14,
        in_chans: 3,
        registers: 1,
        layerscale: true,
        ln_eps: 1e-6,
        pos_grid: 3,
        pos_interp: PosInterp::Size,
    }
}

fn step<B: Backend>(
    be: &B,
    host: &std::collections::HashMap<String, HostTensor>,
    images: &HostTensor,
    seeds: &[HostTensor],
) -> StepResult {
    let cfg = tiny();
    let mut vit = Vit::trainable(be, cfg, VitParams::from_host(be, &cfg, host).unwrap()).unwrap();
    let img = be.upload(images).unwrap();
    let taps = [0usize, 1];
    let spec = ForwardSpec {
        taps: &taps,
        final_norm: true,
        train: true,
    };
    let out = vit.forward(be, &img, &spec).unwrap();
    let mut outputs: Vec<HostTensor> = out.taps.iter().map(|t| be.download(t).unwrap()).collect();
    outputs.push(be.download(out.cls_norm.unwrap()).unwrap());
    outputs.push(be.download(out.patch_norm.unwrap()).unwrap());
    // loss = Σ output ⊙ seed, so d loss / d output = seed.
    let dev: Vec<Tensor<B>> = seeds.iter().map(|s| be.upload(s).unwrap()).collect();
    let dout = OutputGrads {
        taps: taps.iter().copied().zip(&dev[..2]).collect(),
        cls_norm: Some(&dev[2]),
        patch_norm: Some(&dev[3]),
    };
    vit.backward(be, &dout).unwrap();
    let grads = vit
        .named_grads()
        .unwrap()
        .into_iter()
        .map(|(n, g)| (n, be.download(g).unwrap()))
        .collect();
    let hp = AdamStep {
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 1e-4,
        t: 1,
        amsgrad: true,
    };
    for (_, p, g) in vit.params_and_grads_mut().unwrap() {
        let mut m = be.zeros(p.dims()).unwrap();
        let mut v = be.zeros(p.dims()).unwrap();
        let mut vmax = be.zeros(p.dims()).unwrap();
        be.stable_adamw_step(p, g, &mut m, &mut v, Some(&mut vmax), &hp)
            .unwrap();
    }
    let params_after = vit
        .named_params()
        .into_iter()
        .map(|(n, p)| (n, be.download(p).unwrap()))
        .collect();
    StepResult {
        outputs,
        grads,
        params_after,
    }
}

/// A frozen model's forward (taps and final norm): on a GPU backend its weights are stored
/// in bf16 ([`Backend::freeze`]).
fn frozen_outputs<B: Backend>(
    be: &B,
    host: &std::collections::HashMap<String, HostTensor>,
    images: &HostTensor,
) -> Vec<HostTensor> {
    let cfg = tiny();
    let params = VitParams::from_host(be, &cfg, host).unwrap();
    let mut vit = Vit::frozen(be, cfg, params).unwrap();
    let spec = ForwardSpec {
        taps: &[0, 1],
        final_norm: true,
        train: false,
    };
    let out = vit.forward(be, &be.upload(images).unwrap(), &spec).unwrap();
    let mut all: Vec<HostTensor> = out.taps.iter().map(|t| be.download(t).unwrap()).collect();
    all.push(be.download(out.cls_norm.unwrap()).unwrap());
    all.push(be.download(out.patch_norm.unwrap()).unwrap());
    all
}

/// The frozen (teacher) path on a GPU backend `gpu`, weights in bf16 storage, against the f32
/// CPU backend. Storing the weights adds one rounding (2^-8 relative) to the LayerNorm,
/// LayerScale, bias and token parameters (GEMM operands were rounded to bf16 already), so
/// the bound of the training step below still holds.
pub fn frozen_bf16_matches_f32_cpu<L: Launcher>(gpu: &GpuBackend<L>) {
    let cpu = Cpu::new();
    let cfg = tiny();
    let mut rng = Rng::new(12);
    let (host, images) = weights_and_images(&cpu, 6, &mut rng);
    let frozen = Vit::frozen(gpu, cfg, VitParams::from_host(gpu, &cfg, &host).unwrap()).unwrap();
    for (name, t) in frozen.named_params() {
        assert_eq!(
            t.storage().dtype(),
            DType::BF16,
            "{name} is not stored in bf16"
        );
    }
    let want = frozen_outputs(&cpu, &host, &images);
    let got = frozen_outputs(gpu, &host, &images);
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let e = rel(g, w);
        assert!(e < 3e-2, "output {i}: relative error {e}");
    }
}

/// Weights of the tiny model (initialised from `seed`, LayerScale drawn from `rng` away from
/// its tiny init so the blocks contribute to the outputs) and two 56x42 images (a 4x3 grid,
/// so the position embedding is interpolated with the bicubic kernel).
fn weights_and_images(
    cpu: &Cpu,
    seed: u64,
    rng: &mut Rng,
) -> (std::collections::HashMap<String, HostTensor>, HostTensor) {
    let cfg = tiny();
    let init = Init {
        std: 0.1,
        bound: 0.2,
        layerscale: 1.0,
    };
    let mut host = VitParams::init(cpu, &cfg, &init, &mut Rng::new(seed))
        .unwrap()
        .to_host(cpu, &cfg)
        .unwrap();
    for (name, t) in host.iter_mut() {
        if name.ends_with("gamma") {
            *t = rng.tensor(t.dims(), 0.5, 1.5);
        }
    }
    (host, rng.tensor([2, 3, 56, 42], -1.0, 1.0))
}

/// max |a - b| / max |b|: the error relative to the tensor's own scale.
fn rel(a: &HostTensor, b: &HostTensor) -> f32 {
    let scale = b.data.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    a.max_abs_diff(b).unwrap() / scale
}

/// One training step on `other` against the f32 CPU reference, from the same weights,
/// images and output gradients.
pub fn matches_f32_cpu<B: Backend>(other: &B) {
    let cpu = Cpu::new();
    let mut rng = Rng::new(11);
    let (host, images) = weights_and_images(&cpu, 5, &mut rng);
    let tokens = 1 + 1 + 12;
    let seeds = vec![
        rng.tensor([2, tokens, 48], -1.0, 1.0),
        rng.tensor([2, tokens, 48], -1.0, 1.0),
        rng.tensor([2, 1, 48], -1.0, 1.0),
        rng.tensor([2, 12, 48], -1.0, 1.0),
    ];
    let want = step(&cpu, &host, &images, &seeds);
    let got = step(other, &host, &images, &seeds);

    // The emulated device rounds GEMM operands and attention probabilities to bf16, and
    // stores every activation in bf16 (8 significant bits: each rounding is at most
    // u = 2^-8 = 3.9e-3 relative); through two blocks and a backward pass these errors add up
    // to about 1e-2 of a tensor's scale (measured worst: 1.1e-2 for an output, 1.4e-2 for a
    // LayerScale gradient), so 3e-2 holds with margin while a wrong index or a missing term
    // gives errors of order 1.
    for (i, (g, w)) in got.outputs.iter().zip(&want.outputs).enumerate() {
        let e = rel(g, w);
        assert!(e < 3e-2, "output {i}: relative error {e}");
    }
    assert_eq!(got.grads.len(), want.grads.len());
    for (name, w) in &want.grads {
        let e = rel(&got.grads[name], w);
        assert!(e < 3e-2, "gradient {name}: relative error {e}");
    }
    // At step 1 StableAdamW moves each weight by about ±lr (m̂/√v̂ = sign g, then the
    // update-RMS clip): the sign of a near-zero gradient may differ between the backends, so
    // compare the step where the gradient is clearly non-zero (above 5 % of its tensor's
    // largest), to 1 % of lr; elsewhere it must still be at most lr in size.
    let lr = 1e-2f32;
    for (name, after) in &want.params_after {
        let before = host_view(&host, name, after);
        let g = &want.grads[name];
        let gmax = g.data.iter().fold(0f32, |m, v| m.max(v.abs()));
        let got_after = &got.params_after[name];
        for k in 0..after.data.len() {
            let dw = after.data[k] - before.data[k];
            let dg = got_after.data[k] - before.data[k];
            assert!(
                dg.abs() <= 1.01 * lr,
                "update of {name}[{k}] is {dg}, more than lr"
            );
            if g.data[k].abs() > 0.05 * gmax {
                assert!(
                    (dw - dg).abs() < 1e-2 * lr,
                    "update of {name}[{k}]: cpu {dw}, {} {dg}",
                    other.name()
                );
            }
        }
    }
}

/// The initial value of a parameter in the held (possibly flattened) shape of `like`.
fn host_view(
    host: &std::collections::HashMap<String, HostTensor>,
    name: &str,
    like: &HostTensor,
) -> HostTensor {
    host[name].clone().reshape(like.shape.clone()).unwrap()
}
