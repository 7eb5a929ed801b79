//! The corpus of bad inputs: each must fail `check` with diagnostics, whose
//! rendered text (what the user sees) is a snapshot.

mod common;

#[test]
fn bad_inputs_render_diagnostics() {
    insta::glob!("bad/*.mnet", |path| {
        let name = common::rel(path);
        let text = common::read(path);
        match mnet_compiler::check_source(&name, &text) {
            Ok(_) => panic!("{name} should fail to check"),
            Err(f) => {
                assert!(!f.diagnostics.is_empty());
                insta::assert_snapshot!(f.render());
            }
        }
    });
}
