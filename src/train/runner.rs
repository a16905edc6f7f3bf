//! The training loop shared by every method: schedule, loss check, checkpoints, log, progress.
//! The method supplies one step split in two ([`Steppable::forward`] then
//! [`Steppable::update`]), so a non-finite loss is caught before any weight changes.

use super::progress::{Progress, StepLog, StepRecord};
use super::schedule::WarmCosine;
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A method's training step, as the loop drives it.
pub trait Steppable {
    /// Forward and losses of iteration `it` (0-based), by name. Must not change parameters.
    fn forward(&mut self, it: u64) -> Result<Vec<(String, f64)>>;
    /// Backward, gradient clipping and the optimiser update of iteration `it` at `lr`;
    /// returns the gradient norms before clipping, by parameter group.
    fn update(&mut self, it: u64, lr: f64) -> Result<Vec<(String, f64)>>;
    /// Write a checkpoint of the state after `steps_done` steps into `dir`.
    fn checkpoint(&mut self, dir: &Path, steps_done: u64) -> Result<()>;
    /// Images consumed per step, for the images/s figure.
    fn images_per_step(&self) -> usize;
}

#[derive(Clone, Debug)]
pub struct LoopOptions {
    pub schedule: WarmCosine,
    /// Write a checkpoint every this many steps (and always after the last); 0 = only at the end.
    pub checkpoint_every: u64,
    /// Checkpoint directory; the step log `train_log.jsonl` is written beside its files.
    pub out_dir: PathBuf,
    pub progress: bool,
    /// Stop after this many steps even if the schedule is longer (a deliberate interruption:
    /// the run can be resumed later and ends exactly as if it had not stopped).
    pub stop_after: Option<u64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LoopReport {
    pub steps_done: u64,
    /// The losses of the last step.
    pub last_loss: Vec<(String, f64)>,
    pub seconds: f64,
    /// Median step time in seconds over this invocation.
    pub median_step_s: f64,
}

pub const LOG_FILE: &str = "train_log.jsonl";

/// Run steps `start..schedule.total` (or until `stop_after`).
pub fn run<T: Steppable>(task: &mut T, opts: &LoopOptions, start: u64) -> Result<LoopReport> {
    let total = opts.schedule.total;
    let end = opts.stop_after.map_or(total, |s| s.min(total));
    if start > total {
        return Err(Error::Invalid(format!(
            "the checkpoint is at step {start}, past the run's {total} steps"
        )));
    }
    std::fs::create_dir_all(&opts.out_dir).map_err(|e| Error::io(&opts.out_dir, e))?;
    let mut log = StepLog::open(&opts.out_dir.join(LOG_FILE), start)?;
    let progress = Progress::new(total, start, opts.progress);
    let t0 = Instant::now();
    let mut last_ckpt = (start > 0).then_some(start);
    let mut times = Vec::new();
    let mut last_loss = Vec::new();
    for it in start..end {
        let ts = Instant::now();
        let lr = opts.schedule.lr(it);
        let loss = task.forward(it)?;
        if let Some((name, v)) = loss.iter().find(|(_, v)| !v.is_finite()) {
            let rec = record(it + 1, &loss, lr, &[], ts.elapsed().as_secs_f64(), 0.0);
            log.append(&rec)?;
            progress.abandon();
            let kept = match last_ckpt {
                Some(s) => format!(
                    "the last good checkpoint (step {s}) is kept in {}",
                    opts.out_dir.display()
                ),
                None => "no checkpoint had been written yet".to_string(),
            };
            return Err(Error::Numerical(format!(
                "loss {name} is {v} at step {}; stopped before updating the weights, {kept}. \
                 Check the training images for corrupt values, or lower the learning rate",
                it + 1
            )));
        }
        let gn = task.update(it, lr)?;
        let dt = ts.elapsed().as_secs_f64();
        times.push(dt);
        let rec = record(
            it + 1,
            &loss,
            lr,
            &gn,
            dt,
            task.images_per_step() as f64 / dt,
        );
        log.append(&rec)?;
        progress.update(&rec);
        last_loss = loss;
        let done = it + 1;
        let due = opts.checkpoint_every > 0 && done % opts.checkpoint_every == 0;
        if due || done == end {
            task.checkpoint(&opts.out_dir, done)?;
            last_ckpt = Some(done);
        }
    }
    if end == total {
        progress.finish();
    } else {
        progress.abandon();
    }
    times.sort_by(f64::total_cmp);
    Ok(LoopReport {
        steps_done: end.max(start),
        last_loss,
        seconds: t0.elapsed().as_secs_f64(),
        median_step_s: times.get(times.len() / 2).copied().unwrap_or(0.0),
    })
}

fn record(
    step: u64,
    loss: &[(String, f64)],
    lr: f64,
    gn: &[(String, f64)],
    time_s: f64,
    images_per_s: f64,
) -> StepRecord {
    StepRecord {
        step,
        loss: loss
            .iter()
            .map(|(k, v)| (k.clone(), v.is_finite().then_some(*v)))
            .collect(),
        lr,
        grad_norm: gn.iter().cloned().collect::<BTreeMap<_, _>>(),
        time_s,
        images_per_s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::atomic::write_atomic;
    use crate::train::progress::read_log;

    /// Gradient descent on (x - 3)², with a loss of NaN at iteration `nan_at`; a checkpoint
    /// is x written as text.
    struct Quadratic {
        x: f64,
        nan_at: Option<u64>,
        updates: u64,
    }

    impl Steppable for Quadratic {
        fn forward(&mut self, it: u64) -> Result<Vec<(String, f64)>> {
            let l = if Some(it) == self.nan_at {
                f64::NAN
            } else {
                (self.x - 3.0).powi(2)
            };
            Ok(vec![("q".into(), l)])
        }
        fn update(&mut self, _it: u64, lr: f64) -> Result<Vec<(String, f64)>> {
            let g = 2.0 * (self.x - 3.0);
            self.x -= lr * g;
            self.updates += 1;
            Ok(vec![("q".into(), g.abs())])
        }
        fn checkpoint(&mut self, dir: &Path, steps_done: u64) -> Result<()> {
            write_atomic(
                &dir.join("x.txt"),
                format!("{steps_done} {}", self.x).as_bytes(),
            )
        }
        fn images_per_step(&self) -> usize {
            1
        }
    }

    fn opts(dir: &Path, total: u64) -> LoopOptions {
        LoopOptions {
            schedule: WarmCosine {
                base_lr: 0.4,
                final_lr: 0.04,
                warmup: 2,
                total,
            },
            checkpoint_every: 3,
            out_dir: dir.to_path_buf(),
            progress: false,
            stop_after: None,
        }
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kdad-loop-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn nan_loss_stops_before_the_update_and_keeps_the_last_checkpoint() {
        let d = tmpdir("nan");
        let mut q = Quadratic {
            x: 0.0,
            nan_at: Some(7),
            updates: 0,
        };
        let e = run(&mut q, &opts(&d, 20), 0).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::Numerical(_)), "{msg}");
        assert!(msg.contains("loss q is NaN at step 8"), "{msg}");
        assert!(msg.contains("last good checkpoint (step 6)"), "{msg}");
        assert_eq!(q.updates, 7, "the NaN step must not update");
        let ck = std::fs::read_to_string(d.join("x.txt")).unwrap();
        assert!(ck.starts_with("6 "), "{ck}");
        let log = read_log(&d.join(LOG_FILE)).unwrap();
        assert_eq!(log.len(), 8);
        assert_eq!(log[7].loss["q"], None);
        assert!(log[6].loss["q"].is_some_and(f64::is_finite));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn nan_before_any_checkpoint_says_so() {
        let d = tmpdir("nan0");
        let mut q = Quadratic {
            x: 0.0,
            nan_at: Some(1),
            updates: 0,
        };
        let msg = run(&mut q, &opts(&d, 20), 0).unwrap_err().to_string();
        assert!(msg.contains("no checkpoint had been written yet"), "{msg}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn interrupted_and_resumed_loop_equals_an_unbroken_one() {
        let d = tmpdir("resume");
        let mut whole = Quadratic {
            x: 0.0,
            nan_at: None,
            updates: 0,
        };
        let r = run(&mut whole, &opts(&d, 10), 0).unwrap();
        assert_eq!(r.steps_done, 10);
        assert!(r.last_loss[0].1 < 1e-2, "{:?}", r.last_loss);
        let mut o = opts(&d, 10);
        o.stop_after = Some(4);
        let mut a = Quadratic {
            x: 0.0,
            nan_at: None,
            updates: 0,
        };
        assert_eq!(run(&mut a, &o, 0).unwrap().steps_done, 4);
        // The stop wrote a checkpoint at step 4 although 4 is not a multiple of 3.
        assert!(std::fs::read_to_string(d.join("x.txt"))
            .unwrap()
            .starts_with("4 "));
        o.stop_after = None;
        run(&mut a, &o, 4).unwrap();
        assert_eq!(a.x.to_bits(), whole.x.to_bits());
        let steps: Vec<u64> = read_log(&d.join(LOG_FILE))
            .unwrap()
            .iter()
            .map(|r| r.step)
            .collect();
        assert_eq!(steps, (1..=10).collect::<Vec<_>>());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
