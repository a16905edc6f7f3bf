//! Every setting of the dual-student method, with Dinomaly's defaults (research/methods.md §2)
//! scaled to a ViT-S/14 teacher at 224 px, and ours (§1.3) for the parts the paper leaves
//! open. Serialised into each checkpoint, so a checkpoint says exactly how it was trained.

use super::noisy_or::Link;
use crate::error::{Error, Result};
use crate::train::optim::{OptimConfig, OptimKind};
use crate::train::schedule::WarmCosine;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DualStudentConfig {
    // ---- images -------------------------------------------------------------------------
    /// Square resize before the centre crop (Dinomaly: 448; 256 for the quick start).
    pub resize: usize,
    /// Centre crop fed to the teacher (Dinomaly: 392; 224 for the quick start).
    pub crop: usize,

    // ---- encoder-decoder (ED) student: Dinomaly ------------------------------------------
    /// 0-based teacher blocks whose raw outputs are tapped (Dinomaly ViT-S/B: 2..9).
    pub taps: Vec<usize>,
    /// Loose layer groups, as indices into `taps` (and, mirrored, into the decoder blocks).
    pub groups: Vec<Vec<usize>>,
    /// Pass the class (and register) tokens through bottleneck and decoder, dropping them
    /// only before the loss (Dinomaly does; the PyTorch reference we match drops them first).
    pub keep_cls: bool,
    /// Dropout on the bottleneck's input, hidden layer and output.
    pub bottleneck_dropout: f32,
    /// Decoder blocks; must equal the number of taps (each decoder output pairs with a tap).
    pub decoder_depth: usize,
    pub decoder_ln_eps: f32,
    /// Added to the linear attention's normaliser (Dinomaly: 0).
    pub decoder_attn_eps: f32,
    /// Pair the last decoder block with the first tap (Dinomaly's `de_list[::-1]`).
    pub mirror: bool,
    /// Hard mining: after the ramp, only the hardest (1 - p) of token positions keep their
    /// full gradient; p = hm_p_final · min(it / min(hm_ramp, total_steps), 1).
    pub hm_p_final: f32,
    pub hm_ramp: u64,
    /// Gradient factor of the easy positions.
    pub hm_factor: f32,
    /// Linear weights: truncated normal std, cut at ±bound (Dinomaly: 0.01, 0.03).
    pub init_std: f32,
    pub init_bound: f32,

    // ---- encoder-encoder (EE) student: ours ----------------------------------------------
    /// Blocks of the from-scratch ViT (teacher width and heads, patch 14). 6 is our choice
    /// for a CPU budget; the paper's depth is unknown (methods.md §1.2).
    pub ee_depth: usize,
    /// LayerScale in the EE student (off: a plain pre-LN ViT trains faster from scratch).
    pub ee_layerscale: bool,
    /// Gradient-norm clip of the EE student (the ED student uses `clip`).
    pub ee_clip: f32,

    // ---- optimisation (both students; Dinomaly's) ----------------------------------------
    pub optimizer: OptimKind,
    pub lr: f64,
    pub final_lr: f64,
    pub warmup: u64,
    pub steps: u64,
    pub batch: usize,
    pub weight_decay: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub amsgrad: bool,
    pub clip: f32,
    /// Seeds student initialisation, data order and every dropout mask.
    pub seed: u64,

    // ---- scoring (Dinomaly §2.11) and the Noisy-OR link ----------------------------------
    pub blur_ksize: usize,
    pub blur_sigma: f32,
    /// Image score = mean of the top `top_ratio` of map pixels (0: the maximum).
    pub top_ratio: f32,
    pub link: Link,
}

impl Default for DualStudentConfig {
    fn default() -> Self {
        DualStudentConfig {
            resize: 256,
            crop: 224,
            taps: (2..=9).collect(),
            groups: vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]],
            keep_cls: false,
            bottleneck_dropout: 0.2,
            decoder_depth: 8,
            decoder_ln_eps: 1e-8,
            decoder_attn_eps: 0.0,
            mirror: true,
            hm_p_final: 0.9,
            hm_ramp: 1000,
            hm_factor: 0.1,
            init_std: 0.01,
            init_bound: 0.03,
            ee_depth: 6,
            ee_layerscale: false,
            ee_clip: 0.1,
            optimizer: OptimKind::StableAdamW,
            lr: 2e-3,
            final_lr: 2e-4,
            warmup: 100,
            steps: 500,
            batch: 8,
            weight_decay: 1e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            amsgrad: true,
            clip: 0.1,
            seed: 1,
            blur_ksize: 5,
            blur_sigma: 4.0,
            top_ratio: 0.01,
            link: Link::Exponential,
        }
    }
}

impl DualStudentConfig {
    /// Dinomaly's own resolution: resize 448, crop 392.
    pub fn paper_resolution(mut self) -> Self {
        self.resize = 448;
        self.crop = 392;
        self
    }

    pub fn optim(&self) -> OptimConfig {
        OptimConfig {
            kind: self.optimizer,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
            amsgrad: self.amsgrad,
        }
    }

    pub fn schedule(&self) -> WarmCosine {
        WarmCosine {
            base_lr: self.lr,
            final_lr: self.final_lr,
            warmup: self.warmup,
            total: self.steps,
        }
    }

    /// Hard-mining fraction at iteration `it` (0-based). The reference ramps over
    /// min(1000, T) so a short run still reaches p_final; Dinomaly (T ≥ 5000) ramps over 1000.
    pub fn hm_p(&self, it: u64) -> f32 {
        let ramp = self.hm_ramp.min(self.steps).max(1);
        (self.hm_p_final as f64 * (it as f64 / ramp as f64).min(1.0)) as f32
    }

    /// Check the settings against each other and against a teacher of `teacher_depth` blocks
    /// and patch `patch`.
    pub fn validate(&self, teacher_depth: usize, patch: usize) -> Result<()> {
        let bad = |m: String| Err(Error::Invalid(format!("dual-student config: {m}")));
        if self.taps.is_empty() {
            return bad("taps must not be empty".into());
        }
        if let Some(t) = self.taps.iter().find(|&&t| t >= teacher_depth) {
            return bad(format!(
                "tap {t} is past the teacher's {teacher_depth} blocks"
            ));
        }
        if self.decoder_depth != self.taps.len() {
            return bad(format!(
                "decoder depth {} must equal the number of taps {} (decoder outputs pair with taps)",
                self.decoder_depth,
                self.taps.len()
            ));
        }
        if self.groups.is_empty() || self.groups.iter().any(|g| g.is_empty()) {
            return bad("groups must be non-empty lists of tap indices".into());
        }
        if let Some(i) = self
            .groups
            .iter()
            .flatten()
            .find(|&&i| i >= self.taps.len())
        {
            return bad(format!(
                "group index {i} is past the {} taps",
                self.taps.len()
            ));
        }
        if self.crop == 0 || !self.crop.is_multiple_of(patch) || self.resize < self.crop {
            return bad(format!(
                "crop {} must be a positive multiple of the patch {patch} and at most resize {}",
                self.crop, self.resize
            ));
        }
        if !(0.0..1.0).contains(&self.bottleneck_dropout) {
            return bad(format!(
                "bottleneck dropout {} must be in [0, 1)",
                self.bottleneck_dropout
            ));
        }
        if !(0.0..1.0).contains(&self.hm_p_final) {
            return bad(format!(
                "hard-mining p {} must be in [0, 1)",
                self.hm_p_final
            ));
        }
        if self.ee_depth == 0 {
            return bad("the EE student needs at least one block".into());
        }
        if self.batch == 0 || self.steps == 0 {
            return bad("batch and steps must be positive".into());
        }
        let positive = [self.lr, self.clip as f64, self.ee_clip as f64]
            .iter()
            .all(|&v| v > 0.0);
        if !positive || self.final_lr.is_nan() || self.final_lr < 0.0 {
            return bad("learning rates and clip thresholds must be positive".into());
        }
        if self.blur_ksize.is_multiple_of(2) || self.blur_sigma.is_nan() || self.blur_sigma <= 0.0 {
            return bad(format!(
                "blur kernel {} must be odd with a positive sigma ({})",
                self.blur_ksize, self.blur_sigma
            ));
        }
        if !(0.0..=1.0).contains(&self.top_ratio) {
            return bad(format!("top ratio {} must be in [0, 1]", self.top_ratio));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_dinomaly_for_vit_s() {
        let c = DualStudentConfig::default();
        c.validate(12, 14).unwrap();
        assert_eq!(c.taps, [2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(c.schedule().lr(0), 0.0);
        assert_eq!(c.schedule().lr(100), 2e-3);
        // 500 steps: the reference ramps p over the whole run.
        assert_eq!(c.hm_p(0), 0.0);
        assert!((c.hm_p(250) - 0.45).abs() < 1e-7);
        let mut long = c.clone();
        long.steps = 5000;
        assert!((long.hm_p(500) - 0.45).abs() < 1e-7);
        assert_eq!(long.hm_p(4000), 0.9);
        let p = c.paper_resolution();
        assert_eq!((p.resize, p.crop), (448, 392));
    }

    #[test]
    fn inconsistent_settings_are_named() {
        let mut c = DualStudentConfig {
            decoder_depth: 6,
            ..Default::default()
        };
        assert!(c
            .validate(12, 14)
            .unwrap_err()
            .to_string()
            .contains("decoder depth 6"));
        c.decoder_depth = 8;
        c.taps[7] = 12;
        assert!(c
            .validate(12, 14)
            .unwrap_err()
            .to_string()
            .contains("tap 12"));
        let c = DualStudentConfig {
            crop: 225,
            ..Default::default()
        };
        assert!(c
            .validate(12, 14)
            .unwrap_err()
            .to_string()
            .contains("crop 225"));
        let e = serde_json::from_str::<DualStudentConfig>(r#"{"tapz": [1]}"#).unwrap_err();
        assert!(e.to_string().contains("tapz"), "{e}");
    }
}
