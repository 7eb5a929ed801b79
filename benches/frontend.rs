//! Front-end benchmark: `mnet check` + `mnet stats` on every example.
//!
//! Run with `cargo bench --bench frontend`. For each example it prints the
//! median wall time of a whole `mnet check FILE` and `mnet stats FILE`
//! process (release build, 15 runs each) and the in-process time of
//! parse + elaborate + exact analysis, then the ratio against the 100 ms
//! target of the language issue.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const RUNS: usize = 15;
const TARGET: Duration = Duration::from_millis(100);

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let exe = root.join("target/release/mnet");
    let built = Command::new("cargo")
        .args(["build", "--release", "--quiet", "--bin", "mnet"])
        .current_dir(root)
        .status()
        .expect("cargo build");
    assert!(
        built.success() && exe.exists(),
        "release build of mnet failed"
    );
    let mut files: Vec<String> = Vec::new();
    for dir in ["examples", "examples/micronets"] {
        let mut v: Vec<String> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "mnet"))
            .map(|p| p.strip_prefix(root).unwrap().to_string_lossy().into_owned())
            .collect();
        v.sort();
        files.extend(v);
    }
    println!(
        "{:<32} {:>12} {:>12} {:>14} {:>14}",
        "example", "check ms", "stats ms", "in-process ms", "worst/target"
    );
    let mut worst_all = Duration::ZERO;
    for f in &files {
        let timed = |cmd: &str| {
            median(
                (0..RUNS)
                    .map(|_| {
                        let t = Instant::now();
                        let o = Command::new(&exe)
                            .args([cmd, f])
                            .current_dir(root)
                            .output()
                            .unwrap();
                        assert!(o.status.success(), "{cmd} {f} failed");
                        t.elapsed()
                    })
                    .collect(),
            )
        };
        let check = timed("check");
        let stats = timed("stats");
        let text = std::fs::read_to_string(root.join(f)).unwrap();
        let inproc = median(
            (0..RUNS)
                .map(|_| {
                    let t = Instant::now();
                    let c = mnet_compiler::check_source(f, &text).expect("example checks");
                    std::hint::black_box(&c);
                    t.elapsed()
                })
                .collect(),
        );
        let worst = check.max(stats);
        worst_all = worst_all.max(worst);
        println!(
            "{:<32} {:>12.1} {:>12.1} {:>14.1} {:>14.2}",
            f,
            ms(check),
            ms(stats),
            ms(inproc),
            worst.as_secs_f64() / TARGET.as_secs_f64()
        );
    }
    println!("worst_ms: {:.1}", ms(worst_all));
    println!(
        "ratio_vs_100ms_target: {:.2}",
        worst_all.as_secs_f64() / TARGET.as_secs_f64()
    );
}
