//! Every example compiles; its IR dump, stats table and canonical print are
//! snapshots, and the canonical printer round-trips it.

mod common;

use mnet_compiler::analysis::resolve::{assignment, resolve, Pick};
use mnet_compiler::analysis::stats::{fixed_stats, render_fixed, render_space};
use mnet_compiler::check_source;

#[test]
fn examples_ir_stats_and_print() {
    insta::glob!("../examples", "**/*.mnet", |path| {
        let name = common::rel(path);
        let text = common::read(path);
        let checked = check_source(&name, &text).unwrap_or_else(|f| panic!("{}", f.render()));
        assert_eq!(checked.networks.len(), 1, "{name}: one network an example");
        let net = &checked.networks[0];
        insta::assert_snapshot!("ir", net.graph.dump(&checked.sources));
        let stats = if net.graph.choices.is_empty() {
            let fixed = resolve(&net.graph, &[]).expect("fixed network resolves");
            render_fixed(&fixed.info, &fixed_stats(&fixed))
        } else {
            render_space(&net.graph, &net.summary)
        };
        insta::assert_snapshot!("stats", stats);

        // Canonical print: a snapshot, a fixpoint, and parse(print(ast)) == ast.
        let (mut ast, diags) = mnet_grammar::parse(mnet_grammar::FileId(0), &text);
        assert!(diags.is_empty());
        let printed = mnet_grammar::print_module(&ast);
        insta::assert_snapshot!("fmt", printed);
        let (mut again, diags) = mnet_grammar::parse(mnet_grammar::FileId(0), &printed);
        assert!(diags.is_empty(), "{name}: printed form does not parse");
        ast.erase_spans();
        again.erase_spans();
        assert_eq!(ast, again, "{name}: parse(print(ast)) != ast");
        assert_eq!(mnet_grammar::print_module(&again), printed);
        assert_eq!(
            printed, text,
            "{name}: examples are kept in canonical form (mnet fmt)"
        );

        // The smallest network of a space, as source.
        if !net.graph.choices.is_empty() {
            let fixed =
                resolve(&net.graph, &assignment(&net.graph, &net.summary, Pick::Min)).unwrap();
            let module = mnet_compiler::back::mnet::to_module(&fixed, "resolved with --pick min");
            insta::assert_snapshot!("resolved_min", mnet_grammar::print_module(&module));
        }
    });
}

#[test]
fn stdlib_is_canonical_and_checks() {
    for (name, text) in mnet_compiler::front::program::STDLIB {
        let (module, diags) = mnet_grammar::parse(mnet_grammar::FileId(0), text);
        assert!(diags.is_empty(), "std::{name}");
        assert_eq!(
            &mnet_grammar::print_module(&module),
            text,
            "std::{name} is not in canonical form"
        );
        check_source(&format!("std/{name}.mnet"), text)
            .unwrap_or_else(|f| panic!("{}", f.render()));
    }
}

/// Table 4 of the MicroNets paper: Mops of the published models. The AD
/// models match exactly; the KWS models come out 1.5-1.9% above the table
/// (padded taps counted, see reference/micronets.md section 5.3).
#[test]
fn micronets_ops_agree_with_the_paper() {
    let table = [
        ("kws_l", 129.0, 0.025),
        ("kws_m", 30.6, 0.025),
        ("kws_s", 16.4, 0.025),
        ("ad_l", 129.0, 0.002),
        ("ad_m", 124.7, 0.002),
        ("ad_s", 37.5, 0.002),
    ];
    for (name, mops, tol) in table {
        let path = format!(
            "{}/examples/micronets/{name}.mnet",
            env!("CARGO_MANIFEST_DIR")
        );
        let checked = check_source(&path, &common::read(path.as_ref()))
            .unwrap_or_else(|f| panic!("{}", f.render()));
        let ops = checked.networks[0].summary.min.ops() as f64 / 1e6;
        let rel = (ops - mops).abs() / mops;
        assert!(
            rel <= tol,
            "{name}: {ops:.2} Mops vs {mops} in the paper ({:.2}% off)",
            rel * 100.0
        );
        assert_eq!(checked.networks[0].graph.info.name, name);
    }
}
