//! Optimisation: SGD with momentum (optionally Nesterov) and decoupled-free
//! L2 weight decay on weights, with a cosine learning-rate schedule after a
//! linear warm-up.

use crate::engine::Param;

/// SGD settings.
#[derive(Clone, Copy, Debug)]
pub struct Sgd {
    pub lr: f32,
    pub momentum: f32,
    pub nesterov: bool,
    pub weight_decay: f32,
}

impl Sgd {
    /// One step over every trainable parameter (batch-norm running
    /// statistics have no gradient and are skipped).
    pub fn step(&self, params: &mut [Param], lr: f32) {
        for p in params.iter_mut().filter(|p| !p.grad.is_empty()) {
            for k in 0..p.value.len() {
                let mut g = p.grad[k];
                if p.decay {
                    g += self.weight_decay * p.value[k];
                }
                p.momentum[k] = self.momentum * p.momentum[k] + g;
                let update = if self.nesterov {
                    g + self.momentum * p.momentum[k]
                } else {
                    p.momentum[k]
                };
                p.value[k] -= lr * update;
            }
        }
    }
}

/// Cosine schedule from `base` to 0 over `total` steps after `warmup`
/// linear steps.
pub fn cosine_lr(base: f32, step: usize, warmup: usize, total: usize) -> f32 {
    if step < warmup {
        return base * (step + 1) as f32 / warmup as f32;
    }
    let t = (step - warmup) as f32 / (total.saturating_sub(warmup)).max(1) as f32;
    0.5 * base * (1.0 + (std::f32::consts::PI * t.min(1.0)).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_and_decays() {
        assert!((cosine_lr(1.0, 0, 4, 100) - 0.25).abs() < 1e-6);
        assert!((cosine_lr(1.0, 3, 4, 100) - 1.0).abs() < 1e-6);
        assert!(cosine_lr(1.0, 52, 4, 100) < 0.51);
        assert!(cosine_lr(1.0, 100, 4, 100).abs() < 1e-6);
    }
}
