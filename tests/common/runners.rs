//! The int8 runtimes a compiled network is run on: mnet's reference
//! interpreter, the generated C compiled by the host C compiler, TFLM and
//! LiteRT's reference kernels (through the pinned Python venv). Each takes
//! a batch of inputs back to back and returns the outputs back to back, so
//! any two can be compared bit for bit; the JIT and the emulated Cortex-M
//! come as more of them.

use mnet_compiler::exec::interp;
use mnet_compiler::pipeline::Artifacts;
use std::path::Path;
use std::process::Command;

/// An int8 runtime.
pub trait Runner {
    fn name(&self) -> &'static str;
    /// Outputs for `inputs` (whole inputs back to back); `dir` is scratch.
    fn run(&self, model: &Artifacts, inputs: &[i8], dir: &Path) -> Result<Vec<i8>, String>;
}

/// mnet's reference interpreter (TFLM's kernels, in Rust).
pub struct Reference;

impl Runner for Reference {
    fn name(&self) -> &'static str {
        "mnet"
    }

    fn run(&self, m: &Artifacts, inputs: &[i8], _: &Path) -> Result<Vec<i8>, String> {
        let q = &m.quantized;
        let l = &q.graph.lowered;
        let len: usize = l.nodes[0].shape.iter().map(|&d| d as usize).product();
        let mut out = Vec::new();
        for x in inputs.chunks(len) {
            let values = interp::run(&q.graph, &q.prepared, x);
            out.extend_from_slice(&values[l.output]);
        }
        Ok(out)
    }
}

/// The network compiled by mnet's Cranelift JIT, Cranelift's verifier run
/// on its function.
pub struct Jit {
    /// The i16 pair products even where the host has VNNI.
    pub no_vnni: bool,
}

impl Runner for Jit {
    fn name(&self) -> &'static str {
        if self.no_vnni {
            "the JIT (i16 pair products)"
        } else {
            "the JIT"
        }
    }

    fn run(&self, m: &Artifacts, inputs: &[i8], _: &Path) -> Result<Vec<i8>, String> {
        let q = &m.quantized;
        let opts = mnet_compiler::back::jit::Options {
            verify: true,
            no_vnni: self.no_vnni,
        };
        let f = mnet_compiler::back::jit::compile(&q.graph, &q.prepared, &opts)
            .map_err(|e| e.to_string())?;
        let l = &q.graph.lowered;
        let len: usize = l.nodes[0].shape.iter().map(|&d| d as usize).product();
        let out_len: usize = l.nodes[l.output]
            .shape
            .iter()
            .map(|&d| d as usize)
            .product();
        let mut mem = f.memory();
        let mut out = vec![0i8; inputs.len() / len * out_len];
        for (x, y) in inputs.chunks(len).zip(out.chunks_mut(out_len)) {
            f.run(&mut mem, x, y);
        }
        Ok(out)
    }
}

/// The generated C, compiled by `cc -std=c99 -Wall -Wextra -Werror -O2` with
/// a driver that maps stdin to stdout.
pub struct HostC;

impl Runner for HostC {
    fn name(&self) -> &'static str {
        "C"
    }

    fn run(&self, m: &Artifacts, inputs: &[i8], dir: &Path) -> Result<Vec<i8>, String> {
        let files = m.c.as_ref().ok_or("the C was not emitted")?;
        let name = &m.quantized.graph.lowered.name;
        let dir = dir.join("c");
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        std::fs::write(dir.join(format!("{name}.h")), &files.header).map_err(|e| e.to_string())?;
        std::fs::write(dir.join(format!("{name}.c")), &files.source).map_err(|e| e.to_string())?;
        run_c(&dir, name, inputs)
    }
}

/// Compile `dir/NAME.c` (with `dir/NAME.h`) and a driver that maps stdin
/// to stdout, and run it on `inputs`.
pub fn run_c(dir: &Path, name: &str, inputs: &[i8]) -> Result<Vec<i8>, String> {
    let upper = name.to_uppercase();
    let driver = format!(
        "#include <stdio.h>\n#include \"{name}.h\"\nint main(void) {{\n    static int8_t in[{upper}_INPUT_SIZE];\n    static int8_t out[{upper}_OUTPUT_SIZE];\n    while (fread(in, 1, sizeof in, stdin) == sizeof in) {{\n        if ({name}_invoke(in, out) != 0) return 1;\n        fwrite(out, 1, sizeof out, stdout);\n    }}\n    return 0;\n}}\n"
    );
    std::fs::write(dir.join("main.c"), driver).map_err(|e| e.to_string())?;
    let exe = dir.join("prog");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let o = Command::new(&cc)
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-o"])
        .arg(&exe)
        .arg(dir.join("main.c"))
        .arg(dir.join(format!("{name}.c")))
        .output()
        .map_err(|e| format!("cannot run {cc}: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "the generated C does not compile:\n{}",
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    let input_file = dir.join("inputs.bin");
    std::fs::write(&input_file, bytes(inputs)).map_err(|e| e.to_string())?;
    let o = Command::new(&exe)
        .stdin(std::fs::File::open(&input_file).map_err(|e| e.to_string())?)
        .output()
        .map_err(|e| e.to_string())?;
    if !o.status.success() {
        return Err("the C program failed".into());
    }
    Ok(o.stdout.into_iter().map(|b| b as i8).collect())
}

/// Run many `.tflite` files in one Python process: each job is (model,
/// inputs.bin, outputs.bin). Returns, per job, Ok or the runtime's error.
pub fn run_python_many(
    runtime: &str,
    jobs: &[(std::path::PathBuf, std::path::PathBuf, std::path::PathBuf)],
    list: &Path,
) -> Result<Vec<Result<(), String>>, String> {
    let mut text = String::new();
    for (m, i, o) in jobs {
        text.push_str(&format!(
            "{}\t{}\t{}\n",
            m.display(),
            i.display(),
            o.display()
        ));
    }
    std::fs::write(list, text).map_err(|e| e.to_string())?;
    let script = format!("{}/tests/oracle/run.py", env!("CARGO_MANIFEST_DIR"));
    let o = Command::new(super::python::python())
        .arg(script)
        .arg(runtime)
        .arg("--many")
        .arg(list)
        .output()
        .map_err(|e| e.to_string())?;
    if !o.status.success() {
        return Err(format!(
            "{runtime} failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    // One line a job: `result: ok` or `result: error ...`.
    let out = String::from_utf8_lossy(&o.stdout);
    let results: Vec<Result<(), String>> = out
        .lines()
        .filter_map(|l| l.strip_prefix("result: "))
        .map(|l| {
            if l == "ok" {
                Ok(())
            } else {
                Err(l.to_string())
            }
        })
        .collect();
    if results.len() != jobs.len() {
        return Err(format!(
            "{runtime}: {} results for {} jobs",
            results.len(),
            jobs.len()
        ));
    }
    Ok(results)
}

/// TFLM or LiteRT (reference kernels) on the `.tflite`.
pub struct Python {
    /// `tflm` or `litert` (`tests/oracle/run.py`).
    pub runtime: &'static str,
}

impl Runner for Python {
    fn name(&self) -> &'static str {
        match self.runtime {
            "tflm" => "TFLM",
            _ => "LiteRT",
        }
    }

    fn run(&self, m: &Artifacts, inputs: &[i8], dir: &Path) -> Result<Vec<i8>, String> {
        let model = m.tflite.as_ref().ok_or("the .tflite was not emitted")?;
        let dir = dir.join(self.runtime);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let (path, input_file, output_file) = (
            dir.join("model.tflite"),
            dir.join("inputs.bin"),
            dir.join("outputs.bin"),
        );
        std::fs::write(&path, model).map_err(|e| e.to_string())?;
        std::fs::write(&input_file, bytes(inputs)).map_err(|e| e.to_string())?;
        let script = format!("{}/tests/oracle/run.py", env!("CARGO_MANIFEST_DIR"));
        let o = Command::new(super::python::python())
            .arg(script)
            .arg(self.runtime)
            .args([&path, &input_file, &output_file])
            .output()
            .map_err(|e| e.to_string())?;
        if !o.status.success() {
            return Err(format!(
                "{} failed:\n{}",
                self.name(),
                String::from_utf8_lossy(&o.stderr)
            ));
        }
        let out = std::fs::read(&output_file).map_err(|e| e.to_string())?;
        Ok(out.into_iter().map(|b| b as i8).collect())
    }
}

fn bytes(v: &[i8]) -> Vec<u8> {
    v.iter().map(|&b| b as u8).collect()
}
