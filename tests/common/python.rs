//! The pinned Python environment with the reference runtimes (TFLM and
//! LiteRT), created on first use under `target/oracle-venv`. Tests that
//! need it fail (never skip) when it cannot be set up.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Pinned versions (reference/toolchain.md, tflite-int8.md section 5).
pub const PACKAGES: &[&str] = &[
    "tflite-micro==0.dev20261023182759",
    "ai-edge-litert==2.3.0",
    "numpy==2.4.6",
];

/// The venv's python, set up once per test process.
pub fn python() -> PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/oracle-venv");
        let py = venv.join("bin/python");
        let stamp = venv.join("mnet-packages.txt");
        let want = PACKAGES.join("\n");
        if std::fs::read_to_string(&stamp).ok().as_deref() != Some(want.as_str()) {
            let ok = Command::new("python3").args(["-m", "venv"]).arg(&venv).status();
            assert!(
                matches!(ok, Ok(s) if s.success()),
                "cannot create a Python venv at {} (python3 with venv is needed for the TFLM oracle tests)",
                venv.display()
            );
            let mut pip = Command::new(&py);
            pip.args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"]).args(PACKAGES);
            let ok = pip.status();
            assert!(matches!(ok, Ok(s) if s.success()), "pip install {PACKAGES:?} failed");
            std::fs::write(&stamp, &want).unwrap();
        }
        py
    })
    .clone()
}
