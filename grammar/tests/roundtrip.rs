//! Parser and printer: the round-trip property on hand-written inputs.
use mnet_grammar::{parse, print_module, FileId, Sources};

fn roundtrip(src: &str) -> String {
    let (mut m, d) = parse(FileId(0), src);
    let mut sources = Sources::new();
    sources.add("t.mnet", src);
    assert!(d.is_empty(), "{}", sources.render(&d));
    let printed = print_module(&m);
    let (mut m2, d2) = parse(FileId(0), &printed);
    assert!(d2.is_empty(), "reparse of:\n{printed}\n{d2:?}");
    m.erase_spans();
    m2.erase_spans();
    assert_eq!(m, m2, "printed:\n{printed}");
    assert_eq!(print_module(&m2), printed, "printing is not idempotent");
    printed
}

#[test]
fn prints_canonical_form() {
    let src = "// header\nuse std::blocks::{conv_bn,ds_block}\nuse std::blocks::x\n\nnetwork n(x: i8[49,10,1])->[12]{\n  target stm32f446re // board\n  budget ops<=40M\n\n\n  // first layer\n  x = conv_bn(x, out: width(4..=276 step 4), kernel: (10,4)) |> relu6\n  repeat 2..=4 { x = skippable ds_block(x, out: choice(8, 16)) }\n  y = (3,)\n  x = x |> skippable f(a: 1 KiB)\n  // end\n}\n";
    let printed = roundtrip(src);
    insta::assert_snapshot!(printed);
}

#[test]
fn reports_several_items_with_errors() {
    let src = "network a(x: i8[1]) {\n  x = conv2d(x, out=8)\n}\n\nnetwork b(x: i8[1]) {\n  let y = 3\n}\nblock c(x) { x = f(1..4) }\n";
    let (_, d) = parse(FileId(0), src);
    let mut sources = Sources::new();
    sources.add("bad.mnet", src);
    insta::assert_snapshot!(sources.render(&d));
}
