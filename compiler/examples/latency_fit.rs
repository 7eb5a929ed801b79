//! Fit the latency model (`stdlib/latency.json`) from emulator
//! measurements: networks sampled from each example space (`--pick
//! random:SEED`, seeds 0..FIT for the fit and FIT..FIT+HELD held out), random
//! weights, the C of each core built with per-step markers and run in QEMU
//! (exact instruction counts per step); a least-squares fit per core and
//! step class ([`mnet_compiler::analysis::latency`]); then the held-out
//! networks' errors and, per space, r² of ops against instructions.
//!
//! usage: cargo run --release -p mnet-compiler --example latency_fit [FIT] [HELD]
//! (defaults 30 and 10; needs arm-none-eabi-gcc and qemu-system-arm). Prints
//! a markdown table and rewrites stdlib/latency.json.

use mnet_compiler::analysis::latency::{self, Coefficients, Recorded, Step, Stored};
use mnet_compiler::analysis::resolve::{assignment, resolve, Pick};
use mnet_compiler::analysis::stats::fixed_stats;
use mnet_compiler::back::c::{self, Cpu};
use mnet_compiler::mcu::{self, BuildOptions, Core};
use mnet_compiler::pipeline::{self, Weights};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// The spaces sampled: the example spaces, and a probe of the layers they
/// do not have (max pooling, padding, concatenation, unfused activations,
/// depthwise convs no conv streams into), so every step class has a model.
const SPACES: &[&str] = &["tiny", "kws", "ad", "vww", "fashion", "probe"];

fn path_of(space: &str) -> String {
    match space {
        "probe" => "compiler/examples/latency_probe.mnet".to_string(),
        _ => format!("examples/{space}.mnet"),
    }
}
const CORES: &[(Cpu, Core)] = &[(Cpu::CortexM4, Core::M4), (Cpu::CortexM7, Core::M7)];

struct Sample {
    space: &'static str,
    seed: u64,
    core: Cpu,
    ops: u64,
    steps: Vec<Step>,
    measured: Vec<u64>,
}

fn measure(space: &'static str, seed: u64, cpu: Cpu, core: Core) -> Result<Sample, String> {
    let path = path_of(space);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let checked = mnet_compiler::check_source(&path, &text).map_err(|f| f.render())?;
    let net = &checked.networks[0];
    let choice = assignment(&net.graph, &net.summary, Pick::Random(seed));
    let fixed = resolve(&net.graph, &choice).map_err(|e| e.to_string())?;
    let ops = fixed_stats(&fixed).totals.ops();
    let q = pipeline::quantize(&fixed, Weights::Random(seed), None).map_err(|e| e.to_string())?;
    let opts = pipeline::Options {
        tflite: None,
        c: Some(c::Options {
            cpu,
            ..Default::default()
        }),
    };
    let art = pipeline::emit(q, &opts).map_err(|e| e.to_string())?;
    let l = &art.quantized.graph.lowered;
    let steps = latency::features(l, &art.plan, cpu);
    let input: Vec<i8> = (0..l.nodes[0].shape.iter().product::<u32>())
        .map(|k| (k as i64 * 37 % 256 - 128) as i8)
        .collect();
    let out_len = l.nodes[l.output].shape.iter().product::<u32>() as usize;
    let dir = std::env::temp_dir().join(format!(
        "mnet-latency-{}-{space}-{seed}-{}",
        std::process::id(),
        cpu.name()
    ));
    let b = mcu::build(
        art.c.as_ref().expect("C"),
        &l.name,
        &[input],
        out_len,
        &dir,
        &BuildOptions {
            core,
            per_layer: true,
            ..Default::default()
        },
    )
    .map_err(|e| format!("{space} {seed}: {e}"))?;
    let r = mcu::run(&b, Duration::from_secs(600)).map_err(|e| format!("{space} {seed}: {e}"))?;
    let _ = std::fs::remove_dir_all(&dir);
    let measured = r.per_layer[0].clone();
    if measured.len() != steps.len() {
        return Err(format!(
            "{space} {seed}: {} steps measured, {} modelled",
            measured.len(),
            steps.len()
        ));
    }
    Ok(Sample {
        space,
        seed,
        core: cpu,
        ops,
        steps,
        measured,
    })
}

fn r2(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len() as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let sxy: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    let syy: f64 = ys.iter().map(|y| (y - my).powi(2)).sum();
    sxy * sxy / (sxx * syy)
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (fit_n, held_n) = (
        args.first().copied().unwrap_or(30),
        args.get(1).copied().unwrap_or(10),
    );
    let jobs: Vec<(&'static str, u64, Cpu, Core)> = CORES
        .iter()
        .flat_map(|&(cpu, core)| {
            SPACES
                .iter()
                .flat_map(move |&s| (0..fit_n + held_n).map(move |seed| (s, seed, cpu, core)))
        })
        .collect();
    let queue = Mutex::new(jobs.into_iter());
    let done = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| loop {
                let job = queue.lock().unwrap().next();
                let Some((s, seed, cpu, core)) = job else {
                    break;
                };
                match measure(s, seed, cpu, core) {
                    Ok(sample) => done.lock().unwrap().push(sample),
                    Err(e) => eprintln!("skipped: {e}"),
                }
            });
        }
    });
    let mut samples = done.into_inner().unwrap();
    samples.sort_by_key(|s| (s.core.name(), s.space, s.seed));
    let mut coefficients = Coefficients::default();
    for &(cpu, _) in CORES {
        let train: Vec<(Step, f64)> = samples
            .iter()
            .filter(|s| s.core == cpu && s.seed < fit_n)
            .flat_map(|s| {
                s.steps
                    .iter()
                    .cloned()
                    .zip(s.measured.iter().map(|&m| m as f64))
            })
            .collect();
        coefficients
            .cores
            .insert(cpu.name().to_string(), latency::fit(&train));
    }
    println!("| core | space | networks (fit + held out) | r² ops vs instructions | held-out error median | 90th pct | max |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    let mut recorded = Vec::new();
    let mut all_errors: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for &(cpu, _) in CORES {
        for &space in SPACES {
            let these: Vec<&Sample> = samples
                .iter()
                .filter(|s| s.core == cpu && s.space == space)
                .collect();
            if these.is_empty() {
                continue;
            }
            let ops: Vec<f64> = these.iter().map(|s| s.ops as f64).collect();
            let totals: Vec<f64> = these
                .iter()
                .map(|s| s.measured.iter().sum::<u64>() as f64)
                .collect();
            let mut errors: Vec<f64> = these
                .iter()
                .filter(|s| s.seed >= fit_n)
                .map(|s| {
                    let p: f64 = latency::predict(&coefficients, cpu, &s.steps)
                        .expect("a model for every class")
                        .iter()
                        .sum();
                    let m = s.measured.iter().sum::<u64>() as f64;
                    (p - m).abs() / m
                })
                .collect();
            errors.sort_by(f64::total_cmp);
            all_errors.entry(cpu.name()).or_default().extend(&errors);
            let pct = |q: f64| {
                errors
                    .get(((errors.len() as f64 - 1.0) * q).round() as usize)
                    .copied()
                    .unwrap_or(f64::NAN)
            };
            println!(
                "| {} | {space} | {} + {} | {:.4} | {:.1}% | {:.1}% | {:.1}% |",
                cpu.name(),
                these.iter().filter(|s| s.seed < fit_n).count(),
                errors.len(),
                r2(&ops, &totals),
                100.0 * pct(0.5),
                100.0 * pct(0.9),
                100.0 * pct(1.0)
            );
            // The first held-out network of each space, to test the stored
            // coefficients against.
            if let Some(s) = these.iter().find(|s| s.seed >= fit_n) {
                let p: f64 = latency::predict(&coefficients, cpu, &s.steps)
                    .expect("model")
                    .iter()
                    .sum();
                recorded.push(Recorded {
                    file: path_of(space),
                    pick: format!("random:{}", s.seed),
                    core: cpu.name().to_string(),
                    predicted: p.round() as u64,
                });
            }
        }
    }
    for (core, mut e) in all_errors {
        e.sort_by(f64::total_cmp);
        println!(
            "\n{core}: median held-out error {:.2}% over {} networks",
            100.0 * e[e.len() / 2],
            e.len()
        );
    }
    let stored = Stored {
        about: format!(
            "Latency model of mnet's generated C: instructions per step, a linear model per core and step class over the features of mnet_compiler::analysis::latency. Fitted by `cargo run --release -p mnet-compiler --example latency_fit {fit_n} {held_n}` on QEMU mps2-an386 (cortex-m4) and mps2-an500 (cortex-m7), arm-none-eabi-gcc -O2, {} networks sampled from {}. Latency in ms assumes one instruction per cycle at the board's clock (`clock` in the board profiles, stdlib/boards.mnet).",
            samples.len() / CORES.len(),
            SPACES.iter().map(|s| path_of(s)).collect::<Vec<_>>().join(", ")
        ),
        coefficients,
        recorded,
    };
    let json = serde_json::to_string_pretty(&stored).expect("json");
    std::fs::write("stdlib/latency.json", json + "\n").expect("write stdlib/latency.json");
    eprintln!("wrote stdlib/latency.json");
}
