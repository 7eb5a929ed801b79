//! File-driven model tests: every network in `tests/models/` and in
//! `examples/` goes through the runners its header names, and every
//! (runner, model) pair is its own test case, so one failure does not hide
//! the rest: `cargo test --test models -- oracle/kws_s` runs one,
//! `cargo test --test models -- oracle/` one runner.
//!
//! A model file starts with header comments:
//!
//! ```text
//! // test: c tflite oracle m4
//! // pick: min random:1..3
//! ```
//!
//! A `pick:` line applies to the `test:` line before it (default `min`;
//! `random:A..B` is every seed from A to B). The examples carry no header:
//! their lines are in [`EXAMPLES`].
//!
//! Runners:
//! - `stats`: the layer list `mnet stats` prints is the network `compile`
//!   lowers (every layer not fused, with its MACs).
//! - `plan`: the memory plan passes its independent checker.
//! - `jit`: the Cranelift JIT (its verifier on), with the host's dot
//!   products and with the i16 pair products, equals the reference
//!   interpreter on 10 random inputs.
//! - `c`, `tflite`: the generated C (constants summarised) and header, and
//!   the `inspect` dump of the .tflite, as snapshots; the .tflite is
//!   16-byte aligned and the same bytes on a second compile, and imports
//!   back to the same network (the same bytes written, the same C).
//! - `oracle`: mnet's reference interpreter, its Cranelift JIT (the IR
//!   verifier on), the C compiled with cc, TFLM and LiteRT agree bit for
//!   bit on 100 random int8 inputs.
//! - `import` (the converter-written models of `tests/tflite/`, each
//!   without a header): mnet's reference interpreter, its JIT, the C it generates,
//!   TFLM on the converter's file and TFLM on the `.tflite` mnet writes
//!   back agree bit for bit on 100 random int8 inputs; then the `m4`
//!   runner's builds.
//! - `m4`: the C compiles with arm-none-eabi-gcc -Werror for a Cortex-M4
//!   and a Cortex-M7 (at -O2, and -O0, -Os, -Og, -O1, -O3; and for a
//!   Cortex-M33 and M55), its static RAM is exactly
//!   the planned arena and it has no `.data`; it runs in QEMU (mps2-an386,
//!   mps2-an500) as the DSP kernels, their portable path, their exact
//!   requantization and the generic loop nests (up to 20 M MACs), and every output equals the
//!   reference interpreter's byte for byte.

mod common;

use common::runners::{HostC, Jit, Python, Reference, Runner};
use libtest_mimic::{Arguments, Failed, Trial};
use mnet_compiler::analysis::resolve::{assignment, resolve, Pick};
use mnet_compiler::ir::FixedGraph;
use mnet_compiler::pipeline::{self, Artifacts, Weights};
use rand::{RngExt, SeedableRng};
use std::path::{Path, PathBuf};

/// The header lines of the examples, by path pattern (`*` a file stem).
const EXAMPLES: &[(&str, &str)] = &[
    (
        "examples/micronets/*.mnet",
        "// test: stats plan jit c tflite oracle m4",
    ),
    (
        "examples/tiny.mnet",
        "// test: c tflite m4\n// test: stats oracle\n// pick: min max random:1..2\n// test: stats plan\n// pick: random:0..59",
    ),
    (
        "examples/kws.mnet",
        "// test: stats oracle\n// pick: min random:1..3\n// test: stats plan\n// pick: random:0..59",
    ),
    (
        "examples/ad.mnet",
        "// test: stats oracle\n// pick: min random:1..3\n// test: stats plan\n// pick: random:0..59",
    ),
    (
        "examples/fashion.mnet",
        "// test: stats oracle\n// pick: min max random:1\n// test: stats plan\n// pick: random:0..59",
    ),
    (
        "examples/vww.mnet",
        "// test: stats oracle\n// pick: min\n// test: stats plan\n// pick: random:0..59",
    ),
];

const RUNNERS: &[&str] = &["stats", "plan", "jit", "c", "tflite", "oracle", "m4"];

const ORACLE_INPUTS: usize = 100;

/// (runner, picks) pairs from header text.
fn parse_header(text: &str, file: &str) -> Result<Vec<(String, Vec<Pick>)>, String> {
    let mut groups: Vec<(Vec<String>, Vec<Pick>)> = Vec::new();
    for line in text.lines().map(str::trim) {
        let Some(comment) = line.strip_prefix("//") else {
            break;
        };
        let comment = comment.trim();
        if let Some(list) = comment.strip_prefix("test:") {
            let runners: Vec<String> = list.split_whitespace().map(String::from).collect();
            if let Some(bad) = runners.iter().find(|r| !RUNNERS.contains(&r.as_str())) {
                return Err(format!(
                    "{file}: unknown runner `{bad}` (runners: {RUNNERS:?})"
                ));
            }
            groups.push((runners, vec![Pick::Min]));
        } else if let Some(list) = comment.strip_prefix("pick:") {
            let group = groups
                .last_mut()
                .ok_or_else(|| format!("{file}: `pick:` before any `test:`"))?;
            group.1 = parse_picks(list).map_err(|e| format!("{file}: {e}"))?;
        }
    }
    Ok(groups
        .into_iter()
        .flat_map(|(runners, picks)| runners.into_iter().map(move |r| (r, picks.clone())))
        .collect())
}

fn parse_picks(list: &str) -> Result<Vec<Pick>, String> {
    let mut picks = Vec::new();
    for p in list.split_whitespace() {
        match p.strip_prefix("random:").and_then(|r| r.split_once("..")) {
            Some((a, b)) => {
                let (a, b): (u64, u64) = (
                    a.parse().map_err(|_| format!("bad seed in `{p}`"))?,
                    b.parse().map_err(|_| format!("bad seed in `{p}`"))?,
                );
                picks.extend((a..=b).map(Pick::Random));
            }
            None => picks.push(p.parse()?),
        }
    }
    Ok(picks)
}

/// A model file: its path relative to the repository and its text.
struct Model {
    rel: String,
    stem: String,
    text: String,
}

impl Model {
    /// The fixed networks of the picks (a fixed network: itself, once).
    fn networks(&self, picks: &[Pick]) -> Vec<(String, FixedGraph)> {
        let checked = mnet_compiler::check_source(&self.rel, &self.text)
            .unwrap_or_else(|f| panic!("{}", f.render()));
        let net = &checked.networks[0];
        if net.graph.choices.is_empty() {
            let fixed = resolve(&net.graph, &[]).expect("a fixed network resolves");
            return vec![(self.stem.clone(), fixed)];
        }
        picks
            .iter()
            .map(|&p| {
                let a = assignment(&net.graph, &net.summary, p);
                let fixed = resolve(&net.graph, &a).expect("every pick resolves");
                (format!("{}@{p}", self.stem), fixed)
            })
            .collect()
    }
}

fn models() -> Vec<(Model, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in ["tests/models", "examples", "examples/micronets"] {
        let mut here: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "mnet"))
            .collect();
        here.sort();
        files.extend(here);
    }
    files
        .into_iter()
        .map(|path| {
            let rel = common::rel(&path);
            let text = common::read(&path);
            let header = if rel.starts_with("examples/") {
                let (_, h) = EXAMPLES
                    .iter()
                    .find(|(pat, _)| matches(pat, &rel))
                    .unwrap_or_else(|| panic!("{rel}: add its runners to EXAMPLES"));
                h.to_string()
            } else {
                text.clone()
            };
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            (Model { rel, stem, text }, header)
        })
        .collect()
}

/// `dir/*.mnet` or an exact path.
fn matches(pattern: &str, rel: &str) -> bool {
    match pattern.split_once('*') {
        Some((dir, ext)) => rel
            .strip_prefix(dir)
            .and_then(|r| r.strip_suffix(ext))
            .is_some_and(|stem| !stem.contains('/')),
        None => pattern == rel,
    }
}

/// A seed from a name, the same on every run and machine.
fn seed_of(name: &str) -> u64 {
    name.bytes().fold(0xcbf29ce484222325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

fn compile(g: &FixedGraph, seed: u64, opts: &pipeline::Options) -> Result<Artifacts, Failed> {
    pipeline::compile(g, Weights::Random(seed), None, opts)
        .map_err(|e| Failed::from(format!("compile: {e}")))
}

fn scratch(name: &str) -> PathBuf {
    let safe: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let dir = std::env::temp_dir().join(format!("mnet-models-{}-{safe}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn stats(m: &Model, picks: &[Pick]) -> Result<(), Failed> {
    use mnet_compiler::analysis::stats::fixed_stats;
    for (name, g) in m.networks(picks) {
        let lowered =
            mnet_compiler::lower::lower(&g).map_err(|e| format!("{name}: lower: {}", e.message))?;
        let macs = mnet_compiler::back::lowered_macs(&lowered);
        let fixed_names: std::collections::BTreeSet<&str> =
            g.order.iter().map(|id| g.node(*id).name.as_str()).collect();
        let compiled: Vec<(String, u64)> = lowered
            .nodes
            .iter()
            .zip(&macs)
            .skip(1)
            .filter(|(n, _)| fixed_names.contains(n.name.as_str()))
            .map(|(n, m)| (n.name.clone(), *m))
            .collect();
        let listed: Vec<(String, u64)> = fixed_stats(&g)
            .rows
            .into_iter()
            .filter(|r| !r.fused)
            .map(|r| (r.name, r.cost.macs))
            .collect();
        if listed != compiled {
            return Err(
                format!("{name}: stats lists {listed:?}\nbut compile lowers {compiled:?}").into(),
            );
        }
    }
    Ok(())
}

fn plan(m: &Model, picks: &[Pick]) -> Result<(), Failed> {
    for (name, g) in m.networks(picks) {
        let l = mnet_compiler::lower::lower(&g).map_err(|e| format!("{name}: {}", e.message))?;
        let l = mnet_compiler::lower::schedule::schedule(l);
        let p = mnet_compiler::plan::plan(&l);
        mnet_compiler::plan::check(&l, p).map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(())
}

/// Inputs of the `jit` runner per network.
const JIT_INPUTS: usize = 10;

/// The JIT (Cranelift's verifier on) equals the reference interpreter.
fn jit(m: &Model, picks: &[Pick]) -> Result<(), Failed> {
    let opts = pipeline::Options {
        tflite: None,
        c: None,
    };
    for (name, g) in m.networks(picks) {
        let art = compile(&g, seed_of(&name), &opts)?;
        let in_len: usize = art.quantized.graph.lowered.nodes[0]
            .shape
            .iter()
            .map(|&d| d as usize)
            .product();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed_of(&name) ^ 2);
        let inputs: Vec<i8> = (0..JIT_INPUTS * in_len)
            .map(|_| rng.random::<i8>())
            .collect();
        let dir = Path::new("unused");
        let expected = Reference.run(&art, &inputs, dir)?;
        for r in [Jit { no_vnni: false }, Jit { no_vnni: true }] {
            let got = r
                .run(&art, &inputs, dir)
                .map_err(|e| format!("{name}: {e}"))?;
            let diff = expected.iter().zip(&got).filter(|(a, b)| a != b).count();
            if diff > 0 {
                return Err(format!(
                    "{name}: {diff} of {} output values differ between mnet's reference and {}",
                    expected.len(),
                    r.name()
                )
                .into());
            }
        }
    }
    Ok(())
}

/// The written .tflite imports back to the same int8 network: writing the
/// import gives the same bytes, and it emits the same C.
fn round_trip(name: &str, art: &Artifacts) -> Result<(), Failed> {
    let bytes = art.tflite.as_ref().expect("tflite emitted");
    let l = &art.quantized.graph.lowered;
    let imported = pipeline::import(bytes, &l.name).map_err(|e| format!("{name}: import: {e}"))?;
    if imported.float_input || imported.float_output {
        return Err(format!("{name}: mnet's .tflite imports with float edges").into());
    }
    let opts = pipeline::Options {
        tflite: Some(Default::default()),
        c: Some(mnet_compiler::back::c::Options {
            summarize_constants: true,
            ..Default::default()
        }),
    };
    let again = pipeline::emit(imported.quantized, &opts).map_err(|e| format!("{name}: {e}"))?;
    if again.tflite.as_ref() != Some(bytes) {
        return Err(format!("{name}: the imported .tflite writes other bytes").into());
    }
    if again.c.as_ref().map(|c| &c.source) != art.c.as_ref().map(|c| &c.source) {
        return Err(format!("{name}: the imported .tflite emits other C").into());
    }
    Ok(())
}

fn snapshot(runner: &str, m: &Model, picks: &[Pick]) -> Result<(), Failed> {
    let opts = pipeline::Options {
        tflite: Some(Default::default()),
        c: Some(mnet_compiler::back::c::Options {
            summarize_constants: true,
            ..Default::default()
        }),
    };
    let networks = m.networks(picks);
    let several = networks.len() > 1;
    for (name, g) in networks {
        let art = compile(&g, 1, &opts)?;
        // One network: the file's name; several: with the pick.
        let suffix = match several {
            true => name[m.stem.len()..].to_string(),
            false => String::new(),
        };
        let key = format!("{}{suffix}", m.rel.replace('/', "__"));
        let mut settings = insta::Settings::clone_current();
        settings.set_snapshot_path(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots"));
        settings.set_input_file(Path::new(env!("CARGO_MANIFEST_DIR")).join(&m.rel));
        settings.bind(|| -> Result<(), Failed> {
            match runner {
                "c" => {
                    let files = art.c.as_ref().expect("C emitted");
                    insta::assert_snapshot!(format!("h@{key}"), files.header);
                    insta::assert_snapshot!(format!("c@{key}"), files.source);
                }
                _ => {
                    let bytes = art.tflite.as_ref().expect("tflite emitted");
                    let dump = mnet_compiler::tflite::inspect::dump(bytes)
                        .map_err(|e| format!("{name}: inspect: {}", e.0))?;
                    if dump.contains("NOT 16-aligned") || bytes.len() % 16 != 0 {
                        return Err(
                            format!("{name}: a payload or the file is not 16-aligned").into()
                        );
                    }
                    insta::assert_snapshot!(format!("tflite@{key}"), dump);
                    let again = compile(&g, 1, &opts)?;
                    if again.tflite.as_ref() != Some(bytes) {
                        return Err(format!("{name}: a second compile wrote other bytes").into());
                    }
                    round_trip(&name, &art)?;
                }
            }
            Ok(())
        })?;
    }
    Ok(())
}

fn oracle(m: &Model, picks: &[Pick]) -> Result<(), Failed> {
    let opts = pipeline::Options {
        tflite: Some(Default::default()),
        c: Some(Default::default()),
    };
    let runners: [&dyn Runner; 4] = [
        &Jit { no_vnni: false },
        &HostC,
        &Python { runtime: "tflm" },
        &Python { runtime: "litert" },
    ];
    for (name, g) in m.networks(picks) {
        let art = compile(&g, seed_of(&name), &opts)?;
        let in_len: usize = art.quantized.graph.lowered.nodes[0]
            .shape
            .iter()
            .map(|&d| d as usize)
            .product();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed_of(&name) ^ 1);
        let inputs: Vec<i8> = (0..ORACLE_INPUTS * in_len)
            .map(|_| rng.random::<i8>())
            .collect();
        let dir = scratch(&name);
        let expected = Reference.run(&art, &inputs, &dir)?;
        for r in runners {
            let got = r
                .run(&art, &inputs, &dir)
                .map_err(|e| format!("{name}: {}: {e}", r.name()))?;
            if got.len() != expected.len() {
                return Err(format!(
                    "{name}: {} wrote {} values, mnet {}",
                    r.name(),
                    got.len(),
                    expected.len()
                )
                .into());
            }
            let diff = expected.iter().zip(&got).filter(|(a, b)| a != b).count();
            if diff > 0 {
                return Err(format!(
                    "{name}: {diff} of {} output values differ between mnet's reference and {}",
                    expected.len(),
                    r.name()
                )
                .into());
            }
        }
        // Not all saturated: the random weights and calibration are realistic.
        let distinct: std::collections::BTreeSet<i8> = expected.iter().copied().collect();
        if distinct.len() <= 4 {
            return Err(format!("{name}: outputs are degenerate: {distinct:?}").into());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

/// Random inputs on the emulated Cortex-M4 (the first also in every other
/// build of [`m4`]).
const M4_INPUTS: usize = 2;

/// One build of a model for the emulator: its name, C options, core and
/// extra defines, and how many of the inputs it runs.
struct M4Build {
    what: &'static str,
    cpu: c::Cpu,
    exact: bool,
    core: mnet_compiler::mcu::Core,
    defines: &'static [&'static str],
    inputs: usize,
    /// Networks with more MACs skip this build (the generic loops take
    /// ~8 instructions a MAC in the emulator; the smaller models cover them).
    max_macs: u64,
}

use mnet_compiler::back::c;

/// The builds every model runs: the DSP kernels on an M4 (all inputs) and
/// an M7; the same C's portable path (`MNET_PORTABLE`) and its exact
/// requantization variant on the M4; the generic loop nests (networks up
/// to 20 M MACs).
const M4_BUILDS: &[M4Build] = &[
    M4Build {
        what: "dsp",
        cpu: c::Cpu::CortexM4,
        exact: false,
        core: mnet_compiler::mcu::Core::M4,
        defines: &[],
        inputs: M4_INPUTS,
        max_macs: u64::MAX,
    },
    M4Build {
        what: "dsp-m7",
        cpu: c::Cpu::CortexM7,
        exact: false,
        core: mnet_compiler::mcu::Core::M7,
        defines: &[],
        inputs: 1,
        max_macs: u64::MAX,
    },
    M4Build {
        what: "portable",
        cpu: c::Cpu::CortexM4,
        exact: false,
        core: mnet_compiler::mcu::Core::M4,
        defines: &["MNET_PORTABLE"],
        inputs: 1,
        max_macs: u64::MAX,
    },
    M4Build {
        what: "exact",
        cpu: c::Cpu::CortexM4,
        exact: true,
        core: mnet_compiler::mcu::Core::M4,
        defines: &[],
        inputs: 1,
        max_macs: u64::MAX,
    },
    M4Build {
        what: "generic",
        cpu: c::Cpu::Generic,
        exact: false,
        core: mnet_compiler::mcu::Core::M4,
        defines: &[],
        inputs: 1,
        max_macs: 20_000_000,
    },
];

fn m4(m: &Model, picks: &[Pick]) -> Result<(), Failed> {
    for (name, g) in m.networks(picks) {
        let q = pipeline::quantize(&g, Weights::Random(seed_of(&name)), None)
            .map_err(|e| format!("{name}: {e}"))?;
        m4_network(&name, &q)?;
    }
    Ok(())
}

/// The [`M4_BUILDS`] of one quantized network (see the module docs).
fn m4_network(name: &str, q: &pipeline::Quantized) -> Result<(), Failed> {
    use mnet_compiler::mcu::{self, BuildOptions};
    {
        let l = &q.graph.lowered;
        let net = l.name.clone();
        let out_len: usize = l.nodes[l.output]
            .shape
            .iter()
            .map(|&d| d as usize)
            .product();
        let (inputs, expected) = mcu::random_cases(q, M4_INPUTS, seed_of(name) ^ 4);
        let macs: u64 = mnet_compiler::back::lowered_macs(l).iter().sum();
        for b in M4_BUILDS.iter().filter(|b| macs <= b.max_macs) {
            let opts = pipeline::Options {
                tflite: None,
                c: Some(c::Options {
                    cpu: b.cpu,
                    exact_requant: b.exact,
                    ..Default::default()
                }),
            };
            let art = pipeline::emit(q.clone(), &opts).map_err(|e| format!("{name}: {e}"))?;
            let files = art.c.as_ref().expect("C emitted");
            let dir = scratch(&format!("{}-{name}", b.what));
            let bopts = BuildOptions {
                core: b.core,
                defines: b.defines.iter().map(|d| d.to_string()).collect(),
                ..Default::default()
            };
            let build = mcu::build(files, &net, &inputs[..b.inputs], out_len, &dir, &bopts)
                .map_err(|e| format!("{name} ({}): {e}", b.what))?;
            let s = build.sizes;
            if s.bss != art.plan.arena_size as u64 || s.data != 0 || s.text == 0 {
                return Err(format!(
                    "{name} ({}): .text {} .data {} .bss {}, expected no .data and .bss = the arena ({})",
                    b.what, s.text, s.data, s.bss, art.plan.arena_size
                )
                .into());
            }
            if b.what == "dsp" {
                // Other optimisation levels compile too (the asm needs -O1+
                // and steps aside at -O0).
                for opt in ["-O0", "-Os", "-Og", "-O1", "-O3"] {
                    mcu::compile_object(&dir, &net, b.core, opt, &[])
                        .map_err(|e| format!("{name} at {opt}: {e}"))?;
                }
                // The same kernels build for the other DSP cores (not
                // emulated here), with a bounded stack.
                for cpu in [c::Cpu::CortexM33, c::Cpu::CortexM55] {
                    let flags = mcu::gcc_flags_for(cpu, None);
                    mcu::static_report(files, &net, &flags, &dir.join(cpu.name()))
                        .map_err(|e| format!("{name} for {}: {e}", cpu.name()))?;
                }
            }
            let r = mcu::run(&build, std::time::Duration::from_secs(300))
                .map_err(|e| format!("{name} ({}) on {}: {e}", b.what, b.core.name()))?;
            for (k, (got, want)) in r.outputs.iter().zip(&expected).enumerate() {
                if got != want {
                    return Err(format!(
                        "{name} ({}) on the emulated {}: input {k} gives {got:?}, the reference {want:?}",
                        b.what,
                        b.core.name()
                    )
                    .into());
                }
            }
            // The stack the search allows for (without a build) holds what
            // the emulated run painted.
            let allowed = c::stack_estimate(l, &art.plan, b.cpu);
            if r.stack > allowed {
                return Err(format!(
                    "{name} ({}): the run used {} bytes of stack, over the {allowed} estimated",
                    b.what, r.stack
                )
                .into());
            }
            eprintln!(
                "{name} {} on {}: {:?} instructions, .text {} .rodata {} .bss {}, stack {}",
                b.what,
                b.core.name(),
                r.instructions,
                s.text,
                s.rodata,
                s.bss,
                r.stack
            );
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    Ok(())
}

/// The converter-written models of `tests/tflite/` (made by its
/// `make.py`): each imports, and mnet's reference interpreter, the C it
/// generates, TFLM on the converter's file and TFLM on the `.tflite` mnet
/// writes back agree bit for bit on 100 random int8 inputs; then the `m4`
/// runner's builds and emulated runs.
fn import(path: &Path) -> Result<(), Failed> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
    let name = mnet_compiler::tflite::import::network_name(&stem);
    let model = pipeline::import(&bytes, &name).map_err(|e| format!("{stem}: {e}"))?;
    let opts = pipeline::Options {
        tflite: Some(Default::default()),
        c: Some(Default::default()),
    };
    let mut art = pipeline::emit(model.quantized, &opts).map_err(|e| format!("{stem}: {e}"))?;
    let rewritten = art.tflite.replace(bytes).expect("tflite emitted");
    let in_len: usize = art.quantized.graph.lowered.nodes[0]
        .shape
        .iter()
        .map(|&d| d as usize)
        .product();
    // Each row a level of its own plus noise: networks that average over
    // the whole map (most converter models end so) see different inputs.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed_of(&stem));
    let mut inputs: Vec<i8> = Vec::with_capacity(ORACLE_INPUTS * in_len);
    for _ in 0..ORACLE_INPUTS {
        let level: i32 = rng.random_range(-96..=96);
        inputs.extend((0..in_len).map(|_| (level + rng.random_range(-32..=32)) as i8));
    }
    let dir = scratch(&format!("import-{stem}"));
    let expected = Reference.run(&art, &inputs, &dir)?;
    let mut written = art.clone();
    written.tflite = Some(rewritten);
    // TFLM on the converter's file, unless TFLM lacks one of its operators
    // (Keras' Dense on a map with a dynamic batch converts with a
    // REDUCE_PROD TFLM does not have, in shape arithmetic mnet folds away;
    // dense_variants_batch1 is the same network with static shapes, which
    // TFLM runs): then only the C and TFLM on mnet's rewrite. Not LiteRT:
    // its FULLY_CONNECTED requantizes in float (why mnet writes dense
    // layers as CONV_2D), and on the converter's files it differs from TFLM
    // on 2 of ds_cnn's 1200 outputs and 16-22 of dense_variants' 600 (TFLM,
    // the runtime the C replaces, is the contract;
    // `reference/tflite-int8.md` §2.4).
    let tflm = Python { runtime: "tflm" };
    let original: (&str, &Artifacts) = match tflm.run(&art, &inputs[..in_len], &dir) {
        Err(e) if e.contains("Didn't find op for builtin opcode") => {
            eprintln!(
                "{stem}: TFLM cannot load the converter's file, checked on mnet's rewrite: {e}"
            );
            ("TFLM on mnet's .tflite", &written)
        }
        _ => ("TFLM on the converter's file", &art),
    };
    let checks: [(&str, &dyn Runner, &Artifacts); 4] = [
        ("the JIT", &Jit { no_vnni: false }, &art),
        ("the generated C", &HostC, &art),
        (original.0, &tflm, original.1),
        ("TFLM on mnet's .tflite", &tflm, &written),
    ];
    for (what, r, a) in checks {
        let got = r
            .run(a, &inputs, &dir)
            .map_err(|e| format!("{stem}: {what}: {e}"))?;
        let diff = expected.iter().zip(&got).filter(|(a, b)| a != b).count();
        if got.len() != expected.len() || diff > 0 {
            return Err(format!(
                "{stem}: {what}: {diff} of {} output values differ from mnet's reference ({} values)",
                expected.len(),
                got.len()
            )
            .into());
        }
    }
    let out_len = expected.len() / ORACLE_INPUTS;
    let rows: std::collections::BTreeSet<&[i8]> = expected.chunks(out_len).collect();
    if rows.len() < ORACLE_INPUTS / 10 {
        return Err(format!(
            "{stem}: only {} distinct outputs for {ORACLE_INPUTS} inputs: the test would not see wrong arithmetic",
            rows.len()
        )
        .into());
    }
    let _ = std::fs::remove_dir_all(&dir);
    // And on the emulated Cortex-M4 and M7, as the `m4` runner.
    m4_network(&format!("import-{stem}"), &art.quantized)
}

fn main() {
    let args = Arguments::from_args();
    let mut trials = Vec::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tflite");
    let mut converted: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "tflite"))
        .collect();
    converted.sort();
    assert!(!converted.is_empty(), "no models in {}", dir.display());
    for path in converted {
        let name = format!("import/{}", path.file_stem().unwrap().to_string_lossy());
        trials.push(Trial::test(name, move || import(&path)));
    }
    for (model, header) in models() {
        let groups = parse_header(&header, &model.rel).unwrap_or_else(|e| panic!("{e}"));
        if groups.is_empty() {
            panic!("{}: no `// test:` line", model.rel);
        }
        let model = std::sync::Arc::new(model);
        // One trial per runner: a runner named twice runs every pick named.
        let mut by_runner: Vec<(String, Vec<Pick>)> = Vec::new();
        for (runner, picks) in groups {
            match by_runner.iter_mut().find(|(r, _)| *r == runner) {
                Some((_, p)) => p.extend(picks),
                None => by_runner.push((runner, picks)),
            }
        }
        for (runner, picks) in by_runner {
            let m = model.clone();
            let name = format!("{runner}/{}", m.stem);
            trials.push(Trial::test(name, move || match runner.as_str() {
                "stats" => stats(&m, &picks),
                "plan" => plan(&m, &picks),
                "jit" => jit(&m, &picks),
                "c" | "tflite" => snapshot(&runner, &m, &picks),
                "oracle" => oracle(&m, &picks),
                "m4" => m4(&m, &picks),
                other => Err(format!("unknown runner {other}").into()),
            }));
        }
    }
    libtest_mimic::run(&args, trials).exit();
}
