//! Training throughput of the DS-CNN used as the TensorFlow baseline in
//! `reference/training-engines.md`: 49x10x1 input, conv 10x4 stride 2 to
//! `width` channels + BN + ReLU, `blocks` x (depthwise 3x3 + BN + ReLU,
//! 1x1 conv + BN + ReLU), global average pool, dense 12; forward + backward
//! + SGD step on random data, steady state.
//!
//! usage: cargo run --release -p mnet-search --example train_throughput -- [--width 64] [--blocks 4] [--batch 100] [--steps 10]
//! The last line is `samples_per_sec: N`.

use mnet_compiler::resolve::{resolve, Pick};
use mnet_search::data::Dataset;
use mnet_search::engine::Net;
use mnet_search::optim::Sgd;
use std::time::Instant;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a number"))
        })
        .unwrap_or(default)
}

fn main() {
    let (width, blocks, batch, steps) = (
        arg("--width", 64),
        arg("--blocks", 4),
        arg("--batch", 100),
        arg("--steps", 10),
    );
    let mut src = format!(
        "network dscnn(x: i8[49, 10, 1]) -> [12] {{\n    x = conv2d(x, out: {width}, kernel: (10, 4), stride: 2) |> batch_norm |> relu\n"
    );
    for _ in 0..blocks {
        src.push_str("    x = depthwise_conv2d(x, kernel: 3) |> batch_norm |> relu\n");
        src.push_str(&format!(
            "    x = conv2d(x, out: {width}, kernel: 1) |> batch_norm |> relu\n"
        ));
    }
    src.push_str("    x = global_avg_pool(x) |> dense(out: 12)\n}\n");
    let checked = mnet_compiler::check_source("dscnn.mnet", &src)
        .unwrap_or_else(|f| panic!("{}", f.render()));
    let fixed = resolve(&checked.networks[0].graph, &[]).unwrap();
    let _ = Pick::Min;
    let mut net = Net::from_fixed(&fixed, batch, 0);
    let data = Dataset::synthetic(&[49, 10, 1], 12, batch, 0, 1);
    let sgd = Sgd {
        lr: 0.01,
        momentum: 0.9,
        nesterov: false,
        weight_decay: 0.0,
    };
    let mut step = || {
        net.forward(&data.inputs, true);
        net.loss(&data.labels);
        net.backward();
        sgd.step(&mut net.params, 0.01);
    };
    step();
    step();
    let t = Instant::now();
    for _ in 0..steps {
        step();
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "width {width}, blocks {blocks}, batch {batch}: {:.1} ms/step",
        secs * 1e3 / steps as f64
    );
    println!("samples_per_sec: {:.1}", (steps * batch) as f64 / secs);
}
