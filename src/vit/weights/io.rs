//! safetensors bytes in and out: parsing with errors a user can act on, element types widened
//! to f32, and deterministic serialisation (written to disk by `crate::atomic`).

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use crate::error::{Error, Result};
use crate::tensor::{HostTensor, Shape};

pub fn weights_err(path: &Path, detail: impl Into<String>) -> Error {
    Error::Weights {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// Parses a whole safetensors file. A file that is not one says what it looks like instead,
/// when that is recognisable.
pub fn parse<'a>(path: &Path, bytes: &'a [u8]) -> Result<SafeTensors<'a>> {
    if bytes.is_empty() {
        return Err(weights_err(path, "the file is empty"));
    }
    if bytes.starts_with(b"PK\x03\x04") {
        return Err(weights_err(
            path,
            "this is a zip archive (a PyTorch .pth/.pt checkpoint?), not safetensors: convert a \
             Meta DINOv2 .pth with weights/convert_meta_pth.py",
        ));
    }
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
    {
        return Err(weights_err(
            path,
            "an ONNX file is not safetensors: import it with `kdad weights import-onnx`",
        ));
    }
    SafeTensors::deserialize(bytes).map_err(|e| {
        weights_err(
            path,
            format!("not a readable safetensors file (corrupt or truncated?): {e}"),
        )
    })
}

/// The file's `__metadata__` (empty when it has none).
pub fn metadata(path: &Path, bytes: &[u8]) -> Result<HashMap<String, String>> {
    let (_, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| weights_err(path, format!("not a readable safetensors file: {e}")))?;
    Ok(meta.metadata().clone().unwrap_or_default())
}

/// Element types read as f32: the floating types weights come in.
pub fn readable(dtype: Dtype) -> bool {
    matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64)
}

/// The tensor's values widened (or for F64 rounded) to f32; safetensors data is little-endian.
pub fn to_f32(path: &Path, name: &str, view: &TensorView) -> Result<HostTensor> {
    let b = view.data();
    let data: Vec<f32> = match view.dtype() {
        Dtype::F32 => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => b
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => b
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::F64 => b
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(std::array::from_fn(|i| c[i])) as f32)
            .collect(),
        other => {
            return Err(weights_err(
                path,
                format!("{name}: element type {other:?} is not F32/F16/BF16/F64"),
            ))
        }
    };
    HostTensor::new(Shape(view.shape().to_vec()), data)
        .map_err(|e| weights_err(path, format!("{name}: {e}")))
}

/// Serialises f32 tensors (names sorted) with `metadata` into safetensors bytes.
pub fn serialize(
    tensors: &HashMap<String, HostTensor>,
    metadata: &HashMap<String, String>,
) -> Result<Vec<u8>> {
    let bytes: Vec<(&String, &HostTensor, Vec<u8>)> = tensors
        .iter()
        .map(|(n, t)| (n, t, t.data.iter().flat_map(|v| v.to_le_bytes()).collect()))
        .collect();
    let views = bytes
        .iter()
        .map(|(n, t, b)| {
            TensorView::new(Dtype::F32, t.dims().to_vec(), b)
                .map(|v| (n.as_str(), v))
                .map_err(|e| Error::Invalid(format!("tensor {n}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let info = (!metadata.is_empty()).then(|| metadata.clone());
    let mut out = safetensors::tensor::serialize(views, info)
        .map_err(|e| Error::Invalid(format!("safetensors: {e}")))?;
    sort_header(&mut out)?;
    Ok(out)
}

/// Rewrites the JSON header of serialized safetensors bytes with its keys sorted. The crate
/// writes `__metadata__` in `HashMap` order, which differs from process to process; the
/// teacher's identity is the sha256 of its file, so the same import must give the same bytes.
/// Sorting keeps the header's length (same keys and values), so the data offsets stay valid.
fn sort_header(bytes: &mut [u8]) -> Result<()> {
    let bad = |why: &str| Error::Invalid(format!("safetensors header: {why}"));
    let n = u64::from_le_bytes(bytes[..8].try_into().map_err(|_| bad("too short"))?) as usize;
    let header = bytes
        .get(8..8 + n)
        .ok_or_else(|| bad("length past the end"))?;
    // serde_json's Map is a BTreeMap (no `preserve_order`), so this sorts every object.
    let value: serde_json::Value =
        serde_json::from_slice(header.trim_ascii_end()).map_err(|e| bad(&e.to_string()))?;
    let sorted = serde_json::to_vec(&value).map_err(|e| bad(&e.to_string()))?;
    if sorted.len() > n {
        return Err(bad("sorted header is longer than the original"));
    }
    bytes[8..8 + sorted.len()].copy_from_slice(&sorted);
    bytes[8 + sorted.len()..8 + n].fill(b' ');
    Ok(())
}
