//! Training throughput of the DS-CNN used as the TensorFlow baseline in
//! `reference/training-engines.md`: 49x10x1 input, conv 10x4 stride 2 to
//! `width` channels + BN + ReLU, `blocks` x (depthwise 3x3 + BN + ReLU,
//! 1x1 conv + BN + ReLU), global average pool, dense 12; forward + backward
//! + SGD step on random data, steady state.
//!
//! With `--mbv2`, the 96x96x1 MobileNetV2-style stack of the same reference
//! instead: 3x3 stride 2 to 8 channels, 7 inverted residual blocks
//! (expansion 6; channels 8/16/16/24/24/32/32; three stride-2 stages;
//! residual adds where shapes allow), 1x1 to 128, average pool, dense 2.
//!
//! usage: cargo run --release -p mnet-search --example train_throughput -- [--width 64] [--blocks 4] [--batch 100] [--steps 10] [--mbv2] [--profile] [--simd baseline|avx2|avx512]
//! The last line is `samples_per_sec: N`.

use mnet_compiler::analysis::resolve::resolve;
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
    let mbv2 = std::env::args().any(|a| a == "--mbv2");
    let (src, input, classes) = if mbv2 {
        let mut src = String::from("use std::blocks::{conv_bn, inverted_residual}\n\nnetwork mbv2(x: i8[96, 96, 1]) -> [2] {\n    x = conv_bn(x, out: 8, stride: 2)\n");
        let mut cin = 8;
        for (cout, stride) in [(8, 1), (16, 2), (16, 1), (24, 2), (24, 1), (32, 2), (32, 1)] {
            let block = format!(
                "inverted_residual(x, expand: {}, out: {cout}, stride: {stride})",
                cin * 6
            );
            if cout == cin && stride == 1 {
                src.push_str(&format!("    x = add(x, {block})\n"));
            } else {
                src.push_str(&format!("    x = {block}\n"));
            }
            cin = cout;
        }
        src.push_str(
            "    x = conv_bn(x, out: 128, kernel: 1) |> global_avg_pool |> dense(out: 2)\n}\n",
        );
        (src, vec![96, 96, 1], 2)
    } else {
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
        (src, vec![49, 10, 1], 12)
    };
    let checked = mnet_compiler::check_source("bench.mnet", &src)
        .unwrap_or_else(|f| panic!("{}", f.render()));
    let fixed = resolve(&checked.networks[0].graph, &[]).unwrap();
    let mut net = Net::from_fixed(&fixed, batch, 0);
    let profile = std::env::args().any(|a| a == "--profile");
    // --simd baseline|avx2|avx512 selects the level of the engine's own
    // kernels (gemm chooses its own).
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--simd") {
        let level = match args.get(i + 1).map(String::as_str) {
            Some("baseline") => mnet_search::simd::Level::Baseline,
            Some("avx2") => mnet_search::simd::Level::Avx2,
            Some("avx512") => mnet_search::simd::Level::Avx512,
            other => panic!("--simd takes baseline, avx2 or avx512, not {other:?}"),
        };
        mnet_search::simd::select(Some(level));
    }
    let data = Dataset::synthetic(&input, classes, batch, 0, 1);
    let sgd = Sgd {
        lr: 0.01,
        momentum: 0.9,
        nesterov: false,
        weight_decay: 0.0,
    };
    let step = |net: &mut Net| {
        net.forward(&data.inputs, true);
        net.loss(&data.labels);
        net.backward();
        sgd.step(&mut net.params, 0.01);
    };
    step(&mut net);
    step(&mut net);
    if profile {
        net.profile = Some(Vec::new());
    }
    let t = Instant::now();
    for _ in 0..steps {
        step(&mut net);
    }
    let secs = t.elapsed().as_secs_f64();
    if let Some(p) = &net.profile {
        println!(
            "{:<24} {:>10} {:>10}  (ms per step)",
            "layer", "forward", "backward"
        );
        for (layer, (f, b)) in net.layers.iter().zip(p) {
            let kind = format!("{:?}", layer.kind);
            let kind = kind.split([' ', '{', '(']).next().unwrap_or("");
            println!(
                "{:<24} {:>10.3} {:>10.3}",
                format!("{} {kind}", layer.name),
                f * 1e3 / steps as f64,
                b * 1e3 / steps as f64
            );
        }
    }
    let what = if mbv2 {
        "mbv2-96".to_string()
    } else {
        format!("ds-cnn width {width}, blocks {blocks}")
    };
    println!(
        "{what}, batch {batch}: {:.1} ms/step",
        secs * 1e3 / steps as f64
    );
    println!("samples_per_sec: {:.1}", (steps * batch) as f64 / secs);
}
