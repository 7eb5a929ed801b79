//! `mnet`: the command-line tool. A thin layer over the `mnet-compiler`
//! library: argument parsing (clap), reading files, printing results and
//! rendered diagnostics, and exit codes (0 success, 1 the input is wrong,
//! 2 usage).

use clap::{Parser, Subcommand};
use mnet_compiler::analysis::resolve::{assignment, resolve, Pick};
use mnet_compiler::analysis::stats::{
    fixed_json, fixed_stats, render_fixed, render_space, space_json,
};
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

#[derive(Subcommand)]
enum Command {
    /// Parse, elaborate and check every network of each file; one summary line a file.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Per-layer shapes and costs, totals, and for a search space the range of each total.
    Stats {
        file: PathBuf,
        /// Pick one network of a search space: min, max or random:SEED.
        #[arg(long)]
        pick: Option<Pick>,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
        /// Which network, when the file defines several.
        #[arg(long)]
        network: Option<String>,
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
        file: PathBuf,
        /// Float weights: a safetensors file (tensor names in the README).
        #[arg(
            long,
            required_unless_present = "random_weights",
            conflicts_with = "random_weights"
        )]
        weights: Option<PathBuf>,
        /// Deterministic random weights (and synthetic calibration) from this seed.
        #[arg(long)]
        random_weights: Option<u64>,
        /// Calibration inputs: a float32 .npy file shaped [N, ...input shape].
        #[arg(long)]
        calib: Option<PathBuf>,
        /// Also write the float weights used (e.g. the random ones) as safetensors.
        #[arg(long)]
        save_weights: Option<PathBuf>,
        /// What to write: tflite, c (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "tflite")]
        emit: Vec<String>,
        /// Output directory (created if missing).
        #[arg(short, long)]
        output: PathBuf,
        #[arg(long)]
        pick: Option<Pick>,
        #[arg(long)]
        network: Option<String>,
        /// Overwrite existing output files.
        #[arg(long)]
        force: bool,
    },
    /// Train a fixed network (or a pick of a space) and write its weights and metrics.
    Train {
        file: PathBuf,
        /// synthetic[:COUNT] (deterministic, learnable) or npy:DIR (x.npy float32 [N, ...], y.npy int [N]).
        #[arg(long)]
        data: String,
        #[arg(long, default_value_t = 5)]
        epochs: usize,
        #[arg(long, default_value_t = 32)]
        batch: usize,
        #[arg(long, default_value_t = 0.05)]
        lr: f32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// sgd (Nesterov momentum 0.9) or adamw.
        #[arg(long, default_value = "sgd", value_parser = ["sgd", "adamw"])]
        optimizer: String,
        /// Quantization-aware training: int8 fake quantization of weights and activations.
        #[arg(long)]
        qat: bool,
        /// Output directory: NAME.safetensors and NAME.metrics.json.
        #[arg(short, long)]
        output: PathBuf,
        #[arg(long)]
        pick: Option<Pick>,
        #[arg(long)]
        network: Option<String>,
        #[arg(long)]
        force: bool,
    },
    /// Print a readable dump of a .tflite file (tensors, quantization, operators, buffers).
    Inspect { model: PathBuf },
    /// Print the elaborated IR of each network (search graph, or with --pick the fixed graph).
    Ir {
        file: PathBuf,
        #[arg(long)]
        pick: Option<Pick>,
    },
}

/// A user-facing failure: already formatted, exit code 1.
struct UserError(String);

type Result<T> = std::result::Result<T, UserError>;

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
/// of its search space (a space without `--pick` is an error).
fn fixed_network(
    file: &Path,
    network: Option<&str>,
    pick: Option<Pick>,
    verb: &str,
) -> Result<mnet_compiler::ir::FixedGraph> {
    let checked = load(file)?;
    let net = one_network(&checked, file, network)?;
    if !net.graph.choices.is_empty() && pick.is_none() {
        return Err(UserError(format!(
            "error: {} is a search space ({} choices); {verb} a fixed network, or pick one with --pick min|max|random:SEED\n",
            file.display(),
            net.graph.choices.len()
        )));
    }
    fixed_of(&net, pick.unwrap_or(Pick::Min))
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
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|f| f.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.mnet-tmp"));
    std::fs::write(&tmp, bytes)
        .map_err(|e| UserError(format!("error: cannot write {}: {e}\n", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        UserError(format!("error: cannot write {}: {e}\n", path.display()))
    })
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
        Command::Check { files } => {
            let mut failed = Vec::new();
            for f in &files {
                match load(f) {
                    Ok(c) => println!("{}", summary_line(f, &c)),
                    Err(UserError(e)) => failed.push(e),
                }
            }
            if !failed.is_empty() {
                return Err(UserError(failed.join("")));
            }
        }
        Command::Stats {
            file,
            pick,
            json,
            network,
        } => {
            let checked = load(&file)?;
            let net = one_network(&checked, &file, network.as_deref())?;
            let fixed = match pick {
                Some(p) => Some(fixed_of(&net, p)?),
                None if net.graph.choices.is_empty() => Some(fixed_of(&net, Pick::Min)?),
                None => None,
            };
            match (fixed, json) {
                (Some(f), false) => print!("{}", render_fixed(&f.info, &fixed_stats(&f))),
                (Some(f), true) => println!(
                    "{}",
                    serde_json::to_string_pretty(&fixed_json(&f.info, &fixed_stats(&f)))
                        .expect("json")
                ),
                (None, false) => print!("{}", render_space(&net.graph, &net.summary)),
                (None, true) => println!(
                    "{}",
                    serde_json::to_string_pretty(&space_json(&net.graph, &net.summary))
                        .expect("json")
                ),
            }
        }
        Command::Resolve {
            file,
            pick,
            output,
            force,
            network,
        } => {
            let checked = load(&file)?;
            let net = one_network(&checked, &file, network.as_deref())?;
            let fixed = fixed_of(&net, pick)?;
            let shown = file
                .file_name()
                .map(|f| f.to_string_lossy().to_string())
                .unwrap_or_default();
            let note = format!(
                "{} resolved from {shown} with `mnet resolve --pick {pick}`",
                fixed.info.name
            );
            let text =
                mnet_grammar::print_module(&mnet_compiler::back::mnet::to_module(&fixed, &note));
            // The written file must check and give the picked network's stats.
            let again = check_source(&output.display().to_string(), &text).map_err(|f| {
                UserError(format!(
                    "internal error: the resolved network does not check:\n{}",
                    f.render()
                ))
            })?;
            let want = fixed_stats(&fixed).totals;
            let got = again.networks.first().map(|n| n.summary.min);
            if got != Some(want) {
                return Err(UserError(
                    "internal error: the resolved network's stats differ from the pick\n".into(),
                ));
            }
            write_new(&output, &text, force)?;
            let t = want;
            println!(
                "{}: wrote {} ({} layers, {} ops, {} flash bytes, {} peak working bytes)",
                file.display(),
                output.display(),
                fixed_stats(&fixed).rows.len(),
                t.ops(),
                t.flash_bytes,
                t.peak_working_bytes
            );
        }
        Command::Fmt {
            file,
            check,
            output,
            force,
        } => {
            let text = read(&file)?;
            let mut sources = mnet_grammar::Sources::new();
            let id = sources.add(file.display().to_string(), text.clone());
            let (module, diags) = mnet_grammar::parse(id, &text);
            if !diags.is_empty() {
                return Err(UserError(sources.render(&diags)));
            }
            let printed = mnet_grammar::print_module(&module);
            if check {
                if printed != text {
                    return Err(UserError(format!(
                        "{} is not in canonical form (run `mnet fmt`)\n",
                        file.display()
                    )));
                }
            } else {
                match output {
                    Some(o) => write_new(&o, &printed, force)?,
                    None => print!("{printed}"),
                }
            }
        }
        Command::Compile {
            file,
            weights,
            random_weights,
            calib,
            save_weights,
            emit,
            output,
            pick,
            network,
            force,
        } => {
            let fixed = fixed_network(&file, network.as_deref(), pick, "compile")?;
            let weight_bytes = match &weights {
                Some(p) => Some(std::fs::read(p).map_err(|e| {
                    UserError(format!("error: cannot read {}: {e}\n", p.display()))
                })?),
                None => None,
            };
            let calib_bytes = match &calib {
                Some(p) => Some(std::fs::read(p).map_err(|e| {
                    UserError(format!("error: cannot read {}: {e}\n", p.display()))
                })?),
                None => None,
            };
            let source = match (&weight_bytes, random_weights) {
                (Some(b), _) => mnet_compiler::Weights::File(b),
                (None, Some(seed)) => mnet_compiler::Weights::Random(seed),
                (None, None) => unreachable!("clap requires one"),
            };
            let quantized = mnet_compiler::quantize_network(&fixed, source, calib_bytes.as_deref())
                .map_err(|e| {
                    let what = match (&weights, &calib) {
                        (Some(w), _) if e.contains("tensor") || e.contains("safetensors") => {
                            format!("{}: ", w.display())
                        }
                        (_, Some(c)) if e.starts_with("calibration") => {
                            format!("{}: ", c.display())
                        }
                        _ => String::new(),
                    };
                    UserError(format!("error: {what}{e}\n"))
                })?;
            let (q, float) = (quantized.graph, quantized.float);
            let prep = mnet_compiler::exec::interp::prepare(&q);
            let mut files: Vec<(PathBuf, Vec<u8>)> = Vec::new();
            if let Some(p) = &save_weights {
                files.push((
                    p.clone(),
                    mnet_compiler::lower::io::write_weights(&q.lowered, &float),
                ));
            }
            for kind in &emit {
                match kind.as_str() {
                    "tflite" => files.push((
                        output.join(format!("{}.tflite", fixed.info.name)),
                        mnet_compiler::tflite::write::write(&q, &prep),
                    )),
                    "c" => {
                        let plan = mnet_compiler::plan::plan(&q.lowered);
                        mnet_compiler::plan::check(&q.lowered, &plan).map_err(|e| {
                            UserError(format!("internal error: memory plan: {e}\n"))
                        })?;
                        let macs = mnet_compiler::back::lowered_macs(&q.lowered);
                        let cf = mnet_compiler::back::c::write(
                            &q,
                            &prep,
                            &plan,
                            &macs,
                            Default::default(),
                        );
                        files.push((
                            output.join(format!("{}.h", fixed.info.name)),
                            cf.header.into_bytes(),
                        ));
                        files.push((
                            output.join(format!("{}.c", fixed.info.name)),
                            cf.source.into_bytes(),
                        ));
                        println!("arena: {} bytes", plan.arena_size);
                    }
                    other => {
                        return Err(UserError(format!(
                            "error: unknown --emit `{other}` (expected tflite or c)\n"
                        )))
                    }
                }
            }
            if !force {
                if let Some((p, _)) = files.iter().find(|(p, _)| p.exists()) {
                    return Err(UserError(format!(
                        "error: {} already exists; pass --force to overwrite it\n",
                        p.display()
                    )));
                }
            }
            std::fs::create_dir_all(&output).map_err(|e| {
                UserError(format!("error: cannot create {}: {e}\n", output.display()))
            })?;
            for (p, bytes) in &files {
                write_bytes(p, bytes)?;
            }
            let t = fixed_stats(&fixed).totals;
            for (p, bytes) in &files {
                println!("wrote {} ({} bytes)", p.display(), bytes.len());
            }
            // Flash: the constants the C holds (weights, biases, per-channel
            // multipliers and shifts) plus a code estimate (measured on the
            // MicroNet builds: ~600 B of helpers and ~350 B a layer at -O2).
            let consts: usize = q
                .weights
                .values()
                .map(|w| w.weight.len() + 4 * w.bias.len() + 8 * w.scales.len().max(w.bias.len()))
                .sum();
            let layers = q.lowered.nodes.len() - 1;
            let code = 600 + 350 * layers;
            let arena = mnet_compiler::plan::plan(&q.lowered).arena_size;
            if quantized.qat_ranges > 0 {
                println!(
                    "activation ranges: {} from quantization-aware training (in the weights), others calibrated",
                    quantized.qat_ranges
                );
            }
            println!(
                "{}: {} ops ({} MACs); flash {} bytes ({} constants + ~{} code, estimated); arena {} bytes",
                fixed.info.name,
                t.ops(),
                t.macs,
                consts + code,
                consts,
                code,
                arena
            );
        }
        Command::Train {
            file,
            data,
            epochs,
            batch,
            lr,
            seed,
            optimizer,
            qat,
            output,
            pick,
            network,
            force,
        } => {
            if epochs == 0 || batch == 0 || !(lr > 0.0 && lr.is_finite()) {
                return Err(UserError(
                    "error: --epochs and --batch must be at least 1 and --lr positive\n".into(),
                ));
            }
            let fixed = fixed_network(&file, network.as_deref(), pick, "train")?;
            let name = fixed.info.name.clone();
            let weights_path = output.join(format!("{name}.safetensors"));
            let metrics_path = output.join(format!("{name}.metrics.json"));
            if !force {
                if let Some(p) = [&weights_path, &metrics_path]
                    .into_iter()
                    .find(|p| p.exists())
                {
                    return Err(UserError(format!(
                        "error: {} already exists; pass --force to overwrite it\n",
                        p.display()
                    )));
                }
            }
            let shape: Vec<usize> = fixed.info.input_shape.iter().map(|&d| d as usize).collect();
            let mut model = mnet_search::engine::Net::from_fixed(&fixed, batch, seed);
            let classes = model.classes();
            let (train_set, test_set) = mnet_search::data::load(&data, &shape, classes, seed)
                .map_err(|e| UserError(format!("error: --data {data}: {e}\n")))?;
            if train_set.len() < batch {
                return Err(UserError(format!(
                    "error: --data {data} has {} samples, fewer than a batch of {batch}\n",
                    train_set.len()
                )));
            }
            let cfg = mnet_search::train::TrainConfig {
                epochs,
                batch,
                lr,
                seed,
                adamw: optimizer == "adamw",
                qat,
                ..Default::default()
            };
            // A bar per epoch on a terminal (indicatif hides it otherwise),
            // then the epoch's line.
            let style = indicatif::ProgressStyle::with_template(
                "epoch {prefix} [{bar:30}] {pos}/{len} steps  {msg}",
            )
            .expect("a valid template")
            .progress_chars("=> ");
            let mut bar: Option<indicatif::ProgressBar> = None;
            let history = mnet_search::train::train(&mut model, &train_set, cfg, |p| match p {
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
                        "loss {:.4}, accuracy {:.3}, {:.0} samples/s",
                        so_far.loss, so_far.accuracy, so_far.samples_per_sec
                    ));
                }
                mnet_search::train::Progress::Epoch(m) => {
                    if let Some(b) = bar.take() {
                        b.finish_and_clear();
                    }
                    eprintln!(
                        "epoch {}/{epochs}: loss {:.4}, accuracy {:.3}, {:.0} samples/s",
                        m.epoch, m.loss, m.accuracy, m.samples_per_sec
                    );
                }
            });
            let (test_loss, test_acc) = mnet_search::train::evaluate(&mut model, &test_set);
            let metrics = serde_json::json!({
                "network": name,
                "data": data,
                "train_samples": train_set.len(),
                "test_samples": test_set.len(),
                "epochs": history.iter().map(|m| serde_json::json!({
                    "epoch": m.epoch, "loss": m.loss, "accuracy": m.accuracy, "samples_per_sec": m.samples_per_sec,
                })).collect::<Vec<_>>(),
                "test_loss": test_loss,
                "test_accuracy": test_acc,
            });
            std::fs::create_dir_all(&output).map_err(|e| {
                UserError(format!("error: cannot create {}: {e}\n", output.display()))
            })?;
            write_bytes(
                &weights_path,
                &mnet_search::train::weights_safetensors(&model),
            )?;
            write_bytes(
                &metrics_path,
                serde_json::to_string_pretty(&metrics)
                    .expect("json")
                    .as_bytes(),
            )?;
            println!(
                "{name}: test accuracy {test_acc:.3} (loss {test_loss:.4}) on {} held-out samples; wrote {} and {}",
                test_set.len(),
                weights_path.display(),
                metrics_path.display()
            );
        }
        Command::Inspect { model } => {
            let bytes = std::fs::read(&model)
                .map_err(|e| UserError(format!("error: cannot read {}: {e}\n", model.display())))?;
            let text = mnet_compiler::tflite::inspect::dump(&bytes).map_err(|e| {
                UserError(format!(
                    "error: {} is not a valid .tflite: {}\n",
                    model.display(),
                    e.0
                ))
            })?;
            print!("{text}");
        }
        Command::Ir { file, pick } => {
            let checked = load(&file)?;
            for net in &checked.networks {
                match pick {
                    Some(p) => print!("{}", fixed_of(net, p)?.dump()),
                    None => print!("{}", net.graph.dump(&checked.sources)),
                }
            }
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
