//! Host inference benchmark of the int8 engines: for each `.tflite` named
//! on the command line, mnet's reference interpreter and its Cranelift JIT
//! on one thread (inferences per second over random inputs, each engine
//! run for at least a second) and the JIT's compile time (median of 5).
//!
//! `cargo bench --bench run -- A.tflite B.tflite ...` prints one line per
//! model, `NAME interp_per_s jit_per_s jit_compile_ms`, which
//! `bench/run.sh` joins with LiteRT's figures on the same files.

use mnet_compiler::back::jit;
use mnet_compiler::exec::interp;
use std::time::{Duration, Instant};

/// Runs `f` until at least `min` has passed; inferences per second.
fn rate(min: Duration, mut f: impl FnMut(usize)) -> f64 {
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < min || n < 3 {
        f(n);
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let files: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a.ends_with(".tflite"))
        .collect();
    if files.is_empty() {
        eprintln!("usage: cargo bench --bench run -- MODEL.tflite...");
        std::process::exit(1);
    }
    for path in files {
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let stem = std::path::Path::new(&path)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let model = mnet_compiler::pipeline::import(&bytes, &stem)
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let q = &model.quantized;
        let l = &q.graph.lowered;
        let in_len: usize = l.nodes[0].shape.iter().map(|&d| d as usize).product();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let inputs: Vec<Vec<i8>> = (0..16)
            .map(|_| {
                (0..in_len)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        state as i8
                    })
                    .collect()
            })
            .collect();
        let mut compile_ms: Vec<f64> = (0..5)
            .map(|_| {
                let f = jit::compile(&q.graph, &q.prepared, &jit::Options::default())
                    .unwrap_or_else(|e| panic!("{path}: {e}"));
                f.compile_time.as_secs_f64() * 1e3
            })
            .collect();
        compile_ms.sort_by(f64::total_cmp);
        let f = jit::compile(&q.graph, &q.prepared, &jit::Options::default()).unwrap();
        let min = Duration::from_secs(1);
        let mut sink = 0i64;
        let interp_rate = rate(min, |n| {
            let v = interp::run(&q.graph, &q.prepared, &inputs[n % inputs.len()]);
            sink += v[l.output][0] as i64;
        });
        let mut mem = f.memory();
        let out_len: usize = l.nodes[l.output]
            .shape
            .iter()
            .map(|&d| d as usize)
            .product();
        let mut out = vec![0i8; out_len];
        let jit_rate = rate(min, |n| {
            f.run(&mut mem, &inputs[n % inputs.len()], &mut out);
            sink += out[0] as i64;
        });
        std::hint::black_box(sink);
        println!(
            "{stem} {interp_rate:.1} {jit_rate:.1} {:.2}",
            compile_ms[compile_ms.len() / 2]
        );
    }
}
