//! The memory planner against its independent checker, over many networks
//! sampled from the example search spaces; and the checker catches broken
//! plans.

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
fn plans_of_sampled_networks_pass_the_checker() {
    let mut checked = 0;
    for space in [
        "examples/kws.mnet",
        "examples/ad.mnet",
        "examples/vww.mnet",
        "examples/tiny.mnet",
    ] {
        for seed in 0..60 {
            let l = lowered(space, Pick::Random(seed));
            let p = plan(&l);
            check(&l, &p).unwrap_or_else(|e| panic!("{space} random:{seed}: {e}"));
            checked += 1;
        }
    }
    for f in [
        "examples/micronets/kws_l.mnet",
        "examples/micronets/ad_l.mnet",
        "tests/models/ops.mnet",
    ] {
        let l = lowered(f, Pick::Min);
        check(&l, &plan(&l)).unwrap_or_else(|e| panic!("{f}: {e}"));
        checked += 1;
    }
    assert_eq!(checked, 243);
}

#[test]
fn the_checker_rejects_overlapping_buffers() {
    let l = lowered("examples/micronets/kws_s.mnet", Pick::Min);
    let good = plan(&l);
    check(&l, &good).unwrap();
    // Put every arena tensor at offset 0: a conv then overwrites its input.
    let mut bad = good.clone();
    for p in &mut bad.places {
        if let Place::Arena { .. } = p {
            *p = Place::Arena { offset: 0 };
        }
    }
    let err = check(&l, &bad).unwrap_err();
    assert!(err.contains("overwrites"), "{err}");
    // Misaligned.
    let mut bad = good.clone();
    let i = bad
        .places
        .iter()
        .position(|p| matches!(p, Place::Arena { .. }))
        .unwrap();
    bad.places[i] = Place::Arena { offset: 8 };
    assert!(check(&l, &bad).is_err());
    // Writing into the caller's input.
    let mut bad = good;
    bad.places[1] = Place::Input;
    assert!(check(&l, &bad).is_err());
}

#[test]
fn scheduling_branches_lowers_the_peak() {
    let l = lowered("tests/models/branches.mnet", Pick::Min);
    let as_written = plan(&l);
    let scheduled_net = mnet_compiler::plan::schedule(l.clone());
    let scheduled = plan(&scheduled_net);
    check(&scheduled_net, &scheduled).unwrap();
    assert!(
        scheduled.arena_size * 3 < as_written.arena_size * 2,
        "scheduled {} vs as written {}",
        scheduled.arena_size,
        as_written.arena_size
    );
    // A chain keeps its order.
    let chain = lowered("examples/micronets/kws_s.mnet", Pick::Min);
    assert_eq!(mnet_compiler::plan::schedule(chain.clone()), chain);
}
