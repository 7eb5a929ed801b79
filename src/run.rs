//! `mnet run`: int8 inference on the host with the Cranelift JIT or the
//! reference interpreter (bit-exact with each other and TFLM), for an imported `.tflite` or a `.mnet` network
//! quantized from its weights; batch over the first dimension of an int8
//! or float32 `.npy` (float32 quantized with the model's input
//! quantization), outputs printed (top-1 and the dequantized score) or
//! written as `.npy` (int8, or float32 with `--float`).

use crate::{
    compile_error, fixed_network, import_tflite, is_tflite, read_bytes, refuse_existing, write_set,
    NetworkArgs, Result, UserError, WeightsArgs,
};
use clap::Args;
use mnet_compiler::{exec::batch, pipeline};
use std::path::PathBuf;

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    net: NetworkArgs,
    /// For a .mnet network: its float weights (and calibration).
    #[command(flatten)]
    weights: WeightsArgs,
    /// The inputs: .npy, int8 or float32, [N, ...input shape].
    #[arg(long)]
    input: PathBuf,
    /// Write the outputs as .npy [N, ...output shape] (int8; float32 with --float).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Write the outputs dequantized (float32).
    #[arg(long, requires = "output")]
    float: bool,
    #[arg(long)]
    force: bool,
    /// The int8 engine: the Cranelift JIT, or the reference interpreter
    /// (the two are bit-exact).
    #[arg(long, value_enum, default_value = "jit")]
    engine: Engine,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    Jit,
    Interp,
}

pub fn run(args: &RunArgs) -> Result<()> {
    let q = if is_tflite(&args.net.file) {
        args.weights.refuse_for_tflite(&args.net.file)?;
        import_tflite(&args.net)?.1.quantized
    } else {
        args.weights.require()?;
        let (sources, fixed) = fixed_network(&args.net, "run")?;
        let (weight_bytes, calib_bytes) = args.weights.read()?;
        let weights = args.weights.weights(weight_bytes.as_deref());
        pipeline::quantize(&fixed, weights, calib_bytes.as_deref())
            .map_err(|e| compile_error(e, &args.weights, &sources))?
    };
    if let Some(o) = &args.output {
        refuse_existing([o], args.force)?;
    }
    let l = &q.graph.lowered;
    let (iq, oq) = (q.graph.qparams[0], q.graph.qparams[l.output]);
    let in_shape: Vec<usize> = l.nodes[0].shape.iter().map(|&d| d as usize).collect();
    let out_shape: Vec<usize> = l.nodes[l.output]
        .shape
        .iter()
        .map(|&d| d as usize)
        .collect();
    let bytes = read_bytes(&args.input)?;
    let rows = mnet_compiler::npy::parse(&bytes)
        .and_then(|n| n.i8_samples(&in_shape, iq))
        .map_err(|e| UserError(format!("error: {}: {e}\n", args.input.display())))?;
    let engine = match args.engine {
        Engine::Jit => batch::Engine::Jit,
        Engine::Interp => batch::Engine::Interp,
    };
    let runner = batch::Runner::new(&q.graph, &q.prepared, engine).map_err(|e| {
        UserError(format!(
            "error: {}: {e}; run it with --engine interp\n",
            args.net.file.display()
        ))
    })?;
    let flat = runner.run_many(rows.len(), |i, x| x.copy_from_slice(&rows[i]));
    let outputs: Vec<&[i8]> = flat.chunks(runner.output_len().max(1)).collect();
    let mut shape = vec![rows.len()];
    shape.extend(&out_shape);
    if let Some(o) = &args.output {
        let data = if args.float {
            let v: Vec<u8> = flat
                .iter()
                .flat_map(|&v| oq.dequantize(v).to_le_bytes())
                .collect();
            mnet_compiler::npy::encode("<f4", &shape, &v)
        } else {
            let v: Vec<u8> = flat.iter().map(|&v| v as u8).collect();
            mnet_compiler::npy::encode("|i1", &shape, &v)
        };
        write_set(&[(o.clone(), data)], None)?;
        outln!(
            "{}: {} rows through {} (int8, {}); wrote {} {:?}",
            args.input.display(),
            outputs.len(),
            l.name,
            match engine {
                batch::Engine::Jit => "JIT",
                batch::Engine::Interp => "reference interpreter",
            },
            o.display(),
            shape
        );
        return Ok(());
    }
    for (k, out) in outputs.iter().enumerate() {
        let (top, &v) = out
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(&a.0)))
            .expect("an output");
        let shown: Vec<String> = out.iter().take(16).map(|v| v.to_string()).collect();
        outln!(
            "row {k}: top-1 {top} (q {v}, real {:.6}); int8 [{}{}]",
            oq.dequantize(v),
            shown.join(", "),
            if out.len() > 16 { ", ..." } else { "" }
        );
    }
    Ok(())
}
