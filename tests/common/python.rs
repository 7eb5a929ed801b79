//! The pinned Python environments of the oracle tests, created on first
//! use under `target/`: the reference runtimes (TFLM and LiteRT, in
//! `target/oracle-venv`) and TensorFlow (`tf.signal`, the front-end
//! oracle, in `target/tf-venv`, which `bench/train.sh` shares). Tests that
//! need one fail (never skip) when it cannot be set up.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Pinned versions (reference/toolchain.md, tflite-int8.md section 5).
pub const PACKAGES: &[&str] = &[
    "tflite-micro==0.dev20261023182759",
    "ai-edge-litert==2.3.0",
    "numpy==2.4.6",
];

/// TensorFlow for the `tf.signal` oracle (the version bench/train.sh uses).
pub const TF_PACKAGES: &[&str] = &["tensorflow-cpu==2.21.0", "numpy==2.4.6"];

/// A venv at `target/NAME` with `packages`, installed when its stamp file
/// does not list exactly them; its python.
fn venv(name: &str, packages: &[&str]) -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(name);
    let py = venv.join("bin/python");
    let stamp = venv.join("mnet-packages.txt");
    let want = packages.join("\n");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(want.as_str()) {
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status();
        assert!(
            matches!(ok, Ok(s) if s.success()),
            "cannot create a Python venv at {} (python3 with venv is needed for the oracle tests)",
            venv.display()
        );
        let mut pip = Command::new(&py);
        pip.args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(packages);
        let ok = pip.status();
        assert!(
            matches!(ok, Ok(s) if s.success()),
            "pip install {packages:?} failed"
        );
        std::fs::write(&stamp, &want).unwrap();
    }
    py
}

/// The reference runtimes' python, set up once per test process.
pub fn python() -> PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| venv("oracle-venv", PACKAGES)).clone()
}

/// TensorFlow's python, set up once per test process.
pub fn tf_python() -> PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| venv("tf-venv", TF_PACKAGES)).clone()
}
