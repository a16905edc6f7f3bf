//! Learning-rate schedules.

use serde::{Deserialize, Serialize};

/// Dinomaly's `WarmCosineScheduler` (utils.py), per iteration `it` (0-based):
/// * `it < warmup`: `np.linspace(0, base, warmup)[it]`, so iteration 0 runs at lr 0;
/// * `warmup <= it < total`: `final + ½(base - final)(1 + cos(π·i/(total - warmup)))` with
///   `i = it - warmup`;
/// * `it >= total`: `final`.
///
/// A run shorter than the warm-up (`total <= warmup`) keeps Dinomaly's arithmetic: the cosine
/// part then has `max(total - warmup, 1)` entries, of which only the warm-up is ever reached.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct WarmCosine {
    pub base_lr: f64,
    pub final_lr: f64,
    pub warmup: u64,
    pub total: u64,
}

impl WarmCosine {
    pub fn lr(&self, it: u64) -> f64 {
        if it < self.warmup {
            return linspace_at(0.0, self.base_lr, self.warmup, it);
        }
        if it >= self.total.max(self.warmup + 1) {
            return self.final_lr;
        }
        let len = self.total.saturating_sub(self.warmup).max(1) as f64;
        let i = (it - self.warmup) as f64;
        self.final_lr
            + 0.5 * (self.base_lr - self.final_lr) * (1.0 + (std::f64::consts::PI * i / len).cos())
    }
}

/// Element `i` of `numpy.linspace(start, stop, num)`: `start + i·step` with
/// `step = (stop - start)/(num - 1)`, the last element exactly `stop`, `[start]` for num = 1.
fn linspace_at(start: f64, stop: f64, num: u64, i: u64) -> f64 {
    if num <= 1 {
        return start;
    }
    if i == num - 1 {
        return stop;
    }
    start + i as f64 * ((stop - start) / (num - 1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dinomaly(total: u64) -> WarmCosine {
        WarmCosine {
            base_lr: 2e-3,
            final_lr: 2e-4,
            warmup: 100,
            total,
        }
    }

    #[test]
    fn warmup_is_numpy_linspace_from_zero() {
        let s = dinomaly(500);
        assert_eq!(s.lr(0), 0.0);
        // np.linspace(0, 2e-3, 100)[1] = 2e-3/99
        assert!((s.lr(1) - 2e-3 / 99.0).abs() < 1e-18);
        assert!((s.lr(50) - 50.0 * 2e-3 / 99.0).abs() < 1e-18);
        assert_eq!(s.lr(99), 2e-3);
    }

    #[test]
    fn cosine_runs_from_base_to_final_then_stays() {
        let s = dinomaly(500);
        assert_eq!(s.lr(100), 2e-3); // cos(0) = 1
                                     // Half way through the 400 cosine iterations: cos(π/2) = 0 -> the midpoint.
        assert!((s.lr(300) - 1.1e-3).abs() < 1e-15);
        // Last scheduled iteration, i = 399 of 400.
        let want = 2e-4 + 0.5 * 1.8e-3 * (1.0 + (std::f64::consts::PI * 399.0 / 400.0).cos());
        assert_eq!(s.lr(499), want);
        assert_eq!(s.lr(500), 2e-4);
        assert_eq!(s.lr(10_000), 2e-4);
        for it in 100..499 {
            assert!(s.lr(it + 1) < s.lr(it), "not decreasing at {it}");
        }
    }

    #[test]
    fn run_shorter_than_warmup_only_warms_up() {
        let s = dinomaly(50);
        assert_eq!(s.lr(0), 0.0);
        assert!((s.lr(49) - 49.0 * 2e-3 / 99.0).abs() < 1e-18);
        let one = WarmCosine {
            base_lr: 1.0,
            final_lr: 0.1,
            warmup: 1,
            total: 3,
        };
        assert_eq!(one.lr(0), 0.0);
        assert_eq!(one.lr(1), 1.0);
        assert_eq!(one.lr(3), 0.1);
    }
}
