//! `mnet emulate`: compile a network (a `.mnet`, or an imported `.tflite`)
//! to C, build it for an emulated
//! Cortex-M (arm-none-eabi-gcc, QEMU's mps2 boards) and run it there with
//! exact instruction counts ([`mnet_compiler::mcu`]). The outputs are
//! compared with the reference interpreter's byte for byte; it prints
//! instructions per inference, MACs per instruction, the network's section
//! sizes and its stack depth, and per layer with `--per-layer`.

use crate::{compile_error, fixed_network, NetworkArgs, Result, UserError, WeightsArgs};
use clap::Args;
use mnet_compiler::back::c::Cpu;
use mnet_compiler::mcu::{self, BuildOptions, Core};
use mnet_compiler::pipeline;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args)]
pub struct EmulateArgs {
    #[command(flatten)]
    net: NetworkArgs,
    #[command(flatten)]
    weights: WeightsArgs,
    /// The emulated core and its kernels: cortex-m4 (QEMU mps2-an386), cortex-m7 (mps2-an500), or generic (the plain loops, on the M4) [default: the target board's core if it is one of these, else cortex-m4].
    #[arg(long)]
    cpu: Option<String>,
    /// How many random int8 inputs (seeded by --seed) to run.
    #[arg(long, default_value_t = 2)]
    inputs: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Instructions of each step of the network as well.
    #[arg(long)]
    per_layer: bool,
    /// Keep the build (C, harness, ELF) in this directory (new or empty).
    #[arg(long)]
    keep: Option<PathBuf>,
    /// The longest an emulated run may take, in seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// The emulated core of a C backend core.
pub fn core(cpu: Cpu) -> Result<Core> {
    match cpu {
        Cpu::CortexM4 | Cpu::Generic => Ok(Core::M4),
        Cpu::CortexM7 => Ok(Core::M7),
        other => Err(UserError(format!(
            "error: {} cannot be emulated here (cortex-m4, cortex-m7 or generic); pass --cpu\n",
            other.name()
        ))),
    }
}

pub fn emulate(args: &EmulateArgs) -> Result<()> {
    if args.inputs == 0 || args.inputs > 1000 {
        return Err(UserError("error: --inputs must be 1 to 1000\n".into()));
    }
    let c_options = |cpu| pipeline::Options {
        tflite: None,
        c: Some(mnet_compiler::back::c::Options {
            cpu,
            ..Default::default()
        }),
    };
    let (cpu, art) = if crate::is_tflite(&args.net.file) {
        // An imported .tflite: its int8 network, no weights flags.
        args.weights.refuse_for_tflite(&args.net.file)?;
        let (_, model) = crate::import_tflite(&args.net)?;
        let cpu = crate::cpu_for(args.cpu.as_deref(), None)?;
        let art = pipeline::emit(model.quantized, &c_options(cpu))
            .map_err(|e| UserError(format!("error: {}: {e}\n", args.net.file.display())))?;
        (cpu, art)
    } else {
        args.weights.require()?;
        let (sources, fixed) = fixed_network(&args.net, "emulate")?;
        let cpu = crate::cpu_of(args.cpu.as_deref(), &fixed)?;
        let (wbytes, cbytes) = args.weights.read()?;
        let art = pipeline::compile(
            &fixed,
            args.weights.weights(wbytes.as_deref()),
            cbytes.as_deref(),
            &c_options(cpu),
        )
        .map_err(|e| compile_error(e, &args.weights, &sources))?;
        (cpu, art)
    };
    let core = core(cpu)?;
    let q = &art.quantized;
    let l = &q.graph.lowered;
    let name = &l.name;
    let out_len: usize = l.nodes[l.output]
        .shape
        .iter()
        .map(|&d| d as usize)
        .product();
    let (inputs, expected) = mcu::random_cases(q, args.inputs, args.seed);
    let (dir, temporary) = match &args.keep {
        // The build writes several files: only into a new or empty folder.
        Some(d) if std::fs::read_dir(d).is_ok_and(|mut e| e.next().is_some()) => {
            return Err(UserError(format!(
                "error: --keep {}: the folder is not empty; give a new one\n",
                d.display()
            )))
        }
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("mnet-emulate-{}", std::process::id())),
            true,
        ),
    };
    let result = (|| {
        let bopts = BuildOptions {
            core,
            per_layer: args.per_layer,
            ..Default::default()
        };
        let b = mcu::build(
            art.c.as_ref().expect("C"),
            name,
            &inputs,
            out_len,
            &dir,
            &bopts,
        )?;
        let r = mcu::run(&b, Duration::from_secs(args.timeout))?;
        Ok::<_, mcu::Error>((b, r))
    })();
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let (b, r) = result.map_err(|e| UserError(format!("error: {e}\n")))?;
    let differ: usize = r
        .outputs
        .iter()
        .zip(&expected)
        .map(|(a, e)| a.iter().zip(e).filter(|(x, y)| x != y).count())
        .sum();
    let macs: u64 = mnet_compiler::back::lowered_macs(l).iter().sum();
    let insns = *r.instructions.iter().max().unwrap_or(&0);
    let lm = mnet_compiler::back::lowered_macs(l);
    let steps = mcu::steps(&art.plan, l);
    let step_macs = |s: &mcu::Step| lm[s.node] + s.fused.map_or(0, |j| lm[j]);
    if args.json {
        let layers: Vec<serde_json::Value> = if args.per_layer {
            steps
                .iter()
                .zip(&r.per_layer[0])
                .map(|(s, &n)| {
                    serde_json::json!({
                        "step": s.node, "layer": l.nodes[s.node].name,
                        "kind": l.nodes[s.node].kind.name(),
                        "fused": s.fused.map(|j| &l.nodes[j].name),
                        "macs": step_macs(s), "instructions": n,
                    })
                })
                .collect()
        } else {
            Vec::new()
        };
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "network": name,
                "cpu": cpu.name(),
                "machine": core.machine(),
                "inputs": args.inputs,
                "outputs_differing": differ,
                "instructions": r.instructions,
                "macs": macs,
                "sizes": b.sizes,
                "arena": art.plan.arena_size,
                "stack": r.stack,
                "layers": layers,
            }))
            .expect("json")
        );
    } else {
        outln!(
            "{name} on {} ({} kernels, QEMU {}), {} inputs: {}",
            core.name(),
            cpu.name(),
            core.machine(),
            args.inputs,
            if differ == 0 {
                "outputs equal the reference interpreter's".to_string()
            } else {
                format!("{differ} output values differ from the reference interpreter's")
            }
        );
        outln!(
            "instructions per inference: {insns}{} ({macs} MACs, {:.3} MACs per instruction)",
            if args.per_layer {
                " (with a marker call after each step)"
            } else {
                ""
            },
            macs as f64 / insns.max(1) as f64
        );
        outln!(
            "network object: .text {} .rodata {} .data {} .bss {} (arena {}); stack {} bytes",
            b.sizes.text,
            b.sizes.rodata,
            b.sizes.data,
            b.sizes.bss,
            art.plan.arena_size,
            r.stack
        );
        if args.per_layer {
            outln!(
                "{:>4}  {:<40} {:<10} {:>10} {:>12} {:>6} {:>8}",
                "step",
                "layer",
                "kind",
                "MACs",
                "instructions",
                "share",
                "per MAC"
            );
            let sum: u64 = r.per_layer[0].iter().sum();
            for (s, &n) in steps.iter().zip(&r.per_layer[0]) {
                let (i, m) = (s.node, step_macs(s));
                let kind = match s.fused {
                    Some(_) => "conv+dw",
                    None => l.nodes[i].kind.name(),
                };
                let per = if m > 0 {
                    format!("{:.2}", n as f64 / m as f64)
                } else {
                    "-".into()
                };
                outln!(
                    "{i:>4}  {:<40} {:<10} {:>10} {:>12} {:>5.1}% {:>8}",
                    l.nodes[i].name,
                    kind,
                    m,
                    n,
                    100.0 * n as f64 / sum.max(1) as f64,
                    per
                );
            }
        }
    }
    if differ > 0 {
        return Err(UserError(format!(
            "error: {differ} output values of {name} on the emulated {} differ from the reference interpreter's\n",
            core.name()
        )));
    }
    Ok(())
}
