//! Supernet training throughput against the largest network the supernet
//! holds: the same space (default `examples/kws.mnet`), the same batch, one
//! weight step each (forward, backward, SGD; the supernet also sets its
//! gates from a soft sample and collects their gradients), alternating
//! runs, steady state.
//!
//! usage: cargo run --release -p mnet-search --example supernet_throughput -- [SPACE.mnet] [--batch 32] [--steps 10]
//! Prints `supernet_samples_per_sec`, `max_network_samples_per_sec` and their `ratio`.

use mnet_compiler::analysis::resolve::{assignment, resolve, Pick};
use mnet_search::data::Dataset;
use mnet_search::engine::{Init, Net};
use mnet_search::optim::Sgd;
use mnet_search::supernet::Supernet;
use rand::{RngExt, SeedableRng};
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
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .iter()
        .skip(1)
        .find(|a| a.ends_with(".mnet"))
        .cloned()
        .unwrap_or_else(|| format!("{}/../examples/kws.mnet", env!("CARGO_MANIFEST_DIR")));
    let (batch, steps) = (arg("--batch", 32), arg("--steps", 10));
    let src = std::fs::read_to_string(&path).expect("read the space");
    let checked =
        mnet_compiler::check_source(&path, &src).unwrap_or_else(|f| panic!("{}", f.render()));
    let net = &checked.networks[0];
    let g = &net.graph;
    let fixed = resolve(g, &assignment(g, &net.summary, Pick::Max)).unwrap();
    let shape: Vec<usize> = g.info.input_shape.iter().map(|&d| d as usize).collect();
    let mut fixed_net = Net::from_fixed(&fixed, batch, 0);
    let classes = fixed_net.classes();
    let data = Dataset::synthetic(&shape, classes, batch, 0, 1);
    let mut sup = Supernet::new(g, batch, 0, Init::Glorot).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let mut gates = vec![0.0f32; sup.options()];
    for (c, choice) in g.choices.iter().enumerate() {
        let at = sup.relaxed.offset(mnet_compiler::ir::ChoiceId(c as u32));
        let w: Vec<f32> = (0..choice.options())
            .map(|_| rng.random::<f32>() + 0.1)
            .collect();
        let s: f32 = w.iter().sum();
        for (o, v) in w.iter().enumerate() {
            gates[at + o] = v / s;
        }
    }
    let sgd = Sgd {
        lr: 0.01,
        momentum: 0.9,
        nesterov: true,
        weight_decay: 1e-4,
    };
    let fixed_step = |n: &mut Net| {
        n.forward(&data.inputs, true);
        n.loss(&data.labels);
        n.backward();
        sgd.step(&mut n.params, 0.01);
    };
    let super_step = |s: &mut Supernet| {
        s.set_gates(&gates);
        s.net.forward(&data.inputs, true);
        s.net.loss(&data.labels);
        s.net.backward();
        s.gate_grads(&gates);
        sgd.step(&mut s.net.params, 0.01);
    };
    fixed_step(&mut fixed_net);
    super_step(&mut sup);
    let (mut tf, mut ts) = (0.0, 0.0);
    for _ in 0..steps {
        let t = Instant::now();
        fixed_step(&mut fixed_net);
        tf += t.elapsed().as_secs_f64();
        let t = Instant::now();
        super_step(&mut sup);
        ts += t.elapsed().as_secs_f64();
    }
    let (fs, ss) = ((steps * batch) as f64 / tf, (steps * batch) as f64 / ts);
    println!("space {path}, batch {batch}, {steps} steps each");
    println!("max_network_samples_per_sec: {fs:.1}");
    println!("supernet_samples_per_sec: {ss:.1}");
    println!("ratio: {:.2}", fs / ss);
}
