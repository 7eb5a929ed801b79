//! Bit-exactness against TensorFlow Lite Micro: every example fixed network
//! and networks sampled from the example search spaces, with random weights,
//! quantized and written as .tflite, run on 100 random int8 inputs by the
//! Rust reference interpreter, by the generated C (host cc, -Werror), by TFLM
//! (the oracle) and by LiteRT with its
//! reference kernels. All four must agree bit for bit.

mod common;

use mnet_compiler::analysis::resolve::{assignment, resolve, Pick};
use mnet_compiler::exec::interp;
use mnet_compiler::ir::FixedGraph;
use rand::{RngExt, SeedableRng};
use std::process::Command;

const INPUTS: usize = 100;

fn fixed(path: &str, pick: Pick) -> FixedGraph {
    let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    let text = common::read(full.as_ref());
    let c = mnet_compiler::check_source(path, &text).unwrap_or_else(|f| panic!("{}", f.render()));
    let net = &c.networks[0];
    resolve(&net.graph, &assignment(&net.graph, &net.summary, pick)).unwrap()
}

fn models() -> Vec<(String, FixedGraph)> {
    let mut v = Vec::new();
    for m in ["kws_s", "kws_m", "kws_l", "ad_s", "ad_m", "ad_l"] {
        v.push((
            m.to_string(),
            fixed(&format!("examples/micronets/{m}.mnet"), Pick::Min),
        ));
    }
    for pick in [Pick::Min, Pick::Max, Pick::Random(1), Pick::Random(2)] {
        v.push((format!("tiny@{pick}"), fixed("examples/tiny.mnet", pick)));
    }
    for seed in 1..=3 {
        v.push((
            format!("kws@random:{seed}"),
            fixed("examples/kws.mnet", Pick::Random(seed)),
        ));
        v.push((
            format!("ad@random:{seed}"),
            fixed("examples/ad.mnet", Pick::Random(seed)),
        ));
    }
    v.push(("ops".to_string(), fixed("tests/models/ops.mnet", Pick::Min)));
    v.push((
        "branches".to_string(),
        fixed("tests/models/branches.mnet", Pick::Min),
    ));
    v.push(("vww@min".to_string(), fixed("examples/vww.mnet", Pick::Min)));
    for m in ["relu_after_concat", "shared_conv", "softmax_map"] {
        v.push((
            m.to_string(),
            fixed(&format!("tests/models/{m}.mnet"), Pick::Min),
        ));
    }
    v
}

#[test]
fn reference_tflm_and_litert_agree_bit_for_bit() {
    let py = common::python::python();
    let dir = std::env::temp_dir().join(format!("mnet-oracle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = format!("{}/tests/oracle/run_tflm.py", env!("CARGO_MANIFEST_DIR"));
    for (i, (name, g)) in models().into_iter().enumerate() {
        let q = mnet_compiler::quantize_random(&g, 100 + i as u64).unwrap();
        let prep = interp::prepare(&q);
        let model = dir.join(format!("m{i}.tflite"));
        std::fs::write(&model, mnet_compiler::tflite::write::write(&q, &prep)).unwrap();
        let in_len: usize = q.lowered.nodes[0]
            .shape
            .iter()
            .map(|&d| d as usize)
            .product();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(i as u64);
        let inputs: Vec<i8> = (0..INPUTS * in_len).map(|_| rng.random::<i8>()).collect();
        let mut expected = Vec::new();
        for x in inputs.chunks(in_len) {
            let values = interp::run(&q, &prep, x);
            expected.extend_from_slice(&values[q.lowered.output]);
        }
        let (inp, out, lout) = (
            dir.join(format!("m{i}.in")),
            dir.join(format!("m{i}.tflm")),
            dir.join(format!("m{i}.litert")),
        );
        std::fs::write(&inp, inputs.iter().map(|&v| v as u8).collect::<Vec<_>>()).unwrap();
        // The generated C, compiled with the host compiler, -Werror.
        let c_out = run_c(&dir.join(format!("c{i}")), &q, &prep, &inp);
        assert_eq!(
            c_out.len(),
            expected.len(),
            "{name}: the C program wrote {} values",
            c_out.len()
        );
        let cdiff = expected.iter().zip(&c_out).filter(|(a, b)| a != b).count();
        assert_eq!(
            cdiff, 0,
            "{name}: {cdiff} output values differ between mnet's reference and the generated C"
        );
        let o = Command::new(&py)
            .arg(&script)
            .arg(&model)
            .arg(&inp)
            .arg(&out)
            .arg("--litert")
            .arg(&lout)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{name}: oracle failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let tflm: Vec<i8> = std::fs::read(&out)
            .unwrap()
            .into_iter()
            .map(|b| b as i8)
            .collect();
        let litert: Vec<i8> = std::fs::read(&lout)
            .unwrap()
            .into_iter()
            .map(|b| b as i8)
            .collect();
        assert_eq!(tflm.len(), expected.len(), "{name}: output sizes differ");
        let diff = expected.iter().zip(&tflm).filter(|(a, b)| a != b).count();
        assert_eq!(
            diff,
            0,
            "{name}: {diff} of {} output values differ between mnet's reference and TFLM",
            expected.len()
        );
        let ldiff = expected.iter().zip(&litert).filter(|(a, b)| a != b).count();
        assert_eq!(ldiff, 0, "{name}: {ldiff} output values differ between mnet's reference and LiteRT (reference kernels)");
        // Not all saturated: the random weights and calibration are realistic.
        let distinct: std::collections::BTreeSet<i8> = expected.iter().copied().collect();
        assert!(
            distinct.len() > 4,
            "{name}: outputs are degenerate: {distinct:?}"
        );
        eprintln!(
            "{name}: {} outputs identical in mnet, the C, TFLM and LiteRT",
            expected.len()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Generate the C for a network, compile it with a small driver that maps
/// stdin to stdout, run it on the inputs file and return its outputs.
fn run_c(
    dir: &std::path::Path,
    q: &mnet_compiler::lower::QuantGraph,
    prep: &[interp::Prepared],
    inputs: &std::path::Path,
) -> Vec<i8> {
    std::fs::create_dir_all(dir).unwrap();
    let plan = mnet_compiler::plan::plan(&q.lowered);
    mnet_compiler::plan::check(&q.lowered, &plan).unwrap();
    let macs = mnet_compiler::back::lowered_macs(&q.lowered);
    let files = mnet_compiler::back::c::write(q, prep, &plan, &macs, Default::default());
    let name = &q.lowered.name;
    let upper = name.to_uppercase();
    std::fs::write(dir.join(format!("{name}.h")), &files.header).unwrap();
    std::fs::write(dir.join(format!("{name}.c")), &files.source).unwrap();
    let driver = format!(
        "#include <stdio.h>\n#include \"{name}.h\"\nint main(void) {{\n    static int8_t in[{upper}_INPUT_SIZE];\n    static int8_t out[{upper}_OUTPUT_SIZE];\n    while (fread(in, 1, sizeof in, stdin) == sizeof in) {{\n        if ({name}_invoke(in, out) != 0) return 1;\n        fwrite(out, 1, sizeof out, stdout);\n    }}\n    return 0;\n}}\n"
    );
    std::fs::write(dir.join("main.c"), driver).unwrap();
    let exe = dir.join("prog");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let o = Command::new(&cc)
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-o"])
        .arg(&exe)
        .arg(dir.join("main.c"))
        .arg(dir.join(format!("{name}.c")))
        .output()
        .expect("run the host C compiler");
    assert!(
        o.status.success(),
        "{name}: the generated C does not compile:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = Command::new(&exe)
        .stdin(std::fs::File::open(inputs).unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "{name}: the C program failed");
    o.stdout.into_iter().map(|b| b as i8).collect()
}
