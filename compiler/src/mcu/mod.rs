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

/// arm-none-eabi-gcc's target flags for a C backend core (the DSP cores
/// with their FPUs, `generic` as the board's core when it names one gcc
/// knows, else a Cortex-M3).
pub fn gcc_flags_for(cpu: crate::back::c::Cpu, board_core: Option<&str>) -> Vec<String> {
    use crate::back::c::Cpu;
    let v = |f: &[&str]| f.iter().map(|s| s.to_string()).collect();
    match cpu {
        Cpu::CortexM4 => v(Core::M4.gcc_flags()),
        Cpu::CortexM7 => v(Core::M7.gcc_flags()),
        Cpu::CortexM33 => v(&["-mcpu=cortex-m33", "-mthumb"]),
        Cpu::CortexM55 => v(&["-mcpu=cortex-m55", "-mthumb"]),
        Cpu::Generic => {
            let core = board_core
                .map(|c| c.replace('_', "-").to_ascii_lowercase())
                .filter(|c| {
                    [
                        "cortex-m0",
                        "cortex-m0plus",
                        "cortex-m1",
                        "cortex-m3",
                        "cortex-m23",
                    ]
                    .contains(&c.as_str())
                })
                .unwrap_or_else(|| "cortex-m3".into());
            vec![format!("-mcpu={core}"), "-mthumb".into()]
        }
    }
}

/// What a build of the network's C alone says about its memory: section
/// sizes and the deepest stack of `NAME_invoke` from gcc's call graph with
/// stack usage (`-fcallgraph-info=su`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StaticReport {
    pub sizes: Sizes,
    /// Bytes of stack of the deepest call path from `NAME_invoke`, with
    /// [`LIBC_FRAME`] for each call into the C library.
    pub stack: u64,
}

/// The stack allowed for a call of `memcpy`/`memset` (newlib's use less).
pub const LIBC_FRAME: u64 = 64;

/// Compile `files` for `flags` in `dir` and read its sizes and stack depth.
pub fn static_report(
    files: &crate::back::c::CFiles,
    name: &str,
    flags: &[String],
    dir: &Path,
) -> Result<StaticReport, Error> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(format!("{name}.h")), &files.header)?;
    std::fs::write(dir.join(format!("{name}.c")), &files.source)?;
    let obj = dir.join(format!("{name}.o"));
    output(
        &format!("arm-none-eabi-gcc {name}.c"),
        tool("arm-none-eabi-gcc")
            .current_dir(dir)
            .args(flags)
            .args(["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror"])
            .args([
                "-ffunction-sections",
                "-fdata-sections",
                "-fcallgraph-info=su",
            ])
            .arg("-c")
            .arg("-o")
            .arg(&obj)
            .arg(format!("{name}.c")),
    )?;
    let sizes = object_sizes(&obj)?;
    let ci = std::fs::read_to_string(dir.join(format!("{name}.ci")))?;
    let stack = deepest_stack(&ci, &format!("{name}_invoke"))
        .ok_or_else(|| Error::Output(format!("no {name}_invoke in gcc's call graph")))?;
    Ok(StaticReport { sizes, stack })
}

/// The deepest stack from `root` in a gcc `.ci` call graph (VCG): node
/// labels carry "N bytes (static)"; a node without a size is a library
/// function ([`LIBC_FRAME`]); a dynamic frame or a cycle has no bound.
pub fn deepest_stack(ci: &str, root: &str) -> Option<u64> {
    use std::collections::HashMap;
    let field = |line: &str, key: &str| -> Option<String> {
        let at = line.find(&format!("{key}: \""))? + key.len() + 3;
        let end = line[at..].find('"')? + at;
        Some(line[at..end].to_string())
    };
    let mut frames: HashMap<String, Option<u64>> = HashMap::new();
    let mut edges: HashMap<String, Vec<String>> = HashMap::new();
    for line in ci.lines() {
        let line = line.trim();
        if line.starts_with("node:") {
            let (Some(title), Some(label)) = (field(line, "title"), field(line, "label")) else {
                continue;
            };
            let size = label.split("\\n").find_map(|part| {
                let (n, rest) = part.split_once(" bytes (")?;
                rest.starts_with("static")
                    .then(|| n.trim().parse::<u64>().ok())?
            });
            let dynamic = label.contains("bytes (dynamic");
            frames.insert(
                title,
                match (size, dynamic) {
                    (Some(n), _) => Some(n),
                    (None, true) => None,
                    (None, false) => Some(LIBC_FRAME),
                },
            );
        } else if line.starts_with("edge:") {
            if let (Some(a), Some(b)) = (field(line, "sourcename"), field(line, "targetname")) {
                edges.entry(a).or_default().push(b);
            }
        }
    }
    fn walk(
        n: &str,
        frames: &HashMap<String, Option<u64>>,
        edges: &HashMap<String, Vec<String>>,
        memo: &mut HashMap<String, Option<u64>>,
        path: &mut Vec<String>,
    ) -> Option<u64> {
        if let Some(&m) = memo.get(n) {
            return m;
        }
        if path.iter().any(|p| p == n) {
            return None;
        }
        path.push(n.to_string());
        let own = frames.get(n).copied().unwrap_or(Some(LIBC_FRAME));
        let mut deepest = Some(0);
        for c in edges.get(n).into_iter().flatten() {
            deepest = match (deepest, walk(c, frames, edges, memo, path)) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            };
        }
        path.pop();
        let total = own.zip(deepest).map(|(a, b)| a + b);
        memo.insert(n.to_string(), total);
        total
    }
    let title = frames
        .keys()
        .find(|t| *t == root || t.ends_with(&format!(":{root}")))?;
    let title = title.clone();
    walk(
        &title,
        &frames,
        &edges,
        &mut HashMap::new(),
        &mut Vec::new(),
    )
}

/// `n` seeded random int8 inputs of a network, and the reference
/// interpreter's outputs for them: what a run on the emulator must print.
pub fn random_cases(
    q: &crate::pipeline::Quantized,
    n: usize,
    seed: u64,
) -> (Vec<Vec<i8>>, Vec<Vec<i8>>) {
    use rand::{RngExt, SeedableRng};
    let l = &q.graph.lowered;
    let len: usize = l.nodes[0].shape.iter().map(|&d| d as usize).product();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let inputs: Vec<Vec<i8>> = (0..n)
        .map(|_| (0..len).map(|_| rng.random::<i8>()).collect())
        .collect();
    let expected = inputs
        .iter()
        .map(|x| crate::exec::interp::run(&q.graph, &q.prepared, x)[l.output].clone())
        .collect();
    (inputs, expected)
}

#[cfg(test)]
mod tests {
    #[test]
    fn deepest_stack_follows_the_call_graph() {
        let ci = r#"graph: { title: "n.c"
node: { title: "n.c:leaf" label: "leaf\nn.c:1:1\n20 bytes (static)" }
node: { title: "n.c:mid" label: "mid\nn.c:2:1\n100 bytes (static)" }
node: { title: "memset" label: "memset\nstring.h:33:9" shape : ellipse }
edge: { sourcename: "n.c:mid" targetname: "memset" }
node: { title: "n_invoke" label: "n_invoke\nn.c:9:5\n500 bytes (static)" }
edge: { sourcename: "n_invoke" targetname: "n.c:mid" }
edge: { sourcename: "n_invoke" targetname: "n.c:leaf" }
}"#;
        assert_eq!(
            super::deepest_stack(ci, "n_invoke"),
            Some(500 + 100 + super::LIBC_FRAME)
        );
        assert_eq!(super::deepest_stack(ci, "other"), None);
        let dynamic = ci.replace("100 bytes (static)", "100 bytes (dynamic)");
        assert_eq!(super::deepest_stack(&dynamic, "n_invoke"), None);
    }
}
