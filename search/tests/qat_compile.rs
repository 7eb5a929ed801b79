//! Quantization-aware training carries over to the int8 model: the
//! activation ranges `mnet train --qat` stores with the weights become the
//! quantization of `mnet compile`, and the int8 network (run by the
//! reference interpreter, which matches TFLM bit for bit) predicts what the
//! fake-quantized float network predicts.

use mnet_compiler::analysis::resolve::resolve;
use mnet_compiler::exec::interp;
use mnet_compiler::lower::QParams;
use mnet_compiler::pipeline::{quantize, Weights};
use mnet_search::data::Dataset;
use mnet_search::engine::Net;
use mnet_search::train::{evaluate, train, weights_safetensors, TrainConfig};

#[test]
fn qat_ranges_become_the_int8_quantization() {
    let src = "use std::blocks::{conv_bn, ds_block}\n\nnetwork s(x: i8[12, 10, 1]) -> [4] {\n    x = conv_bn(x, out: 8, kernel: 3, stride: 2)\n    x = ds_block(x, out: 16)\n    x = global_avg_pool(x) |> dense(out: 4) |> softmax\n}\n";
    let checked =
        mnet_compiler::check_source("s.mnet", src).unwrap_or_else(|f| panic!("{}", f.render()));
    let fixed = resolve(&checked.networks[0].graph, &[]).unwrap();
    let mut net = Net::from_fixed(&fixed, 16, 0);
    let data = Dataset::synthetic(&[12, 10, 1], 4, 512, 7, 1);
    let cfg = TrainConfig {
        epochs: 6,
        batch: 16,
        qat: true,
        ..TrainConfig::default()
    };
    train(
        &mut net,
        &mnet_search::data::TrainSet::fixed(&data),
        None,
        cfg,
        |_| {},
    )
    .expect("a finite loss");
    let test = Dataset::synthetic(&[12, 10, 1], 4, 256, 7, 2);
    let (_, float_acc) = evaluate(&mut net, &test);
    assert!(float_acc >= 0.9, "QAT float accuracy {float_acc}");

    let bytes = weights_safetensors(&net);
    let q = quantize(&fixed, Weights::File(&bytes), None).unwrap();
    // Every quantized tensor the int8 model has its own range for (input,
    // the three conv-like layers with their fused activations, the dense's
    // logits) took the trained range.
    assert_eq!(q.qat_ranges, 5);
    // The engine fuses an activation into the batch norm before it, so a
    // node's range is that of the last of its layers the engine has.
    let ranges = net.qat().unwrap().ranges.clone();
    let range_of = |names: Vec<&String>| {
        names
            .iter()
            .find_map(|name| {
                let i = net.layers.iter().position(|l| &&l.name == name)?;
                ranges[i]
            })
            .unwrap_or_else(|| panic!("no range for {names:?}"))
    };
    let l = &q.graph.lowered;
    let mut checked = 0;
    for (i, n) in l.nodes.iter().enumerate() {
        if n.kind.has_own_range() {
            let (lo, hi) = range_of(n.fused.iter().rev().chain([&n.name]).collect());
            assert_eq!(
                q.graph.qparams[i],
                QParams::from_range(lo, hi),
                "node {}",
                n.name
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 5);

    // The int8 network agrees with the fake-quantized float network.
    let prep = &q.prepared;
    let len = 12 * 10;
    let mut agree = 0;
    let mut correct = 0;
    net.set_batch(1);
    for s in 0..test.labels.len() {
        let x = &test.inputs[s * len..(s + 1) * len];
        net.forward(x, false);
        let float_pred = argmax(net.logits().iter().copied());
        let input: Vec<i8> = x.iter().map(|v| q.graph.qparams[0].quantize(*v)).collect();
        let out = interp::run(&q.graph, prep, &input);
        let int8_pred = argmax(out[l.output].iter().map(|v| *v as f32));
        agree += usize::from(float_pred == int8_pred);
        correct += usize::from(int8_pred == test.labels[s]);
    }
    let n = test.labels.len();
    eprintln!(
        "float {float_acc:.3}, int8 {:.3}, agreement {:.3}",
        correct as f32 / n as f32,
        agree as f32 / n as f32
    );
    assert!(
        agree as f32 >= 0.97 * n as f32,
        "int8 agrees on {agree} of {n}"
    );
    assert!(
        correct as f32 >= 0.88 * n as f32,
        "int8 accuracy {correct} of {n}"
    );
}

fn argmax(v: impl Iterator<Item = f32>) -> usize {
    v.enumerate()
        .fold((0, f32::MIN), |b, (i, x)| if x > b.1 { (i, x) } else { b })
        .0
}

/// A range tensor that is not `[min, max]` is an error naming it.
#[test]
fn a_bad_range_tensor_is_an_error() {
    let src = "network t(x: i8[4, 4, 1]) -> [2] {\n    x = conv2d(x, out: 2, kernel: 3) |> relu\n    x = global_avg_pool(x) |> dense(out: 2)\n}\n";
    let checked = mnet_compiler::check_source("t.mnet", src).unwrap();
    let fixed = resolve(&checked.networks[0].graph, &[]).unwrap();
    let net = Net::from_fixed(&fixed, 1, 0);
    let good = weights_safetensors(&net);
    let st = safetensors::SafeTensors::deserialize(&good).unwrap();
    for (bad, message) in [
        (vec![1.0f32, -1.0], "is not a range"),
        (vec![0.0, f32::NAN], "is not a range"),
        (vec![0.0, 1.0, 2.0], "expected F32 [2]"),
    ] {
        let data: Vec<u8> = bad.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut views: Vec<(String, safetensors::tensor::TensorView)> =
            st.tensors().into_iter().collect();
        views.push((
            "relu_0.range".into(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![bad.len()], &data)
                .unwrap(),
        ));
        let bytes = safetensors::serialize(views, None).unwrap();
        let e = quantize(&fixed, Weights::File(&bytes), None)
            .expect_err("an error")
            .to_string();
        assert!(e.contains("`relu_0.range`") && e.contains(message), "{e}");
    }
}
