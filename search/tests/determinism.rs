//! Training runs are reproducible bit for bit: whatever the number of
//! threads, and at every instruction-set level the kernels can run at on
//! this CPU (baseline, AVX2, AVX-512).

use mnet_compiler::analysis::resolve::resolve;
use mnet_search::engine::Net;
use mnet_search::optim::Sgd;
use mnet_search::simd;
use rand::{RngExt, SeedableRng};

/// Weights after three SGD steps of a network with channel counts past a
/// register block (20) and enough rows (8 x 16 x 16) for split reductions.
fn train(threads: usize) -> Vec<Vec<f32>> {
    let src = "network d(x: i8[16, 16, 2]) -> [3] {\n    x = conv2d(x, out: 20, kernel: 3) |> batch_norm |> relu6\n    x = depthwise_conv2d(x, kernel: 3) |> batch_norm |> relu\n    x = conv2d(x, out: 20, kernel: 1) |> batch_norm |> relu\n    x = depthwise_conv2d(x, kernel: 3, stride: 2)\n    x = global_avg_pool(x) |> dense(out: 3)\n}\n";
    let checked = mnet_compiler::check_source("d.mnet", src).unwrap();
    let fixed = resolve(&checked.networks[0].graph, &[]).unwrap();
    let batch = 8;
    let mut net = Net::from_fixed(&fixed, batch, 5);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let x: Vec<f32> = (0..batch * 16 * 16 * 2)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    let y: Vec<usize> = (0..batch).map(|k| k % 3).collect();
    let sgd = Sgd {
        lr: 0.05,
        momentum: 0.9,
        nesterov: false,
        weight_decay: 1e-4,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        for _ in 0..3 {
            net.forward(&x, true);
            net.loss(&y);
            net.backward();
            sgd.step(&mut net.params, 0.05);
        }
    });
    net.params.iter().map(|p| p.value.clone()).collect()
}

#[test]
fn same_weights_for_any_thread_count_and_instruction_set() {
    let reference = train(1);
    for threads in [2, 3] {
        assert!(train(threads) == reference, "{threads} threads differ");
    }
    let levels = simd::available();
    for &level in &levels {
        simd::select(Some(level));
        let at = train(2);
        simd::select(None);
        assert!(at == reference, "{level:?} differs");
    }
    eprintln!("levels compared: {levels:?}");
}
