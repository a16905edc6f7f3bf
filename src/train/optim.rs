//! AdamW / StableAdamW over [`ParamMut`] views, with their moment buffers on the backend.
//! The update itself is a Backend op; this holds the state, the step count and its
//! (de)serialisation for checkpoints.

use super::params::{check_names, ParamMut};
use crate::device::{AdamStep, AdamTensors, Backend, Tensor};
use crate::error::{Error, Result};
use crate::tensor::HostTensor;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimKind {
    AdamW,
    /// Dinomaly's StableAdamW: AdamW with the update divided by max(1, RMS(g/denom)) per tensor.
    StableAdamW,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimConfig {
    pub kind: OptimKind,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub amsgrad: bool,
}

struct Moments<B: Backend> {
    name: String,
    m: Tensor<B>,
    v: Tensor<B>,
    vmax: Option<Tensor<B>>,
}

pub struct Optimizer<B: Backend> {
    cfg: OptimConfig,
    /// Steps taken so far (the next step uses t + 1 for bias correction).
    t: u64,
    state: Vec<Moments<B>>,
}

impl<B: Backend> Optimizer<B> {
    /// Zero moments for `params`, in their order.
    pub fn new(backend: &B, cfg: OptimConfig, params: &[ParamMut<'_, B>]) -> Result<Self> {
        let state = params
            .iter()
            .map(|p| {
                Ok(Moments {
                    name: p.name.clone(),
                    m: backend.zeros(p.value.dims())?,
                    v: backend.zeros(p.value.dims())?,
                    vmax: if cfg.amsgrad {
                        Some(backend.zeros(p.value.dims())?)
                    } else {
                        None
                    },
                })
            })
            .collect::<Result<_>>()?;
        Ok(Optimizer { cfg, t: 0, state })
    }

    pub fn steps_taken(&self) -> u64 {
        self.t
    }

    /// One update of every parameter from its gradient at learning rate `lr`.
    pub fn step(&mut self, backend: &B, params: &mut [ParamMut<'_, B>], lr: f32) -> Result<()> {
        if params.len() != self.state.len() {
            return Err(Error::Invalid(format!(
                "optimizer: {} parameters given, state holds {}",
                params.len(),
                self.state.len()
            )));
        }
        let hp = AdamStep {
            lr,
            beta1: self.cfg.beta1,
            beta2: self.cfg.beta2,
            eps: self.cfg.eps,
            weight_decay: self.cfg.weight_decay,
            t: self.t + 1,
            amsgrad: self.cfg.amsgrad,
        };
        let mut set = Vec::with_capacity(params.len());
        for (p, s) in params.iter_mut().zip(self.state.iter_mut()) {
            if p.name != s.name {
                return Err(Error::Invalid(format!(
                    "optimizer: parameter {} where the state has {}",
                    p.name, s.name
                )));
            }
            set.push(AdamTensors {
                param: &mut *p.value,
                grad: p.grad,
                m: &mut s.m,
                v: &mut s.v,
                vmax: s.vmax.as_mut(),
            });
        }
        let stable = self.cfg.kind == OptimKind::StableAdamW;
        backend.adam_steps(stable, &mut set, &hp)?;
        self.t += 1;
        Ok(())
    }

    /// The moment buffers as `m.NAME`, `v.NAME` and (AMSGrad) `vmax.NAME`.
    pub fn state_to_host(&self, backend: &B) -> Result<Vec<(String, HostTensor)>> {
        let mut out = Vec::with_capacity(self.state.len() * 3);
        for s in &self.state {
            out.push((format!("m.{}", s.name), backend.download(&s.m)?));
            out.push((format!("v.{}", s.name), backend.download(&s.v)?));
            if let Some(vm) = &s.vmax {
                out.push((format!("vmax.{}", s.name), backend.download(vm)?));
            }
        }
        Ok(out)
    }

    /// Restore the moments written by [`Optimizer::state_to_host`] and the step count.
    pub fn load_state(
        &mut self,
        backend: &B,
        tensors: &HashMap<String, HostTensor>,
        steps_taken: u64,
        source: &str,
    ) -> Result<()> {
        let mut want = Vec::new();
        for s in &self.state {
            want.push(format!("m.{}", s.name));
            want.push(format!("v.{}", s.name));
            if s.vmax.is_some() {
                want.push(format!("vmax.{}", s.name));
            }
        }
        check_names(want.iter().map(String::as_str), tensors, source)?;
        for s in self.state.iter_mut() {
            let load = |prefix: &str, t: &mut Tensor<B>| -> Result<()> {
                let key = format!("{prefix}.{}", s.name);
                let h = &tensors[&key];
                if h.dims() != t.dims() {
                    return Err(Error::Invalid(format!(
                        "{source}: {key} has shape {:?}, expected {:?}",
                        h.dims(),
                        t.dims()
                    )));
                }
                *t = backend.upload(h)?;
                Ok(())
            };
            load("m", &mut s.m)?;
            load("v", &mut s.v)?;
            if let Some(vm) = s.vmax.as_mut() {
                load("vmax", vm)?;
            }
        }
        self.t = steps_taken;
        Ok(())
    }
}
