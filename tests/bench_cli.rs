//! `kdad bench vit` and `kdad bench train-step` as a user runs them: a table with a rate for
//! every requested batch, and clear errors for sizes the model cannot take. The smallest
//! model at 28 px keeps each run well under a second on the CPU and the emulated device.

use std::process::{Command, Output};

fn kdad(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kdad"))
        .args(args)
        .output()
        .expect("running kdad")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn bench_vit_prints_a_row_per_batch_on_each_device() {
    for device in ["cpu", "emu"] {
        let o = kdad(&[
            "--device", device, "bench", "vit", "--model", "s14", "--size", "28", "--batch", "1,3",
            "--reps", "1",
        ]);
        assert!(o.status.success(), "{device}: {}", stderr(&o));
        let text = stdout(&o);
        assert!(text.contains("dim 384, depth 12, 28x28"), "{text}");
        for batch in ["1", "3"] {
            let row = text
                .lines()
                .find(|l| l.split_whitespace().next() == Some(batch))
                .unwrap_or_else(|| panic!("{device}: no row for batch {batch}:\n{text}"));
            assert!(row.contains("FLOP/s"), "{row}");
        }
    }
}

#[test]
fn bench_train_step_reports_its_phases() {
    let o = kdad(&[
        "bench",
        "train-step",
        "--model",
        "s14",
        "--size",
        "28",
        "--batch",
        "2",
        "--steps",
        "1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for phase in [
        "teacher forward",
        "student forward+loss",
        "backward",
        "clip+optimiser",
        "images/s",
    ] {
        assert!(text.contains(phase), "no {phase} in: {text}");
    }
}

#[test]
fn bench_sizes_the_model_cannot_take_are_clear_errors() {
    let bad_size = kdad(&["bench", "vit", "--model", "s14", "--size", "30"]);
    assert!(!bad_size.status.success());
    assert!(
        stderr(&bad_size).contains("not a positive multiple of the patch size 14"),
        "{}",
        stderr(&bad_size)
    );
    let bad_batch = kdad(&[
        "bench", "vit", "--model", "s14", "--size", "28", "--batch", "0",
    ]);
    assert!(!bad_batch.status.success());
    assert!(
        stderr(&bad_batch).contains("at least 1"),
        "{}",
        stderr(&bad_batch)
    );
    let zero_step_batch = kdad(&["bench", "train-step", "--batch", "0"]);
    assert!(!zero_step_batch.status.success());
    assert!(
        stderr(&zero_step_batch).contains("--batch must be at least 1"),
        "{}",
        stderr(&zero_step_batch)
    );
}
