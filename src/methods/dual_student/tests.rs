//! End-to-end tests of the dual student on a tiny random teacher, on the CPU backend.

use super::cache::batch_indices;
use super::config::DualStudentConfig;
use super::teacher::{load_teacher, Teacher};
use super::train::{train, TrainOptions};
use super::DualStudent;
use super::METHOD;
use crate::device::cpu::Cpu;
use crate::error::Error;
use crate::tensor::{HostTensor, Rng};
use crate::train::checkpoint::{Checkpoint, TeacherId};
use crate::train::progress::read_log;
use crate::train::runner::LOG_FILE;
use crate::vit::{Init, PosInterp, Vit, VitConfig, VitParams};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A 4-block, 64-wide ViT with one 64-wide head (what a weights file of this width implies),
/// patch 14, position grid 4 (56 px images), resized as the ONNX import's files are.
fn tiny_vit_config() -> VitConfig {
    VitConfig {
        mlp_hidden: 128,
        pos_grid: 4,
        pos_interp: PosInterp::Size,
        ..VitConfig::dinov2(64, 4, 1)
    }
}

fn tiny_params(backend: &Cpu, seed: u64) -> VitParams<Cpu> {
    VitParams::init(
        backend,
        &tiny_vit_config(),
        &Init::vit(),
        &mut Rng::new(seed),
    )
    .unwrap()
}

fn tiny_teacher(backend: &Cpu, cfg: &DualStudentConfig) -> Teacher<Cpu> {
    Teacher::new(
        Vit::frozen(backend, tiny_vit_config(), tiny_params(backend, 99)).unwrap(),
        cfg,
    )
    .unwrap()
}

/// The tiny teacher as a canonical weights file, marked as an ONNX import (so it loads with
/// the same position-embedding resize as `tiny_vit_config`).
fn save_teacher(backend: &Cpu, seed: u64, path: &Path) {
    let host = tiny_params(backend, seed)
        .to_host(backend, &tiny_vit_config())
        .unwrap();
    let meta = HashMap::from([("importer".to_string(), "test".to_string())]);
    crate::vit::weights::save_canonical(&host, path, &meta).unwrap();
}

fn tiny_config(steps: u64) -> DualStudentConfig {
    DualStudentConfig {
        resize: 56,
        crop: 56,
        taps: vec![0, 1, 2, 3],
        groups: vec![vec![0, 1], vec![2, 3]],
        decoder_depth: 4,
        ee_depth: 1,
        steps,
        warmup: 3,
        batch: 2,
        ..Default::default()
    }
}

fn images(n: usize, seed: u64) -> Vec<HostTensor> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| r.tensor([3, 56, 56], -1.5, 1.5)).collect()
}

fn teacher_id() -> TeacherId {
    TeacherId {
        path: "tiny".into(),
        sha256: "00".repeat(32),
    }
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kdad-dual-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn opts(dir: &Path, every: u64, stop_after: Option<u64>, resume: bool) -> TrainOptions {
    TrainOptions {
        out_dir: dir.to_path_buf(),
        checkpoint_every: every,
        resume,
        progress: false,
        stop_after,
    }
}

fn run(
    cfg: &DualStudentConfig,
    imgs: &[HostTensor],
    o: &TrainOptions,
) -> crate::Result<super::TrainReport> {
    run_on(&Cpu::new(), cfg, imgs, o)
}

fn run_on(
    b: &Cpu,
    cfg: &DualStudentConfig,
    imgs: &[HostTensor],
    o: &TrainOptions,
) -> crate::Result<super::TrainReport> {
    train(b, cfg, tiny_teacher(b, cfg), teacher_id(), imgs.to_vec(), o)
}

fn tensors(dir: &Path) -> (HashMap<String, HostTensor>, HashMap<String, HostTensor>) {
    let c = Checkpoint::open(dir, METHOD).unwrap();
    (c.weights().unwrap(), c.optimizer().unwrap())
}

fn assert_bit_identical(a: &HashMap<String, HostTensor>, b: &HashMap<String, HostTensor>) {
    assert_eq!(a.len(), b.len());
    for (k, t) in a {
        let u = &b[k];
        assert_eq!(t.dims(), u.dims(), "{k}");
        let same = t
            .data
            .iter()
            .zip(&u.data)
            .all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(
            same,
            "{k} differs (max diff {})",
            t.max_abs_diff(u).unwrap()
        );
    }
}

#[test]
fn both_losses_decrease() {
    let d = tmpdir("loss");
    let cfg = tiny_config(40);
    let r = run(&cfg, &images(6, 1), &opts(&d, 0, None, false)).unwrap();
    assert!(r.finished);
    let log = read_log(&d.join(LOG_FILE)).unwrap();
    assert_eq!(log.len(), 40);
    let mean = |recs: &[crate::train::progress::StepRecord], k: &str| {
        recs.iter().map(|r| r.loss[k].unwrap()).sum::<f64>() / recs.len() as f64
    };
    for k in ["ed", "ee"] {
        let (first, last) = (mean(&log[..5], k), mean(&log[35..], k));
        assert!(last < 0.7 * first, "{k}: first {first}, last {last}");
    }
    // Finished runs are calibrated on their training images.
    let c = r.calibration.unwrap();
    assert_eq!(c.local.n, 6);
    assert!(c.local.mean > 0.0 && c.semantic.mean > 0.0);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn killed_and_resumed_run_ends_bit_identical_to_an_unbroken_one() {
    let cfg = tiny_config(12);
    let imgs = images(6, 2);
    let whole = tmpdir("whole");
    run(&cfg, &imgs, &opts(&whole, 4, None, false)).unwrap();

    // The state a kill after step 6 leaves: the checkpoint of step 4 and a log up to step 6.
    let killed = tmpdir("killed");
    run(&cfg, &imgs, &opts(&killed, 4, Some(4), false)).unwrap();
    let ahead = tmpdir("ahead");
    copy_dir(&killed, &ahead);
    run(&cfg, &imgs, &opts(&ahead, 4, Some(6), true)).unwrap();
    std::fs::copy(ahead.join(LOG_FILE), killed.join(LOG_FILE)).unwrap();
    assert_eq!(Checkpoint::open(&killed, METHOD).unwrap().meta.step, 4);

    let r = run(&cfg, &imgs, &opts(&killed, 4, None, true)).unwrap();
    assert!(r.finished && r.steps_done == 12);
    let (w1, o1) = tensors(&whole);
    let (w2, o2) = tensors(&killed);
    assert_bit_identical(&w1, &w2);
    assert_bit_identical(&o1, &o2);
    let (c1, c2) = (
        Checkpoint::open(&whole, METHOD).unwrap(),
        Checkpoint::open(&killed, METHOD).unwrap(),
    );
    assert_eq!(c1.meta.method_state, c2.meta.method_state);
    // The files themselves are the same bytes, so a checksum verifies a resumed run.
    for f in [
        &c1.meta.weights_file,
        c1.meta.optimizer_file.as_ref().unwrap(),
    ] {
        let (a, b) = (
            std::fs::read(whole.join(f)).unwrap(),
            std::fs::read(killed.join(f)).unwrap(),
        );
        assert!(
            a == b,
            "{f} differs between the unbroken and the resumed run"
        );
    }
    let (l1, l2) = (
        read_log(&whole.join(LOG_FILE)).unwrap(),
        read_log(&killed.join(LOG_FILE)).unwrap(),
    );
    assert_eq!(
        l2.iter().map(|r| r.step).collect::<Vec<_>>(),
        (1..=12).collect::<Vec<_>>()
    );
    for (a, b) in l1.iter().zip(&l2) {
        assert_eq!(a.loss, b.loss, "step {}", a.step);
    }
    for d in [whole, killed, ahead] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint() {
    let d = tmpdir("nan");
    let cfg = tiny_config(12);
    let mut imgs = images(6, 3);
    // Poison the first image of the third step (0-based iteration 2).
    let victim = batch_indices(cfg.seed, 2, 6, cfg.batch).unwrap()[0];
    imgs[victim].data[100] = f32::NAN;
    let e = run(&cfg, &imgs, &opts(&d, 1, None, false)).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Numerical(_)), "{msg}");
    assert!(
        msg.contains("is NaN at step 3") && msg.contains("checkpoint (step 2)"),
        "{msg}"
    );
    let c = Checkpoint::open(&d, METHOD).unwrap();
    assert_eq!(c.meta.step, 2);
    assert!(c
        .weights()
        .unwrap()
        .values()
        .all(|t| t.data.iter().all(|v| v.is_finite())));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn resume_refuses_other_settings_and_truncated_files() {
    let d = tmpdir("refuse");
    let cfg = tiny_config(6);
    let imgs = images(6, 4);
    run(&cfg, &imgs, &opts(&d, 2, Some(2), false)).unwrap();
    let other = DualStudentConfig {
        hm_factor: 0.5,
        ..cfg.clone()
    };
    let e = run(&other, &imgs, &opts(&d, 2, None, true))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cannot resume with different settings") && e.contains("hm_factor"),
        "{e}"
    );
    let bf16 = Cpu::with_precision(crate::device::cpu::Precision::Bf16);
    let e = run_on(&bf16, &cfg, &imgs, &opts(&d, 2, None, true))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("trained on \"cpu\"") && e.contains("--precision"),
        "{e}"
    );
    let c = Checkpoint::open(&d, METHOD).unwrap();
    let f = d.join(c.meta.weights_file);
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    let e = run(&cfg, &imgs, &opts(&d, 2, None, true))
        .unwrap_err()
        .to_string();
    assert!(e.contains("truncated or corrupt"), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn data_order_is_a_permutation_per_epoch() {
    let mut seen: Vec<usize> = (0..3)
        .flat_map(|it| batch_indices(1, it, 7, 2).unwrap())
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(
        seen.len(),
        6,
        "one epoch of 3 batches draws 6 distinct images of 7"
    );
    assert_ne!(
        batch_indices(1, 0, 7, 2).unwrap(),
        batch_indices(1, 3, 7, 2).unwrap()
    );
    assert!(batch_indices(1, 0, 1, 2)
        .unwrap_err()
        .to_string()
        .contains("fewer than one batch"));
}

#[test]
fn a_trained_checkpoint_loads_and_scores_like_its_calibration() {
    let d = tmpdir("load");
    std::fs::create_dir_all(&d).unwrap();
    let b = Cpu::new();
    let tpath = d.join("teacher.safetensors");
    save_teacher(&b, 99, &tpath);
    let cfg = tiny_config(6);
    let imgs = images(6, 5);
    let (vit, id) = load_teacher(&b, &tpath).unwrap();
    let ck = d.join("ck");
    let r = train(
        &b,
        &cfg,
        Teacher::new(vit, &cfg).unwrap(),
        id,
        imgs.clone(),
        &opts(&ck, 0, None, false),
    )
    .unwrap();
    let calib = r.calibration.unwrap();

    let mut m = DualStudent::load(&ck, None, Arc::new(Cpu::new())).unwrap();
    let mut local = Vec::new();
    for chunk in imgs.chunks(cfg.batch) {
        for s in m.score_batch(chunk).unwrap() {
            assert_eq!(s.map.dims(), [56, 56]);
            let j = calib.score(s.local, s.semantic);
            assert_eq!((s.joint, s.evidence), (j.joint, j.evidence));
            local.push(s.local);
        }
    }
    // The calibration pass scored the same images with the same ops in the same batches.
    let mean = local.iter().sum::<f64>() / local.len() as f64;
    assert!(
        (mean - calib.local.mean).abs() <= 1e-6 * calib.local.mean,
        "{mean} vs {}",
        calib.local.mean
    );
    let e = m
        .score_batch(&[HostTensor::zeros([3, 28, 28])])
        .unwrap_err()
        .to_string();
    assert!(e.contains("[3, 56, 56]"), "{e}");

    // Another teacher file is refused by its hash.
    let other = d.join("other.safetensors");
    save_teacher(&b, 7, &other);
    let e = DualStudent::<Cpu>::load(&ck, Some(&other), Arc::new(Cpu::new()))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("is not the one") && e.contains("sha256"), "{e}");

    // A truncated weights file is a clear error, not a panic.
    let c = Checkpoint::open(&ck, METHOD).unwrap();
    let f = ck.join(&c.meta.weights_file);
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() - 100]).unwrap();
    let e = DualStudent::<Cpu>::load(&ck, None, Arc::new(Cpu::new()))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("truncated or corrupt"), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_stopped_run_cannot_be_scored_until_it_is_finished() {
    let d = tmpdir("unfinished");
    std::fs::create_dir_all(&d).unwrap();
    let b = Cpu::new();
    let tpath = d.join("teacher.safetensors");
    save_teacher(&b, 99, &tpath);
    let cfg = tiny_config(6);
    let (vit, id) = load_teacher(&b, &tpath).unwrap();
    let ck = d.join("ck");
    train(
        &b,
        &cfg,
        Teacher::new(vit, &cfg).unwrap(),
        id,
        images(6, 6),
        &opts(&ck, 0, Some(3), false),
    )
    .unwrap();
    let e = DualStudent::<Cpu>::load(&ck, None, Arc::new(Cpu::new()))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("stopped at step 3 of 6") && e.contains("--resume"),
        "{e}"
    );
    std::fs::remove_dir_all(&d).unwrap();
}
