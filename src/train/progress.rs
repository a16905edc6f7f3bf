//! What a run tells its user while it trains: a progress bar (loss, images/s, ETA) on the
//! terminal and a JSON-lines log with one record per step.

use crate::error::{Error, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// One line of the step log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Steps completed, counting this one (1-based).
    pub step: u64,
    /// Every loss term the method reports, by name (a non-finite value is written as null).
    pub loss: BTreeMap<String, Option<f64>>,
    pub lr: f64,
    /// Gradient norms before clipping, by parameter group.
    pub grad_norm: BTreeMap<String, f64>,
    /// Wall time of this step in seconds.
    pub time_s: f64,
    pub images_per_s: f64,
}

/// Appends [`StepRecord`]s to `path`, one JSON object per line, flushed per line so a killed
/// run keeps its log up to the last step it finished.
pub struct StepLog {
    path: PathBuf,
    file: File,
}

impl StepLog {
    /// Open the log for a run that starts after `steps_done` steps: records of later steps
    /// (from a killed run that went past its last checkpoint) are dropped, so the resumed run's
    /// log has each step exactly once. A fresh run (`steps_done` = 0) starts an empty log.
    pub fn open(path: &Path, steps_done: u64) -> Result<Self> {
        let mut keep = Vec::new();
        if steps_done > 0 {
            if let Ok(f) = File::open(path) {
                for line in BufReader::new(f).lines() {
                    let line = line.map_err(|e| Error::io(path, e))?;
                    // A torn last line (killed mid-write) does not parse; it is dropped.
                    if let Ok(r) = serde_json::from_str::<StepRecord>(&line) {
                        if r.step <= steps_done {
                            keep.push(line);
                        }
                    }
                }
            }
        }
        let mut text = keep.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        crate::atomic::write_atomic(path, text.as_bytes())?;
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Ok(StepLog {
            path: path.to_path_buf(),
            file,
        })
    }

    pub fn append(&mut self, r: &StepRecord) -> Result<()> {
        let mut line = serde_json::to_string(r)
            .map_err(|e| Error::Invalid(format!("{}: {e}", self.path.display())))?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .map_err(|e| Error::io(&self.path, e))?;
        self.file.flush().map_err(|e| Error::io(&self.path, e))
    }
}

/// Read a step log back (for reports and tests).
pub fn read_log(path: &Path) -> Result<Vec<StepRecord>> {
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    BufReader::new(f)
        .lines()
        .map(|l| {
            let l = l.map_err(|e| Error::io(path, e))?;
            serde_json::from_str(&l)
                .map_err(|e| Error::Invalid(format!("{}: bad log line: {e}", path.display())))
        })
        .collect()
}

/// The terminal progress bar; drawn only when asked for and stderr is a terminal.
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    pub fn new(total: u64, done: u64, visible: bool) -> Self {
        let bar = if visible {
            ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        // The template is a constant, so it always parses; the fallback only guards upgrades.
        let style = ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} {msg} ETA {eta_precise}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style.progress_chars("=> "));
        bar.set_position(done);
        bar.reset_eta();
        Progress { bar }
    }

    pub fn update(&self, r: &StepRecord) {
        let loss = r
            .loss
            .iter()
            .map(|(k, v)| match v {
                Some(v) => format!("{k} {v:.4}"),
                None => format!("{k} NaN"),
            })
            .collect::<Vec<_>>()
            .join(" ");
        self.bar
            .set_message(format!("{loss} | {:.1} img/s", r.images_per_s));
        self.bar.set_position(r.step);
    }

    /// Print a line above the bar (or plainly when it is hidden).
    pub fn println(&self, msg: &str) {
        if self.bar.is_hidden() {
            eprintln!("{msg}");
        } else {
            self.bar.println(msg);
        }
    }

    pub fn finish(&self) {
        self.bar.finish();
    }

    pub fn abandon(&self) {
        self.bar.abandon();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(step: u64) -> StepRecord {
        StepRecord {
            step,
            loss: BTreeMap::from([("ed".into(), Some(0.5 / step as f64)), ("ee".into(), None)]),
            lr: 1e-3,
            grad_norm: BTreeMap::from([("ed".into(), 0.1)]),
            time_s: 0.25,
            images_per_s: 32.0,
        }
    }

    #[test]
    fn resumed_log_drops_steps_past_the_checkpoint_and_torn_lines() {
        let d = std::env::temp_dir().join(format!("kdad-log-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("train_log.jsonl");
        let mut log = StepLog::open(&p, 0).unwrap();
        for s in 1..=5 {
            log.append(&rec(s)).unwrap();
        }
        drop(log);
        // A kill in the middle of writing step 6.
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"step\": 6, \"lo").unwrap();
        drop(f);
        let mut log = StepLog::open(&p, 4).unwrap();
        log.append(&rec(5)).unwrap();
        let back = read_log(&p).unwrap();
        assert_eq!(
            back.iter().map(|r| r.step).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
        assert_eq!(back[2], rec(3));
        assert_eq!(back[0].loss["ee"], None);
        // A fresh run starts an empty log.
        drop(StepLog::open(&p, 0).unwrap());
        assert!(read_log(&p).unwrap().is_empty());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
