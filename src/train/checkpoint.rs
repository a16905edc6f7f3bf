//! Checkpoints: a directory holding `config.json` (what was trained, on which teacher, up to
//! which step, from which seed) and the safetensors files it names (weights; optimiser state
//! for resuming). The tensor files carry the step in their names and are written first;
//! `config.json` is written last and is the commit point, so a run killed at any moment
//! leaves the previous complete checkpoint in place. Every write is atomic.

use crate::atomic::write_atomic;
use crate::error::{Error, Result};
use crate::tensor::HostTensor;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const FORMAT: &str = "kdad-checkpoint";
pub const VERSION: u32 = 1;
const CONFIG: &str = "config.json";
/// Metadata key of a tensor file naming the checkpoint it belongs to.
const STAMP: &str = "kdad_checkpoint";

fn stamp(meta: &CheckpointMeta) -> String {
    format!("{} step {}", meta.method, meta.step)
}

/// Which teacher a checkpoint was trained against: students are only meaningful with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeacherId {
    /// As given at training time (informative only; the hash is the identity).
    pub path: String,
    /// sha256 of the teacher weights file, lower-case hex.
    pub sha256: String,
}

/// The contents of `config.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub format: String,
    pub version: u32,
    /// The method that wrote it (`dual_student`, ...); loading checks it.
    pub method: String,
    /// Optimisation steps completed.
    pub step: u64,
    pub total_steps: u64,
    pub teacher: TeacherId,
    /// All randomness of a run (data order, dropout masks) is a function of (seed, step), so
    /// the seed is the whole RNG state.
    pub seed: u64,
    /// The backend that trained it (`Backend::name`, e.g. "cpu (bf16 matmuls)"): a
    /// bit-identical resume needs the same one. Empty in checkpoints that predate the field.
    #[serde(default)]
    pub backend: String,
    pub weights_file: String,
    /// Absent in a weights-only (inference) checkpoint.
    pub optimizer_file: Option<String>,
    /// The method's settings, as the method serialises them.
    pub method_config: serde_json::Value,
    /// Method state that is not a tensor (running means, calibration), and the optimiser
    /// step counts.
    pub method_state: serde_json::Value,
}

impl CheckpointMeta {
    pub fn new(method: &str, step: u64, total_steps: u64, teacher: TeacherId, seed: u64) -> Self {
        CheckpointMeta {
            format: FORMAT.into(),
            version: VERSION,
            method: method.into(),
            step,
            total_steps,
            teacher,
            seed,
            backend: String::new(),
            weights_file: String::new(),
            optimizer_file: None,
            method_config: serde_json::Value::Null,
            method_state: serde_json::Value::Null,
        }
    }
}

/// Write a checkpoint into `dir` (created if needed). `meta.weights_file` and
/// `meta.optimizer_file` are set here. Tensor files of older checkpoints in `dir` are removed
/// once the new `config.json` is in place.
pub fn save(
    dir: &Path,
    mut meta: CheckpointMeta,
    weights: &[(String, HostTensor)],
    optimizer: Option<&[(String, HostTensor)]>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tag = format!("{}-{:08}", meta.method, meta.step);
    meta.weights_file = format!("weights-{tag}.safetensors");
    write_atomic(&dir.join(&meta.weights_file), &serialize(weights, &meta)?)?;
    meta.optimizer_file = match optimizer {
        Some(o) => {
            let name = format!("optimizer-{tag}.safetensors");
            write_atomic(&dir.join(&name), &serialize(o, &meta)?)?;
            Some(name)
        }
        None => None,
    };
    let json = serde_json::to_vec_pretty(&meta)
        .map_err(|e| Error::Invalid(format!("checkpoint config: {e}")))?;
    write_atomic(&dir.join(CONFIG), &json)?;
    remove_stale(dir, &meta);
    Ok(())
}

/// Remove tensor files that the current config no longer names. Best effort: a file that
/// cannot be removed costs disk space, not correctness.
fn remove_stale(dir: &Path, meta: &CheckpointMeta) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let ours = (name.starts_with("weights-") || name.starts_with("optimizer-"))
            && name.ends_with(".safetensors");
        if ours && name != meta.weights_file && Some(&name) != meta.optimizer_file.as_ref() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

fn serialize(tensors: &[(String, HostTensor)], meta: &CheckpointMeta) -> Result<Vec<u8>> {
    let bytes: Vec<(&str, &[u8], &[usize])> = tensors
        .iter()
        .map(|(n, t)| (n.as_str(), bytemuck::cast_slice(&t.data), t.dims()))
        .collect();
    let views = bytes
        .iter()
        .map(|(n, b, d)| Ok((*n, TensorView::new(Dtype::F32, d.to_vec(), b)?)))
        .collect::<std::result::Result<Vec<_>, safetensors::SafeTensorError>>()
        .map_err(|e| Error::Invalid(format!("checkpoint: {e}")))?;
    // One metadata entry: the header's map is written in hash order, so with one key the
    // same checkpoint is the same bytes in every process.
    let info = HashMap::from([(STAMP.to_string(), stamp(meta))]);
    safetensors::serialize(views, Some(info))
        .map_err(|e| Error::Invalid(format!("checkpoint: {e}")))
}

/// A checkpoint directory whose `config.json` has been read and checked.
pub struct Checkpoint {
    pub dir: PathBuf,
    pub meta: CheckpointMeta,
}

impl Checkpoint {
    /// Read `dir/config.json` and check that it is a checkpoint of `method`.
    pub fn open(dir: &Path, method: &str) -> Result<Self> {
        let path = dir.join(CONFIG);
        let bytes = std::fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::Invalid(format!(
                    "{}: no checkpoint here ({CONFIG} is missing)",
                    dir.display()
                ))
            } else {
                Error::io(&path, e)
            }
        })?;
        let meta: CheckpointMeta = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Invalid(format!(
                "{}: not a kdad checkpoint config: {e}",
                path.display()
            ))
        })?;
        if meta.format != FORMAT {
            return Err(Error::Invalid(format!(
                "{}: format is {:?}, expected {FORMAT:?}",
                path.display(),
                meta.format
            )));
        }
        if meta.version != VERSION {
            return Err(Error::Invalid(format!(
                "{}: checkpoint version {} but this kdad reads version {VERSION}",
                path.display(),
                meta.version
            )));
        }
        if meta.method != method {
            return Err(Error::Invalid(format!(
                "{}: a checkpoint of method {:?}, but {method:?} was asked for",
                path.display(),
                meta.method
            )));
        }
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            meta,
        })
    }

    pub fn weights(&self) -> Result<HashMap<String, HostTensor>> {
        self.read_tensors(&self.meta.weights_file)
    }

    /// The optimiser state; an error for a weights-only checkpoint.
    pub fn optimizer(&self) -> Result<HashMap<String, HostTensor>> {
        match &self.meta.optimizer_file {
            Some(f) => self.read_tensors(f),
            None => Err(Error::Invalid(format!(
                "{}: a weights-only checkpoint has no optimizer state to resume from",
                self.dir.display()
            ))),
        }
    }

    fn read_tensors(&self, file: &str) -> Result<HashMap<String, HostTensor>> {
        let path = self.dir.join(file);
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let corrupt = |detail: String| {
            Error::Invalid(format!(
                "{}: truncated or corrupt checkpoint file ({detail}); resume from an earlier \
                 checkpoint or retrain",
                path.display()
            ))
        };
        let st = SafeTensors::deserialize(&bytes).map_err(|e| corrupt(e.to_string()))?;
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| corrupt(e.to_string()))?;
        let found = header.metadata().as_ref().and_then(|m| m.get(STAMP));
        let want = stamp(&self.meta);
        if found != Some(&want) {
            return Err(corrupt(format!(
                "it records {found:?}, {CONFIG} says {want:?}"
            )));
        }
        let mut out = HashMap::new();
        for (name, view) in st.tensors() {
            if view.dtype() != Dtype::F32 {
                return Err(corrupt(format!(
                    "tensor {name} is {:?}, expected F32",
                    view.dtype()
                )));
            }
            let data: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            out.insert(name, HostTensor::new(view.shape(), data)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Rng;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kdad-ckpt-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn meta(step: u64) -> CheckpointMeta {
        let teacher = TeacherId {
            path: "t.safetensors".into(),
            sha256: "ab".repeat(32),
        };
        CheckpointMeta::new("dual_student", step, 10, teacher, 7)
    }

    fn tensors(seed: u64) -> Vec<(String, HostTensor)> {
        let mut r = Rng::new(seed);
        vec![
            ("a.w".into(), r.tensor([3, 5], -1.0, 1.0)),
            ("b".into(), r.tensor([7], -1.0, 1.0)),
        ]
    }

    #[test]
    fn round_trip_and_stale_files_removed() {
        let d = tmpdir("rt");
        save(&d, meta(2), &tensors(1), Some(&tensors(2))).unwrap();
        save(&d, meta(4), &tensors(3), Some(&tensors(4))).unwrap();
        let c = Checkpoint::open(&d, "dual_student").unwrap();
        assert_eq!(c.meta.step, 4);
        let w = c.weights().unwrap();
        for (n, t) in tensors(3) {
            assert_eq!(w[&n], t);
        }
        let o = c.optimizer().unwrap();
        assert_eq!(o["b"], tensors(4)[1].1);
        let mut names: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "config.json",
                "optimizer-dual_student-00000004.safetensors",
                "weights-dual_student-00000004.safetensors"
            ]
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn truncated_weights_file_is_a_clear_error() {
        let d = tmpdir("trunc");
        save(&d, meta(3), &tensors(1), None).unwrap();
        let c = Checkpoint::open(&d, "dual_student").unwrap();
        let f = d.join(&c.meta.weights_file);
        let bytes = std::fs::read(&f).unwrap();
        std::fs::write(&f, &bytes[..bytes.len() - 10]).unwrap();
        let e = c.weights().unwrap_err().to_string();
        assert!(
            e.contains("truncated or corrupt") && e.contains(&c.meta.weights_file),
            "{e}"
        );
        // No optimizer file: resuming from it is refused with a reason.
        let e = c.optimizer().unwrap_err().to_string();
        assert!(e.contains("weights-only"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn wrong_method_missing_and_garbage_configs_are_clear_errors() {
        let d = tmpdir("wrong");
        let e = Checkpoint::open(&d, "dual_student")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("no checkpoint here"), "{e}");
        save(&d, meta(1), &tensors(1), None).unwrap();
        let e = Checkpoint::open(&d, "snl").err().unwrap().to_string();
        assert!(
            e.contains("\"dual_student\"") && e.contains("\"snl\""),
            "{e}"
        );
        std::fs::write(d.join("config.json"), b"{\"format\": \"kdad-checkpoint\"").unwrap();
        let e = Checkpoint::open(&d, "dual_student")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("not a kdad checkpoint config"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn weights_file_of_another_step_is_rejected() {
        let d = tmpdir("step");
        save(&d, meta(5), &tensors(1), None).unwrap();
        let mut c = Checkpoint::open(&d, "dual_student").unwrap();
        c.meta.step = 6; // as if config.json and the tensor file came from different saves
        let e = c.weights().unwrap_err().to_string();
        assert!(e.contains("records Some(\"dual_student step 5\")"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
