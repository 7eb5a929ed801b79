//! The supernet against the networks it holds: at one-hot gates its forward
//! pass is the chosen network's with the weights sliced out of it, and the
//! gradient it reports for every gate matches central differences.

use mnet_compiler::analysis::resolve::{assignment, resolve, Pick};
use mnet_compiler::CheckedNetwork;
use mnet_search::engine::{Init, Net};
use mnet_search::supernet::Supernet;
use rand::{RngExt, SeedableRng};

fn space(name: &str) -> CheckedNetwork {
    let path = format!("{}/../examples/{name}.mnet", env!("CARGO_MANIFEST_DIR"));
    let src = std::fs::read_to_string(&path).unwrap();
    checked(name, &src)
}

fn checked(name: &str, src: &str) -> CheckedNetwork {
    let c = mnet_compiler::check_source(name, src).unwrap_or_else(|f| panic!("{}", f.render()));
    c.networks.into_iter().next().unwrap()
}

/// Alternatives, depths, a kernel choice, tied widths, a searched
/// categorical width on a 1x1 conv and a concat.
const BRANCHY: &str = "\
use std::blocks::{conv_bn, ds_block}

network branchy(x: i8[16, 12, 2]) -> [5] {
    x = conv_bn(x, out: width(4, 8), kernel: choice(3, (3, 1)))
    x = choice(ds_block(x, out: width(8, 16)), conv_bn(x, out: 12), max_pool(x, size: 3, stride: 1, padding: same))
    repeat 1..=3 {
        x = skippable ds_block(x, out: width(8, 12))
    }
    c = width(8, 16)
    x = conv2d(x, out: c, kernel: 1) |> relu
    x = add(x, conv_bn(x, out: c, act: relu))
    y = conv2d(x, out: choice(4, 6), kernel: 1)
    x = concat(x, y) |> flatten |> dense(out: 5)
}
";

fn gates_of(s: &Supernet, p: &[f64]) -> Vec<f32> {
    assert_eq!(p.len(), s.options());
    p.iter().map(|&v| v as f32).collect()
}

fn input(net: &Net, seed: u64) -> Vec<f32> {
    let n = net.batch * net.layers[0].shape.iter().product::<usize>();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect()
}

/// At one-hot gates the supernet is the picked network, in training mode
/// (batch statistics) and in evaluation.
#[test]
fn one_hot_supernet_is_the_picked_network() {
    let mut spaces: Vec<(String, CheckedNetwork)> = ["tiny", "kws", "ad"]
        .iter()
        .map(|n| (n.to_string(), space(n)))
        .collect();
    spaces.push(("branchy".into(), checked("branchy.mnet", BRANCHY)));
    for (name, net) in &spaces {
        let g = &net.graph;
        let mut sup = Supernet::new(g, 3, 1, Init::Glorot).unwrap();
        let mut picks = vec![Pick::Min, Pick::Max];
        picks.extend((0..4).map(Pick::Random));
        for pick in picks {
            let a = assignment(g, &net.summary, pick);
            let fixed = resolve(g, &a).unwrap();
            let mut fixed_net = Net::from_fixed(&fixed, 3, 2);
            sup.inherit(g, &a, &fixed, &mut fixed_net).unwrap();
            let gates = gates_of(&sup, &sup.relaxed.one_hot(&a));
            sup.set_gates(&gates);
            let x = input(&fixed_net, 7);
            // Dropout draws its masks by layer position, which differs
            // between the two: with dropout, compare in evaluation only.
            let dropout = fixed
                .order
                .iter()
                .any(|&id| matches!(fixed.node(id).op, mnet_compiler::ir::Op::Dropout { .. }));
            for train in [true, false] {
                if train && dropout {
                    continue;
                }
                sup.net.forward(&x, train);
                fixed_net.forward(&x, train);
                let (a, b) = (sup.net.logits(), fixed_net.logits());
                assert_eq!(a.len(), b.len());
                let scale = b.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
                for (k, (u, v)) in a.iter().zip(b).enumerate() {
                    assert!(
                        (u - v).abs() <= 1e-4 * scale,
                        "{name} --pick {pick} (train {train}): logit {k}: supernet {u} vs network {v}"
                    );
                }
            }
        }
    }
}

/// The gradient with respect to every gate (through the masks, the mixes
/// and the variants) against central differences of the loss, at soft
/// gates.
#[test]
fn gate_gradients_match_finite_differences() {
    for (name, net) in [
        ("tiny", space("tiny")),
        ("branchy", checked("branchy.mnet", BRANCHY)),
    ] {
        let g = &net.graph;
        let mut sup = Supernet::new(g, 4, 1, Init::Glorot).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut gates = vec![0.0f32; sup.options()];
        for (c, choice) in g.choices.iter().enumerate() {
            let at = sup.relaxed.offset(mnet_compiler::ir::ChoiceId(c as u32));
            let w: Vec<f32> = (0..choice.options())
                .map(|_| 0.3 + rng.random::<f32>())
                .collect();
            let s: f32 = w.iter().sum();
            for (o, v) in w.iter().enumerate() {
                gates[at + o] = v / s;
            }
        }
        // Batch-norm shifts and biases keep activations inside (0, 6), away
        // from the relu6 kinks where a difference means nothing.
        for p in sup.net.params.iter_mut().filter(|p| !p.grad.is_empty()) {
            let range = if p.name.ends_with(".beta") {
                2.5f32..3.5
            } else if p.name.ends_with(".gamma") {
                0.4..0.6
            } else if p.name.ends_with(".bias") {
                0.5..1.0
            } else {
                continue;
            };
            p.value
                .iter_mut()
                .for_each(|v| *v = rng.random_range(range.clone()));
        }
        let x = input(&sup.net, 5);
        let y: Vec<usize> = (0..4).map(|i| i % sup.net.classes()).collect();
        // Dropout keeps one mask: the differences see one function.
        sup.net.fixed_masks = true;
        let loss = |sup: &mut Supernet, gates: &[f32]| {
            sup.set_gates(gates);
            sup.net.forward(&x, true);
            sup.net.loss(&y).0 as f64
        };
        loss(&mut sup, &gates);
        sup.net.backward();
        let analytic = sup.gate_grads(&gates);
        // f32 differences: kinks of relu6 and max pools bend them at wide
        // steps, rounding at narrow ones; the closest of three must agree.
        for i in 0..gates.len() {
            let a = analytic[i] as f64;
            let fds: Vec<f64> = [3e-3f32, 1e-3, 3e-4]
                .iter()
                .map(|&h| {
                    let mut q = gates.clone();
                    q[i] += h;
                    let up = loss(&mut sup, &q);
                    q[i] -= 2.0 * h;
                    let down = loss(&mut sup, &q);
                    (up - down) / (2.0 * h as f64)
                })
                .collect();
            let best = fds
                .iter()
                .copied()
                .min_by(|x, y| (x - a).abs().total_cmp(&(y - a).abs()))
                .unwrap();
            assert!(
                (best - a).abs() <= 0.05 * a.abs() + 2e-3,
                "{name}: gate {i}: analytic {a} vs differences {fds:?}"
            );
        }
    }
}

/// A supernet step gives the same gate gradients and weights on one
/// thread as on three (every reduction is split by rows, not by threads).
#[test]
fn supernet_steps_are_the_same_on_any_thread_count() {
    let net = checked("branchy.mnet", BRANCHY);
    let g = &net.graph;
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut sup = Supernet::new(g, 8, 1, Init::Glorot).unwrap();
            let gates: Vec<f32> = (0..sup.options())
                .map(|k| 0.2 + (k % 3) as f32 * 0.3)
                .collect();
            let x = input(&sup.net, 5);
            let y: Vec<usize> = (0..8).map(|i| i % 5).collect();
            sup.set_gates(&gates);
            sup.net.forward(&x, true);
            sup.net.loss(&y);
            sup.net.backward();
            let dg = sup.gate_grads(&gates);
            let w: Vec<Vec<f32>> = sup.net.params.iter().map(|p| p.grad.clone()).collect();
            (dg, w)
        })
    };
    assert!(run(1) == run(3), "one and three threads differ");
}
