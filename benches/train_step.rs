//! One Dinomaly-style training step on the CPU backend, split into the phases the PyTorch
//! peer measurement reports (shared/peer/README.md: 1,740 ms = teacher forward 465 + student
//! forward and loss 399 + backward 737 + clip and optimiser 113, batch 2 at 224, 2 threads).
//!
//! Workload: frozen DINOv2 ViT-B/14 teacher with random weights, patch embedding and blocks
//! 0..9 (Dinomaly stops at its last tap), taps 2..9, mean of the taps into the noisy
//! bottleneck, 8 linear-attention decoder blocks of width 768, the two-group global cosine
//! loss with hard mining at p = 0.9, clipping at 0.1 and StableAdamW with AMSGrad (Dinomaly's
//! optimiser; the peer used plain AdamW). The EE student is not part of this workload.
//!
//! Run: `cargo bench --bench train_step` (KDAD_BENCH_STEPS timed steps, default 5, after one
//! warm-up step; the rayon pool follows RAYON_NUM_THREADS; KDAD_BENCH_PRECISION=bf16 runs the
//! matmuls on bf16 operands with f32 accumulation, f32 by default). Each phase's on-CPU time
//! (all threads) is printed too: unlike wall time, it is not inflated by other processes.

use kdad::device::Backend;
use kdad::methods::dual_student::ed::EdStudent;
use kdad::methods::dual_student::teacher::Teacher;
use kdad::methods::dual_student::DualStudentConfig;
use kdad::tensor::Rng;
use kdad::train::optim::Optimizer;
use kdad::vit::{Init, Vit, VitConfig, VitParams};
use std::time::Instant;

mod common;

fn main() -> kdad::Result<()> {
    let steps: usize = std::env::var("KDAD_BENCH_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let b = common::cpu_backend();
    let cfg = DualStudentConfig {
        batch: 2,
        ..Default::default()
    };
    let vcfg = VitConfig::vit_b14();
    let mut rng = Rng::new(0);
    let params = VitParams::init(&b, &vcfg, &Init::vit(), &mut rng)?;
    let mut teacher = Teacher::new(Vit::frozen(&b, vcfg, params)?, &cfg)?.without_class_token();
    let mut ed = EdStudent::init(
        &b,
        &cfg,
        vcfg.dim,
        vcfg.heads,
        teacher.student_prefix(),
        &mut rng,
    )?;
    let mut opt = Optimizer::new(&b, cfg.optim(), &ed.params_mut())?;
    let images = b.upload(&rng.tensor([cfg.batch, 3, cfg.crop, cfg.crop], -2.0, 2.0))?;
    let p_final = cfg.hm_p_final;

    let mut phases: Vec<[f64; 4]> = Vec::new();
    let mut cpu_phases: Vec<[f64; 4]> = Vec::new();
    let cpu_ms = || common::process_cpu_ns().map_or(f64::NAN, |ns| ns as f64 * 1e-6);
    for step in 0..=steps {
        let c0 = cpu_ms();
        let t0 = Instant::now();
        let f = teacher.features(&b, &images)?;
        b.synchronize()?;
        let t1 = Instant::now();
        let c1 = cpu_ms();
        ed.forward(&b, f.fused, Some(step as u64))?;
        let loss = ed.loss(&b, &f.groups)?;
        let t2 = Instant::now();
        let c2 = cpu_ms();
        for g in ed.grads_mut() {
            b.fill(g, 0.0)?;
        }
        ed.backward(&b, &f.groups, p_final, cfg.hm_factor, step as u64)?;
        b.synchronize()?;
        let t3 = Instant::now();
        let c3 = cpu_ms();
        b.clip_grad_norm(&mut ed.grads_mut(), cfg.clip)?;
        opt.step(&b, &mut ed.params_mut(), 2e-3)?;
        b.synchronize()?;
        let t4 = Instant::now();
        let c4 = cpu_ms();
        let ms = |a: Instant, z: Instant| (z - a).as_secs_f64() * 1e3;
        let ph = [ms(t0, t1), ms(t1, t2), ms(t2, t3), ms(t3, t4)];
        eprintln!(
            "step {step}{}: loss {loss:.4}, {:.0} ms = teacher {:.0} + student fwd+loss {:.0} + backward {:.0} + clip+optim {:.0}",
            if step == 0 { " (warm-up)" } else { "" },
            ph.iter().sum::<f64>(),
            ph[0],
            ph[1],
            ph[2],
            ph[3]
        );
        if step > 0 {
            phases.push(ph);
            cpu_phases.push([c1 - c0, c2 - c1, c3 - c2, c4 - c3]);
        }
    }
    let median_of = |phases: &[[f64; 4]], k: usize| {
        let mut v: Vec<f64> = phases.iter().map(|p| p[k]).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let median = |k: usize| median_of(&phases, k);
    let mut totals: Vec<f64> = phases.iter().map(|p| p.iter().sum()).collect();
    totals.sort_by(f64::total_cmp);
    println!(
        "train_step ViT-B/14 batch {} at {} on {} ({} threads), median of {steps}: {:.0} ms = \
         teacher forward {:.0} + student forward+loss {:.0} + backward {:.0} + clip+optimiser {:.0} \
         (PyTorch peer: 1740 = 465 + 399 + 737 + 113)",
        cfg.batch,
        cfg.crop,
        b.name(),
        rayon::current_num_threads(),
        totals[totals.len() / 2],
        median(0),
        median(1),
        median(2),
        median(3)
    );
    let cpu = |k: usize| median_of(&cpu_phases, k);
    println!(
        "on-CPU time of all threads, median: teacher forward {:.0} + student forward+loss {:.0} \
         + backward {:.0} + clip+optimiser {:.0} ms",
        cpu(0),
        cpu(1),
        cpu(2),
        cpu(3)
    );
    Ok(())
}
