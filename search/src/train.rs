//! The training loop: seeded shuffling, mini-batches over every sample
//! (the last one short), SGD or AdamW with a warm-up and a schedule, label
//! smoothing, per-epoch metrics on the training and the validation split,
//! the best epoch's weights kept, evaluation with batch-norm running
//! statistics, and the trained weights as safetensors (the names and
//! layouts `mnet compile --weights` reads).

use crate::data::{Dataset, TrainSet};
use crate::engine::Net;
use crate::optim::{step_groups, Adam, Optimizer, ParamGroup, Schedule, Sgd};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::time::Instant;

/// Which optimizer trains the weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptimizerKind {
    /// SGD with Nesterov momentum and L2 weight decay.
    Sgd,
    /// Adam with decoupled weight decay.
    AdamW,
}

impl std::str::FromStr for OptimizerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<OptimizerKind, String> {
        match s {
            "sgd" => Ok(OptimizerKind::Sgd),
            "adamw" => Ok(OptimizerKind::AdamW),
            _ => Err(format!("`{s}`: expected sgd or adamw")),
        }
    }
}

/// Which epoch's weights training ends with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// The epoch of the best validation accuracy (ties: the lower loss);
    /// the last without a validation set.
    Best,
    Last,
}

impl std::str::FromStr for Keep {
    type Err = String;
    fn from_str(s: &str) -> Result<Keep, String> {
        match s {
            "best" => Ok(Keep::Best),
            "last" => Ok(Keep::Last),
            _ => Err(format!("`{s}`: expected best or last")),
        }
    }
}

/// Training settings.
#[derive(Clone, Copy, Debug)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch: usize,
    pub optimizer: OptimizerKind,
    pub lr: f32,
    /// SGD's momentum (Adam's beta1 stays 0.9).
    pub momentum: f32,
    pub weight_decay: f32,
    /// Linear warm-up, in epochs (a fraction is a part of one).
    pub warmup: f32,
    pub schedule: Schedule,
    pub label_smoothing: f32,
    pub keep: Keep,
    pub seed: u64,
    /// Quantization-aware training (fake-quantized weights and activations).
    pub qat: bool,
}

impl TrainConfig {
    /// The defaults for `optimizer`: its learning rate and weight decay.
    pub fn for_optimizer(optimizer: OptimizerKind) -> TrainConfig {
        let (lr, weight_decay) = match optimizer {
            OptimizerKind::Sgd => (0.05, 1e-4),
            OptimizerKind::AdamW => (3e-3, 1e-4),
        };
        TrainConfig {
            epochs: 5,
            batch: 32,
            optimizer,
            lr,
            momentum: 0.9,
            weight_decay,
            warmup: 0.25,
            schedule: Schedule::Cosine,
            label_smoothing: 0.0,
            keep: Keep::Best,
            seed: 0,
            qat: false,
        }
    }
}

/// The optimizer mnet trains with when none is named.
pub const DEFAULT_OPTIMIZER: OptimizerKind = OptimizerKind::Sgd;

impl Default for TrainConfig {
    fn default() -> TrainConfig {
        TrainConfig::for_optimizer(DEFAULT_OPTIMIZER)
    }
}

/// What one epoch did.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochMetrics {
    pub epoch: usize,
    /// Mean training loss and accuracy over the epoch's steps (with the
    /// weights as they moved).
    pub loss: f32,
    pub accuracy: f32,
    /// On the validation split after the epoch, when there is one.
    pub val_loss: Option<f32>,
    pub val_accuracy: Option<f32>,
    /// The learning rate of the epoch's last step.
    pub lr: f32,
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

/// What training did: every epoch, and the one whose weights the network
/// ends with.
#[derive(Clone, Debug, PartialEq)]
pub struct Trained {
    pub history: Vec<EpochMetrics>,
    pub kept_epoch: usize,
}

/// Train `net` on `data`, evaluating on `val` after every epoch;
/// `on_progress` sees every step's running metrics and each epoch's
/// metrics as it ends. Every sample is trained on each epoch (the last
/// batch holds the remainder). When `data` augments, the next epoch's
/// features are computed on another thread while an epoch trains.
pub fn train(
    net: &mut Net,
    data: &TrainSet,
    val: Option<&Dataset>,
    cfg: TrainConfig,
    mut on_progress: impl FnMut(Progress),
) -> Result<Trained, Diverged> {
    let batch = cfg.batch.min(data.data.len()).max(1);
    if net.batch != batch {
        net.set_batch(batch);
    }
    if cfg.qat && net.qat().is_none() {
        net.enable_qat();
    }
    let steps_per_epoch = data.data.len().div_ceil(batch);
    let total = steps_per_epoch * cfg.epochs;
    let warmup = ((cfg.warmup.max(0.0) * steps_per_epoch as f32).round() as usize).min(total);
    let optimizer = match cfg.optimizer {
        OptimizerKind::AdamW => Optimizer::Adam(Adam {
            weight_decay: cfg.weight_decay,
            ..Adam::default()
        }),
        OptimizerKind::Sgd => Optimizer::Sgd(Sgd {
            lr: cfg.lr,
            momentum: cfg.momentum,
            nesterov: true,
            weight_decay: cfg.weight_decay,
        }),
    };
    let groups = [ParamGroup {
        prefix: String::new(),
        optimizer,
        lr_scale: 1.0,
    }];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut current: std::borrow::Cow<Dataset> = std::borrow::Cow::Borrowed(&*data.data);
    let len = current.sample_len();
    let mut order: Vec<usize> = (0..current.len()).collect();
    let mut xb = vec![0f32; batch * len];
    let mut yb = vec![0usize; batch];
    let mut history = Vec::new();
    let mut best: Option<(f32, f32, usize, crate::engine::Snapshot)> = None;
    let mut step = 0;
    for epoch in 1..=cfg.epochs {
        order.shuffle(&mut rng);
        let start = Instant::now();
        // The next epoch's augmented features, made while this one trains.
        let next = (data.augments() && epoch < cfg.epochs).then(|| {
            std::thread::spawn({
                let fresh = data.fresh_fn();
                move || fresh.map(|f| f(epoch as u64 + 1))
            })
        });
        let (mut loss_sum, mut correct, mut done) = (0f64, 0usize, 0usize);
        let mut lr = cfg.lr;
        for (n, chunk) in order.chunks(batch).enumerate() {
            if net.batch != chunk.len() {
                net.set_batch(chunk.len());
            }
            let rows = chunk.len();
            for (k, &i) in chunk.iter().enumerate() {
                xb[k * len..(k + 1) * len].copy_from_slice(&current.inputs[i * len..(i + 1) * len]);
                yb[k] = current.labels[i];
            }
            net.forward(&xb[..rows * len], true);
            let (loss, ok) = net.loss_smoothed(&yb[..rows], cfg.label_smoothing);
            if !loss.is_finite() {
                return Err(Diverged {
                    epoch,
                    step: n + 1,
                    loss,
                });
            }
            net.backward();
            lr = cfg.schedule.at(cfg.lr, step, warmup, total);
            step_groups(&groups, &mut net.params, lr, step + 1);
            step += 1;
            loss_sum += loss as f64 * rows as f64;
            correct += ok;
            done += rows;
            on_progress(Progress::Step {
                step: n + 1,
                steps: steps_per_epoch,
                so_far: EpochMetrics {
                    epoch,
                    loss: (loss_sum / done as f64) as f32,
                    accuracy: correct as f32 / done as f32,
                    val_loss: None,
                    val_accuracy: None,
                    lr,
                    samples_per_sec: done as f32 / start.elapsed().as_secs_f32().max(1e-9),
                },
            });
        }
        if let Some(Some(fresh)) =
            next.map(|h| h.join().expect("the feature thread does not panic"))
        {
            current = std::borrow::Cow::Owned(fresh);
        }
        if net.batch != batch {
            net.set_batch(batch);
        }
        let samples_per_sec = done as f32 / start.elapsed().as_secs_f32().max(1e-9);
        let v = val.filter(|v| !v.is_empty()).map(|v| evaluate(net, v));
        let m = EpochMetrics {
            epoch,
            loss: (loss_sum / done.max(1) as f64) as f32,
            accuracy: correct as f32 / done.max(1) as f32,
            val_loss: v.map(|v| v.0),
            val_accuracy: v.map(|v| v.1),
            lr,
            samples_per_sec,
        };
        if let (Keep::Best, Some((vl, va))) = (cfg.keep, v) {
            let better = match &best {
                None => true,
                Some((bl, ba, _, _)) => va > *ba || (va == *ba && vl < *bl),
            };
            if better {
                best = Some((vl, va, epoch, net.snapshot()));
            }
        }
        on_progress(Progress::Epoch(&m));
        history.push(m);
    }
    let kept_epoch = match best {
        Some((_, _, epoch, values)) => {
            net.restore(values);
            epoch
        }
        None => cfg.epochs,
    };
    Ok(Trained {
        history,
        kept_epoch,
    })
}

/// Run `net` in evaluation mode (batch-norm running statistics) over
/// `data` a batch at a time; `each` sees every batch's rows (the last
/// batch may be short: its free rows repeat its first sample, as
/// evaluation treats samples independently, and only its own rows count).
fn eval_batches(net: &mut Net, data: &Dataset, mut each: impl FnMut(&mut Net, &[usize])) {
    let batch = net.batch;
    let len = data.sample_len();
    let mut xb = vec![0f32; batch * len];
    let idx: Vec<usize> = (0..data.len()).collect();
    for chunk in idx.chunks(batch) {
        for k in 0..batch {
            let i = *chunk.get(k).unwrap_or(&chunk[0]);
            xb[k * len..(k + 1) * len].copy_from_slice(&data.inputs[i * len..(i + 1) * len]);
        }
        net.forward(&xb, false);
        each(net, chunk);
    }
}

/// Loss and accuracy in evaluation mode (batch-norm running statistics).
pub fn evaluate(net: &mut Net, data: &Dataset) -> (f32, f32) {
    let (mut loss_sum, mut correct) = (0f64, 0usize);
    eval_batches(net, data, |net, chunk| {
        let yb: Vec<usize> = chunk.iter().map(|&i| data.labels[i]).collect();
        let (loss, ok) = net.loss(&yb);
        loss_sum += loss as f64 * chunk.len() as f64;
        correct += ok;
    });
    let n = data.len().max(1) as f64;
    ((loss_sum / n) as f32, (correct as f64 / n) as f32)
}

/// Top-1 of each row of `scores` (`[n, classes]`), the lower index on ties.
pub fn argmax<T: PartialOrd + Copy>(scores: &[T], classes: usize) -> Vec<usize> {
    scores
        .chunks_exact(classes)
        .map(|row| {
            let mut best = 0;
            for k in 1..classes {
                if row[k] > row[best] {
                    best = k;
                }
            }
            best
        })
        .collect()
}

/// The int8 network's outputs for every sample, `[len, classes]` (inputs
/// quantized with the model's input parameters), in parallel, on the JIT
/// (the interpreter where the JIT cannot compile the network: the outputs
/// are the same).
pub fn int8_predict(q: &mnet_compiler::pipeline::Quantized, data: &Dataset) -> Vec<i8> {
    let len = data.sample_len();
    let iq = q.graph.qparams[0];
    let (runner, _) = mnet_compiler::exec::batch::Runner::fastest(&q.graph, &q.prepared);
    runner.run_many(data.len(), |i, x| {
        for (d, &v) in x.iter_mut().zip(&data.inputs[i * len..(i + 1) * len]) {
            *d = iq.quantize(v);
        }
    })
}

/// The logits of every sample in evaluation mode, `[len, classes]`.
pub fn predict(net: &mut Net, data: &Dataset) -> Vec<f32> {
    let classes = net.classes();
    let mut out = Vec::with_capacity(data.len() * classes);
    eval_batches(net, data, |net, chunk| {
        out.extend_from_slice(&net.logits()[..chunk.len() * classes]);
    });
    out
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
    f32_safetensors(&data, None)
}

/// Float32 tensors (name, shape, little-endian bytes) as a safetensors
/// file, with optional metadata (the weights files and the search's
/// checkpoints).
pub fn f32_safetensors(
    data: &[(String, Vec<usize>, Vec<u8>)],
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Vec<u8> {
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
    safetensors::serialize(views, metadata).expect("serialise tensors")
}
