//! Differentiable architecture search (MicroNets / FBNetV2) over a
//! [`Supernet`]: architecture logits per choice, Gumbel-softmax gates with
//! an annealed temperature, a resource-aware loss from the compiler's
//! relaxed cost model, and resolution by argmax.
//!
//! The schedule: warm-up epochs train the weights alone on random paths
//! (one uniformly drawn option per choice and step); then every step is a
//! weight step on a training batch (SGD, cosine learning rate) followed by
//! an architecture step on a held-out batch (Adam on the logits, its own
//! parameter group). The architecture loss is the held-out cross-entropy
//! through the gates plus
//!
//! ```text
//! λ_ops · E[ops] / ops_ref + λ_lat · E[instructions] / instructions_ref
//!   + μ · (relu(E[ops] / ops_budget − 1) + relu(E[flash] / flash_budget − 1)
//!          + relu(smoothmax_n E[working_n] / working_budget − 1)
//!          + relu(E[instructions] / latency_budget − 1))
//! ```
//!
//! where the expectations are under the softmax of the logits over the
//! gates' temperature (so they approach the argmax network's figures; exact
//! gradients from [`mnet_compiler::analysis::relax`]), `ops_ref` is the ops
//! budget (or the largest network's ops without one) and the working-memory
//! budget is the board's SRAM minus what the generated C needs besides its
//! arena (the caller's input and output buffers, and the stack of the
//! space's largest network: [`mnet_compiler::back::c::stack_estimate`]). Instructions are the latency model's
//! per-layer prediction for the target board's core
//! ([`mnet_compiler::analysis::latency::layer_cost`]); a latency budget is
//! the instructions that fit in it at the board's clock, and
//! `instructions_ref` that budget (or the largest network's instructions). Every random draw of an epoch comes from
//! generators seeded by (seed, epoch), so a run resumed at an epoch
//! boundary continues exactly as an uninterrupted one.

use crate::data::Dataset;
use crate::engine::Param;
use crate::optim::{cosine_lr, Adam, Sgd};
use crate::supernet::Supernet;
use mnet_compiler::ir::{ChoiceId, SearchGraph};
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};

/// Search settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SearchConfig {
    /// Epochs that train weights only, on random paths.
    pub warmup_epochs: usize,
    /// Epochs of alternating weight and architecture steps.
    pub epochs: usize,
    pub batch: usize,
    /// Peak SGD learning rate of the weights (cosine over all epochs).
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    /// Adam's learning rate on the architecture logits.
    pub arch_lr: f32,
    /// Gumbel-softmax temperature at the first and last search epoch
    /// (exponential in between).
    pub tau_start: f32,
    pub tau_end: f32,
    /// Weight of E[ops] / ops_ref.
    pub lambda_ops: f32,
    /// Weight of E[instructions] / instructions_ref (the latency model's
    /// term next to ops; 0 leaves latency to its budget's hinge).
    pub lambda_latency: f32,
    /// Weight of each hinge penalty over a budget.
    pub penalty: f32,
    pub seed: u64,
}

impl Default for SearchConfig {
    fn default() -> SearchConfig {
        SearchConfig {
            warmup_epochs: 2,
            epochs: 8,
            batch: 32,
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 1e-4,
            arch_lr: 0.05,
            tau_start: 5.0,
            tau_end: 0.1,
            lambda_ops: 0.1,
            lambda_latency: 0.0,
            penalty: 2.0,
            seed: 0,
        }
    }
}

/// What the network must fit: ops, flash bytes (weights and biases), the
/// SRAM bytes left for the working memory (the arena) and the instructions
/// a latency budget allows.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Budgets {
    pub ops: Option<u64>,
    pub flash: Option<u64>,
    pub working: Option<u64>,
    pub instructions: Option<u64>,
}

/// The references the linear terms of the loss divide by: ops and
/// instructions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Refs {
    pub ops: f64,
    pub instructions: f64,
}

/// Which part of the schedule an epoch is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Warmup,
    Search,
    /// Extra epochs with raised penalties after a resolution that did not
    /// fit.
    Extra,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Warmup => "warmup",
            Phase::Search => "search",
            Phase::Extra => "extra",
        }
    }
}

/// What one epoch did.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochRecord {
    pub epoch: usize,
    pub phase: Phase,
    pub loss: f32,
    pub accuracy: f32,
    /// The architecture steps' held-out cross-entropy and accuracy.
    pub val_loss: Option<f32>,
    pub val_accuracy: Option<f32>,
    pub temperature: f32,
    /// Per choice, the softmax of its logits after the epoch.
    pub probabilities: Vec<Vec<f32>>,
    pub expected_ops: f64,
    pub expected_flash: f64,
    pub expected_working: f64,
    /// E[instructions] (0 without a latency model).
    pub expected_instructions: f64,
    pub resource_loss: f64,
    /// The penalty weight in force.
    pub penalty: f32,
    pub lr: f32,
}

/// The architecture parameters and their optimizer.
#[derive(Clone, Debug)]
pub struct Arch {
    /// One logit per option, flat (the supernet's gate order).
    pub logits: Param,
    pub steps: usize,
}

impl Arch {
    fn new(options: usize) -> Arch {
        let mut logits = Param::placeholder();
        logits.name = "arch.logits".into();
        logits.shape = vec![options];
        logits.value = vec![0.0; options];
        logits.grad = vec![0.0; options];
        logits.momentum = vec![0.0; options];
        Arch { logits, steps: 0 }
    }
}

/// The state of a search between epochs: everything a resumed run needs.
#[derive(Clone, Debug)]
pub struct State {
    pub supernet: Supernet,
    pub arch: Arch,
    pub history: Vec<EpochRecord>,
    /// Epochs done.
    pub epoch: usize,
    /// The penalty weight now (raised by extra epochs).
    pub penalty: f32,
}

/// The flat offsets of each choice's options.
fn offsets(g: &SearchGraph, s: &Supernet) -> Vec<usize> {
    let mut v: Vec<usize> = (0..g.choices.len())
        .map(|c| s.relaxed.offset(ChoiceId(c as u32)))
        .collect();
    v.push(s.options());
    v
}

/// Softmax of `x / tau` within each choice.
fn softmax(x: &[f32], offsets: &[usize], tau: f32) -> Vec<f32> {
    let mut p = vec![0.0; x.len()];
    for w in offsets.windows(2) {
        let (a, b) = (w[0], w[1]);
        let mx = x[a..b].iter().cloned().fold(f32::MIN, f32::max);
        let e: Vec<f32> = x[a..b].iter().map(|v| ((v - mx) / tau).exp()).collect();
        let s: f32 = e.iter().sum();
        for (k, v) in e.iter().enumerate() {
            p[a + k] = v / s;
        }
    }
    p
}

/// The gradient with respect to `x` of a loss whose gradient with respect
/// to `p = softmax(x / tau)` is `dp`.
fn softmax_back(p: &[f32], dp: &[f32], offsets: &[usize], tau: f32) -> Vec<f32> {
    let mut dx = vec![0.0; p.len()];
    for w in offsets.windows(2) {
        let (a, b) = (w[0], w[1]);
        let dot: f32 = (a..b).map(|k| p[k] * dp[k]).sum();
        for k in a..b {
            dx[k] = p[k] * (dp[k] - dot) / tau;
        }
    }
    dx
}

/// A generator for one purpose of one epoch.
fn rng_for(seed: u64, epoch: usize, purpose: u64) -> rand_chacha::ChaCha8Rng {
    rand_chacha::ChaCha8Rng::seed_from_u64(
        seed ^ (epoch as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ purpose.wrapping_mul(0xd6e8_feb8_6659_fd93),
    )
}

/// The resource loss at the softmax of the logits over the temperature
/// `tau` (the gates' temperature: as it anneals, the expectations approach
/// the figures of the argmax network, which is the one that must fit; a
/// hinge also holds while the argmax network itself is over budget): its
/// value, its gradient with respect to the logits, and E[ops], E[flash],
/// the smooth peak working memory, E[instructions].
#[allow(clippy::too_many_arguments)]
pub fn resource_loss(
    s: &Supernet,
    logits: &[f32],
    offsets: &[usize],
    tau: f32,
    budgets: &Budgets,
    refs: Refs,
    cfg: &SearchConfig,
    penalty: f32,
) -> Result<(f64, Vec<f32>, [f64; 4]), String> {
    let p = softmax(logits, offsets, tau);
    let pf: Vec<f64> = p.iter().map(|&v| v as f64).collect();
    let e = s.relaxed.eval(&pf)?;
    let ops = e.ops();
    // The smooth maximum's width: 1% of the budget (or of the peak).
    let width = budgets
        .working
        .map_or(e.peak_working(), |b| b as f64)
        .max(1.0)
        * 0.01;
    let wm = e.smooth_peak_working(width);
    let n = pf.len();
    let (mut value, mut offset) = (0.0, 0.0);
    let mut grad = vec![0.0f64; n];
    let mut add = |d: &mnet_compiler::analysis::relax::Dual, k: f64| {
        value += k * d.value;
        for (g, x) in grad.iter_mut().zip(&d.grad) {
            *g += k * x;
        }
    };
    add(&ops, cfg.lambda_ops as f64 / refs.ops.max(1.0));
    if cfg.lambda_latency > 0.0 {
        add(
            &e.instructions,
            cfg.lambda_latency as f64 / refs.instructions.max(1.0),
        );
    }
    // A hinge holds while the expectation or the most likely network (the
    // one resolution takes) is over its budget: with many options the
    // expectation can fit while the argmax does not. Its gradient is the
    // expectation's, which moves probability to the cheaper options.
    let top = {
        let mut one_hot = vec![0.0; n];
        for w in offsets.windows(2) {
            let best = (w[0]..w[1]).fold(w[0], |b, k| if logits[k] > logits[b] { k } else { b });
            one_hot[best] = 1.0;
        }
        s.relaxed.eval(&one_hot)?
    };
    for (d, hard, b) in [
        (&ops, top.ops().value, budgets.ops),
        (&e.flash_bytes, top.flash_bytes.value, budgets.flash),
        (&wm, top.peak_working(), budgets.working),
        (
            &e.instructions,
            top.instructions.value,
            budgets.instructions,
        ),
    ] {
        if let Some(b) = b.map(|b| b as f64).filter(|&b| d.value.max(hard) > b) {
            add(d, penalty as f64 / b);
            offset -= penalty as f64;
        }
    }
    value += offset;
    let dp: Vec<f32> = grad.iter().map(|&g| g as f32).collect();
    let dx = softmax_back(&p, &dp, offsets, tau);
    Ok((
        value,
        dx,
        [
            ops.value,
            e.flash_bytes.value,
            wm.value,
            e.instructions.value,
        ],
    ))
}

/// Start a search: the supernet with its weights seeded, uniform logits.
pub fn start(g: &SearchGraph, cfg: &SearchConfig) -> Result<State, String> {
    let supernet = Supernet::new(g, cfg.batch, cfg.seed, crate::engine::Init::Glorot)?;
    let arch = Arch::new(supernet.options());
    Ok(State {
        supernet,
        arch,
        history: Vec::new(),
        epoch: 0,
        penalty: cfg.penalty,
    })
}

/// The argmax option of every choice.
pub fn argmax(g: &SearchGraph, state: &State) -> Vec<u16> {
    let off = offsets(g, &state.supernet);
    off.windows(2)
        .map(|w| {
            let x = &state.arch.logits.value[w[0]..w[1]];
            let mut best = 0;
            for k in 1..x.len() {
                if x[k] > x[best] {
                    best = k;
                }
            }
            best as u16
        })
        .collect()
}

/// What a search reports as it goes.
pub enum SearchProgress<'a> {
    /// A step of an epoch: the running training loss and accuracy, the
    /// temperature, and E[ops], E[flash], E[working memory] after the
    /// last architecture step (None in the warm-up).
    Step {
        epoch: usize,
        step: usize,
        steps: usize,
        loss: f32,
        accuracy: f32,
        temperature: f32,
        expected: Option<[f64; 4]>,
    },
    Epoch(&'a EpochRecord),
}

/// Run one epoch (`state.epoch + 1`) of phase `phase`, of `total` epochs
/// in the schedule.
#[allow(clippy::too_many_arguments)]
pub fn run_epoch(
    g: &SearchGraph,
    state: &mut State,
    train: &Dataset,
    val: &Dataset,
    budgets: &Budgets,
    refs: Refs,
    cfg: &SearchConfig,
    phase: Phase,
    total: usize,
    mut progress: impl FnMut(SearchProgress),
) -> Result<(), String> {
    let epoch = state.epoch + 1;
    let off = offsets(g, &state.supernet);
    let s = &mut state.supernet;
    let batch = cfg.batch.min(train.len()).max(1);
    let len = train.sample_len();
    let steps = train.len().div_ceil(batch);
    let total_steps = steps * total;
    let search_epochs = cfg.epochs.max(1);
    let tau = match phase {
        Phase::Warmup => cfg.tau_start,
        Phase::Search => {
            let k = (epoch - cfg.warmup_epochs - 1) as f32 / (search_epochs.max(2) - 1) as f32;
            cfg.tau_start * (cfg.tau_end / cfg.tau_start).powf(k.min(1.0))
        }
        Phase::Extra => cfg.tau_end,
    };
    let mut order: Vec<usize> = (0..train.len()).collect();
    order.shuffle(&mut rng_for(cfg.seed, epoch, 1));
    let mut val_order: Vec<usize> = (0..val.len()).collect();
    val_order.shuffle(&mut rng_for(cfg.seed, epoch, 2));
    let mut gumbel = rng_for(cfg.seed, epoch, 3);
    s.net.reseed_masks(cfg.seed ^ epoch as u64);
    let sgd = Sgd {
        lr: cfg.lr,
        momentum: cfg.momentum,
        nesterov: true,
        weight_decay: cfg.weight_decay,
    };
    let adam = Adam {
        weight_decay: 0.0,
        ..Adam::default()
    };
    let draw = |logits: &[f32], rng: &mut rand_chacha::ChaCha8Rng| -> Vec<f32> {
        let noisy: Vec<f32> = logits
            .iter()
            .map(|&l| {
                let u: f32 = rng.random_range(1e-10f32..1.0);
                l - (-u.ln()).ln()
            })
            .collect();
        softmax(&noisy, &off, tau)
    };
    let (mut loss_sum, mut correct, mut done) = (0f64, 0usize, 0usize);
    let (mut vloss_sum, mut vcorrect, mut vdone) = (0f64, 0usize, 0usize);
    let mut xb = vec![0f32; batch * len];
    let mut yb = vec![0usize; batch];
    let mut val_at = 0;
    let mut lr = cfg.lr;
    let penalty = state.penalty;
    let resource = |s: &Supernet, logits: &[f32]| {
        resource_loss(s, logits, &off, tau, budgets, refs, cfg, penalty)
    };
    let arch_steps = phase != Phase::Warmup && !val.is_empty();
    let mut expected = None;
    for (n, chunk) in order.chunks(batch).enumerate() {
        let rows = chunk.len();
        if s.net.batch != rows {
            s.net.set_batch(rows);
        }
        for (k, &i) in chunk.iter().enumerate() {
            xb[k * len..(k + 1) * len].copy_from_slice(&train.inputs[i * len..(i + 1) * len]);
            yb[k] = train.labels[i];
        }
        // Weights: a random path in the warm-up, a Gumbel sample after.
        let gates = if phase == Phase::Warmup {
            let mut v = vec![0.0; s.options()];
            for w in off.windows(2) {
                v[w[0] + gumbel.random_range(0..w[1] - w[0])] = 1.0;
            }
            v
        } else {
            draw(&state.arch.logits.value, &mut gumbel)
        };
        s.set_gates(&gates);
        s.net.forward(&xb[..rows * len], true);
        let (loss, ok) = s.net.loss(&yb[..rows]);
        if !loss.is_finite() {
            return Err(format!(
                "the supernet's training diverged: the loss of step {} of epoch {epoch} is {loss}; lower --lr",
                n + 1
            ));
        }
        s.net.backward();
        s.gate_grads(&gates);
        let step = (epoch - 1) * steps + n;
        lr = cosine_lr(
            cfg.lr,
            step,
            steps.min(total_steps / 10).max(1),
            total_steps,
        );
        for p in s.net.params.iter_mut().filter(|p| !p.grad.is_empty()) {
            if !(p.name.ends_with(".mask") || p.name.ends_with(".mix")) {
                sgd.update(p, lr);
            }
        }
        loss_sum += loss as f64 * rows as f64;
        correct += ok;
        done += rows;
        // Architecture: a held-out batch through a fresh sample.
        if arch_steps {
            let vrows = batch.min(val.len());
            if s.net.batch != vrows {
                s.net.set_batch(vrows);
            }
            for k in 0..vrows {
                let i = val_order[val_at % val_order.len()];
                val_at += 1;
                xb[k * len..(k + 1) * len].copy_from_slice(&val.inputs[i * len..(i + 1) * len]);
                yb[k] = val.labels[i];
            }
            let gates = draw(&state.arch.logits.value, &mut gumbel);
            s.set_gates(&gates);
            s.net.forward(&xb[..vrows * len], true);
            let (vloss, vok) = s.net.loss(&yb[..vrows]);
            s.net.backward();
            let dg = s.gate_grads(&gates);
            let mut dtheta = softmax_back(&gates, &dg, &off, tau);
            let (_, dres, e) = resource(s, &state.arch.logits.value)?;
            expected = Some(e);
            for (a, b) in dtheta.iter_mut().zip(&dres) {
                *a += b;
            }
            state.arch.logits.grad = dtheta;
            state.arch.steps += 1;
            adam.update(&mut state.arch.logits, cfg.arch_lr, state.arch.steps);
            vloss_sum += vloss as f64 * vrows as f64;
            vcorrect += vok;
            vdone += vrows;
        }
        progress(SearchProgress::Step {
            epoch,
            step: n + 1,
            steps,
            loss: (loss_sum / done as f64) as f32,
            accuracy: correct as f32 / done as f32,
            temperature: tau,
            expected,
        });
    }
    if s.net.batch != batch {
        s.net.set_batch(batch);
    }
    let (res, _, [e_ops, e_flash, e_wm, e_instr]) = resource(s, &state.arch.logits.value)?;
    let p = softmax(&state.arch.logits.value, &off, 1.0);
    let record = EpochRecord {
        epoch,
        phase,
        loss: (loss_sum / done.max(1) as f64) as f32,
        accuracy: correct as f32 / done.max(1) as f32,
        val_loss: (vdone > 0).then(|| (vloss_sum / vdone as f64) as f32),
        val_accuracy: (vdone > 0).then(|| vcorrect as f32 / vdone as f32),
        temperature: tau,
        probabilities: off.windows(2).map(|w| p[w[0]..w[1]].to_vec()).collect(),
        expected_ops: e_ops,
        expected_flash: e_flash,
        expected_working: e_wm,
        expected_instructions: e_instr,
        resource_loss: res,
        penalty: state.penalty,
        lr,
    };
    progress(SearchProgress::Epoch(&record));
    state.history.push(record);
    state.epoch = epoch;
    Ok(())
}

/// A board's limits: ops, flash bytes, SRAM bytes, latency in
/// microseconds at the board's clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub ops: Option<u64>,
    pub flash: Option<u64>,
    pub sram: Option<u64>,
    pub latency_us: Option<u64>,
    /// The target board's clock, Hz (a latency limit needs it).
    pub clock_hz: Option<u64>,
}

impl Limits {
    /// The budgets of the loss for the networks of a space, given the
    /// memory of its largest network (they share their input and output
    /// bytes; the largest has the largest stack).
    pub fn budgets(&self, largest: &mnet_compiler::pipeline::Memory) -> Budgets {
        let overhead = largest.input + largest.output + largest.stack;
        Budgets {
            ops: self.ops,
            flash: self.flash,
            working: self.sram.map(|s| s.saturating_sub(overhead)),
            instructions: self
                .latency_us
                .zip(self.clock_hz)
                .map(|(us, hz)| mnet_compiler::analysis::latency::instructions_in(us, hz)),
        }
    }

    /// Microseconds of `instructions` at the board's clock (one instruction
    /// a cycle), rounded up.
    pub fn micros(&self, instructions: u64) -> Option<u64> {
        self.clock_hz
            .map(|hz| mnet_compiler::analysis::latency::micros(instructions, hz))
    }
}

/// A resolved network's exact figures against the limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fit {
    pub ops: u64,
    pub params: u64,
    pub flash: u64,
    /// The SpArSe peak working memory.
    pub peak_working: u64,
    pub memory: mnet_compiler::pipeline::Memory,
    /// Arena, input, output and stack (estimated): the SRAM it needs.
    pub sram: u64,
    /// The latency model's instructions (0 without one) and microseconds at
    /// the board's clock.
    pub instructions: u64,
    pub latency_us: Option<u64>,
    /// Every limit it exceeds: (budget, needed, limit).
    pub over: Vec<(&'static str, u64, u64)>,
}

/// Measure a fixed network against the limits: exact costs (`mnet stats`)
/// and the real memory plan (`mnet compile`'s arena).
pub fn fit(fixed: &mnet_compiler::ir::FixedGraph, limits: &Limits) -> Result<Fit, String> {
    // Instructions as predicted with the network's memory plan.
    let t = mnet_compiler::analysis::stats::fixed_stats(fixed).budget_totals();
    let memory = mnet_compiler::pipeline::memory(fixed).map_err(|e| e.to_string())?;
    let sram = memory.sram();
    let latency_us = limits.micros(t.instructions).filter(|_| t.instructions > 0);
    let mut over = Vec::new();
    for (name, needed, limit) in [
        ("ops", t.ops(), limits.ops),
        ("flash", t.flash_bytes, limits.flash),
        ("sram", sram, limits.sram),
        ("latency", latency_us.unwrap_or(u64::MAX), limits.latency_us),
    ] {
        if let Some(l) = limit.filter(|&l| needed > l) {
            over.push((name, needed, l));
        }
    }
    Ok(Fit {
        ops: t.ops(),
        params: t.params,
        flash: t.flash_bytes,
        peak_working: t.peak_working_bytes,
        memory,
        sram,
        instructions: t.instructions,
        latency_us,
        over,
    })
}

/// How a search ended.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub assignment: Vec<u16>,
    pub fixed: mnet_compiler::ir::FixedGraph,
    pub fit: Fit,
}

/// Run (or continue) a search to its resolution (`budgets`: the loss's,
/// from [`Limits::budgets`]): the warm-up and search
/// epochs, then the argmax network checked against the limits; while it
/// does not fit, up to `extra` more epochs with the penalties raised 4×
/// each. `after_epoch` sees the state after every epoch (checkpoints). The
/// outcome may still not fit: the caller decides.
#[allow(clippy::too_many_arguments)]
pub fn search(
    g: &SearchGraph,
    state: &mut State,
    train: &crate::data::TrainSet,
    val: &Dataset,
    limits: &Limits,
    budgets: &Budgets,
    refs: Refs,
    cfg: &SearchConfig,
    extra: usize,
    mut after_epoch: impl FnMut(&State) -> Result<(), String>,
    mut progress: impl FnMut(SearchProgress),
) -> Result<Outcome, String> {
    let total = cfg.warmup_epochs + cfg.epochs;
    loop {
        let phase = if state.epoch < cfg.warmup_epochs {
            Phase::Warmup
        } else if state.epoch < total {
            Phase::Search
        } else {
            let assignment = argmax(g, state);
            let fixed = mnet_compiler::analysis::resolve::resolve(g, &assignment)?;
            let fit = fit(&fixed, limits)?;
            if fit.over.is_empty() || state.epoch >= total + extra {
                return Ok(Outcome {
                    assignment,
                    fixed,
                    fit,
                });
            }
            state.penalty *= 4.0;
            Phase::Extra
        };
        // An augmenting source gives every epoch its own features.
        let fresh = train.epoch(state.epoch as u64 + 1);
        run_epoch(
            g,
            state,
            fresh.as_ref().unwrap_or(&train.data),
            val,
            budgets,
            refs,
            cfg,
            phase,
            total,
            &mut progress,
        )?;
        after_epoch(state)?;
    }
}

/// Top-1 accuracy of an int8 network on a dataset through
/// [`crate::train::int8_predict`] (inputs quantized with the model's input
/// parameters).
pub fn int8_accuracy(q: &mnet_compiler::pipeline::Quantized, data: &Dataset) -> f32 {
    let outputs = crate::train::int8_predict(q, data);
    let classes = outputs.len() / data.len().max(1);
    let correct = crate::train::argmax(&outputs, classes.max(1))
        .iter()
        .zip(&data.labels)
        .filter(|(p, l)| p == l)
        .count();
    correct as f32 / data.len().max(1) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The resource loss's gradient with respect to the logits (through
    /// the tempered softmax and every hinge) against central differences.
    #[test]
    fn resource_gradient_wrt_logits_matches_differences() {
        let src = std::fs::read_to_string(format!(
            "{}/../examples/tiny.mnet",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let checked = mnet_compiler::check_source("tiny.mnet", &src).unwrap();
        let g = &checked.networks[0].graph;
        let state = start(g, &SearchConfig::default()).unwrap();
        let s = &state.supernet;
        let off = offsets(g, s);
        let logits: Vec<f32> = (0..s.options())
            .map(|k| ((k * 7) % 5) as f32 * 0.3 - 0.6)
            .collect();
        // Budgets the expectations exceed, so every hinge is active.
        let budgets = Budgets {
            ops: Some(8_000),
            flash: Some(300),
            working: Some(300),
            instructions: Some(20_000),
        };
        let refs = Refs {
            ops: 20_000.0,
            instructions: 50_000.0,
        };
        let cfg = SearchConfig {
            lambda_ops: 0.3,
            lambda_latency: 0.2,
            ..SearchConfig::default()
        };
        for tau in [1.0f32, 0.5] {
            let f = |l: &[f32]| resource_loss(s, l, &off, tau, &budgets, refs, &cfg, 2.0).unwrap();
            let (_, grad, e) = f(&logits);
            assert!(
                e[0] > 8_000.0 && e[1] > 300.0 && e[2] > 300.0 && e[3] > 20_000.0,
                "{e:?}"
            );
            for k in 0..logits.len() {
                let h = 1e-3;
                let mut l = logits.clone();
                l[k] += h;
                let up = f(&l).0;
                l[k] -= 2.0 * h;
                let down = f(&l).0;
                let fd = (up - down) / (2.0 * h as f64);
                assert!(
                    (fd - grad[k] as f64).abs() <= 1e-3 * fd.abs().max(1.0),
                    "tau {tau}, logit {k}: analytic {} vs difference {fd}",
                    grad[k]
                );
            }
        }
    }
}
