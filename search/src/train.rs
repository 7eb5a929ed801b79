//! The training loop: seeded shuffling, mini-batches, SGD with a cosine
//! schedule, per-epoch metrics, evaluation with batch-norm running
//! statistics, and the trained weights as safetensors (the names and
//! layouts `mnet compile --weights` reads).

use crate::data::Dataset;
use crate::engine::Net;
use crate::optim::{cosine_lr, step_groups, Adam, Optimizer, ParamGroup, Sgd};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::time::Instant;

/// Training settings.
#[derive(Clone, Copy, Debug)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch: usize,
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub seed: u64,
    /// AdamW instead of Nesterov SGD.
    pub adamw: bool,
    /// Quantization-aware training (fake-quantized weights and activations).
    pub qat: bool,
}

impl Default for TrainConfig {
    fn default() -> TrainConfig {
        TrainConfig {
            epochs: 5,
            batch: 32,
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 1e-4,
            seed: 0,
            adamw: false,
            qat: false,
        }
    }
}

/// What one epoch did.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub loss: f32,
    pub accuracy: f32,
    pub samples_per_sec: f32,
}

/// What training reports as it goes.
#[derive(Clone, Debug, PartialEq)]
pub enum Progress<'a> {
    /// After step `step` (1-based) of `steps` in an epoch: the epoch's
    /// metrics so far.
    Step {
        step: usize,
        steps: usize,
        so_far: EpochMetrics,
    },
    /// An epoch ended.
    Epoch(&'a EpochMetrics),
}

/// Training stopped: a step's loss was not a finite number (the learning
/// rate is too high for this network and data, or the data holds NaN or
/// infinity).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("training diverged: the loss of step {step} of epoch {epoch} is {loss}; lower --lr, or check the scale of the data")]
pub struct Diverged {
    pub epoch: usize,
    pub step: usize,
    pub loss: f32,
}

/// Train `net` on `data`; `on_progress` sees every step's running metrics
/// and each epoch's metrics as it ends.
pub fn train(
    net: &mut Net,
    data: &Dataset,
    cfg: TrainConfig,
    mut on_progress: impl FnMut(Progress),
) -> Result<Vec<EpochMetrics>, Diverged> {
    let batch = cfg.batch.min(data.len()).max(1);
    if net.batch != batch {
        net.set_batch(batch);
    }
    if cfg.qat && net.qat().is_none() {
        net.enable_qat();
    }
    let steps_per_epoch = data.len() / batch;
    let total = steps_per_epoch * cfg.epochs;
    let warmup = (total / 20).max(1);
    let optimizer = if cfg.adamw {
        Optimizer::Adam(Adam {
            weight_decay: cfg.weight_decay,
            ..Adam::default()
        })
    } else {
        Optimizer::Sgd(Sgd {
            lr: cfg.lr,
            momentum: cfg.momentum,
            nesterov: true,
            weight_decay: cfg.weight_decay,
        })
    };
    let groups = [ParamGroup {
        prefix: String::new(),
        optimizer,
        lr_scale: 1.0,
    }];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed);
    let len = data.sample_len();
    let mut order: Vec<usize> = (0..data.len()).collect();
    let mut xb = vec![0f32; batch * len];
    let mut yb = vec![0usize; batch];
    let mut history = Vec::new();
    let mut step = 0;
    for epoch in 1..=cfg.epochs {
        order.shuffle(&mut rng);
        let start = Instant::now();
        let (mut loss_sum, mut correct) = (0f32, 0usize);
        for (n, chunk) in order.chunks_exact(batch).enumerate() {
            for (k, &i) in chunk.iter().enumerate() {
                xb[k * len..(k + 1) * len].copy_from_slice(&data.inputs[i * len..(i + 1) * len]);
                yb[k] = data.labels[i];
            }
            net.forward(&xb, true);
            let (loss, ok) = net.loss(&yb);
            if !loss.is_finite() {
                return Err(Diverged {
                    epoch,
                    step: n + 1,
                    loss,
                });
            }
            net.backward();
            step_groups(
                &groups,
                &mut net.params,
                cosine_lr(cfg.lr, step, warmup, total),
                step + 1,
            );
            step += 1;
            loss_sum += loss;
            correct += ok;
            let done = (n + 1) * batch;
            on_progress(Progress::Step {
                step: n + 1,
                steps: steps_per_epoch,
                so_far: EpochMetrics {
                    epoch,
                    loss: loss_sum / (n + 1) as f32,
                    accuracy: correct as f32 / done as f32,
                    samples_per_sec: done as f32 / start.elapsed().as_secs_f32().max(1e-9),
                },
            });
        }
        let seen = steps_per_epoch * batch;
        let m = EpochMetrics {
            epoch,
            loss: loss_sum / steps_per_epoch.max(1) as f32,
            accuracy: correct as f32 / seen.max(1) as f32,
            samples_per_sec: seen as f32 / start.elapsed().as_secs_f32().max(1e-9),
        };
        on_progress(Progress::Epoch(&m));
        history.push(m);
    }
    Ok(history)
}

/// Loss and accuracy in evaluation mode (batch-norm running statistics).
pub fn evaluate(net: &mut Net, data: &Dataset) -> (f32, f32) {
    let batch = net.batch;
    let len = data.sample_len();
    let (mut loss_sum, mut correct) = (0f64, 0usize);
    let mut xb = vec![0f32; batch * len];
    let idx: Vec<usize> = (0..data.len()).collect();
    // The last batch may be short: its free rows repeat its first sample
    // (evaluation treats samples independently) and the loss reads only its
    // own rows.
    for chunk in idx.chunks(batch) {
        for k in 0..batch {
            let i = *chunk.get(k).unwrap_or(&chunk[0]);
            xb[k * len..(k + 1) * len].copy_from_slice(&data.inputs[i * len..(i + 1) * len]);
        }
        let yb: Vec<usize> = chunk.iter().map(|&i| data.labels[i]).collect();
        net.forward(&xb, false);
        let (loss, ok) = net.loss(&yb);
        loss_sum += loss as f64 * chunk.len() as f64;
        correct += ok;
    }
    let n = data.len().max(1) as f64;
    ((loss_sum / n) as f32, (correct as f64 / n) as f32)
}

/// The parameters as safetensors; with quantization-aware training also
/// each quantized tensor's activation range as `LAYER.range` = `[min,
/// max]` (what `mnet compile` uses instead of calibrating).
pub fn weights_safetensors(net: &Net) -> Vec<u8> {
    let mut data: Vec<(String, Vec<usize>, Vec<u8>)> = net
        .params
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                p.shape.clone(),
                p.value.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
        })
        .collect();
    if let Some(q) = net.qat() {
        for (layer, range) in net.layers.iter().zip(&q.ranges) {
            if let Some((lo, hi)) = range.filter(|r| *r != (0.0, 0.0)) {
                data.push((
                    format!("{}.range", layer.name),
                    vec![2],
                    [lo, hi].iter().flat_map(|v| v.to_le_bytes()).collect(),
                ));
            }
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = data
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d)
                    .expect("consistent view"),
            )
        })
        .collect();
    safetensors::serialize(views, None).expect("serialise weights")
}
