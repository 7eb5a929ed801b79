//! `mnet search`: differentiable architecture search from a `.mnet` space to
//! a trained, quantized network that fits the board, with its C, .tflite,
//! weights, `search.json`, `report.html` and checkpoints (the algorithm is
//! [`mnet_search::dnas`]; this module reads the arguments, drives it and
//! writes the files).

use crate::{create_dir, load, one_network, read, write_set, Result, UserError};
use clap::Args;
use mnet_compiler::ir::{Budget, BudgetKind};
use mnet_compiler::pipeline;
use mnet_grammar::ast::Dim;
use mnet_search::dnas::{self, Limits, SearchConfig, SearchProgress, State};
use mnet_search::engine::Net;
use mnet_search::train::{train, TrainConfig};
use std::path::PathBuf;

#[derive(Args)]
pub struct SearchArgs {
    /// The search space.
    file: PathBuf,
    /// Which network, when the file defines several.
    #[arg(long)]
    network: Option<String>,
    #[command(flatten)]
    data: crate::data_args::DataArgs,
    #[command(flatten)]
    augment: crate::data_args::AugmentArgs,
    /// Train on fixed features (no augmentation of audio or image data).
    #[arg(long)]
    no_augment: bool,
    /// A held-out set of its own (else --data's validation split: 10% of each class of npy:DIR, or DIR/val).
    #[arg(long)]
    val: Option<String>,
    /// The board (its SRAM and flash are budgets, its core and clock what a latency budget is measured at), instead of the file's `target`.
    #[arg(long)]
    target: Option<String>,
    /// Budgets that replace the file's: ops=60M,sram=200KiB,flash=1MiB,latency=100ms.
    #[arg(long, value_delimiter = ',')]
    budget: Vec<String>,
    /// Output directory (new or empty, or --force).
    #[arg(short, long)]
    output: PathBuf,
    /// Overwrite the outputs of an earlier run in the directory.
    #[arg(long)]
    force: bool,
    /// Continue the search checkpointed in DIR/checkpoint.
    #[arg(long)]
    resume: bool,
    /// A short search for a first look: 1 warm-up, 3 search and 3 retraining epochs.
    #[arg(long)]
    quick: bool,
    /// Warm-up epochs (weights only, random paths) [default: 2; --quick 1].
    #[arg(long)]
    warmup_epochs: Option<usize>,
    /// Search epochs (weights and architecture) [default: 8; --quick 3].
    #[arg(long)]
    epochs: Option<usize>,
    /// Epochs to retrain the resolved network [default: 10; --quick 3].
    #[arg(long)]
    retrain_epochs: Option<usize>,
    /// Extra search epochs with raised penalties when the result does not fit.
    #[arg(long, default_value_t = 4)]
    extra_epochs: usize,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Peak SGD learning rate of the weights.
    #[arg(long, default_value_t = 0.05)]
    lr: f32,
    /// Adam's learning rate on the architecture logits.
    #[arg(long, default_value_t = 0.05)]
    arch_lr: f32,
    /// Weight of E[ops] / ops budget in the architecture loss.
    #[arg(long, default_value_t = 0.1)]
    lambda_ops: f32,
    /// Weight of E[instructions] / latency budget (the target core's latency model) in the architecture loss.
    #[arg(long, default_value_t = 0.0)]
    lambda_latency: f32,
    /// Weight of each hinge penalty over a budget.
    #[arg(long, default_value_t = 2.0)]
    penalty: f32,
    /// Gumbel-softmax temperature at the start and end of the search.
    #[arg(long, default_value_t = 5.0)]
    tau_start: f32,
    #[arg(long, default_value_t = 0.1)]
    tau_end: f32,
    /// Retrain from the supernet's weights (inherit) or from scratch.
    #[arg(long, default_value = "inherit")]
    retrain: Retrain,
    /// Quantization-aware retraining.
    #[arg(long)]
    qat: bool,
    /// Write the network even if it exceeds a budget (marked in the outputs).
    #[arg(long)]
    allow_over_budget: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Networks to compare with in the report: a JSON array of {"label", "ops", "accuracy"} (accuracy on the same held-out split), e.g. width-scaled baselines.
    #[arg(long)]
    compare: Option<PathBuf>,
    /// Stop after this many epochs, checkpointed (tests of --resume).
    #[arg(long, hide = true)]
    stop_after_epoch: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retrain {
    Inherit,
    Scratch,
}

impl std::str::FromStr for Retrain {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Retrain, String> {
        match s {
            "inherit" => Ok(Retrain::Inherit),
            "scratch" => Ok(Retrain::Scratch),
            _ => Err(format!("`{s}`: expected inherit or scratch")),
        }
    }
}

/// `60M`, `200KiB`, `1MiB`, `4096`, `100ms` in the units of `dim` (a
/// plain number is a count or bytes, never a time).
fn quantity(s: &str, dim: Dim) -> Option<u64> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let value: u64 = s[..digits].parse().ok()?;
    let unit = s[digits..].trim();
    if unit.is_empty() {
        return (dim != Dim::Time).then_some(value);
    }
    let unit = mnet_grammar::ast::Unit::parse(unit)?;
    (unit.dim() == dim).then_some(())?;
    value.checked_mul(unit.factor())
}

fn err(msg: String) -> UserError {
    UserError(format!("error: {msg}\n"))
}

/// The outputs a search writes, by file name.
fn output_names(name: &str) -> Vec<String> {
    ["mnet", "safetensors", "tflite", "h", "c"]
        .iter()
        .map(|e| format!("{name}.{e}"))
        .chain(["search.json".to_string(), "report.html".to_string()])
        .collect()
}

/// A reference network of `--compare`.
pub struct Reference {
    pub label: String,
    pub ops: f64,
    pub accuracy: f64,
}

/// Read `--compare`'s points, each checked (the error names the file and
/// the entry).
fn references(path: &std::path::Path) -> Result<Vec<Reference>> {
    let bad = |m: String| err(format!("--compare {}: {m}", path.display()));
    let text = read(path)?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let items = v
        .as_array()
        .ok_or_else(|| bad("expected an array of {\"label\", \"ops\", \"accuracy\"}".into()))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let label = item["label"].as_str().ok_or_else(|| bad(format!("entry {i}: no \"label\" string")))?;
            let ops = item["ops"].as_f64().filter(|o| o.is_finite() && *o > 0.0);
            let accuracy = item["accuracy"].as_f64().filter(|a| (0.0..=1.0).contains(a));
            match (ops, accuracy) {
                (Some(ops), Some(accuracy)) => Ok(Reference { label: label.to_string(), ops, accuracy }),
                _ => Err(bad(format!("entry {i} ({label}): \"ops\" must be a positive number and \"accuracy\" 0 to 1"))),
            }
        })
        .collect()
}

pub fn search(args: &SearchArgs) -> Result<()> {
    let compare = match &args.compare {
        Some(p) => references(p)?,
        None => Vec::new(),
    };
    let text = read(&args.file)?;
    let checked = load(&args.file)?;
    let net = one_network(&checked, &args.file, args.network.as_deref())?;
    let mut g = net.graph.clone();
    let name = g.info.name.clone();
    // The limits: the file's, then --target's board, then --budget.
    if let Some(b) = &args.target {
        let board = mnet_compiler::find_board(&args.file.display().to_string(), &text, b)
            .map_err(|e| err(format!("--target: {e}")))?;
        g.info.target = Some((board, g.info.span));
    }
    for item in &args.budget {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| err(format!("--budget `{item}`: write KIND=VALUE, e.g. ops=60M")))?;
        let (kind, dim, example) = match k.trim() {
            "ops" => (BudgetKind::Ops, Dim::Count, "a count like 60M"),
            "sram" => (BudgetKind::Sram, Dim::Bytes, "a size like 200KiB"),
            "flash" => (BudgetKind::Flash, Dim::Bytes, "a size like 1MiB"),
            "latency" => (BudgetKind::Latency, Dim::Time, "a time like 100ms"),
            other => {
                return Err(err(format!(
                    "--budget `{item}`: unknown budget `{other}` (expected ops, sram, flash or latency)"
                )))
            }
        };
        let limit = quantity(v, dim)
            .filter(|&l| l > 0)
            .ok_or_else(|| err(format!("--budget `{item}`: `{v}` is not {example}")))?;
        g.info.budgets.retain(|b| b.kind != kind);
        g.info.budgets.push(Budget {
            kind,
            limit,
            span: g.info.span,
        });
    }
    let checks = mnet_compiler::analysis::stats::budgets(&g.info);
    let limit_of = |k: BudgetKind| checks.iter().find(|b| b.kind == k).map(|b| b.limit);
    // A latency budget is measured with the target's core model at its
    // clock (the file's own budget was checked with its target; --target
    // and --budget are checked here).
    let model = g
        .info
        .target
        .as_ref()
        .map(|(board, _)| mnet_compiler::analysis::latency::BoardModel::of(board));
    if limit_of(BudgetKind::Latency).is_some() {
        match &model {
            None => {
                return Err(err(format!(
                    "{}: a latency budget needs a target board (`target` in the file or --target)",
                    args.file.display()
                )))
            }
            Some(Err(e)) => return Err(err(format!("{}: {e}", args.file.display()))),
            Some(Ok(_)) => {}
        }
    }
    let model = model.and_then(|m| m.ok());
    let limits = Limits {
        ops: limit_of(BudgetKind::Ops),
        flash: limit_of(BudgetKind::Flash),
        sram: limit_of(BudgetKind::Sram),
        latency_us: limit_of(BudgetKind::Latency),
        clock_hz: model.as_ref().map(|m| m.clock_hz),
    };
    let quick = |q: usize, full: usize| if args.quick { q } else { full };
    let cfg = SearchConfig {
        warmup_epochs: args.warmup_epochs.unwrap_or(quick(1, 2)),
        epochs: args.epochs.unwrap_or(quick(3, 8)),
        batch: args.batch,
        lr: args.lr,
        arch_lr: args.arch_lr,
        tau_start: args.tau_start,
        tau_end: args.tau_end,
        lambda_ops: args.lambda_ops,
        lambda_latency: args.lambda_latency,
        penalty: args.penalty,
        seed: args.seed,
        ..SearchConfig::default()
    };
    let retrain_epochs = args.retrain_epochs.unwrap_or(quick(3, 10));
    for (flag, ok) in [
        ("--batch", args.batch >= 1 && args.batch <= 4096),
        ("--epochs", cfg.epochs >= 1 && cfg.epochs <= 10_000),
        ("--warmup-epochs", cfg.warmup_epochs <= 10_000),
        ("--retrain-epochs", retrain_epochs <= 10_000),
        ("--extra-epochs", args.extra_epochs <= 1000),
        (
            "--lr",
            args.lr.is_finite() && args.lr > 0.0 && args.lr < 10.0,
        ),
        (
            "--arch-lr",
            args.arch_lr.is_finite() && args.arch_lr > 0.0 && args.arch_lr < 10.0,
        ),
        (
            "--lambda-ops",
            args.lambda_ops.is_finite() && args.lambda_ops >= 0.0,
        ),
        (
            "--lambda-latency",
            args.lambda_latency.is_finite() && args.lambda_latency >= 0.0,
        ),
        ("--penalty", args.penalty.is_finite() && args.penalty >= 0.0),
        (
            "--tau-start/--tau-end",
            args.tau_start.is_finite()
                && args.tau_end.is_finite()
                && args.tau_end > 0.0
                && args.tau_start >= args.tau_end,
        ),
    ] {
        if !ok {
            return Err(err(format!("{flag}: value out of range")));
        }
    }
    // A budget no network of the space meets is an error before training.
    // Another target has another core: the space's instructions are
    // predicted for it.
    let summary;
    let s = if args.target.is_some() {
        summary = mnet_compiler::analysis::space::analyze(&g, &checked.sources)
            .map_err(|d| err(format!("{}: {}", args.file.display(), d[0].message)))?;
        &summary
    } else {
        &net.summary
    };
    if let (Some(l), Some(us)) = (limits.latency_us, limits.micros(s.min.instructions)) {
        if us > l {
            return Err(err(format!(
                "{}: no network of the space meets the latency budget of {l} us: the smallest needs {us} us ({} instructions at {} MHz, the latency model's estimate)",
                args.file.display(),
                s.min.instructions,
                limits.clock_hz.unwrap_or(0) as f64 / 1e6
            )));
        }
    }
    for (kind, smallest, limit) in [
        ("ops", s.min.ops(), limits.ops),
        ("flash", s.min.flash_bytes, limits.flash),
    ] {
        if let Some(l) = limit.filter(|&l| smallest > l) {
            return Err(err(format!(
                "{}: no network of the space meets the {kind} budget of {l}: the smallest needs {smallest}",
                args.file.display()
            )));
        }
    }
    let picked = |pick| {
        use mnet_compiler::analysis::resolve::{assignment, resolve};
        resolve(&g, &assignment(&g, s, pick)).map_err(err)
    };
    let smallest = picked(mnet_compiler::analysis::resolve::Pick::Min)?;
    let smallest_fit = dnas::fit(&smallest, &limits).map_err(err)?;
    if let Some(l) = limits.sram.filter(|&l| smallest_fit.sram > l) {
        return Err(err(format!(
            "{}: no network of the space meets the sram budget of {l}: the smallest (--pick min) needs {} (arena {} + input {} + output {} + stack {})",
            args.file.display(),
            smallest_fit.sram,
            smallest_fit.memory.arena,
            smallest_fit.memory.input,
            smallest_fit.memory.output,
            smallest_fit.memory.stack
        )));
    }
    // Outputs: a new or empty directory, or --force, or --resume.
    let dir = &args.output;
    if dir.exists() && !dir.is_dir() {
        return Err(err(format!(
            "-o {}: exists and is not a directory",
            dir.display()
        )));
    }
    let ckpt_dir = dir.join("checkpoint");
    if !args.resume && !args.force {
        if let Some(p) = output_names(&name)
            .iter()
            .map(|f| dir.join(f))
            .chain([ckpt_dir.clone()])
            .find(|p| p.exists())
        {
            return Err(err(format!(
                "{} already exists; pass --force to overwrite it or --resume to continue",
                p.display()
            )));
        }
    }
    // Data.
    let shape: Vec<usize> = g.info.input_shape.iter().map(|&d| d as usize).collect();
    let classes = smallest.node(smallest.output).shape.iter().product::<u32>() as usize;
    let (train_set, val_set) = args.data.train_val(
        args.val.as_deref(),
        &shape,
        classes,
        args.seed,
        args.augment.augment(!args.no_augment)?,
    )?;
    if train_set.len() < 2 || val_set.is_empty() {
        let source = if args.val.is_some() {
            "--val and --data give"
        } else if args.data.data.starts_with("npy:") {
            "x.npy and y.npy give (10% of each class held out, rounded)"
        } else {
            "it gives"
        };
        return Err(err(format!(
            "--data {}: {source} {} training and {} held-out samples; a search needs both (more samples, DIR/val/x.npy and y.npy, or --val)",
            args.data.data,
            train_set.len(),
            val_set.len()
        )));
    }
    // The supernet holds every option at its largest: about the largest
    // network's training memory and half again.
    let largest = picked(mnet_compiler::analysis::resolve::Pick::Max)?;
    let needs = mnet_search::engine::training_bytes(&largest, args.batch) * 3 / 2;
    if needs > mnet_search::engine::MEMORY_LIMIT {
        return Err(err(format!(
            "searching `{name}` with --batch {} needs about {} MiB, more than mnet's {} MiB limit; use a smaller --batch",
            args.batch,
            needs >> 20,
            mnet_search::engine::MEMORY_LIMIT >> 20
        )));
    }
    // The search.
    let fingerprint = format!(
        "{:016x} {} {:?} {:?} {:?} {:?} {}",
        mnet_compiler::fnv1a(text.bytes()),
        args.data.data,
        args.data.words,
        train_set.augments().then(|| args.augment.json()),
        cfg,
        limits,
        args.extra_epochs
    );
    let created = create_dir(dir)?;
    // A search that fails after it started leaves nothing: its checkpoint
    // cannot be resumed with other settings, and the directory it made
    // goes too.
    let fail = |e: UserError| {
        let _ = std::fs::remove_dir_all(&ckpt_dir);
        if let Some(d) = &created {
            let _ = std::fs::remove_dir(d);
        }
        e
    };
    let mut state = if args.resume {
        mnet_search::checkpoint::load(&ckpt_dir, &g, &cfg, &fingerprint).map_err(err)?
    } else {
        dnas::start(&g, &cfg).map_err(|e| fail(err(format!("{}: {e}", args.file.display()))))?
    };
    // The loss's SRAM budget allows the stack of the space's largest
    // network (the widest matrix kernel's buffers).
    let largest = picked(mnet_compiler::analysis::resolve::Pick::Max)?;
    let budgets =
        limits.budgets(&mnet_compiler::pipeline::memory(&largest).map_err(|e| err(e.to_string()))?);
    let refs = dnas::Refs {
        ops: limits.ops.map_or(s.max.ops() as f64, |o| o as f64),
        instructions: budgets
            .instructions
            .map_or(s.max.instructions as f64, |i| i as f64),
    };
    let stop = args.stop_after_epoch;
    let total_epochs = cfg.warmup_epochs + cfg.epochs;
    let mut bar: Option<indicatif::ProgressBar> = None;
    let style =
        indicatif::ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg}")
            .expect("a valid template")
            .progress_chars("=> ");
    let budget_text = |v: f64, l: Option<u64>| match l {
        Some(l) => format!("{:.0}/{}", v, l),
        None => format!("{v:.0}"),
    };
    let instructions_text = |v: f64| match (budgets.instructions, v > 0.0) {
        (Some(l), _) => format!(", E[instructions] {v:.0}/{l}"),
        (None, true) => format!(", E[instructions] {v:.0}"),
        (None, false) => String::new(),
    };
    let stopped = std::cell::Cell::new(false);
    let outcome = dnas::search(
        &g,
        &mut state,
        &train_set,
        &val_set,
        &limits,
        &budgets,
        refs,
        &cfg,
        args.extra_epochs,
        |st: &State| {
            mnet_search::checkpoint::save(&ckpt_dir, st, &fingerprint)?;
            if stop.is_some_and(|n| st.epoch >= n) {
                stopped.set(true);
                return Err("stopped".into());
            }
            Ok(())
        },
        |p| match p {
            SearchProgress::Step {
                epoch,
                step,
                steps,
                loss,
                accuracy,
                temperature,
                expected,
            } => {
                let b = bar.get_or_insert_with(|| {
                    indicatif::ProgressBar::new(steps as u64)
                        .with_style(style.clone())
                        .with_prefix(format!("{epoch}/{total_epochs}"))
                });
                b.set_position(step as u64);
                let costs = match expected {
                    Some([o, f, w, i]) => format!(
                        ", E[ops] {}, E[flash] {}, E[SRAM] {}{}",
                        budget_text(o, budgets.ops),
                        budget_text(f, budgets.flash),
                        budget_text(w, budgets.working),
                        instructions_text(i)
                    ),
                    None => String::new(),
                };
                b.set_message(format!(
                    "loss {loss:.4}, accuracy {accuracy:.3}{costs}, temperature {temperature:.3}"
                ));
            }
            SearchProgress::Epoch(r) => {
                if let Some(b) = bar.take() {
                    b.finish_and_clear();
                }
                let v = match (r.val_loss, r.val_accuracy) {
                    (Some(l), Some(a)) => format!(", held-out loss {l:.4}, accuracy {a:.3}"),
                    _ => String::new(),
                };
                let at = if r.epoch <= total_epochs {
                    format!("{}/{total_epochs}", r.epoch)
                } else {
                    format!(
                        "{} (extra {}/{})",
                        r.epoch,
                        r.epoch - total_epochs,
                        args.extra_epochs
                    )
                };
                eprintln!(
                    "epoch {at} ({}): loss {:.4}, accuracy {:.3}{v}; E[ops] {}, E[flash] {}, E[working] {}{}; temperature {:.3}",
                    r.phase.name(),
                    r.loss,
                    r.accuracy,
                    budget_text(r.expected_ops, budgets.ops),
                    budget_text(r.expected_flash, budgets.flash),
                    budget_text(r.expected_working, budgets.working),
                    instructions_text(r.expected_instructions),
                    r.temperature
                );
            }
        },
    );
    if let Some(b) = bar.take() {
        b.finish_and_clear();
    }
    if stopped.get() {
        eprintln!(
            "stopped after epoch {}; continue with --resume",
            state.epoch
        );
        return Ok(());
    }
    let outcome = outcome.map_err(|e| fail(err(format!("{}: {e}", args.file.display()))))?;
    let over: Vec<String> = outcome
        .fit
        .over
        .iter()
        .map(|(k, need, l)| match *k {
            "latency" => format!("latency {need} us > {l} us"),
            _ => format!("{k} {need} > {l}"),
        })
        .collect();
    if !over.is_empty() && !args.allow_over_budget {
        return Err(fail(err(format!(
            "{}: the searched network does not fit after {} extra epochs: {}; raise --penalty or --extra-epochs, or pass --allow-over-budget to write it anyway",
            args.file.display(),
            args.extra_epochs,
            over.join(", ")
        ))));
    }
    // Retrain the resolved network.
    let mut fixed = outcome.fixed.clone();
    fixed.info = g.info.clone();
    let retrain_cfg = TrainConfig {
        epochs: retrain_epochs,
        batch: args.batch,
        seed: args.seed,
        qat: args.qat,
        ..TrainConfig::default()
    };
    let mut model = Net::from_fixed(&fixed, args.batch.min(train_set.len()), args.seed);
    if args.retrain == Retrain::Inherit {
        state
            .supernet
            .inherit(&g, &outcome.assignment, &fixed, &mut model)
            .map_err(|e| fail(err(e)))?;
    }
    let trained = if retrain_epochs > 0 {
        let t = train(&mut model, &train_set, Some(&val_set), retrain_cfg, |p| {
            if let mnet_search::train::Progress::Epoch(m) = p {
                eprintln!(
                    "retrain {}/{retrain_epochs}: loss {:.4}, accuracy {:.3}; held-out accuracy {:.3}",
                    m.epoch,
                    m.loss,
                    m.accuracy,
                    m.val_accuracy.unwrap_or(0.0)
                );
            }
        })
        .map_err(|e| fail(err(format!("{name}: retraining: {e}"))))?;
        Some(t)
    } else {
        None
    };
    let (float_loss, float_acc) = mnet_search::train::evaluate(&mut model, &val_set);
    let weights = mnet_search::train::weights_safetensors(&model);
    // Quantize with calibration on training samples, evaluate, emit.
    let calib = train_set.inputs_npy(mnet_search::data::CALIBRATION_ROWS);
    let opts = pipeline::Options {
        tflite: Some(Default::default()),
        c: Some(Default::default()),
    };
    let art = pipeline::compile(
        &fixed,
        pipeline::Weights::File(&weights),
        Some(&calib),
        &opts,
    )
    .map_err(|e| fail(err(format!("{name}: {e}"))))?;
    let int8_acc = dnas::int8_accuracy(&art.quantized, &val_set);
    // The files.
    let shown = args
        .file
        .file_name()
        .map(|f| f.to_string_lossy().to_string())
        .unwrap_or_default();
    // The command without what does not change the result (where it
    // writes, --force, --resume), so a resumed run writes the same files.
    let mut command = String::from("mnet search");
    let mut raw = std::env::args().skip(2);
    while let Some(a) = raw.next() {
        match a.as_str() {
            "--force" | "--resume" => continue,
            "-o" | "--output" | "--stop-after-epoch" => {
                raw.next();
                continue;
            }
            _ if a.starts_with("--output=") || a.starts_with("--stop-after-epoch=") => continue,
            _ => {}
        }
        command.push(' ');
        command.push_str(&a);
    }
    let note = format!(
        "{name} searched from {shown} (FNV-1a {:016x}) by `{command}`\nseed {}; limits: {}{}",
        mnet_compiler::fnv1a(text.bytes()),
        args.seed,
        limits_text(&limits),
        if over.is_empty() {
            String::new()
        } else {
            format!("\nOVER BUDGET (--allow-over-budget): {}", over.join(", "))
        }
    );
    let mnet_text =
        mnet_grammar::print_module(&mnet_compiler::back::mnet::to_module(&fixed, &note));
    let mut json = search_json(
        &g,
        &state,
        &outcome,
        &limits,
        &cfg,
        Report {
            qat_ranges: art.quantized.qat_ranges,
            locations: g
                .choices
                .iter()
                .map(|c| mnet_compiler::ir::short_location(&checked.sources, c.span))
                .collect(),
            data: &args.data.data,
            samples: (train_set.len(), val_set.len()),
            float: (float_loss, float_acc),
            int8: int8_acc,
            arena: art.plan.arena_size as u64,
            over: &over,
            retrain: args.retrain,
            retrain_epochs,
            kept_epoch: trained.as_ref().map(|t| t.kept_epoch),
        },
    );
    if !compare.is_empty() {
        json["compare"] = compare
            .iter()
            .map(|r| serde_json::json!({ "label": r.label, "ops": r.ops, "accuracy": r.accuracy }))
            .collect();
    }
    let html = crate::report::html(
        &g,
        &state.history,
        &outcome.assignment,
        &budgets,
        &outcome.fit,
        &mnet_compiler::analysis::stats::fixed_stats(&fixed),
        (float_acc, int8_acc),
        &compare,
    );
    let c = art.c.as_ref().expect("C asked for");
    let files: Vec<(PathBuf, Vec<u8>)> = vec![
        (dir.join(format!("{name}.mnet")), mnet_text.into_bytes()),
        (dir.join(format!("{name}.safetensors")), weights),
        (
            dir.join(format!("{name}.tflite")),
            art.tflite.clone().expect("tflite asked for"),
        ),
        (dir.join(format!("{name}.h")), c.header.clone().into_bytes()),
        (dir.join(format!("{name}.c")), c.source.clone().into_bytes()),
        (
            dir.join("search.json"),
            serde_json::to_string_pretty(&json)
                .expect("json")
                .into_bytes(),
        ),
        (dir.join("report.html"), html.into_bytes()),
    ];
    write_set(&files, None).map_err(fail)?;
    let chosen: Vec<String> = choice_names(&g, &checked.sources, &outcome.assignment)
        .into_iter()
        .map(|(k, v)| format!("{k} = {v}"))
        .collect();
    outln!(
        "{name}: {} ops, {} flash bytes, SRAM {} bytes (arena {}); held-out accuracy float {:.3}, int8 {:.3}",
        outcome.fit.ops,
        outcome.fit.flash,
        outcome.fit.sram,
        art.plan.arena_size,
        float_acc,
        int8_acc
    );
    outln!("choices: {}", chosen.join(", "));
    for (p, bytes) in &files {
        outln!("wrote {} ({} bytes)", p.display(), bytes.len());
    }
    Ok(())
}

fn limits_text(l: &Limits) -> String {
    let mut v = Vec::new();
    if let Some(o) = l.ops {
        v.push(format!("ops <= {o}"));
    }
    if let Some(f) = l.flash {
        v.push(format!("flash <= {f} B"));
    }
    if let Some(s) = l.sram {
        v.push(format!("sram <= {s} B"));
    }
    if let Some(t) = l.latency_us {
        v.push(format!(
            "latency <= {t} us at {} MHz",
            l.clock_hz.unwrap_or(0) as f64 / 1e6
        ));
    }
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Each choice as (`c3 at kws.mnet:10:5 (width …)`, its option).
fn choice_names(
    g: &mnet_compiler::ir::SearchGraph,
    sources: &mnet_grammar::Sources,
    a: &[u16],
) -> Vec<(String, String)> {
    g.choices
        .iter()
        .enumerate()
        .map(|(i, c)| {
            (
                format!(
                    "c{i} at {} ({})",
                    mnet_compiler::ir::short_location(sources, c.span),
                    c.describe()
                ),
                c.option_label(a[i] as usize),
            )
        })
        .collect()
}

struct Report<'a> {
    /// Activation ranges the int8 model took from QAT.
    qat_ranges: usize,
    /// Where each choice is in the source (`kws.mnet:10:5`).
    locations: Vec<String>,
    data: &'a str,
    samples: (usize, usize),
    float: (f32, f32),
    int8: f32,
    arena: u64,
    over: &'a [String],
    retrain: Retrain,
    retrain_epochs: usize,
    kept_epoch: Option<usize>,
}

fn search_json(
    g: &mnet_compiler::ir::SearchGraph,
    state: &State,
    outcome: &dnas::Outcome,
    limits: &Limits,
    cfg: &SearchConfig,
    r: Report,
) -> serde_json::Value {
    use serde_json::json;
    let epochs: Vec<serde_json::Value> = state
        .history
        .iter()
        .map(|e| {
            json!({
                "epoch": e.epoch,
                "phase": e.phase.name(),
                "loss": e.loss,
                "accuracy": e.accuracy,
                "held_out_loss": e.val_loss,
                "held_out_accuracy": e.val_accuracy,
                "temperature": e.temperature,
                "lr": e.lr,
                "penalty": e.penalty,
                "probabilities": e.probabilities,
                "expected_ops": e.expected_ops,
                "expected_flash": e.expected_flash,
                "expected_working_memory": e.expected_working,
                "expected_instructions": e.expected_instructions,
                "resource_loss": e.resource_loss,
            })
        })
        .collect();
    let choices: Vec<serde_json::Value> = g
        .choices
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({
                "id": format!("c{i}"),
                "at": r.locations[i],
                "kind": c.describe(),
                "options": (0..c.options()).map(|o| c.option_label(o)).collect::<Vec<_>>(),
                "chosen": outcome.assignment[i],
                "chosen_label": c.option_label(outcome.assignment[i] as usize),
            })
        })
        .collect();
    let f = &outcome.fit;
    json!({
        "network": g.info.name,
        "config": {
            "warmup_epochs": cfg.warmup_epochs, "epochs": cfg.epochs, "batch": cfg.batch,
            "lr": cfg.lr, "arch_lr": cfg.arch_lr, "tau_start": cfg.tau_start, "tau_end": cfg.tau_end,
            "lambda_ops": cfg.lambda_ops, "lambda_latency": cfg.lambda_latency,
            "penalty": cfg.penalty, "seed": cfg.seed,
            "retrain": format!("{:?}", r.retrain).to_lowercase(), "retrain_epochs": r.retrain_epochs,
        },
        "limits": {
            "ops": limits.ops, "flash": limits.flash, "sram": limits.sram,
            "latency_us": limits.latency_us, "clock_hz": limits.clock_hz,
        },
        "data": { "spec": r.data, "train_samples": r.samples.0, "held_out_samples": r.samples.1 },
        "epochs": epochs,
        "choices": choices,
        "result": {
            "ops": f.ops, "params": f.params, "flash": f.flash,
            "peak_working_memory": f.peak_working,
            "arena": r.arena, "input_bytes": f.memory.input, "output_bytes": f.memory.output,
            "stack_allowance": f.memory.stack, "sram": f.sram,
            "instructions": f.instructions, "latency_us": f.latency_us,
            "over_budget": r.over,
            "kept_retrain_epoch": r.kept_epoch,
            "held_out_float_loss": r.float.0,
            "held_out_float_accuracy": r.float.1,
            "held_out_int8_accuracy": r.int8,
            "qat_activation_ranges": r.qat_ranges,
        },
    })
}
