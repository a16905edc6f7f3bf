//! Turning the two students' raw scores into one probability (Noisy-OR).
//!
//! Provenance (research/methods.md §1): that the seed paper combines a local (ED) and a
//! semantic (EE) score by Noisy-OR, trained with a "Noisy-OR objective", is from its
//! abstract. Everything concrete here is OUR RECONSTRUCTION (§1.3), not the paper's text:
//! * the exponential link `p = 1 - exp(-s/τ)` with τ the mean score of the training normals
//!   (default), or the sigmoid link `p = σ((s - μ)/σ_s)` with the normals' mean and std;
//! * the joint score `P = 1 - (1 - p_L)(1 - p_S)`;
//! * the joint objective, the negative log-likelihood of a normal image under P: with the
//!   exponential link `-log(1 - P) = s_L/τ_L + s_S/τ_S`, i.e. `L_D/τ_L + L_E/τ_S` for the
//!   training losses.
//!
//! Consequence used in training (`train.rs`): the students share no parameter, so the joint
//! objective's gradient for each student is its own loss's gradient times 1/τ. Adam is
//! invariant to that constant (up to eps) when the clip threshold scales with it, so each
//! student is trained on its own loss and τ only enters the logged objective and the score.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Link {
    /// `p = 1 - exp(-s/τ)`, τ = mean training score.
    Exponential,
    /// `p = sigmoid((s - mean)/std)` over the training scores.
    Sigmoid,
}

/// Mean and variance of a stream of scores (Welford: stable in one pass, mergeable).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunningStats {
    pub n: u64,
    pub mean: f64,
    /// Sum of squared deviations from the mean.
    pub m2: f64,
}

impl RunningStats {
    pub fn push(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }
    /// Population standard deviation (0 for fewer than two values).
    pub fn std(&self) -> f64 {
        if self.n < 2 {
            0.0
        } else {
            (self.m2 / self.n as f64).sqrt()
        }
    }
}

/// The two students' score statistics on the training normals and the link that uses them.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub link: Link,
    pub local: RunningStats,
    pub semantic: RunningStats,
}

/// Scores of one image: raw, as probabilities, and joint.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct JointScore {
    pub p_local: f64,
    pub p_semantic: f64,
    /// `1 - (1 - p_L)(1 - p_S)`.
    pub joint: f64,
    /// `-log(1 - joint)`: ranks exactly like `joint` but does not saturate at 1 in floating
    /// point, so it is the value to rank by (AUROC) when scores are far above the normals.
    pub evidence: f64,
}

impl Calibration {
    /// `-log(1 - p)` of one raw score under the link: the evidence it contributes.
    fn evidence(&self, s: f64, stats: &RunningStats) -> f64 {
        match self.link {
            Link::Exponential => s / stats.mean.max(f64::MIN_POSITIVE),
            // -log(1 - σ(x)) = softplus(x), computed without overflow.
            Link::Sigmoid => {
                let x = (s - stats.mean) / stats.std().max(f64::MIN_POSITIVE);
                x.max(0.0) + (-x.abs()).exp().ln_1p()
            }
        }
    }

    pub fn score(&self, local: f64, semantic: f64) -> JointScore {
        let (el, es) = (
            self.evidence(local, &self.local),
            self.evidence(semantic, &self.semantic),
        );
        let p = |e: f64| -(-e).exp_m1();
        JointScore {
            p_local: p(el),
            p_semantic: p(es),
            joint: p(el + es),
            evidence: el + es,
        }
    }

    /// The joint objective of normal images whose mean losses are `l_local`, `l_semantic`
    /// under the exponential link: `l_local/τ_L + l_semantic/τ_S`.
    pub fn joint_nll(l_local: f64, l_semantic: f64, tau_local: f64, tau_semantic: f64) -> f64 {
        l_local / tau_local + l_semantic / tau_semantic
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(xs: &[f64]) -> RunningStats {
        let mut s = RunningStats::default();
        xs.iter().for_each(|&x| s.push(x));
        s
    }

    #[test]
    fn welford_matches_the_two_pass_formulas() {
        let xs = [0.1, 0.4, 0.25, 0.3, 0.95];
        let s = stats(&xs);
        let mean = xs.iter().sum::<f64>() / 5.0;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 5.0;
        assert!((s.mean - mean).abs() < 1e-15);
        assert!((s.std() - var.sqrt()).abs() < 1e-15);
    }

    #[test]
    fn exponential_link_is_noisy_or_of_the_two_probabilities() {
        let c = Calibration {
            link: Link::Exponential,
            local: stats(&[0.02, 0.04]),
            semantic: stats(&[0.1, 0.3]),
        };
        let s = c.score(0.06, 0.1);
        // τ_L = 0.03, τ_S = 0.2.
        assert!((s.p_local - (1.0 - (-2.0f64).exp())).abs() < 1e-12);
        assert!((s.p_semantic - (1.0 - (-0.5f64).exp())).abs() < 1e-12);
        let noisy_or = 1.0 - (1.0 - s.p_local) * (1.0 - s.p_semantic);
        assert!((s.joint - noisy_or).abs() < 1e-12);
        assert!((s.evidence - 2.5).abs() < 1e-12);
        assert!((Calibration::joint_nll(0.06, 0.1, 0.03, 0.2) - 2.5).abs() < 1e-12);
        // Far beyond the normals the probability saturates, the evidence still ranks.
        let (a, b) = (c.score(3.0, 0.1), c.score(4.0, 0.1));
        assert_eq!(a.joint, 1.0);
        assert!(b.evidence > a.evidence);
    }

    #[test]
    fn sigmoid_link_gives_one_half_at_the_mean() {
        let c = Calibration {
            link: Link::Sigmoid,
            local: stats(&[1.0, 3.0]),
            semantic: stats(&[0.0, 2.0]),
        };
        let s = c.score(2.0, 1.0);
        assert!((s.p_local - 0.5).abs() < 1e-12 && (s.p_semantic - 0.5).abs() < 1e-12);
        assert!((s.joint - 0.75).abs() < 1e-12);
        // One std above: σ(1).
        let s = c.score(3.0, 1.0);
        assert!((s.p_local - 1.0 / (1.0 + (-1.0f64).exp())).abs() < 1e-12);
        // Very large x: softplus(x) ≈ x without overflow.
        assert!((c.score(2.0 + 1e6, 1.0).evidence - (1e6 + 2f64.ln())).abs() < 1e-6);
    }
}
