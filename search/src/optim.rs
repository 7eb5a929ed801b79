//! Optimisation: SGD with momentum (optionally Nesterov) and L2 weight
//! decay, Adam and AdamW (decoupled weight decay), parameter groups that
//! give different parameters different optimisers (weights vs the
//! architecture parameters of a search), and a cosine learning-rate schedule
//! after a linear warm-up.

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
            self.update(p, lr);
        }
    }

    /// One step of one parameter.
    pub fn update(&self, p: &mut Param, lr: f32) {
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

/// Adam; with `decoupled`, AdamW (weight decay applied to the weights
/// directly, not through the gradient).
#[derive(Clone, Copy, Debug)]
pub struct Adam {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub decoupled: bool,
}

impl Default for Adam {
    fn default() -> Adam {
        Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: true,
        }
    }
}

impl Adam {
    /// One step; `t` is the 1-based step count (bias correction).
    pub fn step(&self, params: &mut [Param], lr: f32, t: usize) {
        for p in params.iter_mut().filter(|p| !p.grad.is_empty()) {
            self.update(p, lr, t);
        }
    }

    /// One step of one parameter (its second-moment state is allocated on
    /// the first).
    pub fn update(&self, p: &mut Param, lr: f32, t: usize) {
        let (c1, c2) = (
            1.0 - self.beta1.powi(t as i32),
            1.0 - self.beta2.powi(t as i32),
        );
        if p.second.len() != p.value.len() {
            p.second = vec![0.0; p.value.len()];
        }
        for k in 0..p.value.len() {
            let mut g = p.grad[k];
            if p.decay && !self.decoupled {
                g += self.weight_decay * p.value[k];
            }
            p.momentum[k] = self.beta1 * p.momentum[k] + (1.0 - self.beta1) * g;
            p.second[k] = self.beta2 * p.second[k] + (1.0 - self.beta2) * g * g;
            let update = (p.momentum[k] / c1) / ((p.second[k] / c2).sqrt() + self.eps);
            if p.decay && self.decoupled {
                p.value[k] -= lr * self.weight_decay * p.value[k];
            }
            p.value[k] -= lr * update;
        }
    }
}

/// An optimiser for one parameter group.
#[derive(Clone, Copy, Debug)]
pub enum Optimizer {
    Sgd(Sgd),
    Adam(Adam),
}

/// Parameters whose names start with `prefix` (the empty prefix takes all
/// the others), stepped by `optimizer` at `lr_scale` times the schedule.
#[derive(Clone, Debug)]
pub struct ParamGroup {
    pub prefix: String,
    pub optimizer: Optimizer,
    pub lr_scale: f32,
}

/// Step every group: a parameter belongs to the first group whose prefix
/// its name starts with.
pub fn step_groups(groups: &[ParamGroup], params: &mut [Param], lr: f32, t: usize) {
    for p in params.iter_mut().filter(|p| !p.grad.is_empty()) {
        let Some(g) = groups.iter().find(|g| p.name.starts_with(&g.prefix)) else {
            continue;
        };
        match g.optimizer {
            Optimizer::Sgd(s) => s.update(p, lr * g.lr_scale),
            Optimizer::Adam(a) => a.update(p, lr * g.lr_scale, t),
        }
    }
}

/// How the learning rate moves after the warm-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Schedule {
    /// Half a cosine from the base rate to 0.
    #[default]
    Cosine,
    /// The base rate, a tenth of it from half-way, a hundredth from three
    /// quarters.
    Step,
    /// The base rate throughout.
    Constant,
}

impl std::str::FromStr for Schedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Schedule, String> {
        match s {
            "cosine" => Ok(Schedule::Cosine),
            "step" => Ok(Schedule::Step),
            "constant" => Ok(Schedule::Constant),
            _ => Err(format!("`{s}`: expected cosine, step or constant")),
        }
    }
}

impl Schedule {
    /// The rate at `step` (0-based) of `total`, after `warmup` linear
    /// steps from base / warmup up to base.
    pub fn at(self, base: f32, step: usize, warmup: usize, total: usize) -> f32 {
        if step < warmup {
            return base * (step + 1) as f32 / warmup as f32;
        }
        let t = ((step - warmup) as f32 / (total.saturating_sub(warmup)).max(1) as f32).min(1.0);
        match self {
            Schedule::Cosine => 0.5 * base * (1.0 + (std::f32::consts::PI * t).cos()),
            Schedule::Step if t >= 0.75 => base * 0.01,
            Schedule::Step if t >= 0.5 => base * 0.1,
            Schedule::Step | Schedule::Constant => base,
        }
    }
}

/// Cosine schedule from `base` to 0 over `total` steps after `warmup`
/// linear steps.
pub fn cosine_lr(base: f32, step: usize, warmup: usize, total: usize) -> f32 {
    Schedule::Cosine.at(base, step, warmup, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quadratic(name: &str, start: f32) -> Param {
        let mut p = Param::placeholder();
        p.name = name.to_string();
        p.shape = vec![1];
        p.value = vec![start];
        p.grad = vec![0.0];
        p.momentum = vec![0.0];
        p
    }

    /// Minimise (x - 3)^2 with each optimiser, in two groups at once.
    #[test]
    fn optimisers_minimise_a_quadratic_in_groups() {
        let mut params = vec![quadratic("w.weight", 0.0), quadratic("alpha.arch", 10.0)];
        let groups = vec![
            ParamGroup {
                prefix: "alpha".into(),
                optimizer: Optimizer::Adam(Adam::default()),
                lr_scale: 1.0,
            },
            ParamGroup {
                prefix: String::new(),
                optimizer: Optimizer::Sgd(Sgd {
                    lr: 0.0,
                    momentum: 0.9,
                    nesterov: true,
                    weight_decay: 0.0,
                }),
                lr_scale: 0.1,
            },
        ];
        for t in 1..=500 {
            for p in &mut params {
                p.grad[0] = 2.0 * (p.value[0] - 3.0);
            }
            step_groups(&groups, &mut params, 0.1, t);
        }
        assert!(
            (params[0].value[0] - 3.0).abs() < 1e-2,
            "sgd: {}",
            params[0].value[0]
        );
        assert!(
            (params[1].value[0] - 3.0).abs() < 5e-2,
            "adam: {}",
            params[1].value[0]
        );
        assert_eq!(params[1].second.len(), 1, "Adam state only where Adam ran");
        assert!(params[0].second.is_empty());
    }

    #[test]
    fn schedule_warms_up_and_decays() {
        assert!((cosine_lr(1.0, 0, 4, 100) - 0.25).abs() < 1e-6);
        assert!((cosine_lr(1.0, 3, 4, 100) - 1.0).abs() < 1e-6);
        assert!(cosine_lr(1.0, 52, 4, 100) < 0.51);
        assert!(cosine_lr(1.0, 100, 4, 100).abs() < 1e-6);
        assert_eq!(Schedule::Step.at(1.0, 40, 4, 100), 1.0);
        assert_eq!(Schedule::Step.at(1.0, 60, 4, 100), 0.1);
        assert_eq!(Schedule::Step.at(1.0, 90, 4, 100), 0.01);
        assert_eq!(Schedule::Constant.at(1.0, 99, 4, 100), 1.0);
    }
}
