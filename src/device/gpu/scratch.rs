//! A growable device buffer for temporaries (bf16 GEMM operands, reduction partials, a
//! selected threshold). One stream orders every use, so a buffer can be reused by the next op
//! as soon as this one is enqueued; growing frees the old buffer, which the launcher's stream
//! ordering also makes safe.

use std::sync::{Arc, Mutex, MutexGuard};

use super::{DeviceBuffer, DevicePtr, Launcher};
use crate::error::Result;

pub(crate) struct Scratch<L: Launcher> {
    buf: Mutex<Option<DeviceBuffer<L>>>,
}

/// Scratch memory held for the duration of one op.
pub(crate) struct ScratchGuard<'a, L: Launcher> {
    guard: MutexGuard<'a, Option<DeviceBuffer<L>>>,
}

impl<L: Launcher> ScratchGuard<'_, L> {
    pub(crate) fn ptr(&self) -> DevicePtr {
        self.guard
            .as_ref()
            .map(|b| b.ptr())
            .unwrap_or(DevicePtr::NULL)
    }
}

impl<L: Launcher> Scratch<L> {
    pub(crate) fn new() -> Self {
        Scratch {
            buf: Mutex::new(None),
        }
    }

    /// At least `bytes` of scratch, 256-byte aligned (device allocations are), held until
    /// the guard is dropped.
    pub(crate) fn get(&self, launcher: &Arc<L>, bytes: usize) -> Result<ScratchGuard<'_, L>> {
        let mut guard = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        if guard.as_ref().is_none_or(|b| b.bytes() < bytes) {
            // Grow geometrically so that a sequence of slightly larger requests does not
            // reallocate every time.
            let want = bytes.max(guard.as_ref().map_or(0, |b| b.bytes() * 2));
            *guard = None;
            *guard = Some(DeviceBuffer::new(launcher, want)?);
        }
        Ok(ScratchGuard { guard })
    }
}
