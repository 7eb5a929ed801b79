//! Seeded, bounded fuzzing of the command line (issue 9). Mutated `.mnet`
//! sources, `.tflite` files, safetensors weights, `.npy` data and the files
//! of real-data trees (WAVs, list files, IDX, PNG/JPEG) go through
//! `check`, `stats`, `fmt`, `resolve`, `compile`, `train`, `search`,
//! `features`, `inspect` and `compile` of a `.tflite`, each
//! run as its own process under a time and a memory cap. Every run must end
//! with exit 0 or 1 (no panic, no signal, no hang); exit 1 must print a
//! message naming the mutated file; a failing run must leave no files
//! behind and a passing one no temporary files; and every model `compile`
//! writes must load in TFLM and give the same outputs as its generated C.
//!
//! `MNET_FUZZ_CASES` (default 2000) and `MNET_FUZZ_SEED` (default 2026)
//! change the run; a failure names the case, its command and its input,
//! which stays in `target/fuzz/` to reproduce it.

mod common;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Wall-clock cap of one run.
const TIME_CAP: Duration = Duration::from_secs(60);
/// Address-space cap of one run (KiB, for `ulimit -v`): compile refuses
/// networks past 4 GiB of estimated memory.
const MEMORY_CAP_KIB: u64 = 6 << 20;

/// A small fixed network with one of most kinds of layer.
const BASE: &str = "\
network fz(x: i8[8, 8, 2]) -> [4] {
    x = conv2d(x, out: 4, kernel: 3) |> batch_norm |> relu
    y = depthwise_conv2d(x, kernel: 3, stride: 2) |> relu6
    z = max_pool(x, size: 2)
    x = add(y, conv2d(z, out: 4, kernel: 1))
    x = concat(x, avg_pool(z, size: 1)) |> global_avg_pool |> flatten |> dense(out: 4) |> softmax
}
";

fn mnet_bin() -> &'static str {
    env!("CARGO_BIN_EXE_mnet")
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// How one run ended.
struct Outcome {
    /// The exit code; None when a signal ended it or it was killed.
    code: Option<i32>,
    timed_out: bool,
    stderr: String,
}

/// Run mnet with `args` in `cwd` under the caps; stdout is discarded (a
/// dump can be long), stderr goes to `log`.
fn run_capped(args: &[String], cwd: &Path, log: &Path) -> Outcome {
    let err = std::fs::File::create(log).unwrap();
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(format!("ulimit -v {MEMORY_CAP_KIB} && exec \"$0\" \"$@\""))
        .arg(mnet_bin())
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .expect("run mnet");
    let start = Instant::now();
    let (status, timed_out) = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break (s, false);
        }
        if start.elapsed() > TIME_CAP {
            let _ = child.kill();
            break (child.wait().unwrap(), true);
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Outcome {
        code: status.code(),
        timed_out,
        stderr: std::fs::read_to_string(log).unwrap_or_default(),
    }
}

/// Every file under `dir`, relative to it.
fn files(dir: &Path) -> BTreeSet<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            out.insert(p.strip_prefix(root).unwrap().to_path_buf());
            if p.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// The inputs every case mutates, made once by the released commands.
struct Bases {
    sources: Vec<(String, String)>,
    tflite: Vec<u8>,
    weights: Vec<u8>,
    calib: Vec<u8>,
    x: Vec<u8>,
    y: Vec<u8>,
    /// Data folders of the real-data kinds: (`--data` kind, folder, the
    /// extra arguments of `mnet features`, its files relative to it).
    trees: Vec<(&'static str, PathBuf, Vec<&'static str>, Vec<String>)>,
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

fn bases(root: &Path) -> Bases {
    let dir = root.join("base");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("base.mnet"), BASE).unwrap();
    let o = Command::new(mnet_bin())
        .args([
            "compile",
            "base.mnet",
            "--random-weights",
            "7",
            "--save-weights",
            "w.safetensors",
            "--emit",
            "c,tflite",
            "-o",
            "out",
        ])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let floats = |rng: &mut ChaCha8Rng, n: usize| -> Vec<u8> {
        (0..n)
            .flat_map(|_| rng.random_range(-1.0f32..1.0).to_le_bytes())
            .collect()
    };
    let npy = |name: &str, descr: &str, shape: &[usize], data: &[u8]| {
        let p = dir.join(name);
        common::npy_file(&p, descr, shape, data);
        std::fs::read(p).unwrap()
    };
    let calib = npy(
        "calib.npy",
        "<f4",
        &[8, 8, 8, 2],
        &floats(&mut rng, 8 * 128),
    );
    let x = npy("x.npy", "<f4", &[16, 8, 8, 2], &floats(&mut rng, 16 * 128));
    let labels: Vec<u8> = (0..16i64).flat_map(|i| (i % 4).to_le_bytes()).collect();
    let y = npy("y.npy", "<i8", &[16], &labels);

    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut sources = vec![("base.mnet".to_string(), BASE.to_string())];
    sources.push((
        "tiny.mnet".into(),
        common::read(&repo.join("examples/tiny.mnet")),
    ));
    let mut models: Vec<PathBuf> = std::fs::read_dir(repo.join("tests/models"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "mnet"))
        .collect();
    models.sort();
    for p in models {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        sources.push((name, common::read(&p)));
    }
    // Small trees of the real-data kinds.
    use common::datasets::{idx_files, image_tree, speech_tree, SpeechTree};
    let speech = dir.join("speech");
    speech_tree(
        &speech,
        &SpeechTree {
            words: &["yes", "no", "cat"],
            speakers: 3,
            clips_per_speaker: 1,
            seed: 2,
        },
    );
    let fashion = dir.join("fashion");
    std::fs::create_dir_all(&fashion).unwrap();
    idx_files(&fashion, "train", 20, (28, 28), 10, true, 3);
    idx_files(&fashion, "t10k", 10, (28, 28), 10, false, 4);
    let images = dir.join("images");
    image_tree(&images, &["a", "b"], 3, 5);
    let trees = [
        ("speech-commands", speech, vec!["--words", "yes,no"]),
        ("fashion-mnist", fashion, vec![]),
        ("image-folder", images, vec!["--shape", "8,8,1"]),
    ]
    .into_iter()
    .map(|(kind, d, extra)| {
        let listed: Vec<String> = files(&d)
            .into_iter()
            .filter(|p| d.join(p).is_file())
            .map(|p| p.to_string_lossy().replace('\\', "/"))
            .collect();
        (kind, d, extra, listed)
    })
    .collect();
    Bases {
        trees,
        sources,
        tflite: std::fs::read(dir.join("out/fz.tflite")).unwrap(),
        weights: std::fs::read(dir.join("w.safetensors")).unwrap(),
        calib,
        x,
        y,
    }
}

/// Keywords of the binary formats' text parts (a `.npy` header, the
/// safetensors JSON header), spliced in by the mutations.
const HEADER_TOKENS: &[&[u8]] = &[
    b"'descr': '<f4'",
    b"'<i8'",
    b"'<f8'",
    b"'|u1'",
    b"True",
    b"(72057594037927936, ",
    b"(0,",
    b"99999999999",
    b"\"dtype\":\"F64\"",
    b"\"shape\":[",
    b"\"data_offsets\":[0,",
    b"-1",
    b"}",
    b",",
];

/// Where a version-1 `.npy` file's data starts.
fn npy_data(file: &[u8]) -> usize {
    10 + u16::from_le_bytes([file[8], file[9]]) as usize
}

/// One case: where it runs, the command, which file was mutated, and the
/// output it may write.
struct Case {
    index: usize,
    dir: PathBuf,
    args: Vec<String>,
    mutated: String,
    /// `compile` with C and `.tflite` emitted: verify what it writes.
    compiles: bool,
}

fn make_case(index: usize, rng: &mut ChaCha8Rng, bases: &Bases, root: &Path) -> Case {
    let dir = root.join(format!("case-{index:04}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<String>>();
    let emit = ["--emit", "c,tflite", "-o", "out"];
    let kind = rng.random_range(0..100);
    if kind < 40 {
        // A mutated source through one command.
        let (_, text) = &bases.sources[rng.random_range(0..bases.sources.len())];
        let text = common::mutate::text(rng, text);
        std::fs::write(dir.join("in.mnet"), text).unwrap();
        let seed = rng.random_range(0..1000u32).to_string();
        let pick = format!("random:{seed}");
        let (args, compiles) = match rng.random_range(0..5) {
            0 => (s(&["check", "in.mnet"]), false),
            1 => (s(&["stats", "in.mnet"]), false),
            2 => (s(&["fmt", "in.mnet"]), false),
            3 => (
                s(&["resolve", "in.mnet", "--pick", &pick, "-o", "out.mnet"]),
                false,
            ),
            _ => {
                let mut a = s(&[
                    "compile",
                    "in.mnet",
                    "--pick",
                    &pick,
                    "--random-weights",
                    &seed,
                ]);
                a.extend(s(&emit));
                (a, true)
            }
        };
        Case {
            index,
            dir,
            args,
            mutated: "in.mnet".into(),
            compiles,
        }
    } else if kind < 55 {
        let data = common::mutate::bytes(rng, &bases.tflite, &[]);
        std::fs::write(dir.join("in.tflite"), data).unwrap();
        // The dump, or the import compiled (what it writes is verified).
        let (args, compiles) = if rng.random_bool(0.5) {
            (s(&["inspect", "in.tflite"]), false)
        } else {
            let mut a = s(&["compile", "in.tflite"]);
            a.extend(s(&emit));
            (a, true)
        };
        Case {
            index,
            dir,
            args,
            mutated: "in.tflite".into(),
            compiles,
        }
    } else if kind < 70 {
        std::fs::write(dir.join("base.mnet"), BASE).unwrap();
        let data = if rng.random_bool(0.5) {
            common::mutate::bytes(rng, &bases.weights, HEADER_TOKENS)
        } else {
            let header = u64::from_le_bytes(bases.weights[..8].try_into().unwrap());
            common::mutate::values(rng, &bases.weights, 8 + header as usize)
        };
        std::fs::write(dir.join("in.safetensors"), data).unwrap();
        let mut args = s(&["compile", "base.mnet", "--weights", "in.safetensors"]);
        args.extend(s(&emit));
        Case {
            index,
            dir,
            args,
            mutated: "in.safetensors".into(),
            compiles: true,
        }
    } else if kind >= 90 {
        // A mutated file of a real-data tree through `mnet features`.
        let (kind, tree, extra, listed) = &bases.trees[rng.random_range(0..bases.trees.len())];
        copy_dir(tree, &dir.join("data"));
        let file = &listed[rng.random_range(0..listed.len())];
        let path = dir.join("data").join(file);
        let original = std::fs::read(&path).unwrap();
        let data = if file.ends_with(".wav") && rng.random_bool(0.5) {
            common::mutate::values(rng, &original, 44.min(original.len()))
        } else {
            common::mutate::bytes(rng, &original, &[])
        };
        std::fs::write(&path, data).unwrap();
        let mut args = s(&[
            "features",
            "--data",
            &format!("{kind}:data"),
            "-o",
            "x.npy",
            "--labels",
            "y.npy",
        ]);
        args.extend(s(extra));
        if rng.random_bool(0.3) {
            // The image tree has no test/ folder.
            let splits: &[&str] = if *kind == "image-folder" {
                &["val"]
            } else {
                &["val", "test"]
            };
            args.extend(s(&["--split", splits[rng.random_range(0..splits.len())]]));
        } else if *kind != "fashion-mnist" && rng.random_bool(0.5) {
            args.extend(s(&["--augment", "--flip", "--crop", "0.2"]));
        }
        Case {
            index,
            dir,
            args,
            mutated: file.clone(),
            compiles: false,
        }
    } else if kind < 80 {
        std::fs::write(dir.join("base.mnet"), BASE).unwrap();
        let data = if rng.random_bool(0.5) {
            common::mutate::bytes(rng, &bases.calib, HEADER_TOKENS)
        } else {
            common::mutate::values(rng, &bases.calib, npy_data(&bases.calib))
        };
        std::fs::write(dir.join("in.npy"), data).unwrap();
        let mut args = s(&[
            "compile",
            "base.mnet",
            "--random-weights",
            "3",
            "--calib",
            "in.npy",
        ]);
        args.extend(s(&emit));
        Case {
            index,
            dir,
            args,
            mutated: "in.npy".into(),
            compiles: true,
        }
    } else {
        std::fs::write(dir.join("base.mnet"), BASE).unwrap();
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let (mutated, x, y) = if rng.random_bool(0.5) {
            let x = if rng.random_bool(0.5) {
                common::mutate::bytes(rng, &bases.x, HEADER_TOKENS)
            } else {
                common::mutate::values(rng, &bases.x, npy_data(&bases.x))
            };
            ("x.npy", x, bases.y.clone())
        } else {
            let y = common::mutate::bytes(rng, &bases.y, HEADER_TOKENS);
            ("y.npy", bases.x.clone(), y)
        };
        std::fs::write(dir.join("data/x.npy"), x).unwrap();
        std::fs::write(dir.join("data/y.npy"), y).unwrap();
        let args = if rng.random_bool(0.5) {
            s(&[
                "train",
                "base.mnet",
                "--data",
                "npy:data",
                "--epochs",
                "1",
                "--batch",
                "8",
                "-o",
                "out",
            ])
        } else {
            s(&[
                "search",
                "base.mnet",
                "--data",
                "npy:data",
                "--warmup-epochs",
                "0",
                "--epochs",
                "1",
                "--retrain-epochs",
                "0",
                "--batch",
                "8",
                "-o",
                "out",
            ])
        };
        Case {
            index,
            dir,
            args,
            mutated: mutated.into(),
            compiles: false,
        }
    }
}

/// Run one case and check how it ended: its exit code, and the output
/// directory of a compiled model.
fn run_case(case: &Case, logs: &Path) -> Result<(i32, Option<PathBuf>), String> {
    let before = files(&case.dir);
    let log = logs.join(format!("case-{:04}.err", case.index));
    let o = run_capped(&case.args, &case.dir, &log);
    let what = || {
        format!(
            "case {} (`mnet {}` in {}):\n{}",
            case.index,
            case.args.join(" "),
            case.dir.display(),
            o.stderr
        )
    };
    if o.timed_out {
        return Err(format!("ran past {TIME_CAP:?}: {}", what()));
    }
    let code = o
        .code
        .ok_or_else(|| format!("ended by a signal: {}", what()))?;
    if code != 0 && code != 1 {
        return Err(format!("exit code {code}: {}", what()));
    }
    if o.stderr.contains("panicked") {
        return Err(format!("panicked: {}", what()));
    }
    let after = files(&case.dir);
    let new: Vec<&PathBuf> = after.difference(&before).collect();
    if code == 1 {
        if !o.stderr.contains(&case.mutated) {
            return Err(format!(
                "the error does not name {}: {}",
                case.mutated,
                what()
            ));
        }
        if !new.is_empty() {
            return Err(format!("a failing run left {new:?}: {}", what()));
        }
        return Ok((1, None));
    }
    if let Some(tmp) = new.iter().find(|p| {
        let name = p.file_name().unwrap().to_string_lossy();
        name.starts_with('.') || name.ends_with(".tmp")
    }) {
        return Err(format!(
            "a temporary file was left: {}: {}",
            tmp.display(),
            what()
        ));
    }
    Ok((0, case.compiles.then(|| case.dir.join("out"))))
}

/// The model a compile wrote: its name (the file stem of its `.tflite`).
fn model_name(out: &Path) -> String {
    let tflite = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "tflite"))
        .unwrap_or_else(|| panic!("{}: compile wrote no .tflite", out.display()));
    tflite.file_stem().unwrap().to_string_lossy().into_owned()
}

/// `#define NAME_INPUT_SIZE n` of a generated header.
fn input_size(header: &str, name: &str) -> usize {
    let key = format!("{}_INPUT_SIZE", name.to_uppercase());
    header
        .lines()
        .find_map(|l| {
            l.strip_prefix("#define ")?
                .strip_prefix(&key)?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {key} in the header"))
}

#[test]
fn mutated_inputs_through_every_command() {
    let cases = env_or("MNET_FUZZ_CASES", 2000) as usize;
    let seed = env_or("MNET_FUZZ_SEED", 2026);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz");
    let _ = std::fs::remove_dir_all(&root);
    let logs = root.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let bases = bases(&root);

    // Cases are drawn in order from one generator (the same seed gives
    // the same cases), then run on two workers.
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let all: Vec<Case> = (0..cases)
        .map(|i| make_case(i, &mut rng, &bases, &root))
        .collect();
    let next = Mutex::new(0usize);
    let failures = Mutex::new(Vec::new());
    let compiled = Mutex::new(Vec::new());
    let exits = [AtomicUsize::new(0), AtomicUsize::new(0)];
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| loop {
                let i = {
                    let mut n = next.lock().unwrap();
                    *n += 1;
                    *n - 1
                };
                let Some(case) = all.get(i) else { break };
                match run_case(case, &logs) {
                    Ok((code, out)) => {
                        exits[code as usize].fetch_add(1, Ordering::Relaxed);
                        if let Some(out) = out {
                            compiled.lock().unwrap().push((case.index, out));
                        }
                    }
                    Err(e) => failures.lock().unwrap().push(e),
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {cases} runs went wrong:\n{}",
        failures.len(),
        failures
            .iter()
            .take(8)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Every model compile wrote: TFLM loads it, and its C gives TFLM's
    // outputs on random inputs.
    let mut compiled = compiled.into_inner().unwrap();
    compiled.sort();
    let mut jobs = Vec::new();
    let mut c_outputs = Vec::new();
    let mut irng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    for (index, out) in &compiled {
        let name = model_name(out);
        let header = std::fs::read_to_string(out.join(format!("{name}.h"))).unwrap();
        let inputs: Vec<i8> = (0..3 * input_size(&header, &name))
            .map(|_| irng.random())
            .collect();
        let scratch = out.with_file_name("verify");
        std::fs::create_dir_all(&scratch).unwrap();
        for ext in ["h", "c"] {
            std::fs::copy(
                out.join(format!("{name}.{ext}")),
                scratch.join(format!("{name}.{ext}")),
            )
            .unwrap();
        }
        let c = common::runners::run_c(&scratch, &name, &inputs)
            .unwrap_or_else(|e| panic!("case {index}: {e}"));
        let inputs_file = scratch.join("inputs.bin");
        jobs.push((
            out.join(format!("{name}.tflite")),
            inputs_file,
            scratch.join("tflm.bin"),
        ));
        c_outputs.push((*index, c));
    }
    let results = common::runners::run_python_many("tflm", &jobs, &root.join("jobs.txt"))
        .unwrap_or_else(|e| panic!("{e}"));
    for (((index, c), (model, _, tflm_out)), result) in c_outputs.iter().zip(&jobs).zip(results) {
        if let Err(e) = result {
            panic!("case {index}: TFLM refuses {}: {e}", model.display());
        }
        let tflm: Vec<i8> = std::fs::read(tflm_out)
            .unwrap()
            .into_iter()
            .map(|b| b as i8)
            .collect();
        assert_eq!(
            &tflm,
            c,
            "case {index}: the C and TFLM differ on {}",
            model.display()
        );
    }
    let [exit0, exit1] = exits.map(AtomicUsize::into_inner);
    println!(
        "{cases} runs: {exit0} exit 0, {exit1} exit 1; {} compiled models match TFLM",
        compiled.len()
    );
    // The mutations reach past the first check: both outcomes, and models.
    assert!(
        exit0 > cases / 10 && exit1 > cases / 10,
        "{exit0} / {exit1}"
    );
    assert!(
        compiled.len() >= cases / 20,
        "only {} models compiled",
        compiled.len()
    );
}
