//! `Backend::adam_steps` checks every tensor before it updates any: a bad tensor anywhere in
//! the set is an error naming the op, and no parameter has moved (a half-applied optimiser
//! step could not be told from a whole one in a checkpoint).

use kdad::device::cpu::Cpu;
use kdad::device::gpu::{emu::Emu, GpuBackend};
use kdad::device::{AdamStep, AdamTensors, Backend};
use kdad::tensor::Rng;

fn bad_set_changes_nothing<B: Backend>(be: &B) {
    let mut rng = Rng::new(3);
    let mut up = |dims: &[usize]| be.upload(&rng.tensor(dims, -1.0, 1.0)).unwrap();
    let (mut p0, g0, mut m0, mut v0) = (up(&[4, 5]), up(&[4, 5]), up(&[4, 5]), up(&[4, 5]));
    let (mut p1, g1, mut m1, mut v1) = (up(&[3]), up(&[3]), up(&[2]), up(&[3]));
    let before = be.download(&p0).unwrap();
    let hp = AdamStep {
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        t: 1,
        amsgrad: false,
    };
    for stable in [false, true] {
        let mut set = [
            AdamTensors {
                param: &mut p0,
                grad: &g0,
                m: &mut m0,
                v: &mut v0,
                vmax: None,
            },
            AdamTensors {
                param: &mut p1,
                grad: &g1,
                m: &mut m1,
                v: &mut v1,
                vmax: None,
            },
        ];
        let err = be
            .adam_steps(stable, &mut set, &hp)
            .unwrap_err()
            .to_string();
        assert!(err.contains("adam_steps"), "{}: {err}", be.name());
        assert_eq!(
            be.download(&p0).unwrap().data,
            before.data,
            "{}: the good tensor moved",
            be.name()
        );
    }
}

#[test]
fn cpu_checks_every_tensor_first() {
    bad_set_changes_nothing(&Cpu::new());
}

#[test]
fn gpu_checks_every_tensor_first() {
    bad_set_changes_nothing(&GpuBackend::new(Emu::new()));
}
