//! Parallel loop helpers shared by the CPU ops.

use rayon::prelude::*;

/// Rows per rayon task: enough work per task to amortise scheduling, small enough to keep
/// both cores busy on the smallest tensors the model uses.
const ROWS_PER_TASK: usize = 64;

/// `acc[j] += Σ_r f(r)[j]` for a per-row contribution written by `f(r, row_acc)` into a
/// zeroed f64 buffer of width `width`. Rows are summed in chunks in parallel and the chunk
/// sums added in chunk order, so the result does not depend on the thread count.
pub fn column_sums(
    rows: usize,
    width: usize,
    f: impl Fn(usize, &mut [f64]) + Sync,
    acc: &mut [f32],
) {
    let chunks = rows.div_ceil(ROWS_PER_TASK);
    let partial: Vec<Vec<f64>> = (0..chunks)
        .into_par_iter()
        .map(|c| {
            let mut sum = vec![0.0f64; width];
            for r in c * ROWS_PER_TASK..((c + 1) * ROWS_PER_TASK).min(rows) {
                f(r, &mut sum);
            }
            sum
        })
        .collect();
    let mut total = vec![0.0f64; width];
    for p in &partial {
        for (t, v) in total.iter_mut().zip(p) {
            *t += v;
        }
    }
    for (a, t) in acc.iter_mut().zip(&total) {
        *a += *t as f32;
    }
}

/// Split `data` into rows of `width` and run `f(row_index, row)` on them in parallel.
pub fn for_rows(data: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if width == 0 {
        return;
    }
    data.par_chunks_mut(width)
        .enumerate()
        .for_each(|(r, row)| f(r, row));
}
