//! The exact space analysis against brute force, and resolution round trips.

mod common;

use mnet_compiler::analysis::resolve::{assignment, resolve, Pick};
use mnet_compiler::analysis::space::Totals;
use mnet_compiler::analysis::stats::{fixed_json, fixed_stats};
use mnet_compiler::{check_source, CheckedNetwork};
use std::collections::BTreeSet;

fn checked(name: &str, src: &str) -> CheckedNetwork {
    let c = check_source(name, src).unwrap_or_else(|f| panic!("{}", f.render()));
    c.networks.into_iter().next().expect("one network")
}

/// Every full assignment of a small space, resolved and measured.
fn brute_force(net: &CheckedNetwork) -> (Totals, Totals, usize) {
    let g = &net.graph;
    let sizes: Vec<usize> = g.choices.iter().map(|c| c.options()).collect();
    let total: usize = sizes.iter().product();
    assert!(total <= 200_000, "space too large to enumerate: {total}");
    let mut min: Option<Totals> = None;
    let mut max: Option<Totals> = None;
    let mut distinct = BTreeSet::new();
    let mut structures = BTreeSet::new();
    for mut index in 0..total {
        let mut a = Vec::new();
        for s in &sizes {
            a.push((index % s) as u16);
            index /= s;
        }
        let fixed = resolve(g, &a).expect("every network of a checked space resolves");
        let t = fixed_stats(&fixed).totals;
        structures.insert(fixed.dump());
        distinct.insert(relevant_choices(net, &a));
        let lo = min.get_or_insert(t);
        lo.macs = lo.macs.min(t.macs);
        lo.params = lo.params.min(t.params);
        lo.flash_bytes = lo.flash_bytes.min(t.flash_bytes);
        lo.peak_working_bytes = lo.peak_working_bytes.min(t.peak_working_bytes);
        lo.instructions = lo.instructions.min(t.instructions);
        let hi = max.get_or_insert(t);
        hi.macs = hi.macs.max(t.macs);
        hi.params = hi.params.max(t.params);
        hi.flash_bytes = hi.flash_bytes.max(t.flash_bytes);
        hi.peak_working_bytes = hi.peak_working_bytes.max(t.peak_working_bytes);
        hi.instructions = hi.instructions.max(t.instructions);
    }
    assert!(structures.len() <= distinct.len());
    (min.unwrap(), max.unwrap(), distinct.len())
}

/// The (choice, option) pairs an assignment actually uses: the guards,
/// bindings and select choices of the nodes that are live (exist and reach
/// the output through live readers). Networks that differ only in other
/// choices (a width in a skipped block or in dead code) are one network.
fn relevant_choices(net: &CheckedNetwork, a: &[u16]) -> Vec<(u32, u16)> {
    use mnet_compiler::ir::SearchOp;
    let g = &net.graph;
    let exists = |id| {
        g.node(id)
            .guard
            .iter()
            .all(|cond| cond.mask & (1 << a[cond.choice.0 as usize]) != 0)
    };
    let mut live = vec![false; g.order.len()];
    for &id in g.order.iter().rev() {
        live[id.0.index()] = exists(id) && id == g.output;
    }
    for &id in g.order.iter().rev() {
        if !live[id.0.index()] {
            continue;
        }
        for (slot, input) in g.inputs(id).iter().enumerate() {
            let reads = match g.node(id).op {
                SearchOp::Layer(_) => true,
                SearchOp::Select { choice, .. } => a[choice.0 as usize] as usize == slot,
            };
            if reads && exists(*input) {
                live[input.0.index()] = true;
            }
        }
    }
    let mut used = BTreeSet::new();
    for &id in &g.order {
        if !live[id.0.index()] {
            continue;
        }
        let node = g.node(id);
        used.extend(node.guard.iter().map(|cond| cond.choice.0));
        used.extend(node.bindings.iter().map(|(_, c)| c.0));
        if let SearchOp::Select { choice, .. } = node.op {
            used.insert(choice.0);
        }
    }
    used.into_iter().map(|c| (c, a[c as usize])).collect()
}

const BRANCHY: &str = "\
use std::blocks::{conv_bn, ds_block}

network branchy(x: i8[16, 12, 2]) -> [5] {
    x = conv_bn(x, out: width(4, 8), kernel: choice(3, (3, 1)))
    x = choice(ds_block(x, out: width(8, 16)), conv_bn(x, out: 12, stride: 2), max_pool(x, size: 2))
    repeat 1..=3 {
        x = skippable ds_block(x, out: width(8, 12))
    }
    c = width(8, 16)
    x = conv2d(x, out: c, kernel: 1) |> relu
    x = add(x, conv_bn(x, out: c, act: relu))
    y = conv2d(x, out: 4, kernel: 1)
    x = concat(x, y) |> global_avg_pool |> flatten |> dense(out: 5)
}
";

const SHORTCUTS: &str = "\
use std::blocks::ds_block

network shortcuts(x: i8[9, 7, 3]) -> [6] {
    x = pad(x, pads: (1, 0, 1, 1))
    x = skippable ds_block(x, out: width(4..=12 step 4), stride: 2)
    x = skippable ds_block(x, out: width(4, 6), stride: (2, 1))
    x = avg_pool(x, size: choice(1, 2), padding: same)
    x = flatten(x) |> dense(out: 6) |> softmax
}
";

/// Whether an activation fuses depends on the choices: who else reads its
/// producer (an alternative, a kept or skipped block, a select that passes
/// the tensor on), and where a skipped block's shortcut pool puts a relu.
const FUSION: &str = "\
block act6(x) {
    x = relu6(x) |> conv2d(out: 4, kernel: 1)
    return x
}

block down(x) {
    x = conv2d(x, out: 4, kernel: 1, stride: 2)
    return x
}

network fusion(x: i8[8, 8, 4]) -> [4, 4, 4] {
    y = conv2d(x, out: width(4, 8), kernel: 1)
    z = relu(y)
    w = choice(conv2d(y, out: 4, kernel: 1), conv2d(z, out: 4, kernel: 1))
    a = conv2d(z, out: 4, kernel: 1)
    b = skippable act6(a)
    x = add(relu(b), w)
    x = skippable down(x) |> relu
}
";

/// Dead code: layers that reach the output only through choices (a
/// skippable add of a conv, the input of an alternative it does not take,
/// a producer whose other reader is dead, so its relu fuses).
const DEAD: &str = "\
block down(x) {
    x = conv2d(x, out: 4, kernel: 1, stride: 2)
    return x
}

network dead(x: i8[8, 8, 4]) -> [4, 4, 4] {
    y = conv2d(x, out: 4, kernel: 1)
    z = relu(y)
    d = conv2d(y, out: 4, kernel: choice(1, 3))
    x = skippable add(z, d)
    a = conv2d(x, out: width(4, 8), kernel: 1)
    p = skippable down(a)
    b = conv2d(x, out: 4, kernel: 3, stride: 2)
    x = choice(conv2d(p, out: 4, kernel: 1), b) |> relu
}
";

#[test]
fn analysis_matches_brute_force() {
    let tiny = common::read(format!("{}/examples/tiny.mnet", env!("CARGO_MANIFEST_DIR")).as_ref());
    for (name, src) in [
        ("tiny.mnet", tiny.as_str()),
        ("branchy.mnet", BRANCHY),
        ("shortcuts.mnet", SHORTCUTS),
        ("fusion.mnet", FUSION),
        ("dead.mnet", DEAD),
    ] {
        let net = checked(name, src);
        let (min, max, distinct) = brute_force(&net);
        assert_eq!(net.summary.min, min, "{name}: min totals");
        assert_eq!(net.summary.max, max, "{name}: max totals");
        assert_eq!(
            net.summary.count,
            distinct.into(),
            "{name}: distinct networks"
        );
        // The min/max picks are networks with exactly those op counts.
        for (pick, want) in [(Pick::Min, min.macs), (Pick::Max, max.macs)] {
            let fixed = resolve(&net.graph, &assignment(&net.graph, &net.summary, pick)).unwrap();
            assert_eq!(
                fixed_stats(&fixed).totals.macs,
                want,
                "{name}: --pick {pick}"
            );
        }
    }
}

/// Resolve, print, re-check: the written network has the picked stats.
#[test]
fn resolved_networks_round_trip() {
    let mut spaces = example_spaces();
    spaces.push(("branchy.mnet".into(), BRANCHY.into()));
    spaces.push(("shortcuts.mnet".into(), SHORTCUTS.into()));
    spaces.push(("fusion.mnet".into(), FUSION.into()));
    spaces.push(("dead.mnet".into(), DEAD.into()));
    for (name, src) in &spaces {
        let net = checked(name, src);
        let mut picks = vec![Pick::Min, Pick::Max];
        picks.extend((0..12).map(Pick::Random));
        for pick in picks {
            let fixed = resolve(&net.graph, &assignment(&net.graph, &net.summary, pick)).unwrap();
            let stats = fixed_stats(&fixed);
            let t = stats.totals;
            for (lo, v, hi) in [
                (net.summary.min.macs, t.macs, net.summary.max.macs),
                (net.summary.min.params, t.params, net.summary.max.params),
                (
                    net.summary.min.flash_bytes,
                    t.flash_bytes,
                    net.summary.max.flash_bytes,
                ),
                (
                    net.summary.min.instructions,
                    t.instructions,
                    net.summary.max.instructions,
                ),
                (
                    net.summary.min.peak_working_bytes,
                    t.peak_working_bytes,
                    net.summary.max.peak_working_bytes,
                ),
            ] {
                assert!(
                    lo <= v && v <= hi,
                    "{name} --pick {pick}: {v} outside {lo}..{hi}"
                );
            }
            let text = mnet_grammar::print_module(&mnet_compiler::back::mnet::to_module(
                &fixed,
                "round trip",
            ));
            let again = checked("resolved.mnet", &text);
            assert!(
                again.graph.choices.is_empty(),
                "{name} --pick {pick}: resolved file has choices"
            );
            // Instructions are predicted for the target's core: none when
            // the target was dropped.
            let want = Totals {
                instructions: if again.graph.info.target.is_some() {
                    t.instructions
                } else {
                    0
                },
                ..t
            };
            assert_eq!(
                again.summary.min, want,
                "{name} --pick {pick}: resolved totals differ\n{text}"
            );
            let mut refixed = resolve(&again.graph, &[]).unwrap();
            // Per-layer figures and names agree (the target and budgets are
            // dropped when the pick exceeds them: the instructions are
            // compared for the original target).
            refixed.info = fixed.info.clone();
            let layers = |v: serde_json::Value| v["layers"].as_array().unwrap().clone();
            let ok = layers(fixed_json(&refixed.info, &fixed_stats(&refixed)))
                == layers(fixed_json(&fixed.info, &stats));
            assert!(ok, "{name} --pick {pick}: per-layer stats differ");
            // Weights saved for the pick load into the resolved file and give
            // the same model, byte for byte.
            if matches!(pick, Pick::Min | Pick::Max | Pick::Random(0 | 1)) {
                use mnet_compiler::pipeline::{compile, Options, Weights};
                let opts = Options {
                    tflite: Some(Default::default()),
                    c: None,
                };
                let a = compile(&fixed, Weights::Random(0), None, &opts).unwrap();
                let q = &a.quantized;
                let saved = mnet_compiler::lower::io::write_weights(&q.graph.lowered, &q.float);
                let b = compile(&refixed, Weights::File(&saved), None, &opts)
                    .unwrap_or_else(|e| panic!("{name} --pick {pick}: {e}"));
                assert!(
                    a.tflite == b.tflite,
                    "{name} --pick {pick}: the resolved file compiles to another model"
                );
            }
            // Deterministic: the same pick prints the same file.
            let fixed2 = resolve(&net.graph, &assignment(&net.graph, &net.summary, pick)).unwrap();
            assert_eq!(
                text,
                mnet_grammar::print_module(&mnet_compiler::back::mnet::to_module(
                    &fixed2,
                    "round trip"
                ))
            );
        }
    }
}

/// Liveness is asked once per layer and options, not once per path: a
/// diamond of 64 levels that reaches the output only through a skippable
/// add (2^64 paths) checks, and counts two networks.
#[test]
fn dead_code_diamonds_check() {
    let mut src = String::from(
        "network n(x: i8[4, 4, 2]) -> [4, 4, 2] {\n    d = conv2d(x, out: 2, kernel: 1)\n",
    );
    for _ in 0..64 {
        src.push_str("    d = add(relu(d), relu6(d))\n");
    }
    src.push_str("    x = skippable add(x, d) |> relu\n}\n");
    let net = checked("diamond.mnet", &src);
    assert_eq!(net.summary.count, 2u32.into());
    // Skipped, the network is the relu alone.
    assert_eq!(net.summary.min.macs, 0);
    assert!(net.summary.max.macs > 0);
}

/// `BRANCHY` with alternatives and depths that keep the spatial size, so
/// one supernet holds every option.
const BRANCHY_SAME: &str = "\
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
    x = concat(x, y) |> dropout(rate: 0.2) |> global_avg_pool |> flatten |> dense(out: 5)
}
";

/// The example spaces: (file name, source).
fn example_spaces() -> Vec<(String, String)> {
    ["tiny", "kws", "ad", "vww"]
        .iter()
        .map(|n| {
            let path = format!("{}/examples/{n}.mnet", env!("CARGO_MANIFEST_DIR"));
            (format!("{n}.mnet"), common::read(path.as_ref()))
        })
        .collect()
}

fn relaxable_spaces() -> Vec<(String, String)> {
    let mut spaces = example_spaces();
    for (name, src) in [
        ("branchy_same.mnet", BRANCHY_SAME),
        ("fusion.mnet", FUSION),
        ("dead.mnet", DEAD),
    ] {
        spaces.push((name.into(), src.into()));
    }
    spaces
}

/// At one-hot probabilities the relaxed cost model gives every network's
/// exact figures (`mnet stats --pick`).
#[test]
fn relaxed_costs_are_exact_at_one_hot() {
    use mnet_compiler::analysis::relax::Relaxed;
    let mut with_latency = 0;
    for (name, src) in relaxable_spaces() {
        let net = checked(&name, &src);
        let relaxed = Relaxed::new(&net.graph).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let mut picks = vec![Pick::Min, Pick::Max];
        picks.extend((0..16).map(Pick::Random));
        for pick in picks {
            let a = assignment(&net.graph, &net.summary, pick);
            let t = fixed_stats(&resolve(&net.graph, &a).unwrap()).totals;
            let e = relaxed.eval(&relaxed.one_hot(&a)).unwrap();
            let got = (
                e.macs.value,
                e.params.value,
                e.flash_bytes.value,
                e.peak_working(),
                e.instructions.value,
            );
            let want = (
                t.macs as f64,
                t.params as f64,
                t.flash_bytes as f64,
                t.peak_working_bytes as f64,
                t.instructions as f64,
            );
            assert_eq!(
                got, want,
                "{name} --pick {pick}: (macs, params, flash, peak, instructions)"
            );
            with_latency += usize::from(t.instructions > 0);
        }
    }
    assert!(
        with_latency >= 18,
        "some example spaces target a board with a latency model"
    );
}

/// Seeded probabilities inside the simplex, every option above 5%.
fn interior(
    relaxed: &mnet_compiler::analysis::relax::Relaxed,
    g: &mnet_compiler::ir::SearchGraph,
    seed: u64,
) -> Vec<f64> {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut p = vec![0.0; relaxed.options()];
    for (c, choice) in g.choices.iter().enumerate() {
        let at = relaxed.offset(mnet_compiler::ir::ChoiceId(c as u32));
        let w: Vec<f64> = (0..choice.options())
            .map(|_| 0.2 + rng.random::<f64>())
            .collect();
        let sum: f64 = w.iter().sum();
        for (o, v) in w.iter().enumerate() {
            p[at + o] = v / sum;
        }
    }
    p
}

/// Every cost term's gradient with respect to every option's probability
/// against central differences.
#[test]
fn relaxed_cost_gradients_match_finite_differences() {
    use mnet_compiler::analysis::relax::{Expected, Relaxed};
    let terms = |e: &Expected| {
        let mut v = vec![
            e.macs.clone(),
            e.params.clone(),
            e.flash_bytes.clone(),
            e.smooth_peak_working(64.0),
            e.instructions.clone(),
        ];
        v.extend(e.working.iter().map(|(_, d)| d.clone()));
        v
    };
    for (name, src) in relaxable_spaces() {
        let net = checked(&name, &src);
        let relaxed = Relaxed::new(&net.graph).unwrap();
        for seed in 0..2 {
            let p = interior(&relaxed, &net.graph, seed);
            let at = terms(&relaxed.eval(&p).unwrap());
            // Every option of the small spaces, a stride of them in the large.
            let step = (relaxed.options() / 60).max(1);
            for i in (0..relaxed.options()).step_by(step) {
                let h = 1e-5;
                let mut q = p.clone();
                q[i] += h;
                let up = terms(&relaxed.eval(&q).unwrap());
                q[i] -= 2.0 * h;
                let down = terms(&relaxed.eval(&q).unwrap());
                for (k, d) in at.iter().enumerate() {
                    let fd = (up[k].value - down[k].value) / (2.0 * h);
                    let tol = 1e-6 * d.value.abs().max(1.0);
                    assert!(
                        (fd - d.grad[i]).abs() <= tol,
                        "{name} seed {seed}: term {k}, option {i}: analytic {} vs difference {fd}",
                        d.grad[i]
                    );
                }
            }
        }
    }
}

/// A choice whose options give a layer different spatial sizes has no
/// supernet: an error naming the layer and the options.
#[test]
fn relaxed_model_refuses_shape_changing_options() {
    use mnet_compiler::analysis::relax::Relaxed;
    let net = checked("branchy.mnet", BRANCHY);
    let e = Relaxed::new(&net.graph).unwrap_err();
    assert!(
        e.message.contains("may differ only in channels"),
        "{}",
        e.message
    );
    let net = checked("shortcuts.mnet", SHORTCUTS);
    let e = Relaxed::new(&net.graph).unwrap_err();
    assert!(
        e.message.contains("must give the same shape"),
        "{}",
        e.message
    );
}
