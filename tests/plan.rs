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
