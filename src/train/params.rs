//! Trainable parameters: a value and its gradient under a canonical name. Models own their
//! parameters as struct fields (so a backward borrows a weight and its gradient at once);
//! the optimiser and checkpoints see them through [`ParamMut`] views, so they work the same
//! for every model however it stores them (the ViT keeps values and gradients in two
//! structs of one shape).

use crate::device::{Backend, Tensor};
use crate::error::{Error, Result};
use crate::tensor::HostTensor;
use std::collections::HashMap;

/// An owned trainable tensor and its gradient (same shape). Backward ops add into `grad`.
pub struct Param<B: Backend> {
    pub name: String,
    pub value: Tensor<B>,
    pub grad: Tensor<B>,
}

impl<B: Backend> Param<B> {
    /// Upload `init` as the value, with a zero gradient.
    pub fn new(backend: &B, name: impl Into<String>, init: &HostTensor) -> Result<Self> {
        Ok(Param {
            name: name.into(),
            value: backend.upload(init)?,
            grad: backend.zeros(init.dims())?,
        })
    }
    pub fn view(&mut self) -> ParamMut<'_, B> {
        ParamMut {
            name: self.name.clone(),
            value: &mut self.value,
            grad: &mut self.grad,
        }
    }
}

/// A borrowed view of one trainable tensor and its gradient, however the model stores them.
/// Lists of views have a fixed order per model: optimiser state and checkpoints follow it
/// and check it by name.
pub struct ParamMut<'a, B: Backend> {
    pub name: String,
    pub value: &'a mut Tensor<B>,
    pub grad: &'a Tensor<B>,
}

/// Download every value, in order, under its name.
pub fn values_to_host<B: Backend>(
    backend: &B,
    params: &[ParamMut<'_, B>],
) -> Result<Vec<(String, HostTensor)>> {
    params
        .iter()
        .map(|p| Ok((p.name.clone(), backend.download(p.value)?)))
        .collect()
}

/// Upload values by name. Every parameter must be present with its exact shape and nothing
/// else may be in `tensors`: a checkpoint of another configuration is an error that names the
/// first difference, never a silent partial load.
pub fn load_values<B: Backend>(
    backend: &B,
    params: &mut [ParamMut<'_, B>],
    tensors: &HashMap<String, HostTensor>,
    source: &str,
) -> Result<()> {
    check_names(params.iter().map(|p| p.name.as_str()), tensors, source)?;
    for p in params.iter_mut() {
        let t = &tensors[&p.name];
        if t.dims() != p.value.dims() {
            return Err(Error::Invalid(format!(
                "{source}: tensor {} has shape {:?}, the model expects {:?} (a checkpoint of \
                 another configuration?)",
                p.name,
                t.dims(),
                p.value.dims()
            )));
        }
        *p.value = backend.upload(t)?;
    }
    Ok(())
}

/// Require `tensors` to hold exactly the names `want`.
pub(crate) fn check_names<'a>(
    want: impl Iterator<Item = &'a str>,
    tensors: &HashMap<String, HostTensor>,
    source: &str,
) -> Result<()> {
    let want: Vec<&str> = want.collect();
    if let Some(missing) = want.iter().find(|n| !tensors.contains_key(**n)) {
        return Err(Error::Invalid(format!(
            "{source}: tensor {missing} is missing ({} present, {} expected; a checkpoint of \
             another configuration or method?)",
            tensors.len(),
            want.len()
        )));
    }
    if tensors.len() != want.len() {
        let mut extra: Vec<&String> = tensors
            .keys()
            .filter(|k| !want.contains(&k.as_str()))
            .collect();
        extra.sort();
        return Err(Error::Invalid(format!(
            "{source}: unexpected tensors {extra:?} (a checkpoint of another configuration or \
             method?)"
        )));
    }
    Ok(())
}
