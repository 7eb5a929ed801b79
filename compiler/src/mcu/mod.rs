//! Build generated C for an emulated Cortex-M and run it there: the
//! `m4`/`m7` test runners, `bench/m4.sh` and the latency model's
//! measurements all come through here.
//!
//! [`build`] compiles a network's C with arm-none-eabi-gcc together with a
//! small bare-metal harness (vector table, linker script, newlib's rdimon
//! semihosting) and the inputs as constant arrays; [`run`] starts it in
//! `qemu-system-arm` on an mps2 board with mnet's TCG plugin (`insncount`),
//! which counts executed instructions exactly and records the count at each
//! call of a marker function. The harness calls the marker around every
//! inference (and, with [`BuildOptions::per_layer`], after every step of the
//! network through the generated `MNET_LAYER_HOOK`), paints the stack to
//! measure its depth, and prints the outputs in hex over semihosting.

use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PLUGIN_C: &str = include_str!("harness/insncount.c");
const PLUGIN_H: &str = include_str!("harness/qemu-plugin.h");
const STARTUP_C: &str = include_str!("harness/startup.c");
const LINKER: &str = include_str!("harness/cm.ld");

/// An emulated core: its compiler flags and QEMU board.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Core {
    /// Cortex-M4F on `mps2-an386`.
    M4,
    /// Cortex-M7 on `mps2-an500`.
    M7,
}

impl Core {
    pub fn name(self) -> &'static str {
        match self {
            Core::M4 => "cortex-m4",
            Core::M7 => "cortex-m7",
        }
    }

    /// arm-none-eabi-gcc's target flags.
    pub fn gcc_flags(self) -> &'static [&'static str] {
        match self {
            Core::M4 => &[
                "-mcpu=cortex-m4",
                "-mthumb",
                "-mfloat-abi=hard",
                "-mfpu=fpv4-sp-d16",
            ],
            Core::M7 => &[
                "-mcpu=cortex-m7",
                "-mthumb",
                "-mfloat-abi=hard",
                "-mfpu=fpv5-d16",
            ],
        }
    }

    /// QEMU's machine.
    pub fn machine(self) -> &'static str {
        match self {
            Core::M4 => "mps2-an386",
            Core::M7 => "mps2-an500",
        }
    }
}

/// Why a build or run failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{tool}` is needed ({hint}): {message}")]
    Missing {
        tool: String,
        hint: &'static str,
        message: String,
    },
    #[error("{step} failed:\n{output}")]
    Failed { step: String, output: String },
    #[error("the emulated run took longer than {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the emulator's output is not what the harness prints: {0}")]
    Output(String),
}

const HINT: &str = "Debian: apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm; scripts/test.sh installs them";

/// What to build.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    pub core: Core,
    /// Call the marker after every step (per-layer counts; the total then
    /// includes the markers' own instructions).
    pub per_layer: bool,
    /// `-O2` unless told otherwise.
    pub opt: &'static str,
    /// Bytes below the stack pointer painted to measure the stack.
    pub stack_paint: u32,
    /// More `-D` flags for the network's C (e.g. `MNET_PORTABLE`).
    pub defines: Vec<String>,
}

impl Default for BuildOptions {
    fn default() -> BuildOptions {
        BuildOptions {
            core: Core::M4,
            per_layer: false,
            opt: "-O2",
            stack_paint: 16 << 10,
            defines: Vec::new(),
        }
    }
}

/// Section sizes of the network's own object (not the harness's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Sizes {
    pub text: u64,
    pub rodata: u64,
    pub data: u64,
    pub bss: u64,
}

/// A built firmware.
#[derive(Clone, Debug)]
pub struct Build {
    pub elf: PathBuf,
    pub dir: PathBuf,
    pub core: Core,
    pub sizes: Sizes,
    pub inputs: usize,
    pub output_size: usize,
    pub per_layer: bool,
    mark: u64,
}

/// What a run measured.
#[derive(Clone, Debug)]
pub struct Run {
    /// The outputs, one per input.
    pub outputs: Vec<Vec<i8>>,
    /// Instructions of each inference (marker overhead removed).
    pub instructions: Vec<u64>,
    /// With per-layer markers: the instructions of each step of each
    /// inference, in the network's step order (marker overhead removed).
    pub per_layer: Vec<Vec<u64>>,
    /// Deepest stack of an inference, in bytes (from the painted stack).
    pub stack: u64,
}

fn tool(name: &str) -> Command {
    Command::new(name)
}

fn output(step: &str, cmd: &mut Command) -> Result<std::process::Output, Error> {
    let prog = cmd.get_program().to_string_lossy().into_owned();
    let o = cmd.output().map_err(|e| Error::Missing {
        tool: prog,
        hint: HINT,
        message: e.to_string(),
    })?;
    if !o.status.success() {
        return Err(Error::Failed {
            step: step.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        });
    }
    Ok(o)
}

/// Whether the cross compiler is on the PATH.
pub fn have_cross_compiler() -> bool {
    Command::new("arm-none-eabi-gcc")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Section sizes of an object file, from `arm-none-eabi-size -A`.
pub fn object_sizes(obj: &Path) -> Result<Sizes, Error> {
    let o = output(
        "arm-none-eabi-size",
        tool("arm-none-eabi-size").arg("-A").arg(obj),
    )?;
    let mut s = Sizes::default();
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let mut f = line.split_whitespace();
        let (Some(name), Some(size)) = (f.next(), f.next()) else {
            continue;
        };
        let Ok(size) = size.parse::<u64>() else {
            continue;
        };
        let slot = if name.starts_with(".text") {
            &mut s.text
        } else if name.starts_with(".rodata") {
            &mut s.rodata
        } else if name.starts_with(".data") {
            &mut s.data
        } else if name.starts_with(".bss") {
            &mut s.bss
        } else {
            continue;
        };
        *slot += size;
    }
    Ok(s)
}

/// Compile `name.c` (already written in `dir` with its header) to an
/// object for `core`; return its path and section sizes.
pub fn compile_object(
    dir: &Path,
    name: &str,
    core: Core,
    opt: &str,
    defines: &[&str],
) -> Result<(PathBuf, Sizes), Error> {
    let obj = dir.join(format!("{name}.o"));
    output(
        &format!("arm-none-eabi-gcc {name}.c"),
        tool("arm-none-eabi-gcc")
            .args(core.gcc_flags())
            .args(["-std=c99", opt, "-Wall", "-Wextra", "-Werror"])
            .args(["-ffunction-sections", "-fdata-sections", "-c"])
            .args(defines)
            .arg("-o")
            .arg(&obj)
            .arg(dir.join(format!("{name}.c"))),
    )?;
    let sizes = object_sizes(&obj)?;
    Ok((obj, sizes))
}

fn harness_main(name: &str, inputs: &[Vec<i8>], input_size: usize, paint: u32) -> String {
    let upper = name.to_uppercase();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "/* The emulator harness of {name}: generated by mnet. */\n#include <stdint.h>\n#include <stdio.h>\n#include \"{name}.h\"\n"
    );
    let _ = writeln!(
        s,
        "static const int8_t inputs[{}][{input_size}] __attribute__((aligned(16))) = {{",
        inputs.len()
    );
    for x in inputs {
        s.push_str("    {");
        for (i, v) in x.iter().enumerate() {
            if i % 32 == 0 {
                s.push_str("\n        ");
            }
            let _ = write!(s, "{v},");
        }
        s.push_str("\n    },\n");
    }
    s.push_str("};\n");
    let _ = writeln!(
        s,
        r#"static int8_t out[{upper}_OUTPUT_SIZE] __attribute__((aligned(16)));

/* The instruction counter's marker: the plugin records its count here. */
void mnet_mark(int step);
__attribute__((noinline, noipa)) void mnet_mark(int step) {{
    (void)step;
    __asm volatile("nop" ::: "memory");
}}

/* Paint {paint} bytes below the stack pointer, run, and find the deepest
 * byte the inference wrote. */
__attribute__((noinline, noipa)) static uint32_t run_measured(const int8_t *x) {{
    volatile uint32_t *sp;
    volatile uint32_t *p;
    __asm volatile("mov %0, sp" : "=r"(sp));
    for (p = sp - {words}; p < sp; ++p) {{
        *p = 0xA5C3A5C3u;
    }}
    mnet_mark(-1);
    {name}_invoke(x, out);
    mnet_mark(-2);
    for (p = sp - {words}; p < sp && *p == 0xA5C3A5C3u; ++p) {{
    }}
    return (uint32_t)((sp - p) * 4);
}}

int main(void) {{
    uint32_t deepest = 0;
    int i, k;
    mnet_mark(-3);
    mnet_mark(-4);
    for (i = 0; i < {n}; ++i) {{
        const uint32_t used = run_measured(inputs[i]);
        deepest = used > deepest ? used : deepest;
        printf("out");
        for (k = 0; k < {upper}_OUTPUT_SIZE; ++k) {{
            printf(" %d", out[k]);
        }}
        printf("\n");
    }}
    printf("stack %lu\n", (unsigned long)deepest);
    return 0;
}}"#,
        words = paint / 4,
        n = inputs.len(),
    );
    s
}

/// Build `files` (the C backend's header and source of network `name`)
/// with the harness and `inputs` (each the network's input size) into
/// `dir`.
pub fn build(
    files: &crate::back::c::CFiles,
    name: &str,
    inputs: &[Vec<i8>],
    output_size: usize,
    dir: &Path,
    opts: &BuildOptions,
) -> Result<Build, Error> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(format!("{name}.h")), &files.header)?;
    std::fs::write(dir.join(format!("{name}.c")), &files.source)?;
    let input_size = inputs.first().map_or(0, Vec::len);
    if inputs.iter().any(|x| x.len() != input_size) || inputs.is_empty() {
        return Err(Error::Output("inputs of different sizes".into()));
    }
    let main = format!("{name}_main");
    std::fs::write(
        dir.join(format!("{main}.c")),
        harness_main(name, inputs, input_size, opts.stack_paint),
    )?;
    std::fs::write(dir.join("mnet_startup.c"), STARTUP_C)?;
    std::fs::write(dir.join("mnet_cm.ld"), LINKER)?;
    let mut defines: Vec<String> = opts.defines.iter().map(|d| format!("-D{d}")).collect();
    if opts.per_layer {
        defines.push("-DMNET_LAYER_HOOK=mnet_mark".into());
    }
    let defines: Vec<&str> = defines.iter().map(String::as_str).collect();
    let (_, sizes) = compile_object(dir, name, opts.core, opts.opt, &defines)?;
    let elf = dir.join(format!("{name}.elf"));
    let mut cmd = tool("arm-none-eabi-gcc");
    cmd.current_dir(dir)
        .args(opts.core.gcc_flags())
        .args(["-std=c99", opts.opt, "-Wall", "-Wextra", "-Werror"])
        .args(["-ffunction-sections", "-fdata-sections"])
        .args([
            "--specs=rdimon.specs",
            "-T",
            "mnet_cm.ld",
            "-Wl,--gc-sections",
        ])
        .args(defines);
    cmd.args(["mnet_startup.c", &format!("{main}.c"), &format!("{name}.c")])
        .arg("-o")
        .arg(&elf);
    output("arm-none-eabi-gcc (link)", &mut cmd)?;
    let nm = output("arm-none-eabi-nm", tool("arm-none-eabi-nm").arg(&elf))?;
    let mark = String::from_utf8_lossy(&nm.stdout)
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let (addr, _, sym) = (f.next()?, f.next()?, f.next()?);
            (sym == "mnet_mark").then(|| u64::from_str_radix(addr, 16).ok())?
        })
        .ok_or_else(|| Error::Output("no mnet_mark symbol in the firmware".into()))?;
    Ok(Build {
        elf,
        dir: dir.to_path_buf(),
        core: opts.core,
        sizes,
        inputs: inputs.len(),
        output_size,
        per_layer: opts.per_layer,
        mark: mark & !1,
    })
}

/// Build the instruction-counting plugin with the host's C compiler into
/// `dir` (once per directory).
pub fn plugin(dir: &Path) -> Result<PathBuf, Error> {
    let so = dir.join("libmnet_insncount.so");
    if so.exists() {
        return Ok(so);
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("qemu-plugin.h"), PLUGIN_H)?;
    std::fs::write(dir.join("insncount.c"), PLUGIN_C)?;
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let tmp = dir.join(format!("libmnet_insncount.{}.so", std::process::id()));
    output(
        "building the QEMU plugin",
        tool(&cc)
            .args(["-O2", "-shared", "-fPIC", "-Wall", "-o"])
            .arg(&tmp)
            .arg(dir.join("insncount.c")),
    )?;
    std::fs::rename(&tmp, &so)?;
    Ok(so)
}

/// Run a build in QEMU (at most `limit` of wall time) and read what the
/// harness printed and the plugin counted.
pub fn run(b: &Build, limit: Duration) -> Result<Run, Error> {
    let so = plugin(&b.dir)?;
    let log = b.dir.join("plugin.log");
    let _ = std::fs::remove_file(&log);
    let mut child = tool("qemu-system-arm")
        .args(["-M", b.core.machine(), "-nographic", "-monitor", "none"])
        .args([
            "-serial",
            "none",
            "-semihosting-config",
            "enable=on,target=native",
        ])
        .arg("-kernel")
        .arg(&b.elf)
        .arg("-plugin")
        .arg(format!("{},mark=0x{:x}", so.display(), b.mark))
        .args(["-d", "plugin", "-D"])
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Missing {
            tool: "qemu-system-arm".into(),
            hint: HINT,
            message: e.to_string(),
        })?;
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Timeout(limit));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let text = reader.join().unwrap_or_default();
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    if !status.success() {
        return Err(Error::Failed {
            step: format!(
                "qemu-system-arm -M {} ({status}{})",
                b.core.machine(),
                if status.code() == Some(70) {
                    ": the firmware faulted"
                } else {
                    ""
                }
            ),
            output: format!("{text}{stderr}"),
        });
    }
    parse_run(b, &text, &std::fs::read_to_string(&log)?)
}

fn parse_run(b: &Build, text: &str, log: &str) -> Result<Run, Error> {
    let mut outputs = Vec::new();
    let mut stack = None;
    for line in text.lines() {
        let mut f = line.split_whitespace();
        match f.next() {
            Some("out") => {
                let v: Result<Vec<i8>, _> = f.map(str::parse::<i8>).collect();
                let v = v.map_err(|e| Error::Output(format!("{line}: {e}")))?;
                if v.len() != b.output_size {
                    return Err(Error::Output(format!(
                        "{} output values, expected {}",
                        v.len(),
                        b.output_size
                    )));
                }
                outputs.push(v);
            }
            Some("stack") => stack = f.next().and_then(|v| v.parse().ok()),
            _ => {}
        }
    }
    if outputs.len() != b.inputs {
        return Err(Error::Output(format!(
            "{} outputs printed for {} inputs:\n{text}",
            outputs.len(),
            b.inputs
        )));
    }
    let marks: Vec<u64> = log
        .lines()
        .filter_map(|l| l.strip_prefix("mark ")?.trim().parse().ok())
        .collect();
    if log.lines().any(|l| l.trim() == "overflow") {
        return Err(Error::Output("too many markers".into()));
    }
    // Two calibration marks, then per inference: start, [a mark per step,]
    // stop. The cost of one marker is the calibration pair's difference.
    if marks.len() < 2 {
        return Err(Error::Output(format!("{} markers recorded", marks.len())));
    }
    let overhead = marks[1] - marks[0];
    let rest = &marks[2..];
    let per = rest.len() / b.inputs.max(1);
    if per < 2 || per * b.inputs != rest.len() {
        return Err(Error::Output(format!(
            "{} markers for {} inferences",
            rest.len(),
            b.inputs
        )));
    }
    let mut instructions = Vec::new();
    let mut per_layer = Vec::new();
    for chunk in rest.chunks(per) {
        let steps = (per - 2) as u64;
        let total = chunk[per - 1] - chunk[0];
        instructions.push(total.saturating_sub(overhead * (steps + 1)));
        if b.per_layer {
            per_layer.push(
                chunk
                    .windows(2)
                    .take(per - 2)
                    .map(|w| (w[1] - w[0]).saturating_sub(overhead))
                    .collect(),
            );
        }
    }
    Ok(Run {
        outputs,
        instructions,
        per_layer,
        stack: stack.ok_or_else(|| Error::Output("no stack line".into()))?,
    })
}

/// One step of the generated `invoke` (what `MNET_LAYER_HOOK` is called
/// after): a node, and the conv computed inside it when the plan streams
/// one into this depthwise conv.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    pub node: usize,
    pub fused: Option<usize>,
}

/// The steps of the C backend's `invoke` for a network and its plan, in
/// order.
pub fn steps(plan: &crate::plan::CheckedPlan, l: &crate::lower::Lowered) -> Vec<Step> {
    (1..l.nodes.len())
        .filter(|&i| plan.fused[i].is_none())
        .map(|i| Step {
            node: i,
            fused: l.nodes[i]
                .inputs
                .first()
                .copied()
                .filter(|&j| plan.fused[j] == Some(i)),
        })
        .collect()
}
