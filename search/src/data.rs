//! Datasets: deterministic learnable synthetic data, and `.npy` pairs.
//!
//! Synthetic samples of class `c` are a class template (a smooth random
//! field from a few plane waves, fixed per class and seed) plus a random
//! shift of amplitude and independent noise, so a small convnet learns them
//! in a few epochs but cannot memorise noise.

use mnet_compiler::npy;
use rand::{RngExt, SeedableRng};

/// Inputs (`len x input shape`, f32) and labels.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub shape: Vec<usize>,
    pub classes: usize,
    pub inputs: Vec<f32>,
    pub labels: Vec<usize>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn sample_len(&self) -> usize {
        self.shape.iter().product()
    }

    /// `count` synthetic samples of the task `task` (which fixes the class
    /// templates); `draw` seeds the samples' gains and noise, so two draws
    /// of one task are a training and a held-out set.
    pub fn synthetic(
        shape: &[usize],
        classes: usize,
        count: usize,
        task: u64,
        draw: u64,
    ) -> Dataset {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(task);
        let len: usize = shape.iter().product();
        let c = *shape.last().unwrap();
        let coords = |i: usize| -> (f32, f32, f32) {
            let ch = i % c;
            let pos = i / c;
            if shape.len() == 3 {
                ((pos / shape[1]) as f32, (pos % shape[1]) as f32, ch as f32)
            } else {
                (pos as f32, 0.0, ch as f32)
            }
        };
        let templates: Vec<Vec<f32>> = (0..classes)
            .map(|_| {
                let waves: Vec<[f32; 4]> = (0..3)
                    .map(|_| {
                        [
                            rng.random_range(0.1f32..0.9),
                            rng.random_range(0.1f32..0.9),
                            rng.random_range(0.0f32..6.3),
                            rng.random_range(0.3f32..0.6),
                        ]
                    })
                    .collect();
                (0..len)
                    .map(|i| {
                        let (y, x, ch) = coords(i);
                        waves
                            .iter()
                            .map(|w| w[3] * (w[0] * y + w[1] * x + w[2] + ch).sin())
                            .sum()
                    })
                    .collect()
            })
            .collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(draw ^ 0x5eed_0000_0000_0001);
        let mut inputs = Vec::with_capacity(count * len);
        let mut labels = Vec::with_capacity(count);
        for k in 0..count {
            let label = k % classes;
            let gain = rng.random_range(0.7f32..1.3);
            for v in &templates[label] {
                inputs.push((gain * v + rng.random_range(-0.3f32..0.3)).clamp(-1.0, 1.0));
            }
            labels.push(label);
        }
        Dataset {
            shape: shape.to_vec(),
            classes,
            inputs,
            labels,
        }
    }
}

/// Read a training and a held-out set. `synthetic[:COUNT]`: `COUNT`
/// samples (default 2048) for training and a quarter as many, drawn
/// separately, held out. `npy:DIR`: `DIR/x.npy` (float32 `[N, ...input]`)
/// and `DIR/y.npy` (int32 or int64 `[N]`), the last 10% held out.
pub fn load(
    spec: &str,
    shape: &[usize],
    classes: usize,
    seed: u64,
) -> Result<(Dataset, Dataset), String> {
    if let Some(rest) = spec.strip_prefix("synthetic") {
        let count = match rest.strip_prefix(':') {
            Some(n) => n
                .parse::<usize>()
                .map_err(|_| format!("`{n}` is not a sample count"))?,
            None if rest.is_empty() => 2048,
            None => return Err("write synthetic or synthetic:COUNT".into()),
        };
        if !(1..=1_000_000).contains(&count) {
            return Err("the sample count must be 1..=1000000".into());
        }
        return Ok((
            Dataset::synthetic(shape, classes, count, seed, 1),
            Dataset::synthetic(shape, classes, (count / 4).max(classes), seed, 2),
        ));
    }
    if let Some(dir) = spec.strip_prefix("npy:") {
        let dir = std::path::Path::new(dir);
        let read = |f: &str| {
            std::fs::read(dir.join(f))
                .map_err(|e| format!("cannot read {}: {e}", dir.join(f).display()))
        };
        let xs = read("x.npy")?;
        let inputs = npy::parse(&xs)
            .and_then(|a| a.f32_samples(shape))
            .map_err(|e| format!("x.npy: {e}"))?;
        let ys = read("y.npy")?;
        let labels = npy::parse(&ys)
            .and_then(|a| a.labels())
            .map_err(|e| format!("y.npy: {e}"))?;
        if labels.len() != inputs.len() {
            return Err(format!(
                "x.npy has {} samples but y.npy {} labels",
                inputs.len(),
                labels.len()
            ));
        }
        if let Some((i, l)) = labels.iter().enumerate().find(|(_, l)| **l >= classes) {
            return Err(format!(
                "label {l} at index {i} is not below the network's {classes} outputs"
            ));
        }
        let split = inputs.len() - inputs.len() / 10;
        let make = |r: std::ops::Range<usize>| Dataset {
            shape: shape.to_vec(),
            classes,
            inputs: inputs[r.clone()].concat(),
            labels: labels[r].to_vec(),
        };
        return Ok((make(0..split), make(split..inputs.len())));
    }
    Err("unknown data kind; expected synthetic[:COUNT] or npy:DIR".into())
}
