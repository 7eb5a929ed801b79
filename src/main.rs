//! `mnet`: the command-line tool. A thin layer over the `mnet-compiler`
//! library: argument parsing (clap), reading files, printing results and
//! rendered diagnostics, and exit codes (0 success, 1 the input is wrong,
//! 2 usage).

use clap::{Args, Parser, Subcommand};
use mnet_compiler::analysis::resolve::{assignment, resolve, Pick};
use mnet_compiler::analysis::stats::{
    fixed_json, fixed_stats, render_fixed, render_space, space_json,
};
use mnet_compiler::pipeline;
use mnet_compiler::{check_source, Checked, CheckedNetwork};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "mnet",
    version,
    about = "A declarative model compiler for microcontrollers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The network a command works on.
#[derive(Args)]
pub(crate) struct NetworkArgs {
    file: PathBuf,
    /// Pick one network of a search space: min, max or random:SEED.
    #[arg(long)]
    pick: Option<Pick>,
    /// Which network, when the file defines several.
    #[arg(long)]
    network: Option<String>,
}

/// Where a command writes.
#[derive(Args)]
struct OutputArgs {
    /// Output directory (created if missing).
    #[arg(short, long)]
    output: PathBuf,
    /// Overwrite existing output files.
    #[arg(long)]
    force: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Parse, elaborate and check every network of each file; one summary line a file.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Per-layer shapes and costs, totals, and for a search space the range of each total.
    Stats {
        #[command(flatten)]
        net: NetworkArgs,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
        /// Predict instructions per layer for this core's C kernels (cortex-m4, cortex-m7) [default: the target board's core].
        #[arg(long)]
        cpu: Option<String>,
        /// The clock in MHz for the predicted latency [default: the target board's].
        #[arg(long)]
        clock: Option<f64>,
    },
    /// Write one network of a search space as a choice-free .mnet file.
    Resolve {
        file: PathBuf,
        /// min, max or random:SEED.
        #[arg(long)]
        pick: Pick,
        /// Output file.
        #[arg(short, long)]
        output: PathBuf,
        /// Overwrite the output file if it exists.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        network: Option<String>,
    },
    /// Print a file in canonical form.
    Fmt {
        file: PathBuf,
        /// Exit with 1 if the file is not in canonical form (prints nothing).
        #[arg(long)]
        check: bool,
        /// Write to this file instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Overwrite the output file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Compile a fixed network (or a pick of a space) to int8 artefacts.
    Compile {
        #[command(flatten)]
        net: NetworkArgs,
        #[command(flatten)]
        compile: CompileArgs,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Train a fixed network (or a pick of a space) and write its weights and metrics.
    Train {
        #[command(flatten)]
        net: NetworkArgs,
        #[command(flatten)]
        train: TrainArgs,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Search a space (DNAS) for a network that fits the board; train, quantize and emit it.
    Search(search::SearchArgs),
    /// Evaluate a trained network on a split: accuracy, per class, confusion matrix; --int8, --per-layer.
    Eval(eval::EvalArgs),
    /// Write the exact input tensors (and labels) a network sees from --data, as .npy.
    Features(eval::FeaturesArgs),
    /// Build the C for an emulated Cortex-M (QEMU), run it: instructions, sizes, stack, outputs checked.
    Emulate(emulate::EmulateArgs),
    /// Run int8 inference on the host (a .tflite, or a .mnet with its weights) over a .npy of inputs.
    Run(run::RunArgs),
    /// Print a readable dump of a .tflite file (tensors, quantization, operators, buffers).
    Inspect { model: PathBuf },
    /// Print the elaborated IR of each network (search graph, or with --pick the fixed graph).
    Ir {
        file: PathBuf,
        #[arg(long)]
        pick: Option<Pick>,
    },
}

/// Where a compiled network's weights and calibration come from.
#[derive(Args)]
pub(crate) struct WeightsArgs {
    /// Float weights: a safetensors file (tensor names in the README).
    #[arg(long, conflicts_with = "random_weights")]
    weights: Option<PathBuf>,
    /// Deterministic random weights (and synthetic calibration) from this seed.
    #[arg(long)]
    random_weights: Option<u64>,
    /// Calibration inputs: a float32 .npy file shaped [N, ...input shape].
    #[arg(long)]
    calib: Option<PathBuf>,
}

/// The bytes of the files a command read, if given.
type Read2 = (Option<Vec<u8>>, Option<Vec<u8>>);

impl WeightsArgs {
    /// None of the flags of a float network, for a `.tflite` (`file`).
    pub(crate) fn refuse_for_tflite(&self, file: &Path) -> Result<()> {
        if self.weights.is_some() || self.random_weights.is_some() || self.calib.is_some() {
            return Err(UserError(format!(
                "error: {}: a .tflite holds its int8 weights and quantization: --weights, --random-weights and --calib are for .mnet networks\n",
                file.display()
            )));
        }
        Ok(())
    }

    /// A `.mnet` network's float weights are given (a file or a seed).
    pub(crate) fn require(&self) -> Result<()> {
        if self.weights.is_none() && self.random_weights.is_none() {
            return Err(UserError(
                "error: a .mnet network needs its float weights: --weights FILE.safetensors or --random-weights SEED\n".into(),
            ));
        }
        Ok(())
    }

    /// The weights file's and the calibration file's bytes.
    fn read(&self) -> Result<Read2> {
        Ok((
            self.weights.as_deref().map(read_bytes).transpose()?,
            self.calib.as_deref().map(read_bytes).transpose()?,
        ))
    }

    /// The weights, given the weights file's bytes from [`WeightsArgs::read`].
    fn weights<'a>(&self, bytes: Option<&'a [u8]>) -> pipeline::Weights<'a> {
        match (bytes, self.random_weights) {
            (Some(b), _) => pipeline::Weights::File(b),
            (None, seed) => pipeline::Weights::Random(seed.unwrap_or(0)),
        }
    }
}

#[derive(Args)]
struct CompileArgs {
    #[command(flatten)]
    weights: WeightsArgs,
    /// Also write the float weights used (e.g. the random ones) as safetensors.
    #[arg(long)]
    save_weights: Option<PathBuf>,
    /// What to write: tflite, c (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "tflite")]
    emit: Vec<String>,
    /// The core the C is for: cortex-m4, cortex-m7, cortex-m33, cortex-m55 (DSP kernels) or generic (plain loops) [default: the target board's core, else cortex-m4].
    #[arg(long)]
    cpu: Option<String>,
    /// Print one JSON object (files written, memory report) instead of the summary lines.
    #[arg(long)]
    json: bool,
    /// Estimate code size and stack instead of building the C with arm-none-eabi-gcc (which takes ~0.1-1 s).
    #[arg(long)]
    estimate: bool,
    /// Leave the activations' placement to TFLM: no OfflineMemoryAllocation metadata in the .tflite.
    #[arg(long)]
    no_offline_plan: bool,
    /// The board the memory report checks against (std::boards, or a board of the .mnet file), instead of the file's `target`; a .tflite has none of its own.
    #[arg(long)]
    target: Option<String>,
}

/// The C backend's core: `--cpu`, else the target board's core, else
/// Cortex-M4.
pub(crate) fn cpu_of(
    flag: Option<&str>,
    fixed: &mnet_compiler::ir::FixedGraph,
) -> Result<mnet_compiler::back::c::Cpu> {
    cpu_for(flag, fixed.info.target.as_ref().map(|(b, _)| b))
}

/// [`cpu_of`] for a board, if any.
pub(crate) fn cpu_for(
    flag: Option<&str>,
    board: Option<&mnet_compiler::ir::Board>,
) -> Result<mnet_compiler::back::c::Cpu> {
    use mnet_compiler::back::c::Cpu;
    let names = || {
        Cpu::ALL
            .iter()
            .map(|c| c.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (flag, board) {
        (Some(f), _) => Cpu::parse(f).ok_or_else(|| {
            UserError(format!(
                "error: --cpu `{f}` is not a core mnet knows ({}, or cortex-m0/m0plus/m3/m23 for generic)\n",
                names()
            ))
        }),
        (None, Some(board)) => Cpu::parse(&board.core).ok_or_else(|| {
            UserError(format!(
                "error: board `{}` has core `{}`, which mnet does not know ({}); pass --cpu\n",
                board.name,
                board.core,
                names()
            ))
        }),
        (None, None) => Ok(Cpu::default()),
    }
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    data: data_args::DataArgs,
    #[command(flatten)]
    augment: data_args::AugmentArgs,
    /// Train on fixed features (no augmentation of audio or image data).
    #[arg(long)]
    no_augment: bool,
    /// A validation set of its own (same kinds as --data); without it, --data's validation split (10% of each class of npy:DIR, or DIR/val).
    #[arg(long)]
    val: Option<String>,
    #[arg(long, default_value_t = 5)]
    epochs: usize,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// sgd (Nesterov momentum) or adamw (decoupled weight decay) [default: sgd].
    #[arg(long)]
    optimizer: Option<mnet_search::train::OptimizerKind>,
    /// Peak learning rate [default: 0.05 with sgd, 0.003 with adamw].
    #[arg(long)]
    lr: Option<f32>,
    /// SGD momentum [default: 0.9].
    #[arg(long)]
    momentum: Option<f32>,
    /// Weight decay of weights (not biases or batch norms) [default: 1e-4].
    #[arg(long)]
    weight_decay: Option<f32>,
    /// Linear learning-rate warm-up, in epochs [default: 0.25].
    #[arg(long)]
    warmup: Option<f32>,
    /// The learning rate after the warm-up: cosine, step (x0.1 at 1/2, x0.01 at 3/4) or constant.
    #[arg(long, default_value = "cosine")]
    schedule: mnet_search::optim::Schedule,
    /// Label smoothing of the cross-entropy, 0 to below 1.
    #[arg(long, default_value_t = 0.0)]
    label_smoothing: f32,
    /// Which epoch's weights to write: best (validation accuracy) or last.
    #[arg(long, default_value = "best")]
    keep: mnet_search::train::Keep,
    /// Start from these weights (safetensors of this network, e.g. from mnet train): fine-tuning, or QAT from a float model.
    #[arg(long)]
    init: Option<PathBuf>,
    /// How weights start without --init: glorot (uniform, Keras' default) or he (normal).
    #[arg(long, default_value = "glorot")]
    weight_init: mnet_search::engine::Init,
    /// Start residual branches as the identity: the batch norm before each `add` starts with gamma 0.
    #[arg(long)]
    zero_residual_gamma: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Quantization-aware training: int8 fake quantization of weights and activations.
    #[arg(long)]
    qat: bool,
}

/// Write to standard output. A closed pipe (`mnet stats --json | head`)
/// ends the process quietly, as Unix tools do; another write error is an
/// error.
fn write_stdout(args: std::fmt::Arguments) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|_| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

macro_rules! out {
    ($($arg:tt)*) => { write_stdout(format_args!($($arg)*)) };
}

macro_rules! outln {
    () => { $crate::write_stdout(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::write_stdout(format_args!("{}\n", format_args!($($arg)*))) };
}

mod data_args;
mod emulate;
mod eval;
mod report;
mod run;
mod search;

/// A user-facing failure: already formatted, exit code 1.
pub(crate) struct UserError(pub(crate) String);

pub(crate) type Result<T> = std::result::Result<T, UserError>;

fn read(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path)
        .map_err(|e| UserError(format!("error: cannot read {}: {e}\n", path.display())))?;
    String::from_utf8(bytes).map_err(|e| {
        UserError(format!(
            "error: {} is not UTF-8 text (invalid byte at offset {})\n",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}

fn load(path: &Path) -> Result<Checked> {
    let text = read(path)?;
    check_source(&path.display().to_string(), &text).map_err(|f| UserError(f.render()))
}

fn one_network(checked: &Checked, path: &Path, name: Option<&str>) -> Result<CheckedNetwork> {
    let nets = &checked.networks;
    match name {
        Some(n) => nets
            .iter()
            .find(|c| c.graph.info.name == n)
            .cloned()
            .ok_or_else(|| {
                let names: Vec<&str> = nets.iter().map(|c| c.graph.info.name.as_str()).collect();
                UserError(format!(
                    "error: {} has no network `{n}` (it has: {})\n",
                    path.display(),
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                ))
            }),
        None => match nets.len() {
            0 => Err(UserError(format!(
                "error: {} defines no network (only blocks or boards)\n",
                path.display()
            ))),
            1 => Ok(nets[0].clone()),
            _ => {
                let names: Vec<&str> = nets.iter().map(|c| c.graph.info.name.as_str()).collect();
                Err(UserError(format!(
                    "error: {} defines several networks; choose one with --network ({})\n",
                    path.display(),
                    names.join(", ")
                )))
            }
        },
    }
}

fn fixed_of(net: &CheckedNetwork, pick: Pick) -> Result<mnet_compiler::ir::FixedGraph> {
    let choice = assignment(&net.graph, &net.summary, pick);
    resolve(&net.graph, &choice).map_err(|e| UserError(format!("error: {e}\n")))
}

/// The fixed network a command works on: the file's network, or the pick
/// of its search space (a space without `--pick` is an error); and the
/// sources, to render diagnostics at its layers.
pub(crate) fn fixed_network(
    net: &NetworkArgs,
    verb: &str,
) -> Result<(mnet_grammar::Sources, mnet_compiler::ir::FixedGraph)> {
    let checked = load(&net.file)?;
    let one = one_network(&checked, &net.file, net.network.as_deref())?;
    if !one.graph.choices.is_empty() && net.pick.is_none() {
        return Err(UserError(format!(
            "error: {} is a search space ({} choices); {verb} a fixed network, or pick one with --pick min|max|random:SEED\n",
            net.file.display(),
            one.graph.choices.len()
        )));
    }
    let fixed = fixed_of(&one, net.pick.unwrap_or(Pick::Min))?;
    Ok((checked.sources, fixed))
}

/// Refuse to overwrite any of `paths` unless `force`.
fn refuse_existing<'a>(paths: impl IntoIterator<Item = &'a PathBuf>, force: bool) -> Result<()> {
    if force {
        return Ok(());
    }
    match paths.into_iter().find(|p| p.exists()) {
        Some(p) => Err(UserError(format!(
            "error: {} already exists; pass --force to overwrite it\n",
            p.display()
        ))),
        None => Ok(()),
    }
}

/// Refuse two outputs of one command at one path (`--save-weights` onto
/// `-o DIR/NAME.tflite`, say): one would overwrite the other.
fn refuse_colliding<'a>(paths: impl IntoIterator<Item = &'a PathBuf>) -> Result<()> {
    let normal = |p: &Path| -> PathBuf {
        std::path::absolute(p)
            .unwrap_or_else(|_| p.to_path_buf())
            .components()
            .filter(|c| !matches!(c, std::path::Component::CurDir))
            .collect()
    };
    let mut seen: Vec<PathBuf> = Vec::new();
    for p in paths {
        let n = normal(p);
        if seen.contains(&n) {
            return Err(UserError(format!(
                "error: two outputs of this command would be written to {}; choose another path\n",
                p.display()
            )));
        }
        seen.push(n);
    }
    Ok(())
}

fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| UserError(format!("error: cannot read {}: {e}\n", path.display())))
}

/// Create the output directory; `Some(dir)` when this run made it (so a
/// failing run can remove it again).
fn create_dir(dir: &Path) -> Result<Option<PathBuf>> {
    let existed = dir.is_dir();
    std::fs::create_dir_all(dir)
        .map_err(|e| UserError(format!("error: cannot create {}: {e}\n", dir.display())))?;
    Ok((!existed).then(|| dir.to_path_buf()))
}

/// Write `text` to `path` without clobbering: refuses an existing file unless
/// `force`, and writes through a temporary file so no partial file is left.
fn write_new(path: &Path, text: &str, force: bool) -> Result<()> {
    if path.exists() && !force {
        return Err(UserError(format!(
            "error: {} already exists; pass --force to overwrite it\n",
            path.display()
        )));
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(UserError(format!(
            "error: directory {} does not exist\n",
            dir.display()
        )));
    }
    write_bytes(path, text.as_bytes())
}

/// Write bytes through a temporary file in the same directory.
fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    write_set(&[(path.to_path_buf(), bytes.to_vec())], None)
}

/// Write a command's outputs as a set: each to a short temporary name
/// beside it (`.mnet-N.tmp`, so an output name as long as the system allows
/// still works), then all renamed in place. A failure leaves none of them,
/// and removes `created`, the output directory this run made, if empty.
/// Errors name the requested output, not the temporary file.
fn write_set(files: &[(PathBuf, Vec<u8>)], created: Option<&Path>) -> Result<()> {
    let dir_of = |p: &Path| {
        p.parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf()
    };
    let temps: Vec<PathBuf> = files
        .iter()
        .enumerate()
        .map(|(k, (p, _))| dir_of(p).join(format!(".mnet-{}-{k}.tmp", std::process::id())))
        .collect();
    let undo = |written: &[PathBuf]| {
        for t in written {
            let _ = std::fs::remove_file(t);
        }
        if let Some(d) = created {
            let _ = std::fs::remove_dir(d);
        }
    };
    for (k, ((path, bytes), tmp)) in files.iter().zip(&temps).enumerate() {
        if let Err(e) = std::fs::write(tmp, bytes) {
            undo(&temps[..=k]);
            return Err(UserError(format!(
                "error: cannot write {}: {e}\n",
                path.display()
            )));
        }
    }
    for (k, ((path, _), tmp)) in files.iter().zip(&temps).enumerate() {
        if let Err(e) = std::fs::rename(tmp, path) {
            let renamed: Vec<PathBuf> = files[..k].iter().map(|(p, _)| p.clone()).collect();
            undo(&temps[k..]);
            undo(&renamed);
            return Err(UserError(format!(
                "error: cannot write {}: {e}\n",
                path.display()
            )));
        }
    }
    Ok(())
}

fn summary_line(path: &Path, checked: &Checked) -> String {
    if checked.networks.is_empty() {
        return format!("{}: no network, {} blocks", path.display(), checked.blocks);
    }
    let parts: Vec<String> = checked
        .networks
        .iter()
        .map(|n| {
            let g = &n.graph;
            let size = if g.choices.is_empty() {
                "fixed network".to_string()
            } else {
                format!(
                    "{} networks",
                    mnet_compiler::analysis::space::format_count(&n.summary.count)
                )
            };
            format!(
                "{}: {} layers, {} choices, {}",
                g.info.name,
                g.layer_count(),
                g.choices.len(),
                size
            )
        })
        .collect();
    format!("{}: {}", path.display(), parts.join("; "))
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Check { files } => check(&files),
        Command::Stats {
            net,
            json,
            cpu,
            clock,
        } => stats(&net, json, cpu.as_deref(), clock),
        Command::Resolve {
            file,
            pick,
            output,
            force,
            network,
        } => resolve_to(&file, pick, &output, force, network.as_deref()),
        Command::Fmt {
            file,
            check,
            output,
            force,
        } => fmt(&file, check, output.as_deref(), force),
        Command::Compile { net, compile, out } => compile_to(&net, &compile, &out),
        Command::Train { net, train, out } => train_to(&net, &train, &out),
        Command::Search(args) => search::search(&args),
        Command::Eval(args) => eval::eval(&args),
        Command::Features(args) => eval::features(&args),
        Command::Emulate(args) => emulate::emulate(&args),
        Command::Run(args) => run::run(&args),
        Command::Inspect { model } => inspect(&model),
        Command::Ir { file, pick } => ir(&file, pick),
    }
}

fn check(files: &[PathBuf]) -> Result<()> {
    let mut failed = Vec::new();
    for f in files {
        match load(f) {
            Ok(c) => outln!("{}", summary_line(f, &c)),
            Err(UserError(e)) => failed.push(e),
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(UserError(failed.join("")))
    }
}

fn stats(net: &NetworkArgs, json: bool, cpu: Option<&str>, clock: Option<f64>) -> Result<()> {
    if is_tflite(&net.file) {
        return stats_tflite(net, json, cpu, clock);
    }
    let checked = load(&net.file)?;
    let one = one_network(&checked, &net.file, net.network.as_deref())?;
    let fixed = match net.pick {
        Some(p) => Some(fixed_of(&one, p)?),
        None if one.graph.choices.is_empty() => Some(fixed_of(&one, Pick::Min)?),
        None => None,
    };
    let pretty = |v| serde_json::to_string_pretty(&v).expect("json");
    let latency = match &fixed {
        Some(f) if cpu.is_some() || f.info.target.is_some() => predicted_latency(f, cpu, clock)?,
        _ => None,
    };
    match (fixed, json) {
        (Some(f), false) => {
            out!("{}", render_fixed(&f.info, &fixed_stats(&f)));
            if let Some(l) = &latency {
                out!("{}", l.render());
            }
        }
        (Some(f), true) => {
            let mut v = fixed_json(&f.info, &fixed_stats(&f));
            if let (Some(l), Some(o)) = (&latency, v.as_object_mut()) {
                o.insert("latency".into(), l.json());
            }
            outln!("{}", pretty(v))
        }
        (None, false) => out!("{}", render_space(&one.graph, &one.summary)),
        (None, true) => outln!("{}", pretty(space_json(&one.graph, &one.summary))),
    }
    Ok(())
}

/// The latency model's prediction for a fixed network's C on a core.
struct Latency {
    cpu: mnet_compiler::back::c::Cpu,
    clock_hz: Option<f64>,
    /// (layer, step class, predicted instructions) per step.
    steps: Vec<(String, &'static str, f64)>,
}

impl Latency {
    fn total(&self) -> f64 {
        self.steps.iter().map(|s| s.2).sum()
    }

    fn render(&self) -> String {
        let total = self.total();
        let mut s = format!(
            "predicted on {} (latency model, stdlib/latency.json): {:.0} instructions",
            self.cpu.name(),
            total
        );
        if let Some(hz) = self.clock_hz {
            s.push_str(&format!(
                ", {:.2} ms at {:.0} MHz (one instruction per cycle)",
                1e3 * total / hz,
                hz / 1e6
            ));
        }
        s.push('\n');
        for (layer, class, n) in &self.steps {
            s.push_str(&format!(
                "  {layer:<50} {class:<9} {n:>14.0} {:>6.1}%\n",
                100.0 * n / total.max(1.0)
            ));
        }
        s
    }

    fn json(&self) -> serde_json::Value {
        let total = self.total();
        serde_json::json!({
            "cpu": self.cpu.name(),
            "instructions": total.round(),
            "clock_hz": self.clock_hz,
            "ms": self.clock_hz.map(|hz| 1e3 * total / hz),
            "steps": self.steps.iter().map(|(l, c, n)| serde_json::json!({
                "layer": l, "class": c, "instructions": n.round(),
            })).collect::<Vec<_>>(),
        })
    }
}

/// `mnet stats MODEL.tflite`: the imported network's layers as the C runs
/// them (MACs and weight bytes each), its arena, and the latency model's
/// instructions per step for `--cpu` (default cortex-m4).
fn stats_tflite(
    net: &NetworkArgs,
    json: bool,
    cpu: Option<&str>,
    clock: Option<f64>,
) -> Result<()> {
    let (name, model) = import_tflite(net)?;
    let q = &model.quantized;
    let l = &q.graph.lowered;
    let plan = mnet_compiler::plan::plan(l);
    let macs = mnet_compiler::back::lowered_macs(l);
    let weight_bytes = |i: usize| {
        q.graph
            .weights
            .get(&i)
            .map_or(0, |w| w.weight.len() + 4 * w.bias.len())
    };
    let cpu = cpu_for(cpu, None)?;
    if let Some(c) = clock {
        if !(c > 0.0 && c.is_finite()) {
            return Err(UserError(format!(
                "error: --clock must be a positive number of MHz, not {c}\n"
            )));
        }
    }
    let latency =
        mnet_compiler::analysis::latency::lowered_steps(l, &plan, cpu).map(|steps| Latency {
            cpu,
            clock_hz: clock.map(|mhz| mhz * 1e6),
            steps,
        });
    let total_macs: u64 = macs.iter().sum();
    let total_weights: usize = (0..l.nodes.len()).map(weight_bytes).sum();
    if json {
        let layers: Vec<serde_json::Value> = l
            .nodes
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, n)| {
                serde_json::json!({
                    "layer": n.name, "op": n.kind.name(), "output": n.shape,
                    "macs": macs[i], "weight_bytes": weight_bytes(i),
                })
            })
            .collect();
        let mut v = serde_json::json!({
            "network": name, "input": l.nodes[0].shape, "layers": layers,
            "macs": total_macs, "weight_bytes": total_weights, "arena": plan.arena_size,
        });
        if let Some(lat) = &latency {
            v["latency"] = lat.json();
        }
        outln!("{}", serde_json::to_string_pretty(&v).expect("json"));
        return Ok(());
    }
    outln!(
        "network {name} (imported from {}, input i8{:?}) -> {:?}",
        net.file.display(),
        l.nodes[0].shape,
        l.nodes[l.output].shape
    );
    let width = l
        .nodes
        .iter()
        .map(|n| n.name.len())
        .max()
        .unwrap_or(5)
        .clamp(5, 48);
    outln!(
        "  #  {:width$}  {:16}  {:18}  {:>10}  {:>9}",
        "layer",
        "op",
        "output",
        "MACs",
        "weight_B"
    );
    for (i, n) in l.nodes.iter().enumerate().skip(1) {
        outln!(
            "{i:3}  {:width$}  {:16}  {:18}  {:>10}  {:>9}",
            n.name,
            n.kind.name(),
            format!("{:?}", n.shape),
            macs[i],
            weight_bytes(i)
        );
    }
    outln!(
        "total: {total_macs} MACs, {total_weights} weight bytes, arena {} bytes",
        plan.arena_size
    );
    if let Some(lat) = &latency {
        out!("{}", lat.render());
    }
    Ok(())
}

fn predicted_latency(
    f: &mnet_compiler::ir::FixedGraph,
    cpu: Option<&str>,
    clock: Option<f64>,
) -> Result<Option<Latency>> {
    use mnet_compiler::analysis::latency;
    let cpu = cpu_of(cpu, f)?;
    if let Some(c) = clock {
        if !(c > 0.0 && c.is_finite()) {
            return Err(UserError(format!(
                "error: --clock must be a positive number of MHz, not {c}\n"
            )));
        }
    }
    let Some(steps) =
        latency::network_steps(f, cpu).map_err(|e| UserError(format!("error: {e}\n")))?
    else {
        return Ok(None);
    };
    let clock_hz = clock.map(|mhz| mhz * 1e6).or_else(|| {
        let (b, _) = f.info.target.as_ref()?;
        b.clock_hz.map(|c| c as f64)
    });
    Ok(Some(Latency {
        cpu,
        clock_hz,
        steps,
    }))
}

fn resolve_to(
    file: &Path,
    pick: Pick,
    output: &Path,
    force: bool,
    network: Option<&str>,
) -> Result<()> {
    let checked = load(file)?;
    let net = one_network(&checked, file, network)?;
    let fixed = fixed_of(&net, pick)?;
    let shown = file
        .file_name()
        .map(|f| f.to_string_lossy().to_string())
        .unwrap_or_default();
    let note = format!(
        "{} resolved from {shown} with `mnet resolve --pick {pick}`",
        fixed.info.name
    );
    let text = mnet_grammar::print_module(&mnet_compiler::back::mnet::to_module(&fixed, &note));
    // The written file must check and give the picked network's stats.
    let again = check_source(&output.display().to_string(), &text).map_err(|f| {
        UserError(format!(
            "internal error: the resolved network does not check:\n{}",
            f.render()
        ))
    })?;
    let stats = fixed_stats(&fixed);
    // Instructions are predicted for the target's core: none when the
    // written file keeps its target as a comment (a pick over budget).
    let got = again
        .networks
        .first()
        .map(|n| (n.summary.min, n.graph.info.target.is_some()));
    let expected = |kept: bool| mnet_compiler::analysis::space::Totals {
        instructions: if kept { stats.totals.instructions } else { 0 },
        ..stats.totals
    };
    if got.map(|(t, kept)| t == expected(kept)) != Some(true) {
        return Err(UserError(
            "internal error: the resolved network's stats differ from the pick\n".into(),
        ));
    }
    write_new(output, &text, force)?;
    outln!(
        "{}: wrote {} ({} layers, {} ops, {} flash bytes, {} peak working bytes)",
        file.display(),
        output.display(),
        stats.rows.len(),
        stats.totals.ops(),
        stats.totals.flash_bytes,
        stats.totals.peak_working_bytes
    );
    Ok(())
}

fn fmt(file: &Path, check: bool, output: Option<&Path>, force: bool) -> Result<()> {
    let text = read(file)?;
    let mut sources = mnet_grammar::Sources::new();
    let id = sources.add(file.display().to_string(), text.clone());
    let (module, diags) = mnet_grammar::parse(id, &text);
    if !diags.is_empty() {
        return Err(UserError(sources.render(&diags)));
    }
    let printed = mnet_grammar::print_module(&module);
    match (check, output) {
        (true, _) if printed != text => Err(UserError(format!(
            "{} is not in canonical form (run `mnet fmt`)\n",
            file.display()
        ))),
        (true, _) => Ok(()),
        (false, Some(o)) => write_new(o, &printed, force),
        (false, None) => {
            out!("{printed}");
            Ok(())
        }
    }
}

/// A compile error as the user sees it: a weights or calibration problem
/// names the file, a layer the backends cannot build gets a caret.
pub(crate) fn compile_error(
    e: pipeline::Error,
    args: &WeightsArgs,
    sources: &mnet_grammar::Sources,
) -> UserError {
    let file = |p: &Option<PathBuf>| {
        p.as_ref()
            .map(|p| format!("{}: ", p.display()))
            .unwrap_or_default()
    };
    UserError(match &e {
        pipeline::Error::Weights(_) => format!("error: {}{e}\n", file(&args.weights)),
        pipeline::Error::Calibration(_) => format!("error: {}{e}\n", file(&args.calib)),
        pipeline::Error::Unsupported { origin, .. } => {
            let mut d = mnet_grammar::Diagnostic::error(origin.span, e.to_string())
                .with_label("this layer");
            for site in origin.call_sites.iter().take(4) {
                d = d.with_secondary(*site, "in this call");
            }
            let mut with = match (&args.weights, args.random_weights) {
                (Some(w), _) => format!("with the weights in {}", w.display()),
                (None, seed) => format!("with --random-weights {}", seed.unwrap_or(0)),
            };
            if let Some(c) = &args.calib {
                with.push_str(&format!(" and the calibration data in {}", c.display()));
            }
            sources.render(&[d.with_note(with)])
        }
        pipeline::Error::TooLarge { span, .. } => {
            sources
                .render(&[mnet_grammar::Diagnostic::error(*span, e.to_string())
                    .with_label("this network")])
        }
        pipeline::Error::Tflite(_) | pipeline::Error::C(_) | pipeline::Error::Import(_) => {
            format!("error: {e}\n")
        }
        pipeline::Error::Internal(_) => format!("{e}\n"),
    })
}

fn compile_to(net: &NetworkArgs, args: &CompileArgs, out: &OutputArgs) -> Result<()> {
    if is_tflite(&net.file) {
        return compile_tflite(net, args, out);
    }
    args.weights.require()?;
    let (sources, mut fixed) = fixed_network(net, "compile")?;
    if let Some(b) = &args.target {
        let text = String::from_utf8_lossy(&read_bytes(&net.file)?).into_owned();
        let board = mnet_compiler::find_board(&net.file.display().to_string(), &text, b)
            .map_err(|e| UserError(format!("error: --target: {e}\n")))?;
        fixed.info.target = Some((board, fixed.info.span));
    }
    let cpu = cpu_of(args.cpu.as_deref(), &fixed)?;
    let opts = emit_options(args, cpu)?;
    let (weight_bytes, calib_bytes) = args.weights.read()?;
    let weights = args.weights.weights(weight_bytes.as_deref());
    let art = pipeline::compile(&fixed, weights, calib_bytes.as_deref(), &opts)
        .map_err(|e| compile_error(e, &args.weights, &sources))?;
    let mut files: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    if let Some(p) = &args.save_weights {
        let q = &art.quantized;
        let bytes = mnet_compiler::lower::io::write_weights(&q.graph.lowered, &q.float);
        files.push((p.clone(), bytes));
    }
    let t = fixed_stats(&fixed).totals;
    let board = fixed.info.target.as_ref().map(|(b, _)| b.clone());
    write_compiled(&art, board, cpu, files, Some(t.ops()), t.macs, args, out)
}

/// Whether a path names a `.tflite` model.
pub(crate) fn is_tflite(p: &std::path::Path) -> bool {
    p.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("tflite"))
}

/// What `--emit` asks for.
fn emit_options(args: &CompileArgs, cpu: mnet_compiler::back::c::Cpu) -> Result<pipeline::Options> {
    let mut opts = pipeline::Options::default();
    for kind in &args.emit {
        match kind.as_str() {
            "tflite" => {
                opts.tflite = Some(mnet_compiler::tflite::write::Options {
                    offline_plan: !args.no_offline_plan,
                    ..Default::default()
                })
            }
            "c" => {
                opts.c = Some(mnet_compiler::back::c::Options {
                    cpu,
                    ..Default::default()
                })
            }
            other => {
                return Err(UserError(format!(
                    "error: unknown --emit `{other}` (expected tflite or c)\n"
                )))
            }
        }
    }
    Ok(opts)
}

/// Import a `.tflite` model (the importer of [`pipeline::import`]): its int8
/// network named by the file stem (a C identifier), no weights or
/// calibration flags (the file holds both).
pub(crate) fn import_tflite(net: &NetworkArgs) -> Result<(String, pipeline::ImportedModel)> {
    let file = net.file.display();
    if net.pick.is_some() || net.network.is_some() {
        return Err(UserError(format!(
            "error: {file}: --pick and --network choose among the networks of a .mnet file; a .tflite holds one\n"
        )));
    }
    let bytes = read_bytes(&net.file)?;
    let stem = net
        .file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = mnet_compiler::tflite::import::network_name(&stem);
    let model =
        pipeline::import(&bytes, &name).map_err(|e| UserError(format!("error: {file}: {e}\n")))?;
    Ok((name, model))
}

/// `mnet compile MODEL.tflite`: the imported int8 network through the same
/// planner and backends.
fn compile_tflite(net: &NetworkArgs, args: &CompileArgs, out: &OutputArgs) -> Result<()> {
    args.weights.refuse_for_tflite(&net.file)?;
    if args.save_weights.is_some() {
        return Err(UserError(format!(
            "error: {}: a .tflite has no float weights for --save-weights to write\n",
            net.file.display()
        )));
    }
    let (_, model) = import_tflite(net)?;
    // The standard boards (a .tflite names none).
    let board = args
        .target
        .as_ref()
        .map(|b| {
            mnet_compiler::find_board("std::boards", "use std::boards::*;\n", b)
                .map_err(|e| UserError(format!("error: --target: {e}\n")))
        })
        .transpose()?;
    let cpu = cpu_for(args.cpu.as_deref(), board.as_ref())?;
    let opts = emit_options(args, cpu)?;
    let art = pipeline::emit(model.quantized, &opts)
        .map_err(|e| UserError(format!("error: {}: {e}\n", net.file.display())))?;
    let macs: u64 = mnet_compiler::back::lowered_macs(&art.quantized.graph.lowered)
        .iter()
        .sum();
    write_compiled(&art, board, cpu, Vec::new(), None, macs, args, out)
}

/// Write what a compile made (after the memory report says it fits the
/// board) and print the summary or the JSON.
#[allow(clippy::too_many_arguments)]
fn write_compiled(
    art: &pipeline::Artifacts,
    board: Option<mnet_compiler::ir::Board>,
    cpu: mnet_compiler::back::c::Cpu,
    mut files: Vec<(PathBuf, Vec<u8>)>,
    ops: Option<u64>,
    macs: u64,
    args: &CompileArgs,
    out: &OutputArgs,
) -> Result<()> {
    let q = &art.quantized;
    let name = &q.graph.lowered.name;
    if let Some(t) = &art.tflite {
        files.push((out.output.join(format!("{name}.tflite")), t.clone()));
    }
    if let Some(c) = &art.c {
        files.push((
            out.output.join(format!("{name}.h")),
            c.header.clone().into(),
        ));
        files.push((
            out.output.join(format!("{name}.c")),
            c.source.clone().into(),
        ));
    }
    refuse_colliding(files.iter().map(|(p, _)| p))?;
    refuse_existing(files.iter().map(|(p, _)| p), out.force)?;
    let report = art
        .c
        .as_ref()
        .map(|c| memory_report(board.clone(), art, c, cpu, !args.estimate))
        .transpose()?;
    // Nothing is written for a network that does not fit its board.
    if let Some(r) = &report {
        if let Some(e) = r.misfit() {
            return Err(UserError(format!("error: {e}\n")));
        }
    }
    let created = create_dir(&out.output)?;
    write_set(&files, created.as_deref())?;
    if args.json {
        let written: Vec<serde_json::Value> = files
            .iter()
            .map(|(p, b)| serde_json::json!({"path": p.display().to_string(), "bytes": b.len()}))
            .collect();
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "network": name,
                "ops": ops,
                "macs": macs,
                "arena": art.plan.arena_size,
                "qat_ranges": q.qat_ranges,
                "files": written,
                "memory": report.as_ref().map(MemoryReport::json),
            }))
            .expect("json")
        );
        return Ok(());
    }
    if art.c.is_some() {
        outln!("arena: {} bytes", art.plan.arena_size);
    }
    for (p, bytes) in &files {
        outln!("wrote {} ({} bytes)", p.display(), bytes.len());
    }
    if q.qat_ranges > 0 {
        outln!(
            "activation ranges: {} from quantization-aware training (in the weights), others calibrated",
            q.qat_ranges
        );
    }
    match ops {
        Some(ops) => outln!(
            "{name}: {ops} ops ({macs} MACs); arena {} bytes",
            art.plan.arena_size
        ),
        None => outln!("{name}: {macs} MACs; arena {} bytes", art.plan.arena_size),
    }
    if let Some(r) = &report {
        out!("{}", r.render());
    }
    Ok(())
}

/// What the generated C needs of a board: SRAM (arena, the caller's input
/// and output buffers, stack) and flash (code and constants), from an
/// arm-none-eabi-gcc build of the C when the cross compiler is installed,
/// else estimated; and the target board's SRAM and flash.
struct MemoryReport {
    cpu: mnet_compiler::back::c::Cpu,
    arena: u64,
    input: u64,
    output: u64,
    stack: u64,
    text: u64,
    rodata: u64,
    data: u64,
    /// "arm-none-eabi-gcc -O2 build" or "estimated".
    source: &'static str,
    board: Option<mnet_compiler::ir::Board>,
}

impl MemoryReport {
    fn sram(&self) -> u64 {
        self.arena + self.input + self.output + self.stack + self.data
    }

    fn flash(&self) -> u64 {
        self.text + self.rodata + self.data
    }

    /// Why the network does not fit its board, if it does not.
    fn misfit(&self) -> Option<String> {
        let b = self.board.as_ref()?;
        let (sram, flash) = (self.sram(), self.flash());
        let mut over = Vec::new();
        if sram > b.sram_bytes {
            over.push(format!(
                "SRAM {sram} bytes (arena {} + input {} + output {} + stack {}) > {}'s {} bytes",
                self.arena, self.input, self.output, self.stack, b.name, b.sram_bytes
            ));
        }
        if flash > b.flash_bytes {
            over.push(format!(
                "flash {flash} bytes (code {} + constants {}) > {}'s {} bytes",
                self.text,
                self.rodata + self.data,
                b.name,
                b.flash_bytes
            ));
        }
        (!over.is_empty()).then(|| {
            format!(
                "the network does not fit its target ({}): {}",
                self.source,
                over.join("; ")
            )
        })
    }

    fn render(&self) -> String {
        let mut s = format!(
            "memory ({}, {}): SRAM {} bytes = arena {} + input {} + output {} + stack {}; flash {} bytes = code {} + constants {}\n",
            self.cpu.name(),
            self.source,
            self.sram(),
            self.arena,
            self.input,
            self.output,
            self.stack,
            self.flash(),
            self.text,
            self.rodata + self.data
        );
        if let Some(b) = &self.board {
            s.push_str(&format!(
                "fits {}: SRAM {:.1}% of {} bytes, flash {:.1}% of {} bytes\n",
                b.name,
                100.0 * self.sram() as f64 / b.sram_bytes.max(1) as f64,
                b.sram_bytes,
                100.0 * self.flash() as f64 / b.flash_bytes.max(1) as f64,
                b.flash_bytes
            ));
        }
        s
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "cpu": self.cpu.name(),
            "source": self.source,
            "sram": self.sram(),
            "arena": self.arena,
            "input": self.input,
            "output": self.output,
            "stack": self.stack,
            "flash": self.flash(),
            "text": self.text,
            "rodata": self.rodata,
            "data": self.data,
            "board": self.board.as_ref().map(|b| serde_json::json!({
                "name": b.name, "sram": b.sram_bytes, "flash": b.flash_bytes,
                "fits": self.misfit().is_none(),
            })),
        })
    }
}

fn memory_report(
    board: Option<mnet_compiler::ir::Board>,
    art: &pipeline::Artifacts,
    c: &mnet_compiler::back::c::CFiles,
    cpu: mnet_compiler::back::c::Cpu,
    build: bool,
) -> Result<MemoryReport> {
    use mnet_compiler::mcu;
    let l = &art.quantized.graph.lowered;
    let bytes = |s: &[u32]| s.iter().map(|&d| d as u64).product::<u64>();
    let mut r = MemoryReport {
        cpu,
        arena: art.plan.arena_size as u64,
        input: bytes(&l.nodes[0].shape),
        output: bytes(&l.nodes[l.output].shape),
        stack: 0,
        text: 0,
        rodata: 0,
        data: 0,
        source: "estimated",
        board,
    };
    if build && mcu::have_cross_compiler() {
        // The same C with the constant arrays declared extern: the code
        // (a few bytes larger: each array is addressed on its own), built
        // in half the time, and the arrays' bytes, known exactly.
        let q = &art.quantized;
        let code = mnet_compiler::back::c::write(
            &q.graph,
            &q.prepared,
            &art.plan,
            &mnet_compiler::back::c::Options {
                cpu,
                extern_constants: true,
                ..Default::default()
            },
        )
        .map_err(|e| UserError(format!("error: {e}\n")))?;
        let dir = std::env::temp_dir().join(format!("mnet-size-{}", std::process::id()));
        let flags = mcu::gcc_flags_for(cpu, r.board.as_ref().map(|b| b.core.as_str()));
        let got = mcu::static_report(&code, &l.name, &flags, &dir);
        let _ = std::fs::remove_dir_all(&dir);
        let got =
            got.map_err(|e| UserError(format!("error: building the C to measure it: {e}\n")))?;
        r.stack = got.stack;
        r.text = got.sizes.text;
        r.rodata = got.sizes.rodata + c.constant_bytes as u64;
        r.data = got.sizes.data;
        r.source = "arm-none-eabi-gcc -O2 build";
    } else {
        // Without the cross compiler: the constants the C holds, ~600 B of
        // helpers and ~350 B a layer of code (the loop nests at -O2; the
        // DSP kernels add ~3 KB), and the stack estimate the search uses.
        r.rodata = c.constant_bytes as u64;
        let layers = l.nodes.len() as u64 - 1;
        r.text = 600 + 350 * layers + if cpu.dsp() { 3000 } else { 0 };
        r.stack = mnet_compiler::back::c::stack_estimate(l, &art.plan, cpu);
    }
    Ok(r)
}

fn train_to(net: &NetworkArgs, args: &TrainArgs, out: &OutputArgs) -> Result<()> {
    use mnet_search::train::{TrainConfig, DEFAULT_OPTIMIZER};
    let mut cfg = TrainConfig::for_optimizer(args.optimizer.unwrap_or(DEFAULT_OPTIMIZER));
    cfg.epochs = args.epochs;
    cfg.batch = args.batch;
    cfg.lr = args.lr.unwrap_or(cfg.lr);
    cfg.momentum = args.momentum.unwrap_or(cfg.momentum);
    cfg.weight_decay = args.weight_decay.unwrap_or(cfg.weight_decay);
    cfg.warmup = args.warmup.unwrap_or(cfg.warmup);
    cfg.schedule = args.schedule;
    cfg.label_smoothing = args.label_smoothing;
    cfg.keep = args.keep;
    cfg.seed = args.seed;
    cfg.qat = args.qat;
    let bad = |what: &str| Err(UserError(format!("error: {what}\n")));
    if cfg.epochs == 0 || cfg.batch == 0 {
        return bad("--epochs and --batch must be at least 1");
    }
    if !(cfg.lr > 0.0 && cfg.lr.is_finite()) {
        return bad("--lr must be a positive number");
    }
    if !(0.0..1.0).contains(&cfg.momentum) {
        return bad("--momentum must be at least 0 and below 1");
    }
    if !(cfg.weight_decay >= 0.0 && cfg.weight_decay.is_finite()) {
        return bad("--weight-decay must be a number, 0 or more");
    }
    if !(cfg.warmup >= 0.0 && cfg.warmup <= cfg.epochs as f32) {
        return bad("--warmup must be 0 to --epochs epochs");
    }
    if !(0.0..1.0).contains(&cfg.label_smoothing) {
        return bad("--label-smoothing must be at least 0 and below 1");
    }
    let (epochs, batch) = (cfg.epochs, cfg.batch);
    let (_, fixed) = fixed_network(net, "train")?;
    let name = fixed.info.name.clone();
    let weights_path = out.output.join(format!("{name}.safetensors"));
    let metrics_path = out.output.join(format!("{name}.metrics.json"));
    refuse_existing([&weights_path, &metrics_path], out.force)?;
    if out.output.exists() && !out.output.is_dir() {
        return Err(UserError(format!(
            "error: -o {}: exists and is not a directory\n",
            out.output.display()
        )));
    }
    // The data and the memory the batch needs, before anything is built.
    let shape: Vec<usize> = fixed.info.input_shape.iter().map(|&d| d as usize).collect();
    let classes = fixed.node(fixed.output).shape.iter().product::<u32>() as usize;
    let data = &args.data.data;
    let (train_set, val_set) = args.data.train_val(
        args.val.as_deref(),
        &shape,
        classes,
        args.seed,
        args.augment.augment(!args.no_augment)?,
    )?;
    if train_set.data.len() < batch {
        return Err(UserError(format!(
            "error: --data {data} has {} training samples, fewer than a batch of {batch}\n",
            train_set.data.len()
        )));
    }
    let needs = mnet_search::engine::training_bytes(&fixed, batch);
    let limit = mnet_search::engine::MEMORY_LIMIT;
    if needs > limit {
        return Err(UserError(format!(
            "error: training `{name}` with --batch {batch} needs about {} MiB, more than mnet's {} MiB limit; use a smaller --batch\n",
            needs >> 20,
            limit >> 20
        )));
    }
    let mut model =
        mnet_search::engine::Net::from_fixed_with(&fixed, batch, args.seed, args.weight_init);
    if args.zero_residual_gamma {
        model.zero_residual_gammas();
    }
    if let Some(init) = &args.init {
        let bytes = read_bytes(init)?;
        model
            .load_safetensors(&bytes)
            .map_err(|e| UserError(format!("error: --init {}: {e}\n", init.display())))?;
    }
    // A bar per epoch on a terminal (indicatif hides it otherwise), then
    // the epoch's line.
    let style = indicatif::ProgressStyle::with_template(
        "epoch {prefix} [{bar:30}] {pos}/{len} steps  {msg}",
    )
    .expect("a valid template")
    .progress_chars("=> ");
    let mut bar: Option<indicatif::ProgressBar> = None;
    let val = (!val_set.is_empty()).then_some(&val_set);
    let trained = mnet_search::train::train(&mut model, &train_set, val, cfg, |p| match p {
        mnet_search::train::Progress::Step {
            step,
            steps,
            so_far,
        } => {
            let b = bar.get_or_insert_with(|| {
                indicatif::ProgressBar::new(steps as u64)
                    .with_style(style.clone())
                    .with_prefix(format!("{}/{epochs}", so_far.epoch))
            });
            b.set_position(step as u64);
            b.set_message(format!(
                "loss {:.4}, accuracy {:.3}, lr {:.3e}, {:.0} samples/s",
                so_far.loss, so_far.accuracy, so_far.lr, so_far.samples_per_sec
            ));
        }
        mnet_search::train::Progress::Epoch(m) => {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
            let v = match (m.val_loss, m.val_accuracy) {
                (Some(l), Some(a)) => format!("; validation loss {l:.4}, accuracy {a:.3}"),
                _ => String::new(),
            };
            eprintln!(
                "epoch {}/{epochs}: loss {:.4}, accuracy {:.3}{v}; lr {:.3e}, {:.0} samples/s",
                m.epoch, m.loss, m.accuracy, m.lr, m.samples_per_sec
            );
        }
    });
    if let Some(b) = bar.take() {
        b.finish_and_clear();
    }
    let trained = trained.map_err(|e| {
        UserError(format!(
            "error: {name}: {e} (--data {data}); nothing written\n"
        ))
    })?;
    // The kept weights on the validation split (None when there is none).
    let v = val.map(|v| mnet_search::train::evaluate(&mut model, v));
    let metrics = serde_json::json!({
        "network": name,
        "data": data,
        "validation_data": args.val.clone().unwrap_or_else(|| format!("the validation split of {data}")),
        "augment": if train_set.augments() { args.augment.json() } else { serde_json::Value::Null },
        "train_samples": train_set.data.len(),
        "validation_samples": val_set.len(),
        "config": {
            "epochs": cfg.epochs, "batch": cfg.batch,
            "optimizer": format!("{:?}", cfg.optimizer).to_lowercase(),
            "lr": cfg.lr, "momentum": cfg.momentum, "weight_decay": cfg.weight_decay,
            "warmup_epochs": cfg.warmup, "schedule": format!("{:?}", cfg.schedule).to_lowercase(),
            "label_smoothing": cfg.label_smoothing, "keep": format!("{:?}", cfg.keep).to_lowercase(),
            "weight_init": format!("{:?}", args.weight_init).to_lowercase(),
            "zero_residual_gamma": args.zero_residual_gamma,
            "init": args.init.as_ref().map(|p| p.display().to_string()),
            "seed": cfg.seed, "qat": cfg.qat,
        },
        "epochs": trained.history.iter().map(|m| serde_json::json!({
            "epoch": m.epoch, "loss": m.loss, "accuracy": m.accuracy,
            "validation_loss": m.val_loss, "validation_accuracy": m.val_accuracy,
            "lr": m.lr, "samples_per_sec": m.samples_per_sec,
        })).collect::<Vec<_>>(),
        "kept_epoch": trained.kept_epoch,
        "validation_loss": v.map(|v| v.0),
        "validation_accuracy": v.map(|v| v.1),
    });
    let created = create_dir(&out.output)?;
    write_set(
        &[
            (
                weights_path.clone(),
                mnet_search::train::weights_safetensors(&model),
            ),
            (
                metrics_path.clone(),
                serde_json::to_string_pretty(&metrics)
                    .expect("json")
                    .into_bytes(),
            ),
        ],
        created.as_deref(),
    )?;
    let validated = match v {
        Some((loss, acc)) => format!(
            "validation accuracy {acc:.3} (loss {loss:.4}) on {} samples with epoch {}'s weights",
            val_set.len(),
            trained.kept_epoch
        ),
        None => "no validation samples (npy:DIR holds out 10% of each class, here none)".into(),
    };
    outln!(
        "{name}: {validated}; wrote {} and {}",
        weights_path.display(),
        metrics_path.display()
    );
    Ok(())
}

fn inspect(model: &Path) -> Result<()> {
    let bytes = read_bytes(model)?;
    let text = mnet_compiler::tflite::inspect::dump(&bytes).map_err(|e| {
        UserError(format!(
            "error: {} is not a valid .tflite: {}\n",
            model.display(),
            e.0
        ))
    })?;
    out!("{text}");
    Ok(())
}

fn ir(file: &Path, pick: Option<Pick>) -> Result<()> {
    let checked = load(file)?;
    for net in &checked.networks {
        match pick {
            Some(p) => out!("{}", fixed_of(net, p)?.dump()),
            None => out!("{}", net.graph.dump(&checked.sources)),
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(UserError(msg)) => {
            eprint!("{msg}");
            ExitCode::from(1)
        }
    }
}
