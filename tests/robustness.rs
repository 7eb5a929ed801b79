//! Hostile input never panics: thousands of mutated and truncated versions of
//! the examples, the standard library and the bad corpus, and random bytes,
//! either check or fail with at least one diagnostic that renders.

mod common;

use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::panic::{catch_unwind, AssertUnwindSafe};

fn corpus() -> Vec<String> {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut files = Vec::new();
    for dir in ["examples", "examples/micronets", "tests/bad"] {
        let mut entries: Vec<_> = std::fs::read_dir(format!("{root}/{dir}"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "mnet"))
            .collect();
        entries.sort();
        files.extend(entries.iter().map(|p| common::read(p)));
    }
    files.extend(
        mnet_compiler::front::program::STDLIB
            .iter()
            .map(|(_, t)| t.to_string()),
    );
    files
}

fn must_not_panic(text: &str) {
    let result = catch_unwind(AssertUnwindSafe(|| {
        match mnet_compiler::check_source("fuzz.mnet", text) {
            Ok(_) => {}
            Err(f) => {
                assert!(!f.diagnostics.is_empty(), "a failure without a diagnostic");
                let rendered = f.render();
                assert!(rendered.contains("error"), "diagnostics render");
            }
        }
    }));
    if result.is_err() {
        let path = std::env::temp_dir().join("mnet-panic.mnet");
        std::fs::write(&path, text).unwrap();
        panic!("check_source panicked; input saved to {}", path.display());
    }
}

#[test]
fn mutated_sources_never_panic() {
    let corpus = corpus();
    let mut rng = ChaCha8Rng::seed_from_u64(2026);
    for i in 0..4000 {
        let base = &corpus[i % corpus.len()];
        must_not_panic(&common::mutate::text(&mut rng, base));
    }
}

#[test]
fn truncations_never_panic() {
    for text in corpus() {
        let mut cuts: Vec<usize> = (0..text.len()).step_by(7).collect();
        cuts.push(text.len());
        for cut in cuts {
            if text.is_char_boundary(cut) {
                must_not_panic(&text[..cut]);
            }
        }
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for _ in 0..1000 {
        let len = rng.random_range(0..300);
        let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        must_not_panic(&String::from_utf8_lossy(&bytes));
    }
    // Pathological shapes.
    must_not_panic(&"(".repeat(100_000));
    must_not_panic(&format!(
        "network n(x: i8[1]) {{ x = {}x{} }}",
        "relu(".repeat(5000),
        ")".repeat(5000)
    ));
    must_not_panic("network n(x: i8[8, 8, 1]) { repeat 1000 { repeat 1000 { x = relu(x) } } }");
    must_not_panic("network n(x: i8[65536, 65536, 1]) { x = conv2d(x, out: 1048576, kernel: 1) }");
    must_not_panic(
        "network n(x: i8[8, 8, 1]) { x = conv2d(x, out: width(1..=100000000), kernel: 1) }",
    );
    let _ = rng.next_u32();
}

/// A block may call itself through a block passed to it that changes: the
/// recursion ends, and checks; the same call repeated is an error.
#[test]
fn recursion_that_ends_by_a_parameter_checks() {
    let src = "\
block last(x, f, g) {
    x = relu(x)
    return x
}

block step(x, f, g) {
    x = f(x, g, g)
    return x
}

network n(x: i8[4, 4, 2]) -> [4, 4, 2] {
    x = conv2d(x, out: 2, kernel: 1)
    x = step(x, step, last)
}
";
    let c =
        mnet_compiler::check_source("ends.mnet", src).unwrap_or_else(|f| panic!("{}", f.render()));
    assert_eq!(c.networks[0].summary.count, 1u32.into());
    let forever = src.replace("x = f(x, g, g)", "x = f(x, f, g)");
    let Err(f) = mnet_compiler::check_source("forever.mnet", &forever) else {
        panic!("a recursion that repeats itself is an error");
    };
    assert!(
        f.render().contains("calls itself with the same arguments"),
        "{}",
        f.render()
    );
}
