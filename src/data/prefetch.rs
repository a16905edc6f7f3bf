//! Decode and preprocess on worker threads, handing results back in order through bounded
//! queues (`sync_channel`), so memory stays bounded however slow the consumer is.
//!
//! Worker `w` of `W` prepares items `w, w + W, w + 2W, ...` and has its own queue; the
//! consumer reads the queues round-robin. That keeps the input order with no reordering
//! buffer, at the cost of some imbalance when one item is much slower than the others.

use crate::{Error, Result};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

/// An iterator over `f(item)` for every item, in order, computed ahead on worker threads.
pub struct Prefetch<T> {
    receivers: Vec<Receiver<Result<T>>>,
    handles: Vec<JoinHandle<()>>,
    next: usize,
    len: usize,
}

/// Starts `workers` threads, each with a queue `depth` deep. Errors from `f` come back at the
/// position of their item; the caller decides whether to stop.
pub fn prefetch<I, T, F>(items: Vec<I>, workers: usize, depth: usize, f: F) -> Prefetch<T>
where
    I: Send + Sync + 'static,
    T: Send + 'static,
    F: Fn(&I) -> Result<T> + Send + Sync + 'static,
{
    let len = items.len();
    let workers = workers.clamp(1, len.max(1));
    let items = Arc::new(items);
    let f = Arc::new(f);
    let mut receivers = Vec::with_capacity(workers);
    let mut handles = Vec::with_capacity(workers);
    for w in 0..workers {
        let (tx, rx) = sync_channel(depth.max(1));
        let items = Arc::clone(&items);
        let f = Arc::clone(&f);
        handles.push(std::thread::spawn(move || {
            for i in (w..items.len()).step_by(workers) {
                // A closed queue means the consumer has gone: stop quietly.
                if tx.send(f(&items[i])).is_err() {
                    return;
                }
            }
        }));
        receivers.push(rx);
    }
    Prefetch {
        receivers,
        handles,
        next: 0,
        len,
    }
}

impl<T> Iterator for Prefetch<T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        if self.next >= self.len {
            return None;
        }
        let i = self.next;
        self.next += 1;
        let rx = &self.receivers[i % self.receivers.len()];
        Some(rx.recv().unwrap_or_else(|_| {
            Err(Error::Invalid(format!(
                "prefetch: the worker preparing item {i} stopped (it panicked)"
            )))
        }))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.len - self.next;
        (n, Some(n))
    }
}

impl<T> Drop for Prefetch<T> {
    fn drop(&mut self) {
        // Closing the queues first unblocks workers waiting to send, so the joins finish.
        self.receivers.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}
