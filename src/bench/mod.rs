//! Whole-model benchmarks on any backend, shared by `kdad bench` and `cargo bench`: the ViT
//! forward a scoring line runs ([`vit`]) and one Dinomaly-style training step split into the
//! phases the PyTorch peer reports ([`train_step`]). Random weights throughout: time does not
//! depend on their values.

pub mod report;
pub mod train_step;
pub mod vit;

/// CPU time this process's threads have run so far, in ns (Linux's per-thread schedstat);
/// `None` elsewhere. On a shared machine it separates our work from time others took.
pub fn process_cpu_ns() -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// The median of `v` (the upper one for an even count); NaN for an empty slice.
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
}
