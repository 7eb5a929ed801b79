//! `mnet search` as a user runs it: every example space end to end (the C
//! compiles with -Werror and agrees with TFLM on the emitted .tflite, the
//! written network is the argmax of the last epoch), resume, the budgets.

mod common;

use mnet_compiler::analysis::resolve::resolve;
use mnet_compiler::analysis::stats::fixed_stats;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::{mnet, stderr};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mnet-search-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A `--quick` search of `space` on 64 samples into `dir`, with extra
/// arguments.
fn search(space: &str, dir: &Path, extra: &[&str]) -> Output {
    let (file, data) = (
        format!("examples/{space}.mnet"),
        format!("synthetic-{space}:64"),
    );
    let mut args = vec![
        "search",
        &file,
        "--data",
        &data,
        "--quick",
        "--batch",
        "16",
        "-o",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    mnet(&args)
}

fn checked(path: &Path) -> mnet_compiler::CheckedNetwork {
    let src = std::fs::read_to_string(path).unwrap();
    mnet_compiler::check_source(&path.display().to_string(), &src)
        .unwrap_or_else(|f| panic!("{}", f.render()))
        .networks
        .remove(0)
}

/// Every example space: the outputs exist; the written network checks, has
/// no choices and is the network of the choices in search.json, which are
/// the argmax of the last epoch's probabilities; its figures are
/// search.json's; its C compiles with -Werror and gives TFLM's outputs on
/// the .tflite.
#[test]
fn every_example_space_searches_end_to_end() {
    let mut jobs = Vec::new();
    let mut c_outputs = Vec::new();
    for space in ["tiny", "kws", "ad", "vww"] {
        let dir = scratch(space);
        let o = search(space, &dir, &[]);
        assert_eq!(o.status.code(), Some(0), "{space}: {}", stderr(&o));
        for f in ["mnet", "safetensors", "tflite", "h", "c"] {
            assert!(dir.join(format!("{space}.{f}")).is_file(), "{space}.{f}");
        }
        let report = std::fs::read_to_string(dir.join("report.html")).unwrap();
        let s = json(&dir.join("search.json"));
        let space_net = checked(Path::new(&format!(
            "{}/examples/{space}.mnet",
            env!("CARGO_MANIFEST_DIR")
        )));
        let choices = s["choices"].as_array().unwrap();
        assert_eq!(choices.len(), space_net.graph.choices.len());
        assert!(
            report.matches("<svg").count() >= 5 + choices.len(),
            "{space}: report.html has a plot per choice"
        );
        let last = s["epochs"].as_array().unwrap().last().unwrap().clone();
        let assignment: Vec<u16> = choices
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let p: Vec<f64> = last["probabilities"][i]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap())
                    .collect();
                let best = (0..p.len()).fold(0, |b, k| if p[k] > p[b] { k } else { b });
                let chosen = c["chosen"].as_u64().unwrap() as usize;
                assert!(
                    p[chosen] == p[best],
                    "{space}: choice {i} is {chosen}, the argmax is {best}"
                );
                chosen as u16
            })
            .collect();
        let want = fixed_stats(&resolve(&space_net.graph, &assignment).unwrap()).totals;
        let written = checked(&dir.join(format!("{space}.mnet")));
        assert!(
            written.graph.choices.is_empty(),
            "{space}: the written network has choices"
        );
        assert_eq!(
            written.summary.min, want,
            "{space}: the written network is not the chosen one"
        );
        assert_eq!(s["result"]["ops"].as_u64(), Some(want.ops()), "{space}");
        assert_eq!(
            s["result"]["flash"].as_u64(),
            Some(want.flash_bytes),
            "{space}"
        );
        let acc = s["result"]["held_out_int8_accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc), "{space}: int8 accuracy {acc}");
        // The C and TFLM on the same inputs.
        let input_len: usize = written
            .graph
            .info
            .input_shape
            .iter()
            .map(|&d| d as usize)
            .product();
        let inputs: Vec<i8> = (0..4 * input_len)
            .map(|k| ((k * 37 + 11) % 256) as u8 as i8)
            .collect();
        let out =
            common::runners::run_c(&dir, space, &inputs).unwrap_or_else(|e| panic!("{space}: {e}"));
        let input_file = dir.join("tflm-in.bin");
        std::fs::write(
            &input_file,
            inputs.iter().map(|&b| b as u8).collect::<Vec<u8>>(),
        )
        .unwrap();
        jobs.push((
            dir.join(format!("{space}.tflite")),
            input_file,
            dir.join("tflm-out.bin"),
        ));
        c_outputs.push((space, out));
    }
    let list = scratch("jobs").with_extension("txt");
    let results = common::runners::run_python_many("tflm", &jobs, &list).unwrap();
    for ((space, c), (r, (_, _, out))) in c_outputs.iter().zip(results.iter().zip(&jobs)) {
        r.as_ref().unwrap_or_else(|e| panic!("{space}: TFLM: {e}"));
        let t: Vec<i8> = std::fs::read(out)
            .unwrap()
            .into_iter()
            .map(|b| b as i8)
            .collect();
        assert_eq!(&t, c, "{space}: the C and TFLM differ");
    }
}

/// Stopped at an epoch boundary and resumed, a search writes exactly the
/// files an uninterrupted one does; a corrupt or foreign checkpoint is a
/// clear error.
#[test]
fn resumed_search_is_byte_identical() {
    let (a, b) = (scratch("whole"), scratch("resumed"));
    let tiny = |dir: &Path, extra: &[&str]| {
        let mut args = vec![
            "search",
            "examples/tiny.mnet",
            "--data",
            "synthetic-tiny:256",
            "-o",
            dir.to_str().unwrap(),
            "--quick",
        ];
        args.extend_from_slice(extra);
        mnet(&args)
    };
    let o = tiny(&a, &["--seed", "5"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = tiny(&b, &["--seed", "5", "--stop-after-epoch", "2"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("stopped after epoch 2"),
        "{}",
        stderr(&o)
    );
    assert!(
        !b.join("tiny.mnet").exists(),
        "a stopped search writes no network"
    );
    // Another search's checkpoint (another seed) is refused.
    let o = tiny(&b, &["--seed", "6", "--resume"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("checkpoint of another search"),
        "{}",
        stderr(&o)
    );
    let o = tiny(&b, &["--seed", "5", "--resume"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    for f in [
        "tiny.mnet",
        "tiny.safetensors",
        "tiny.tflite",
        "tiny.h",
        "tiny.c",
        "search.json",
        "report.html",
    ] {
        assert!(
            std::fs::read(a.join(f)).unwrap() == std::fs::read(b.join(f)).unwrap(),
            "{f} differs after --resume"
        );
    }
    // A new run in a used directory needs --force.
    let o = tiny(&b, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    // A corrupt checkpoint.
    let ckpt = b.join("checkpoint/state.safetensors");
    let mut bytes = std::fs::read(&ckpt).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&ckpt, bytes).unwrap();
    let o = tiny(&b, &["--seed", "5", "--resume"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("not a usable checkpoint"),
        "{}",
        stderr(&o)
    );
}

/// A budget below the space's smallest network is an error before any
/// training (nothing written), naming the budget and the smallest figure.
#[test]
fn unmeetable_budgets_fail_before_training() {
    let smallest = tiny_min_ops();
    let ops_says = format!("ops budget of 1000: the smallest needs {smallest}");
    for (budget, says) in [
        ("ops=1000", ops_says.as_str()),
        (
            "sram=300",
            "sram budget of 300: the smallest (--pick min) needs",
        ),
        ("flash=10", "flash budget of 10"),
        ("latency=1us", "latency budget of 1 us: the smallest needs"),
    ] {
        let dir = scratch("unmeetable");
        let o = mnet(&[
            "search",
            "examples/tiny.mnet",
            "--data",
            "synthetic-tiny:64",
            "--budget",
            budget,
            "-o",
            dir.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(1), "{budget}");
        assert!(stderr(&o).contains(says), "{budget}: {}", stderr(&o));
        assert!(!dir.exists(), "{budget}: nothing is written");
    }
    let o = mnet(&[
        "search",
        "examples/tiny.mnet",
        "--data",
        "synthetic-tiny:64",
        "--budget",
        "ops=lots",
        "-o",
        "/tmp/x",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is not a count"), "{}", stderr(&o));
    let o = mnet(&[
        "search",
        "examples/tiny.mnet",
        "--data",
        "synthetic-tiny:64",
        "--budget",
        "latency=100",
        "-o",
        "/tmp/x",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("`100` is not a time like 100ms"),
        "{}",
        stderr(&o)
    );
    let o = mnet(&[
        "search",
        "examples/tiny.mnet",
        "--data",
        "synthetic-tiny:64",
        "--target",
        "nosuchboard",
        "-o",
        "/tmp/x",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("unknown board `nosuchboard`"),
        "{}",
        stderr(&o)
    );
}

/// A larger weight on E[ops] never gives a network with more ops, and a
/// large one gives the space's smallest.
#[test]
fn ops_do_not_increase_with_lambda() {
    let mut ops = Vec::new();
    for lambda in ["0", "1", "20"] {
        let dir = scratch(&format!("lambda-{lambda}"));
        let o = mnet(&[
            "search",
            "examples/tiny.mnet",
            "--data",
            "synthetic-tiny:512",
            "--quick",
            "--lambda-ops",
            lambda,
            "-o",
            dir.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        ops.push(
            json(&dir.join("search.json"))["result"]["ops"]
                .as_u64()
                .unwrap(),
        );
    }
    assert!(
        ops.windows(2).all(|w| w[1] <= w[0]),
        "ops by lambda 0, 1, 20: {ops:?}"
    );
    assert_eq!(
        ops[2],
        tiny_min_ops(),
        "lambda 20 gives the smallest network: {ops:?}"
    );
}

/// The KWS space searched without a budget beyond its own, for the two
/// tight-budget tests to compare with.
const FREE_KWS: [&str; 4] = ["--lambda-ops", "0", "--retrain-epochs", "0"];

/// Tight SRAM and latency budgets on the KWS space (one free search to
/// compare with).
#[test]
fn tight_budgets_give_networks_that_fit() {
    let free = scratch("free");
    let o = search("kws", &free, &FREE_KWS);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    tight_sram_budget_gives_a_network_that_fits(&free);
    tight_latency_budget_gives_a_network_that_fits(&free);
}

/// A tight SRAM budget on the KWS space gives another network, which fits
/// by the real memory plan (arena + input + output + stack).
fn tight_sram_budget_gives_a_network_that_fits(free: &Path) {
    let tight = scratch("sram-tight");
    let args = FREE_KWS;
    let mut with = args.to_vec();
    with.extend(["--budget", "sram=16KiB"]);
    let o = search("kws", &tight, &with);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let (a, b) = (
        json(&free.join("search.json")),
        json(&tight.join("search.json")),
    );
    let sram = b["result"]["sram"].as_u64().unwrap();
    assert!(sram <= 16 * 1024, "needs {sram} bytes of SRAM");
    let arena = b["result"]["arena"].as_u64().unwrap();
    let header = std::fs::read_to_string(tight.join("kws.h")).unwrap();
    assert!(
        header.contains(&format!("#define KWS_ARENA_SIZE {arena}")),
        "the C's arena is the one checked"
    );
    assert_ne!(a["choices"], b["choices"], "the budget changes the network");
    assert!(a["result"]["sram"].as_u64().unwrap() > sram);
}

/// A tight latency budget on the KWS space gives another network, whose
/// latency by the target core's model (search.json, and `mnet stats` on
/// the written network) is within it.
fn tight_latency_budget_gives_a_network_that_fits(free: &Path) {
    let tight = scratch("latency-tight");
    let args = FREE_KWS;
    let a = json(&free.join("search.json"));
    let free_us = a["result"]["latency_us"].as_u64().unwrap();
    let space = checked(Path::new(&format!(
        "{}/examples/kws.mnet",
        env!("CARGO_MANIFEST_DIR")
    )));
    let clock = a["limits"]["clock_hz"].as_u64().unwrap();
    let min_us = (space.summary.min.instructions * 1_000_000).div_ceil(clock);
    assert!(
        free_us > 2 * min_us,
        "room for a tighter budget: {free_us} us vs {min_us} us"
    );
    let budget = free_us / 2;
    let mut with = args.to_vec();
    let b = format!("latency={budget}us");
    with.extend(["--budget", &b]);
    let o = search("kws", &tight, &with);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let t = json(&tight.join("search.json"));
    let us = t["result"]["latency_us"].as_u64().unwrap();
    assert!(us <= budget, "{us} us over the {budget} us budget");
    assert_eq!(t["limits"]["latency_us"].as_u64(), Some(budget));
    assert_ne!(a["choices"], t["choices"], "the budget changes the network");
    // The written network keeps the budget and meets it.
    let o = mnet(&["stats", tight.join("kws.mnet").to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let stats: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        stats["instructions"].as_u64(),
        t["result"]["instructions"].as_u64()
    );
    assert!(stats["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .any(|b| b["kind"] == "latency" && b["limit"].as_u64() == Some(budget)));
}

/// `npy:DIR` takes `DIR/val/` as the held-out split when it is there, and
/// 10% of each class of `DIR` otherwise.
#[test]
fn npy_data_with_a_val_folder() {
    let dir = scratch("npy");
    let data = dir.join("data");
    std::fs::create_dir_all(data.join("val")).unwrap();
    let write = |at: &Path, n: usize| {
        let x: Vec<u8> = (0..n * 64)
            .flat_map(|k| (((k * 7919) % 200) as f32 / 100.0 - 1.0).to_le_bytes())
            .collect();
        let y: Vec<u8> = (0..n)
            .flat_map(|k| ((k % 3) as i64).to_le_bytes())
            .collect();
        common::npy_file(&at.join("x.npy"), "<f4", &[n, 8, 8, 1], &x);
        common::npy_file(&at.join("y.npy"), "<i8", &[n], &y);
    };
    write(&data, 60);
    write(&data.join("val"), 21);
    let spec = format!("npy:{}", data.display());
    let run = |out: &Path| {
        mnet(&[
            "search",
            "examples/tiny.mnet",
            "--data",
            &spec,
            "--warmup-epochs",
            "1",
            "--epochs",
            "1",
            "--retrain-epochs",
            "1",
            "--batch",
            "8",
            "-o",
            out.to_str().unwrap(),
        ])
    };
    let o = run(&dir.join("a"));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let s = json(&dir.join("a/search.json"));
    assert_eq!(
        (
            s["data"]["train_samples"].as_u64(),
            s["data"]["held_out_samples"].as_u64()
        ),
        (Some(60), Some(21))
    );
    std::fs::remove_dir_all(data.join("val")).unwrap();
    let o = run(&dir.join("b"));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let s = json(&dir.join("b/search.json"));
    assert_eq!(
        (
            s["data"]["train_samples"].as_u64(),
            s["data"]["held_out_samples"].as_u64()
        ),
        (Some(54), Some(6))
    );
}

/// A search whose network does not fit after its extra epochs is exit 1
/// with the figures, and leaves nothing behind (no checkpoint, no
/// directory it made); `--allow-over-budget` writes it, marked.
#[test]
fn a_network_that_does_not_fit_is_an_error_unless_allowed() {
    let dir = scratch("over");
    let args = |extra: &[&str]| {
        let mut a = vec![
            "search",
            "examples/tiny.mnet",
            "--data",
            "synthetic-tiny:256",
            "--quick",
            "--lambda-ops",
            "0",
            "--penalty",
            "0",
            "--extra-epochs",
            "0",
            "--budget",
            "sram=1010",
            "-o",
            dir.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        mnet(&a)
    };
    let o = args(&[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("does not fit after 0 extra epochs: sram 1023 > 1010"),
        "{}",
        stderr(&o)
    );
    assert!(!dir.exists(), "a failed search leaves nothing");
    let o = args(&["--allow-over-budget"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let s = json(&dir.join("search.json"));
    assert_eq!(s["result"]["over_budget"][0], "sram 1023 > 1010");
    let text = std::fs::read_to_string(dir.join("tiny.mnet")).unwrap();
    assert!(
        text.contains("OVER BUDGET (--allow-over-budget): sram 1023 > 1010"),
        "{text}"
    );
}

/// `--qat` retrains with fake quantization: the weights file carries the
/// learned activation ranges, and the emitted model uses them.
#[test]
fn qat_retraining_writes_ranges() {
    let dir = scratch("qat");
    let o = mnet(&[
        "search",
        "examples/tiny.mnet",
        "--data",
        "synthetic-tiny:128",
        "--quick",
        "--qat",
        "-o",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let bytes = std::fs::read(dir.join("tiny.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ranges = st.names().iter().filter(|n| n.ends_with(".range")).count();
    assert!(ranges > 0, "no activation ranges in the weights");
    let s = json(&dir.join("search.json"));
    assert!(s["result"]["held_out_int8_accuracy"].as_f64().unwrap() > 0.0);
    assert!(s["result"]["qat_activation_ranges"].as_u64().unwrap() > 0);
}

/// The fewest ops of a network of examples/tiny.mnet (the exact analysis).
fn tiny_min_ops() -> u64 {
    checked(Path::new(&format!(
        "{}/examples/tiny.mnet",
        env!("CARGO_MANIFEST_DIR")
    )))
    .summary
    .min
    .ops()
}
