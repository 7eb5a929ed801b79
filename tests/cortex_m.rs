//! The generated C compiles for a Cortex-M4 with arm-none-eabi-gcc -Werror,
//! and its static RAM is exactly the planned arena. Records .text/.data/.bss.
//! (`scripts/test.sh` installs gcc-arm-none-eabi on Debian.)

mod common;

use mnet_compiler::analysis::resolve::{assignment, resolve, Pick};
use mnet_compiler::exec::interp;
use std::process::Command;

fn compile_for_m4(path: &str, seed: u64) -> (String, usize, [u64; 3]) {
    let text = common::read(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")).as_ref());
    let c = mnet_compiler::check_source(path, &text).unwrap_or_else(|f| panic!("{}", f.render()));
    let net = &c.networks[0];
    let fixed = resolve(&net.graph, &assignment(&net.graph, &net.summary, Pick::Min)).unwrap();
    let q = mnet_compiler::quantize_random(&fixed, seed).unwrap();
    let prep = interp::prepare(&q);
    let plan = mnet_compiler::plan::plan(&q.lowered);
    let macs = mnet_compiler::back::lowered_macs(&q.lowered);
    let files = mnet_compiler::back::c::write(&q, &prep, &plan, &macs, Default::default());
    let dir = std::env::temp_dir().join(format!("mnet-m4-{}-{seed}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let name = &q.lowered.name;
    std::fs::write(dir.join(format!("{name}.h")), &files.header).unwrap();
    std::fs::write(dir.join(format!("{name}.c")), &files.source).unwrap();
    let obj = dir.join(format!("{name}.o"));
    let o = Command::new("arm-none-eabi-gcc")
        .args(["-std=c99", "-mcpu=cortex-m4", "-mthumb", "-O2", "-Wall", "-Wextra", "-Werror", "-c", "-o"])
        .arg(&obj)
        .arg(dir.join(format!("{name}.c")))
        .output()
        .unwrap_or_else(|e| panic!("arm-none-eabi-gcc is needed (apt-get install gcc-arm-none-eabi; scripts/test.sh does it): {e}"));
    assert!(
        o.status.success(),
        "{path}: arm-none-eabi-gcc failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = Command::new("arm-none-eabi-size")
        .arg(&obj)
        .output()
        .expect("arm-none-eabi-size");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let nums: Vec<u64> = out
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .take(3)
        .map(|v| v.parse().unwrap())
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    (name.clone(), plan.arena_size, [nums[0], nums[1], nums[2]])
}

#[test]
fn generated_c_compiles_for_cortex_m4() {
    for (i, path) in [
        "examples/micronets/kws_s.mnet",
        "examples/micronets/kws_m.mnet",
        "examples/micronets/kws_l.mnet",
        "examples/micronets/ad_s.mnet",
        "examples/micronets/ad_m.mnet",
        "examples/micronets/ad_l.mnet",
        "examples/tiny.mnet",
        "tests/models/ops.mnet",
    ]
    .iter()
    .enumerate()
    {
        let (name, arena, [text, data, bss]) = compile_for_m4(path, i as u64);
        eprintln!("{name}: .text {text} .data {data} .bss {bss} (arena {arena})");
        assert_eq!(
            bss as usize, arena,
            "{name}: static RAM is the arena and nothing else"
        );
        assert_eq!(data, 0, "{name}: no initialised RAM");
        assert!(text > 0);
    }
}
