//! Tests of the ViT on the CPU backend against the f64 reference in `reference.rs`: forward
//! values, and gradients of every parameter tensor (sampled entries) and of a block's input
//! against central differences of the f64 reference.

use super::reference as r;
use super::*;
use crate::device::cpu::Cpu;
use crate::device::{Backend, Tensor};
use crate::tensor::{HostTensor, Rng};
use std::collections::HashMap;

fn tiny(registers: usize, pos_grid: usize, pos_interp: PosInterp) -> VitConfig {
    VitConfig {
        dim: 24,
        depth: 2,
        heads: 2,
        mlp_hidden: 96,
        patch: 14,
        in_chans: 3,
        registers,
        layerscale: true,
        ln_eps: 1e-6,
        pos_grid,
        pos_interp,
    }
}

/// Random values for canonical tensors, away from their usual init (LayerScale near 1,
/// non-zero biases) so that every gradient is of a similar, non-trivial size.
fn randomise(map: &mut HashMap<String, HostTensor>, rng: &mut Rng) {
    let mut names: Vec<String> = map.keys().cloned().collect();
    names.sort();
    for name in names {
        let t = map.get_mut(&name).unwrap();
        let fan_in = (t.numel() / t.dims()[0]) as f32;
        let (lo, hi) = if name.ends_with("gamma") {
            (0.5, 1.5)
        } else if name.contains("norm") && name.ends_with("weight") {
            (0.7, 1.3)
        } else if name.ends_with("bias") {
            (-0.2, 0.2)
        } else if name.ends_with("weight") {
            let a = (3.0 / fan_in).sqrt();
            (-a, a)
        } else {
            (-0.5, 0.5)
        };
        let dims = t.dims().to_vec();
        *t = rng.tensor(dims.as_slice(), lo, hi);
    }
}

fn to_f64(t: &HostTensor) -> Vec<f64> {
    t.data.iter().map(|&v| v as f64).collect()
}

/// Largest |a - b| relative to the largest |b|.
fn rel_err(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - y).abs())
        .fold(0.0, f64::max)
        / scale.max(1e-30)
}

fn dot(a: &[f64], b: &HostTensor) -> f64 {
    a.iter().zip(&b.data).map(|(x, y)| x * *y as f64).sum()
}

/// Compares an analytic f32 gradient with central differences of an f64 loss at up to
/// `samples` entries (always including the largest analytic entry).
///
/// The reference is f64, so the difference quotient with step 1e-5 is exact to ~1e-9
/// relative; what remains is the f32 rounding of the backend's forward and backward, about
/// 1e-6 of the terms summed, which can exceed 1e-6 of a gradient entry where terms cancel.
/// Hence an entry passes within 1e-4 of itself plus 1e-5 of the tensor's largest gradient:
/// the errors seen stay below 5e-7 of the largest gradient, 20x inside, while a wrong or
/// missing term in a backward is off by a sizeable fraction of the gradient.
fn check_grad(
    what: &str,
    analytic: &[f32],
    samples: usize,
    rng: &mut Rng,
    mut loss: impl FnMut(usize, f64) -> f64,
) {
    let gmax = analytic.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64;
    let argmax =
        analytic.iter().enumerate().fold(
            0,
            |m, (i, v)| if v.abs() > analytic[m].abs() { i } else { m },
        );
    let mut idx: Vec<usize> = (0..samples.min(analytic.len()) - 1)
        .map(|_| rng.below(analytic.len()))
        .collect();
    idx.push(argmax);
    assert!(gmax > 0.0, "{what}: gradient is all zero");
    for i in idx {
        let h = 1e-5;
        let fd = (loss(i, h) - loss(i, -h)) / (2.0 * h);
        let a = analytic[i] as f64;
        let tol = 1e-4 * fd.abs() + 1e-5 * gmax;
        assert!(
            (a - fd).abs() <= tol,
            "{what}[{i}]: analytic {a:e}, finite difference {fd:e}, |diff| {:e} > {tol:e}",
            (a - fd).abs()
        );
    }
}

/// Trains-mode forward and backward of a tiny ViT against the f64 reference.
fn check_vit(cfg: VitConfig, h: usize, w: usize, taps: &[usize]) {
    let be = Cpu::new();
    let mut rng = Rng::new(7);
    let mut host = VitParams::zeros(&be, &cfg)
        .unwrap()
        .to_host(&be, &cfg)
        .unwrap();
    randomise(&mut host, &mut rng);
    let mut vit =
        Vit::trainable(&be, cfg, VitParams::from_host(&be, &cfg, &host).unwrap()).unwrap();
    let images = rng.tensor([2, cfg.in_chans, h, w], -1.0, 1.0);
    let img = be.upload(&images).unwrap();
    let spec = ForwardSpec {
        taps,
        final_norm: true,
        train: true,
    };
    let out = vit.forward(&be, &img, &spec).unwrap();
    let got_taps: Vec<HostTensor> = out.taps.iter().map(|t| be.download(t).unwrap()).collect();
    let got_cls = be.download(out.cls_norm.unwrap()).unwrap();
    let got_patch = be.download(out.patch_norm.unwrap()).unwrap();

    let p64 = r::to_f64(&host);
    let img64 = to_f64(&images);
    let want = r::vit(&p64, &cfg, &img64, h, w, taps);
    for (g, wnt) in got_taps.iter().zip(&want.taps) {
        assert!(
            rel_err(&g.data, wnt) < 1e-5,
            "tap: {}",
            rel_err(&g.data, wnt)
        );
    }
    assert!(
        rel_err(&got_cls.data, &want.cls) < 1e-5,
        "cls: {}",
        rel_err(&got_cls.data, &want.cls)
    );
    assert!(
        rel_err(&got_patch.data, &want.patch) < 1e-5,
        "patch: {}",
        rel_err(&got_patch.data, &want.patch)
    );

    // loss = Σ_t tap_t ⊙ R_t + cls ⊙ Rc + patch ⊙ Rp, so d loss / d output = R.
    let rt: Vec<HostTensor> = got_taps
        .iter()
        .map(|t| rng.tensor(t.dims(), -1.0, 1.0))
        .collect();
    let rc = rng.tensor(got_cls.dims(), -1.0, 1.0);
    let rp = rng.tensor(got_patch.dims(), -1.0, 1.0);
    let rt_dev: Vec<Tensor<Cpu>> = rt.iter().map(|t| be.upload(t).unwrap()).collect();
    let (rc_dev, rp_dev) = (be.upload(&rc).unwrap(), be.upload(&rp).unwrap());
    let dout = OutputGrads {
        taps: taps.iter().copied().zip(&rt_dev).collect(),
        cls_norm: Some(&rc_dev),
        patch_norm: Some(&rp_dev),
    };
    vit.backward(&be, &dout).unwrap();

    let loss = |p: &r::Params| {
        let o = r::vit(p, &cfg, &img64, h, w, taps);
        o.taps
            .iter()
            .zip(&rt)
            .map(|(t, rr)| dot(t, rr))
            .sum::<f64>()
            + dot(&o.cls, &rc)
            + dot(&o.patch, &rp)
    };
    let grads = vit.grads().unwrap().to_host(&be, &cfg).unwrap();
    let mut names: Vec<&String> = grads.keys().collect();
    names.sort();
    assert_eq!(names.len(), host.len());
    for name in names {
        let mut p = p64.clone();
        check_grad(name, &grads[name].data, 6, &mut rng, |i, d| {
            let v = p64[name][i];
            p.get_mut(name).unwrap()[i] = v + d;
            let l = loss(&p);
            p.get_mut(name).unwrap()[i] = v;
            l
        });
    }
}

#[test]
fn vit_with_registers_and_meta_interpolation_matches_f64_reference() {
    check_vit(
        tiny(2, 3, PosInterp::ScaleFactor { offset: 0.1 }),
        28,
        28,
        &[0, 1],
    );
}

#[test]
fn vit_on_a_rectangular_image_with_size_interpolation_matches_f64_reference() {
    check_vit(tiny(1, 3, PosInterp::Size), 28, 42, &[1]);
}

#[test]
fn vit_at_its_native_grid_matches_f64_reference() {
    check_vit(tiny(0, 2, PosInterp::Size), 28, 28, &[0]);
}

/// A lone block (the decoder's use) forward and backward, input gradient included.
fn check_block(cfg: BlockConfig) {
    let be = Cpu::new();
    let mut rng = Rng::new(11);
    let p = BlockParams::init(&be, cfg, &Init::vit(), &mut rng).unwrap();
    let mut host: HashMap<String, HostTensor> = p
        .named()
        .into_iter()
        .map(|(n, t)| (n.to_string(), be.download(t).unwrap()))
        .collect();
    randomise(&mut host, &mut rng);
    let p = BlockParams::from_host(&be, cfg, &host, "").unwrap();
    let mut g = p.zeros_like(&be).unwrap();
    let (b, n, d) = (2, 7, cfg.dim);
    let xh = rng.tensor([b, n, d], -1.5, 1.5);
    let x = be.upload(&xh).unwrap();
    let mut acts = BlockActs::new(&be, &cfg, b, n).unwrap();
    let mut scratch = BlockScratch::new(&be, &cfg, b, n).unwrap();
    let mut out = be.zeros(&[b, n, d]).unwrap();
    block_forward(&be, &p, &mut acts, &x, &mut out).unwrap();

    let p64 = r::to_f64(&host);
    let x64 = to_f64(&xh);
    let run = |p: &r::Params, x: &[f64]| -> Vec<f64> {
        x.chunks(n * d)
            .flat_map(|xi| r::block(p, "", &cfg, xi))
            .collect()
    };
    let got = be.download(&out).unwrap();
    assert!(
        rel_err(&got.data, &run(&p64, &x64)) < 1e-5,
        "{}",
        rel_err(&got.data, &run(&p64, &x64))
    );

    let rr = rng.tensor([b, n, d], -1.0, 1.0);
    let mut dx = be.zeros(&[b, n, d]).unwrap();
    block_backward(
        &be,
        &p,
        &acts,
        &x,
        &be.upload(&rr).unwrap(),
        &mut dx,
        &mut g,
        &mut scratch,
    )
    .unwrap();
    let dxh = be.download(&dx).unwrap();
    let mut xp = x64.clone();
    check_grad("x", &dxh.data, 12, &mut rng, |i, dlt| {
        xp[i] = x64[i] + dlt;
        let l = dot(&run(&p64, &xp), &rr);
        xp[i] = x64[i];
        l
    });
    for (name, t) in g.named() {
        let ga = be.download(t).unwrap();
        let mut pp = p64.clone();
        check_grad(name, &ga.data, 6, &mut rng, |i, dlt| {
            let v = p64[name][i];
            pp.get_mut(name).unwrap()[i] = v + dlt;
            let l = dot(&run(&pp, &x64), &rr);
            pp.get_mut(name).unwrap()[i] = v;
            l
        });
    }
}

#[test]
fn softmax_block_with_layerscale_matches_f64_reference() {
    check_block(BlockConfig {
        dim: 24,
        heads: 2,
        mlp_hidden: 96,
        attn: Attn::Softmax,
        layerscale: true,
        ln_eps: 1e-6,
    });
}

#[test]
fn dinomaly_linear_attention_block_matches_f64_reference() {
    let attn = Attn::Linear { eps: 0.0 };
    check_block(BlockConfig {
        dim: 24,
        heads: 2,
        mlp_hidden: 96,
        attn,
        layerscale: false,
        ln_eps: 1e-8,
    });
}

/// Equal shapes and values equal up to f32 rounding: a frozen model's products run another
/// kernel than a trainable one's (weights packed once), which sums in another order.
fn same_up_to_rounding(got: &HostTensor, want: &HostTensor) {
    assert_eq!(got.shape, want.shape);
    let scale = want.data.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.data.iter().zip(&want.data).enumerate() {
        assert!(
            (g - w).abs() <= 1e-5 * w.abs() + 1e-6 * scale,
            "element {i}: {g} vs {w}"
        );
    }
}

#[test]
fn frozen_forward_matches_training_forward_and_stops_at_the_last_tap() {
    let be = Cpu::new();
    let cfg = VitConfig {
        depth: 4,
        ..tiny(2, 3, PosInterp::ScaleFactor { offset: 0.1 })
    };
    let mut rng = Rng::new(3);
    let params = |rng: &mut Rng| VitParams::init(&be, &cfg, &Init::vit(), rng).unwrap();
    let host = params(&mut rng).to_host(&be, &cfg).unwrap();
    let load = || VitParams::from_host(&be, &cfg, &host).unwrap();
    let img = be.upload(&rng.tensor([3, 3, 28, 28], -1.0, 1.0)).unwrap();

    let mut student = Vit::trainable(&be, cfg, load()).unwrap();
    let all = ForwardSpec {
        taps: &[0, 1, 2, 3],
        final_norm: true,
        train: true,
    };
    let o = student.forward(&be, &img, &all).unwrap();
    let want: Vec<HostTensor> = o.taps.iter().map(|t| be.download(t).unwrap()).collect();
    let want_cls = be.download(o.cls_norm.unwrap()).unwrap();

    let mut teacher = Vit::frozen(&be, cfg, load()).unwrap();
    // Taps out of order, a gap, and no final norm: block 3 never runs.
    let o = teacher
        .forward(
            &be,
            &img,
            &ForwardSpec {
                taps: &[2, 0],
                final_norm: false,
                train: false,
            },
        )
        .unwrap();
    assert!(o.cls_norm.is_none() && o.patch_norm.is_none());
    same_up_to_rounding(&be.download(o.taps[0]).unwrap(), &want[2]);
    same_up_to_rounding(&be.download(o.taps[1]).unwrap(), &want[0]);
    assert_eq!(teacher.arena.as_ref().unwrap().run, 3);
    let o = teacher
        .forward(
            &be,
            &img,
            &ForwardSpec {
                taps: &[1],
                final_norm: true,
                train: false,
            },
        )
        .unwrap();
    same_up_to_rounding(&be.download(o.taps[0]).unwrap(), &want[1]);
    same_up_to_rounding(&be.download(o.cls_norm.unwrap()).unwrap(), &want_cls);

    let e = teacher
        .forward(
            &be,
            &img,
            &ForwardSpec {
                taps: &[1],
                final_norm: false,
                train: true,
            },
        )
        .err()
        .unwrap();
    assert!(e.to_string().contains("frozen"), "{e}");
    assert!(teacher
        .backward(&be, &OutputGrads::default())
        .unwrap_err()
        .to_string()
        .contains("frozen"));
    let e = teacher
        .forward(
            &be,
            &img,
            &ForwardSpec {
                taps: &[4],
                final_norm: false,
                train: false,
            },
        )
        .err()
        .unwrap();
    assert!(e.to_string().contains("tap 4"), "{e}");
    let bad = be.upload(&rng.tensor([1, 3, 28, 30], 0.0, 1.0)).unwrap();
    let e = teacher
        .forward(
            &be,
            &bad,
            &ForwardSpec {
                taps: &[0],
                final_norm: false,
                train: false,
            },
        )
        .err()
        .unwrap();
    assert!(e.to_string().contains("28x30"), "{e}");
}

#[test]
fn loading_names_every_missing_unexpected_and_misshaped_tensor() {
    let be = Cpu::new();
    let cfg = tiny(2, 3, PosInterp::ScaleFactor { offset: 0.1 });
    let mut host = VitParams::zeros(&be, &cfg)
        .unwrap()
        .to_host(&be, &cfg)
        .unwrap();
    host.remove("blocks.1.mlp.fc2.bias");
    host.insert(
        "blocks.9.attn.qkv.weight".into(),
        HostTensor::zeros([72, 24]),
    );
    host.insert("blocks.0.norm1.weight".into(), HostTensor::zeros([25]));
    host.insert("mask_token".into(), HostTensor::zeros([1, 24]));
    let e = VitParams::from_host(&be, &cfg, &host)
        .err()
        .unwrap()
        .to_string();
    for name in [
        "blocks.1.mlp.fc2.bias",
        "blocks.9.attn.qkv.weight",
        "blocks.0.norm1.weight",
    ] {
        assert!(e.contains(name), "{name} not in: {e}");
    }
    assert!(!e.contains("mask_token"), "{e}");
}

#[test]
fn init_truncates_and_sets_norms_and_layerscale() {
    let be = Cpu::new();
    let cfg = BlockConfig {
        dim: 64,
        heads: 2,
        mlp_hidden: 256,
        attn: Attn::Linear { eps: 0.0 },
        layerscale: true,
        ln_eps: 1e-8,
    };
    let init = Init::dinomaly();
    let p = BlockParams::init(&be, cfg, &init, &mut Rng::new(5)).unwrap();
    let w = be.download(&p.fc1_w).unwrap().data;
    assert!(w.iter().all(|v| v.abs() <= 0.03));
    // A normal of std 0.01 cut at ±3σ keeps a std of 0.00986.
    let std = (w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32).sqrt();
    assert!((std - 0.00986).abs() < 0.0003, "{std}");
    assert!(be
        .download(&p.norm1_w)
        .unwrap()
        .data
        .iter()
        .all(|&v| v == 1.0));
    assert!(be
        .download(&p.qkv_b)
        .unwrap()
        .data
        .iter()
        .all(|&v| v == 0.0));
    assert!(be
        .download(p.ls2.as_ref().unwrap())
        .unwrap()
        .data
        .iter()
        .all(|&v| v == init.layerscale));
}
