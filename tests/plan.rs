//! The memory plan's checker catches broken plans, and scheduling lowers the
//! peak where branches meet. (Every model's plan passes the checker in
//! `tests/models.rs`.)

mod common;

use mnet_compiler::analysis::resolve::{assignment, resolve, Pick};
use mnet_compiler::plan::{check, plan, Place};

fn lowered(path: &str, pick: Pick) -> mnet_compiler::lower::Lowered {
    let text = common::read(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")).as_ref());
    let c = mnet_compiler::check_source(path, &text).unwrap_or_else(|f| panic!("{}", f.render()));
    let net = &c.networks[0];
    let fixed = resolve(&net.graph, &assignment(&net.graph, &net.summary, pick)).unwrap();
    mnet_compiler::lower::lower(&fixed).unwrap()
}

#[test]
fn the_checker_rejects_overlapping_buffers() {
    let l = lowered("examples/micronets/kws_s.mnet", Pick::Min);
    let good = plan(&l);
    check(&l, good.clone()).unwrap();
    // Put every arena tensor at offset 0: a conv then overwrites its input.
    let mut bad = good.clone();
    for p in &mut bad.places {
        if let Place::Arena { .. } = p {
            *p = Place::Arena { offset: 0 };
        }
    }
    let err = check(&l, bad).unwrap_err().to_string();
    assert!(err.contains("overwrites"), "{err}");
    // Misaligned.
    let mut bad = good.clone();
    let i = bad
        .places
        .iter()
        .position(|p| matches!(p, Place::Arena { .. }))
        .unwrap();
    bad.places[i] = Place::Arena { offset: 8 };
    assert!(check(&l, bad).is_err());
    // Writing into the caller's input.
    let mut bad = good;
    bad.places[1] = Place::Input;
    assert!(check(&l, bad).is_err());
}

#[test]
fn scheduling_branches_lowers_the_peak() {
    let l = lowered("tests/models/branches.mnet", Pick::Min);
    let as_written = plan(&l);
    let scheduled_net = mnet_compiler::lower::schedule::schedule(l.clone());
    let scheduled = plan(&scheduled_net);
    check(&scheduled_net, scheduled.clone()).unwrap();
    assert!(
        scheduled.arena_size * 3 < as_written.arena_size * 2,
        "scheduled {} vs as written {}",
        scheduled.arena_size,
        as_written.arena_size
    );
    // A chain keeps its order.
    let chain = lowered("examples/micronets/kws_s.mnet", Pick::Min);
    assert_eq!(
        mnet_compiler::lower::schedule::schedule(chain.clone()),
        chain
    );
}

/// The plan written into the .tflite for TFLM: with TFLM's lifetimes (an
/// operator's inputs and outputs alive together), two tensors alive at the
/// same step never share bytes unless one is a reshape of the other or an
/// elementwise op over an input that dies there; every offset is 16-byte
/// aligned and inside the arena it reports.
#[test]
fn the_tflm_plan_never_overlaps_live_tensors() {
    use mnet_compiler::lower::LKind;
    for (path, picks) in [
        ("tests/models/ops.mnet", vec![Pick::Min]),
        ("tests/models/branches.mnet", vec![Pick::Min]),
        ("tests/models/self_add.mnet", vec![Pick::Min]),
        ("examples/kws.mnet", (0..8).map(Pick::Random).collect()),
        ("examples/ad.mnet", (0..8).map(Pick::Random).collect()),
    ] {
        for pick in picks {
            let l = lowered(path, pick);
            let (offsets, arena) = mnet_compiler::plan::tflm_offsets(&l);
            let n = l.nodes.len();
            let mut last: Vec<usize> = (0..n).collect();
            for (i, node) in l.nodes.iter().enumerate() {
                for &j in &node.inputs {
                    last[j] = last[j].max(i);
                }
            }
            last[l.output] = n;
            let size = |i: usize| l.nodes[i].shape.iter().product::<u32>() as usize;
            for a in 0..n {
                assert_eq!(offsets[a] % 16, 0);
                assert!(
                    offsets[a] + size(a) <= arena,
                    "{path}: node {a} past the arena"
                );
                for b in a + 1..n {
                    let alive = b <= last[a];
                    let disjoint =
                        offsets[a] + size(a) <= offsets[b] || offsets[b] + size(b) <= offsets[a];
                    // b holds a's bytes: a reshape of a, or an elementwise
                    // op over a (dying there), or a chain of them.
                    let mut x = b;
                    let mut shares = false;
                    while !shares {
                        let node = &l.nodes[x];
                        let Some(&j) = node.inputs.iter().find(|&&j| offsets[j] == offsets[x])
                        else {
                            break;
                        };
                        let elementwise =
                            matches!(node.kind, LKind::Add | LKind::Act(_) | LKind::Requantize);
                        if node.kind != LKind::Reshape && !(elementwise && last[j] == x) {
                            break;
                        }
                        shares = j == a;
                        x = j;
                    }
                    assert!(
                        !alive || disjoint || shares,
                        "{path} {pick:?}: nodes {a} and {b} overlap while both alive"
                    );
                }
            }
        }
    }
}
