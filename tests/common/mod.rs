//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod datasets;
pub mod mutate;
pub mod python;
pub mod runners;

use std::path::Path;

/// Path relative to the repository root, with `/` separators (stable names
/// in diagnostics and snapshots).
pub fn rel(path: &Path) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Write a `.npy` file (the compiler's own encoder).
pub fn npy_file(path: &Path, descr: &str, shape: &[usize], data: &[u8]) {
    std::fs::write(path, mnet_compiler::npy::encode(descr, shape, data)).unwrap();
}

/// A float32 `.npy` file's shape and values.
pub fn read_npy_f32(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let a = mnet_compiler::npy::parse(&b).unwrap();
    (
        a.shape.clone(),
        a.f32_samples(&a.shape[1..]).unwrap().concat(),
    )
}

/// Run the `mnet` binary from the repository root.
pub fn mnet(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_mnet"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run mnet")
}

pub fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
