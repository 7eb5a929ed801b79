//! Finite-difference checks of every op's input and parameter gradients,
//! including stride 2 on odd/even and non-square maps (49x10), SAME and
//! VALID padding, depthwise, batch norm in training mode, pooling, add,
//! concat and pad; and a small network learning the synthetic data.

use mnet_compiler::analysis::resolve::{assignment, resolve, Pick};
use mnet_search::data::Dataset;
use mnet_search::engine::Net;
use mnet_search::train::{EpochMetrics, Progress, TrainConfig};
use rand::{RngExt, SeedableRng};

fn net(src: &str, batch: usize) -> Net {
    let c = mnet_compiler::check_source("t.mnet", src).unwrap_or_else(|f| panic!("{}", f.render()));
    let n = &c.networks[0];
    let fixed = resolve(&n.graph, &assignment(&n.graph, &n.summary, Pick::Min)).unwrap();
    Net::from_fixed(&fixed, batch, 3)
}

fn loss(net: &mut Net, x: &[f32], y: &[usize]) -> f64 {
    net.forward(x, true);
    net.loss(y).0 as f64
}

/// Compare analytic and central-difference gradients on up to 12 entries of
/// every parameter and of the input.
fn check(src: &str) {
    check_with(src, |_| {});
}

/// [`check`] after `edit` changes the net (e.g. adds channel masks).
fn check_with(src: &str, edit: impl FnOnce(&mut Net)) {
    check_batch(src, 3, edit);
}

/// [`check_with`] on a batch of `batch` samples.
fn check_batch(src: &str, batch: usize, edit: impl FnOnce(&mut Net)) {
    let mut n = net(src, batch);
    edit(&mut n);
    n.input_grad = true;
    // Dropout draws its mask once: the finite differences see one function.
    n.fixed_masks = true;
    let len = n.layers[0].shape.iter().product::<usize>();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let x: Vec<f32> = (0..batch * len)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    let classes = n.classes();
    let y: Vec<usize> = (0..batch).map(|k| k % classes).collect();
    // Positive biases and batch-norm shifts keep most activations away
    // from the ReLU kink at 0, where a finite difference is meaningless.
    for p in n.params.iter_mut().filter(|p| !p.grad.is_empty()) {
        if p.name.ends_with(".bias") {
            p.value
                .iter_mut()
                .for_each(|v| *v = rng.random_range(0.5f32..1.0));
        }
        // Batch norm couples the batch: a weight step moves every output,
        // so keep its outputs well inside (0, 6).
        if p.name.ends_with(".beta") {
            p.value
                .iter_mut()
                .for_each(|v| *v = rng.random_range(2.5f32..3.5));
        }
        if p.name.ends_with(".gamma") {
            p.value
                .iter_mut()
                .for_each(|v| *v = rng.random_range(0.4f32..0.6));
        }
    }
    loss(&mut n, &x, &y);
    n.backward();
    let eps = 2e-3f32;
    let close = |num: f64, ana: f64| (num - ana).abs() <= 2e-3 + 0.05 * num.abs().max(ana.abs());
    for pi in 0..n.params.len() {
        if n.params[pi].grad.is_empty() {
            continue;
        }
        let count = n.params[pi].value.len();
        for k in (0..count).step_by((count / 12).max(1)) {
            let ana = n.params[pi].grad[k] as f64;
            let orig = n.params[pi].value[k];
            n.params[pi].value[k] = orig + eps;
            let lp = loss(&mut n, &x, &y);
            n.params[pi].value[k] = orig - eps;
            let lm = loss(&mut n, &x, &y);
            n.params[pi].value[k] = orig;
            let num = (lp - lm) / (2.0 * eps as f64);
            assert!(
                close(num, ana),
                "{}[{k}]: numeric {num:.6} vs analytic {ana:.6}",
                n.params[pi].name
            );
        }
    }
    loss(&mut n, &x, &y);
    n.backward();
    let gx = n.input_grad().to_vec();
    for k in (0..x.len()).step_by((x.len() / 12).max(1)) {
        let mut xp = x.clone();
        xp[k] += eps;
        let lp = loss(&mut n, &xp, &y);
        xp[k] -= 2.0 * eps;
        let lm = loss(&mut n, &xp, &y);
        let num = (lp - lm) / (2.0 * eps as f64);
        assert!(
            close(num, gx[k] as f64),
            "input[{k}]: numeric {num:.6} vs analytic {:.6}",
            gx[k]
        );
    }
}

#[test]
fn conv_stride_two_odd_and_even_same_padding_batch_norm() {
    check("network a(x: i8[9, 6, 2]) -> [4] {\n    x = conv2d(x, out: 3, kernel: (3, 2), stride: 2) |> batch_norm |> relu6\n    x = flatten(x) |> dense(out: 4) |> softmax\n}\n");
}

#[test]
fn kws_shaped_first_layer_49x10() {
    check("network k(x: i8[49, 10, 1]) -> [3] {\n    x = conv2d(x, out: 2, kernel: (10, 4), stride: 2) |> relu\n    x = global_avg_pool(x) |> dense(out: 3)\n}\n");
}

/// Channel counts past one register block of the depthwise kernels (16)
/// with a remainder, and enough rows (batch x pixels) that the weight
/// gradients of the convs are summed over several row blocks.
#[test]
fn wide_channels_and_many_rows() {
    check_batch("network w(x: i8[21, 20, 3]) -> [3] {\n    x = conv2d(x, out: 21, kernel: 3) |> batch_norm |> relu6\n    x = depthwise_conv2d(x, kernel: 3) |> batch_norm |> relu\n    x = conv2d(x, out: 18, kernel: 1) |> relu\n    x = depthwise_conv2d(x, kernel: 3, stride: 2)\n    x = global_avg_pool(x) |> dense(out: 3)\n}\n", 4, |_| {});
}

#[test]
fn depthwise_valid_and_same_with_pools() {
    check("network d(x: i8[7, 5, 3]) -> [3] {\n    x = depthwise_conv2d(x, kernel: 3, stride: 2, padding: valid) |> batch_norm |> relu\n    x = depthwise_conv2d(x, kernel: (2, 3), padding: same)\n    x = avg_pool(x, size: 2, stride: 1, padding: same)\n    x = flatten(x) |> dense(out: 3)\n}\n");
}

#[test]
fn add_concat_pad_max_pool() {
    check("network o(x: i8[6, 5, 2]) -> [3] {\n    x = pad(x, pads: (1, 0, 0, 1))\n    x = conv2d(x, out: 4, kernel: 2, padding: valid) |> relu\n    y = depthwise_conv2d(x, kernel: 3)\n    x = add(x, y)\n    z = max_pool(x, size: 2, stride: 1, padding: same)\n    x = concat(x, z) |> global_avg_pool |> flatten |> dense(out: 3) |> softmax\n}\n");
}

/// Trains a two-block network on synthetic 4-class data for 6 epochs of
/// batch 16 (the rest of `cfg` is the caller's) and returns the trained net,
/// its history and its accuracy on held-out samples (another seed draws
/// other noise, same classes).
/// A small network on the synthetic `[12, 10, 1]` data with 4 classes.
const SMALL: &str = "use std::blocks::{conv_bn, ds_block}\n\nnetwork s(x: i8[12, 10, 1]) -> [4] {\n    x = conv_bn(x, out: 8, kernel: 3, stride: 2)\n    x = ds_block(x, out: 16)\n    x = global_avg_pool(x) |> dense(out: 4) |> softmax\n}\n";

fn learn(cfg: TrainConfig) -> (Net, Vec<EpochMetrics>, f32) {
    let mut n = net(SMALL, 16);
    let train = Dataset::synthetic(&[12, 10, 1], 4, 512, 7, 1);
    let cfg = TrainConfig {
        epochs: 6,
        batch: 16,
        ..cfg
    };
    // Every step reports the epoch so far; the last step of an epoch
    // reports what the epoch then reports.
    let mut last_step = None;
    let mut steps = 0;
    let history = mnet_search::train::train(
        &mut n,
        &mnet_search::data::TrainSet::fixed(&train),
        None,
        cfg,
        |p| match p {
            Progress::Step {
                step,
                steps: of,
                so_far,
            } => {
                steps += 1;
                assert_eq!((step, of), ((steps - 1) % 32 + 1, 32));
                last_step = Some(so_far);
            }
            Progress::Epoch(m) => {
                let s = last_step.take().expect("steps before the epoch ends");
                assert_eq!((s.epoch, s.loss, s.accuracy), (m.epoch, m.loss, m.accuracy));
            }
        },
    )
    .expect("a finite loss")
    .history;
    assert_eq!(steps, 6 * 32);
    let test = Dataset::synthetic(&[12, 10, 1], 4, 256, 7, 2);
    let (_, acc) = mnet_search::train::evaluate(&mut n, &test);
    (n, history, acc)
}

#[test]
fn a_small_network_learns_the_synthetic_data() {
    let (_, history, acc) = learn(TrainConfig {
        lr: 0.05,
        ..Default::default()
    });
    assert!(history.last().unwrap().loss < history[0].loss);
    assert!(acc >= 0.9, "accuracy {acc} after {history:?}");
}

#[test]
fn adamw_learns_the_synthetic_data_too() {
    let (_, _, acc) = learn(TrainConfig {
        lr: 0.01,
        ..TrainConfig::for_optimizer(mnet_search::train::OptimizerKind::AdamW)
    });
    assert!(acc >= 0.9, "accuracy {acc}");
}

#[test]
fn fake_quantization_lands_on_the_int8_grid() {
    let mut w: Vec<f32> = (0..64)
        .map(|k| ((k * 37 % 64) as f32 - 31.5) / 40.0)
        .collect();
    mnet_search::engine::fake_quant_weights(&mut w, 2, |k| k / 32, &mut Vec::new());
    for c in 0..2 {
        let row = &w[c * 32..(c + 1) * 32];
        let s = row.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
        for v in row {
            let q = v / s;
            assert!(
                (q - q.round()).abs() < 1e-3 && q.abs() <= 127.001,
                "{v} is not a multiple of {s}"
            );
        }
    }
    let mut x: Vec<f32> = (0..100).map(|k| k as f32 / 10.0 - 3.0).collect();
    mnet_search::engine::fake_quant_activations(&mut x, -3.0, 6.9);
    let scale = 9.9 / 255.0;
    for v in &x {
        let q = (v / scale) - (v / scale).round();
        assert!(q.abs() < 1e-3, "{v} is off the grid");
    }
}

#[test]
fn quantization_aware_training_learns_the_synthetic_data() {
    let (n, _, acc) = learn(TrainConfig {
        lr: 0.05,
        qat: true,
        ..Default::default()
    });
    let q = n.qat().expect("qat on");
    // Quantization points: the input, each relu6 (conv/bn fused before it), the pool, the logits.
    let points = q.ranges.iter().filter(|r| r.is_some()).count();
    assert_eq!(points, 1 + 3 + 1 + 1, "{:?}", q.ranges);
    assert!(acc >= 0.9, "accuracy {acc}");
}

#[test]
fn channel_masks_pass_gradients_to_inputs_and_masks() {
    check_with(
        "network m(x: i8[6, 5, 2]) -> [3] {\n    x = conv2d(x, out: 4, kernel: 3) |> relu\n    x = depthwise_conv2d(x, kernel: 3)\n    x = global_avg_pool(x) |> dense(out: 3)\n}\n",
        |n| {
            n.add_channel_mask(1, vec![0.2, 0.7, 1.0, 1.3]);
            n.add_channel_mask(4, vec![1.1, 0.4, 0.9, 0.6]);
        },
    );
}

/// Every layer of the op table, in a small network of its own: its shape
/// rules and costs (`check`, `stats`), its lowering and int8 code (the
/// pipeline emits .tflite and C), and its gradients against finite
/// differences in the training engine. A new op that misses one of these
/// fails here.
#[test]
fn every_op_of_the_table_checks_compiles_and_has_gradients() {
    use mnet_compiler::ops::{Inputs, Slot, OPS};
    for def in OPS {
        let tensors = match def.inputs {
            Inputs::Fixed(n) => vec!["y"; n],
            Inputs::Many => vec!["y", "y"],
        };
        let mut args: Vec<String> = tensors.iter().map(|t| t.to_string()).collect();
        for p in def.params.iter().filter(|p| p.default.is_none()) {
            let value = match p.slot {
                None => continue,
                Some(Slot::Out) => "4",
                Some(Slot::Kernel) => "3",
                Some(Slot::Size) => "2",
                Some(Slot::Pads) => "1",
                Some(Slot::Shape) => "[144]",
                Some(s) => panic!("{}: give a value for `{}` here", def.name, s.name()),
            };
            args.push(format!("{}: {value}", p.name));
        }
        let src = format!(
            "network t(x: i8[6, 6, 2]) -> [3] {{\n    y = conv2d(x, out: 4, kernel: 1)\n    z = {}({})\n    x = flatten(z) |> dense(out: 3)\n}}\n",
            def.name,
            args.join(", ")
        );
        let c = mnet_compiler::check_source("t.mnet", &src)
            .unwrap_or_else(|f| panic!("{}: {}\n{src}", def.name, f.render()));
        let n = &c.networks[0];
        let fixed = resolve(&n.graph, &assignment(&n.graph, &n.summary, Pick::Min)).unwrap();
        let stats = mnet_compiler::analysis::stats::fixed_stats(&fixed);
        assert!(
            stats.rows.iter().any(|r| r.op == def.name),
            "{}: no stats row",
            def.name
        );
        let opts = mnet_compiler::pipeline::Options {
            tflite: Some(Default::default()),
            c: Some(Default::default()),
        };
        let art = mnet_compiler::pipeline::compile(
            &fixed,
            mnet_compiler::pipeline::Weights::Random(1),
            None,
            &opts,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", def.name));
        assert!(art.tflite.is_some() && art.c.is_some());
        check(&src);
    }
}

/// Issue 9 item 7: a held-out set that is not a multiple of the batch (or
/// smaller than one) is evaluated whole: the same figures as one sample at
/// a time.
#[test]
fn evaluation_counts_a_short_last_batch() {
    let (mut n, _, _) = learn(TrainConfig {
        epochs: 1,
        ..TrainConfig::default()
    });
    for count in [5, 13, 40] {
        let test = Dataset::synthetic(&[12, 10, 1], 4, count, 7, 3);
        n.set_batch(32);
        let (loss, acc) = mnet_search::train::evaluate(&mut n, &test);
        n.set_batch(1);
        let (loss1, acc1) = mnet_search::train::evaluate(&mut n, &test);
        assert!(
            (loss - loss1).abs() < 1e-4 * loss1.abs().max(1.0),
            "{count}: {loss} {loss1}"
        );
        assert_eq!(acc, acc1, "{count}");
        assert!(loss > 0.0, "{count}");
    }
}

/// Issue 9 item 7: a diverging run stops at its first non-finite loss.
#[test]
fn a_diverging_run_is_an_error() {
    let mut n = net(SMALL, 16);
    let train = Dataset::synthetic(&[12, 10, 1], 4, 64, 7, 1);
    let cfg = TrainConfig {
        lr: 1e30,
        epochs: 3,
        batch: 16,
        ..TrainConfig::default()
    };
    let e = mnet_search::train::train(
        &mut n,
        &mnet_search::data::TrainSet::fixed(&train),
        None,
        cfg,
        |_| {},
    )
    .unwrap_err();
    assert!(!e.loss.is_finite() && e.epoch == 1, "{e}");
}

/// Issue 14: every sample trains each epoch (43 samples at batch 8: six
/// steps, the last of 3), the validation figures of every epoch count every
/// sample (the same as one at a time), and `Keep::Best` ends with the best
/// epoch's weights.
#[test]
fn every_sample_trains_and_validates_and_the_best_epoch_is_kept() {
    let mut n = net(SMALL, 8);
    let train = Dataset::synthetic(&[12, 10, 1], 4, 43, 7, 1);
    let val = Dataset::synthetic(&[12, 10, 1], 4, 43, 7, 2);
    let cfg = TrainConfig {
        epochs: 6,
        batch: 8,
        lr: 0.2,
        ..TrainConfig::default()
    };
    let mut steps = Vec::new();
    let trained = mnet_search::train::train(
        &mut n,
        &mnet_search::data::TrainSet::fixed(&train),
        Some(&val),
        cfg,
        |p| {
            if let Progress::Step {
                step, steps: of, ..
            } = p
            {
                steps.push((step, of));
            }
        },
    )
    .unwrap();
    assert_eq!(steps.len(), 6 * 6);
    assert!(steps.iter().all(|&(_, of)| of == 6));
    let h = &trained.history;
    let best = h
        .iter()
        .max_by(|a, b| {
            a.val_accuracy
                .partial_cmp(&b.val_accuracy)
                .unwrap()
                .then(b.val_loss.partial_cmp(&a.val_loss).unwrap())
                .then(b.epoch.cmp(&a.epoch))
        })
        .unwrap();
    assert_eq!(trained.kept_epoch, best.epoch, "{h:?}");
    n.set_batch(1);
    let (loss, acc) = mnet_search::train::evaluate(&mut n, &val);
    assert_eq!(Some(acc), best.val_accuracy);
    assert!(
        (loss - best.val_loss.unwrap()).abs() < 1e-4,
        "{loss} {best:?}"
    );
}

/// Issue 14: weights written after training load into a fresh network
/// and give the same validation loss (what `mnet train --init` starts
/// from); a file of another network is an error naming the tensor.
#[test]
fn trained_weights_load_back() {
    let mut n = net(SMALL, 16);
    let train = Dataset::synthetic(&[12, 10, 1], 4, 64, 7, 1);
    let val = Dataset::synthetic(&[12, 10, 1], 4, 37, 7, 2);
    let cfg = TrainConfig {
        epochs: 1,
        batch: 16,
        keep: mnet_search::train::Keep::Last,
        ..TrainConfig::default()
    };
    let t = mnet_search::train::train(
        &mut n,
        &mnet_search::data::TrainSet::fixed(&train),
        Some(&val),
        cfg,
        |_| {},
    )
    .unwrap();
    let bytes = mnet_search::train::weights_safetensors(&n);
    let mut fresh = net(SMALL, 16);
    fresh.load_safetensors(&bytes).unwrap();
    let (loss, _) = mnet_search::train::evaluate(&mut fresh, &val);
    assert_eq!(Some(loss), t.history[0].val_loss);
    let other = net(&SMALL.replace("out: 16", "out: 12"), 16);
    let e = other
        .clone()
        .load_safetensors(&mnet_search::train::weights_safetensors(&n));
    assert!(e.unwrap_err().contains("shape"));
}

/// Issue 14: dropout is the identity in evaluation and absent from the
/// int8 network — the compiled model is byte-identical with and without
/// it — and it changes training passes.
#[test]
fn dropout_is_the_identity_at_evaluation_and_in_int8() {
    let with = "use std::blocks::conv_bn\n\nnetwork d(x: i8[8, 8, 2]) -> [4] {\n    x = conv2d(x, out: 8, kernel: 3) |> batch_norm |> dropout(rate: 0.2) |> relu\n    y = conv_bn(x, out: 8) |> dropout\n    x = add(x, y) |> dropout(rate: 0.5)\n    x = concat(x, dropout(y)) |> global_avg_pool |> flatten |> dropout(rate: 0.3) |> dense(out: 4) |> softmax\n}\n";
    let without = "use std::blocks::conv_bn\n\nnetwork d(x: i8[8, 8, 2]) -> [4] {\n    x = conv2d(x, out: 8, kernel: 3) |> batch_norm |> relu\n    y = conv_bn(x, out: 8)\n    x = add(x, y)\n    x = concat(x, y) |> global_avg_pool |> flatten |> dense(out: 4) |> softmax\n}\n";
    let fixed = |src: &str| {
        let c =
            mnet_compiler::check_source("d.mnet", src).unwrap_or_else(|f| panic!("{}", f.render()));
        let n = &c.networks[0];
        resolve(&n.graph, &assignment(&n.graph, &n.summary, Pick::Min)).unwrap()
    };
    let (a, b) = (fixed(with), fixed(without));
    let opts = mnet_compiler::pipeline::Options {
        tflite: Some(Default::default()),
        c: Some(Default::default()),
    };
    let compile = |g| {
        mnet_compiler::pipeline::compile(
            g,
            mnet_compiler::pipeline::Weights::Random(5),
            None,
            &opts,
        )
        .unwrap()
    };
    let (ca, cb) = (compile(&a), compile(&b));
    assert_eq!(ca.tflite, cb.tflite);
    assert_eq!(ca.c.unwrap().source, cb.c.unwrap().source);
    // The same weights (dropout has none), the same evaluation.
    let (mut na, mut nb) = (Net::from_fixed(&a, 4, 3), Net::from_fixed(&b, 4, 3));
    let x: Vec<f32> = (0..4 * 128)
        .map(|i| ((i * 37 % 17) as f32 - 8.0) / 8.0)
        .collect();
    na.forward(&x, false);
    nb.forward(&x, false);
    assert_eq!(na.logits(), nb.logits());
    na.forward(&x, true);
    nb.forward(&x, true);
    assert_ne!(na.logits(), nb.logits(), "dropout acts in training");
}

/// `--zero-residual-gamma`: exactly the batch norms that feed an `add`
/// directly start at gamma 0, so each residual branch starts as the
/// identity; the others keep 1.
#[test]
fn zero_residual_gamma_zeroes_the_norms_before_adds() {
    let src = "use std::blocks::inverted_residual\nnetwork r(x: i8[8, 8, 4]) -> [3] {\n    x = conv2d(x, out: 8, kernel: 3) |> batch_norm |> relu\n    x = add(x, inverted_residual(x, expand: 16, out: 8))\n    x = add(x, inverted_residual(x, expand: 16, out: 8))\n    x = global_avg_pool(x) |> dense(out: 3)\n}\n";
    let mut n = net(src, 2);
    assert_eq!(n.zero_residual_gammas(), 2);
    let gammas: Vec<(&str, bool)> = n
        .params
        .iter()
        .filter(|p| p.name.ends_with(".gamma"))
        .map(|p| (p.name.as_str(), p.value.iter().all(|&v| v == 0.0)))
        .collect();
    let zeroed: Vec<&str> = gammas.iter().filter(|g| g.1).map(|g| g.0).collect();
    assert_eq!(
        zeroed,
        [
            "inverted_residual_0/batch_norm_2.gamma",
            "inverted_residual_1/batch_norm_2.gamma"
        ],
        "{gammas:?}"
    );
    // The network then computes its trunk alone: the branch adds 0 +
    // beta (0) at the start.
    let x: Vec<f32> = (0..2 * 8 * 8 * 4).map(|k| (k % 7) as f32 / 7.0).collect();
    n.forward(&x, false);
    assert!(n.logits().iter().all(|v| v.is_finite()));
}
