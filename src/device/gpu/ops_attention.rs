//! Attention ops of [`GpuBackend`].

use super::backend::T;
use super::{GpuBackend, Launcher};
use crate::error::{Error, Result};

fn not_done(op: &str) -> Error {
    Error::Unavailable {
        backend: "gpu",
        reason: format!("{op} has no GPU kernel yet"),
    }
}

impl<L: Launcher> GpuBackend<L> {
    pub(super) fn flash_attention_fwd(
        &self,
        _qkv: &T<L>,
        _heads: usize,
        _scale: f32,
        _out: &mut T<L>,
        _lse: &mut T<L>,
    ) -> Result<()> {
        Err(not_done("attention_fwd"))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn flash_attention_bwd(
        &self,
        _dout: &T<L>,
        _qkv: &T<L>,
        _out: &T<L>,
        _lse: &T<L>,
        _heads: usize,
        _scale: f32,
        _dqkv: &mut T<L>,
    ) -> Result<()> {
        Err(not_done("attention_bwd"))
    }

    pub(super) fn linear_attn_fwd(
        &self,
        _qkv: &T<L>,
        _heads: usize,
        _eps: f32,
        _out: &mut T<L>,
    ) -> Result<()> {
        Err(not_done("linear_attention_fwd"))
    }

    pub(super) fn linear_attn_bwd(
        &self,
        _dout: &T<L>,
        _qkv: &T<L>,
        _heads: usize,
        _eps: f32,
        _dqkv: &mut T<L>,
    ) -> Result<()> {
        Err(not_done("linear_attention_bwd"))
    }
}
