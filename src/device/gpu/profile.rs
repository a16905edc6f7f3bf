//! Per-kernel GPU time, for finding where a workload's time goes on a real device: with
//! `KDAD_CUDA_PROFILE=1` the CUDA launcher brackets every kernel launch and cuBLASLt call with
//! a pair of events and, when it is dropped, prints the time per kernel (GEMMs by shape) to
//! stderr. Events are recorded on the stream, so the work stays asynchronous; the spans include
//! the gaps between launches only where the GPU sat idle inside one.

use std::collections::HashMap;

/// One row of the report: a kernel (or GEMM shape), its calls and GPU time.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfileRow {
    pub name: String,
    pub calls: usize,
    pub total_ms: f64,
    /// The median call: unlike the mean, not moved by a first call that loads a module or
    /// lets cuBLASLt pick a kernel.
    pub median_ms: f64,
}

/// Sum `spans` (name, milliseconds) per name, largest total first.
pub fn aggregate(spans: impl IntoIterator<Item = (String, f64)>) -> Vec<ProfileRow> {
    let mut by_name: HashMap<String, Vec<f64>> = HashMap::new();
    for (name, ms) in spans {
        by_name.entry(name).or_default().push(ms);
    }
    let mut rows: Vec<ProfileRow> = by_name
        .into_iter()
        .map(|(name, ms)| ProfileRow {
            calls: ms.len(),
            total_ms: ms.iter().sum(),
            median_ms: crate::bench::median(&ms),
            name,
        })
        .collect();
    rows.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms).then(a.name.cmp(&b.name)));
    rows
}

/// The report as a table: name, calls, total ms, mean and median µs per call, share of the
/// total.
pub fn format(rows: &[ProfileRow]) -> String {
    let total: f64 = rows.iter().map(|r| r.total_ms).sum();
    let mut s = format!(
        "GPU time by kernel ({total:.3} ms in {} calls):\n{:<44} {:>7} {:>10} {:>9} {:>9} {:>6}\n",
        rows.iter().map(|r| r.calls).sum::<usize>(),
        "kernel",
        "calls",
        "total ms",
        "mean µs",
        "median µs",
        "%"
    );
    for r in rows {
        s.push_str(&format!(
            "{:<44} {:>7} {:>10.3} {:>9.1} {:>9.1} {:>6.1}\n",
            r.name,
            r.calls,
            r.total_ms,
            r.total_ms * 1e3 / r.calls as f64,
            r.median_ms * 1e3,
            if total > 0.0 {
                100.0 * r.total_ms / total
            } else {
                0.0
            }
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_by_name_largest_first() {
        let rows = aggregate([
            ("a".to_string(), 1.0),
            ("b".to_string(), 0.5),
            ("a".to_string(), 2.0),
            ("c".to_string(), 4.0),
        ]);
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["c", "a", "b"]);
        assert_eq!((rows[1].calls, rows[1].total_ms), (2, 3.0));
        // The upper median of [1, 2].
        assert_eq!(rows[1].median_ms, 2.0);
        let text = format(&rows);
        assert!(text.contains("7.500 ms in 4 calls"), "{text}");
        // a: 3 ms of 7.5 = 40 %, 1500 µs per call on average, median 2000 µs.
        let a = text.lines().find(|l| l.starts_with("a ")).unwrap();
        assert!(
            a.contains("1500.0") && a.contains("2000.0") && a.ends_with("40.0"),
            "{a}"
        );
    }
}
