//! A training step allocates nothing once the buffers exist: every
//! activation, gradient, im2col, partial-sum and statistics buffer is kept
//! in the network and reused (counted with a global allocator that counts).
//! The one exception is inside the `gemm` crate, which allocates its
//! packing buffers on every call (its API takes no workspace); those are
//! not counted.

use mnet_compiler::analysis::resolve::resolve;
use mnet_search::engine::Net;
use mnet_search::optim::{step_groups, Adam, Optimizer, ParamGroup, Sgd};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) && !mnet_search::engine::in_gemm() {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) && !mnet_search::engine::in_gemm() {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn a_training_step_allocates_nothing() {
    steps_allocate_nothing(false);
    steps_allocate_nothing(true);
}

/// Two steps (after a first) with or without quantization-aware training.
fn steps_allocate_nothing(qat: bool) {
    // Every kind of layer the engine trains.
    let src = "network a(x: i8[20, 10, 2]) -> [3] {\n    x = pad(x, pads: (1, 0, 0, 1))\n    x = conv2d(x, out: 20, kernel: (4, 3), stride: 2) |> batch_norm |> relu6\n    y = depthwise_conv2d(x, kernel: 3) |> batch_norm |> relu\n    y = conv2d(y, out: 20, kernel: 1) |> batch_norm\n    x = add(x, y) |> relu\n    z = max_pool(x, size: 2, stride: 1, padding: same)\n    w = avg_pool(x, size: 2, stride: 1, padding: same)\n    x = concat(z, w)\n    x = depthwise_conv2d(x, kernel: 3, stride: 2) |> relu6\n    x = global_avg_pool(x) |> flatten |> dense(out: 3) |> softmax\n}\n";
    let checked =
        mnet_compiler::check_source("a.mnet", src).unwrap_or_else(|f| panic!("{}", f.render()));
    let fixed = resolve(&checked.networks[0].graph, &[]).unwrap();
    let batch = 16;
    let mut net = Net::from_fixed(&fixed, batch, 1);
    let after = net
        .layers
        .iter()
        .position(|l| l.name == "conv2d_1")
        .unwrap();
    net.add_channel_mask(after, vec![0.5; 20]);
    if qat {
        net.enable_qat();
    }
    let x: Vec<f32> = (0..batch * 20 * 10 * 2)
        .map(|k| (k % 7) as f32 * 0.1 - 0.3)
        .collect();
    let y: Vec<usize> = (0..batch).map(|k| k % 3).collect();
    // Weights by SGD, the channel mask by Adam (as a search steps them).
    let groups = [
        ParamGroup {
            prefix: "conv2d_1.mask".into(),
            optimizer: Optimizer::Adam(Adam::default()),
            lr_scale: 0.1,
        },
        ParamGroup {
            prefix: String::new(),
            optimizer: Optimizer::Sgd(Sgd {
                lr: 0.01,
                momentum: 0.9,
                nesterov: true,
                weight_decay: 1e-4,
            }),
            lr_scale: 1.0,
        },
    ];
    // One thread: rayon's own bookkeeping when it spreads work over threads is not ours to count.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        let mut step = |t: usize| {
            net.forward(&x, true);
            net.loss(&y);
            net.backward();
            step_groups(&groups, &mut net.params, 0.01, t);
        };
        step(1);
        COUNTING.store(true, Ordering::Relaxed);
        step(2);
        step(3);
        COUNTING.store(false, Ordering::Relaxed);
    });
    assert_eq!(
        ALLOCATIONS.swap(0, Ordering::Relaxed),
        0,
        "allocations in two steps (qat: {qat})"
    );
}
