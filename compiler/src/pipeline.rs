//! The compile pipeline, one function for the CLI, the tests and the
//! search: lower → verify → schedule → weights → calibrate (or QAT ranges)
//! → quantize → prepare ([`quantize`]), then plan → check the plan → emit
//! ([`compile`]). Every failure is an [`Error`]: the user's weights or
//! calibration file (named by tensor or field), a layer the backends
//! cannot build, or an internal inconsistency.

use crate::back::c::{self, CFiles};
use crate::exec::interp::{self, Prepared};
use crate::ir::{FixedGraph, Origin};
use crate::lower::io::WeightsError;
use crate::lower::{self, FloatWeights, QuantGraph};
use crate::npy::NpyError;
use crate::plan::{self, CheckedPlan, PlanError};
use crate::tflite;
use thiserror::Error;

/// Where the float weights come from.
#[derive(Clone, Copy, Debug)]
pub enum Weights<'a> {
    /// Deterministic random weights for a seed.
    Random(u64),
    /// A safetensors file's bytes (see [`crate::lower::io`]).
    File(&'a [u8]),
}

/// Why a network does not compile.
#[derive(Debug, Error)]
pub enum Error {
    /// The weights file: missing, mis-shaped or non-finite tensors, by name.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// The calibration `.npy` file.
    #[error("calibration data: {0}")]
    Calibration(#[from] NpyError),
    /// A layer the int8 backends cannot build.
    #[error("cannot compile layer `{layer}`: {message}")]
    Unsupported {
        layer: String,
        /// Where the layer is in the source (with the block calls to it).
        origin: Origin,
        message: String,
    },
    /// A network past [`MEMORY_LIMIT`].
    #[error("compiling network `{network}` needs about {} MiB ({weights} weights, {activations} activation values), more than mnet's {} MiB limit; fewer channels, layers or a smaller input", bytes >> 20, MEMORY_LIMIT >> 20)]
    TooLarge {
        network: String,
        /// The network's name in the source.
        span: mnet_grammar::Span,
        weights: u128,
        activations: u128,
        bytes: u128,
    },
    #[error(transparent)]
    Tflite(#[from] tflite::write::Error),
    /// A `.tflite` file that does not import.
    #[error(transparent)]
    Import(#[from] tflite::import::ImportError),
    #[error(transparent)]
    C(#[from] c::Error),
    /// A bug of mnet's: a stage produced what the next one rejects.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<PlanError> for Error {
    fn from(e: PlanError) -> Error {
        Error::Internal(e.to_string())
    }
}

/// The most memory a compile may take (4 GiB). Far past any
/// microcontroller's network; a network that `check` accepts (weights up to
/// 4 GiB) can still be past it.
pub const MEMORY_LIMIT: u128 = 4 << 30;

/// About how many bytes compiling `g` holds: measured on this machine as 9–12
/// bytes per weight (f32 and int8 copies, the flatbuffer or C text) and
/// about 10 per activation value (f32 and int8 passes of calibration),
/// rounded up to 16 and 12. Read before anything is allocated.
pub fn compile_bytes(g: &FixedGraph) -> (u128, u128, u128) {
    let (mut weights, mut activations) = (0u128, 0u128);
    for &id in &g.order {
        let n = g.node(id);
        if let Some(&i) = g.inputs(id).first() {
            if let Some((w, b)) = n.op.weight_counts(&g.node(i).shape) {
                weights += w as u128 + b as u128;
            }
        }
        activations += n.shape.iter().map(|&d| d as u128).product::<u128>();
    }
    (weights, activations, 16 * weights + 12 * activations)
}

/// What a network needs of a board's SRAM besides its stack, as the C
/// backend emits it: the arena of its memory plan, and the caller's input
/// and output buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Memory {
    pub arena: u64,
    pub input: u64,
    pub output: u64,
    /// The generated C's stack on the target's core (cortex-m4 without a
    /// target), estimated: [`c::stack_estimate`].
    pub stack: u64,
}

impl Memory {
    /// The SRAM the network needs: arena, the caller's input and output
    /// buffers, and stack.
    pub fn sram(&self) -> u64 {
        self.arena + self.input + self.output + self.stack
    }
}

/// The memory plan's figures for `g` without weights or calibration (the
/// plan depends on shapes and the schedule only): what `mnet compile`
/// would emit as `NAME_ARENA_SIZE`.
pub fn memory(g: &FixedGraph) -> Result<Memory, Error> {
    let lowered = lowered(g)?;
    let plan = plan::check(&lowered, plan::plan(&lowered))?;
    let bytes = |s: &[u32]| s.iter().map(|&d| d as u64).product::<u64>();
    let cpu = g
        .info
        .target
        .as_ref()
        .and_then(|(b, _)| c::Cpu::parse(&b.core))
        .unwrap_or_default();
    Ok(Memory {
        arena: plan.arena_size as u64,
        input: bytes(&lowered.nodes[0].shape),
        output: bytes(&lowered.nodes[lowered.output].shape),
        stack: c::stack_estimate(&lowered, &plan, cpu),
    })
}

/// A quantized network ready to run or emit.
#[derive(Clone, Debug)]
pub struct Quantized {
    pub graph: QuantGraph,
    /// Each node's kernel parameters, as TFLM's Prepare computes them.
    pub prepared: Vec<Prepared>,
    /// The float weights it was quantized from.
    pub float: FloatWeights,
    /// How many activation ranges came from quantization-aware training.
    pub qat_ranges: usize,
}

/// What to emit.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub tflite: Option<tflite::write::Options>,
    pub c: Option<c::Options>,
}

/// A compiled network: its int8 form, checked memory plan and files.
#[derive(Clone, Debug)]
pub struct Artifacts {
    pub quantized: Quantized,
    pub plan: CheckedPlan,
    pub tflite: Option<Vec<u8>>,
    pub c: Option<CFiles>,
}

/// Lower, weight and quantize a fixed network. Activation ranges come from
/// the weights file where quantization-aware training stored them, else
/// from calibration over `calibration` (a `.npy` file's bytes) or, without
/// it, deterministic synthetic inputs in `[-1, 1]` (seeded by the
/// random-weights seed, 0 for a weights file).
pub fn quantize(
    g: &FixedGraph,
    weights: Weights,
    calibration: Option<&[u8]>,
) -> Result<Quantized, Error> {
    let (weights_count, activations, bytes) = compile_bytes(g);
    if bytes > MEMORY_LIMIT {
        return Err(Error::TooLarge {
            network: g.info.name.clone(),
            span: g.info.span,
            weights: weights_count,
            activations,
            bytes,
        });
    }
    let lowered = lowered(g)?;
    let (float, seed, learned) = match weights {
        Weights::Random(seed) => (
            FloatWeights::random(&lowered, seed),
            seed,
            vec![None; lowered.nodes.len()],
        ),
        Weights::File(bytes) => (
            lower::io::read_weights(&lowered, bytes)?,
            0,
            lower::io::read_ranges(&lowered, bytes)?,
        ),
    };
    let input_shape = lowered.nodes[0].shape.clone();
    let mut ranges = match calibration {
        Some(bytes) => {
            let sample: Vec<usize> = input_shape.iter().map(|&d| d as usize).collect();
            let inputs = crate::npy::parse(bytes)?.f32_samples(&sample)?;
            lower::calibrate(&lowered, &float, &inputs, None)
        }
        None => {
            let inputs = lower::synthetic_inputs(&input_shape, 8, seed);
            lower::calibrate(&lowered, &float, &inputs, Some(lower::INPUT_RANGE))
        }
    };
    let mut qat_ranges = 0;
    for ((r, l), n) in ranges.iter_mut().zip(&learned).zip(&lowered.nodes) {
        if let (Some(l), true) = (l, n.kind.has_own_range()) {
            *r = *l;
            qat_ranges += 1;
        }
    }
    let graph = lower::quantize(&lowered, &float, &ranges);
    let prepared = interp::prepare(&graph).map_err(|e| Error::Unsupported {
        origin: origin_of(g, &e.layer),
        layer: e.layer,
        message: e.message,
    })?;
    Ok(Quantized {
        graph,
        prepared,
        float,
        qat_ranges,
    })
}

/// An imported `.tflite` model, ready to run or emit.
#[derive(Clone, Debug)]
pub struct ImportedModel {
    /// The int8 network (no float weights: `float` is empty).
    pub quantized: Quantized,
    /// The file's float32 input and output, quantized and dequantized at
    /// the edges (see [`tflite::import::Imported`]).
    pub float_input: bool,
    pub float_output: bool,
}

/// Import a `.tflite` model ([`tflite::import::import`]) and prepare its
/// kernels as [`quantize`] does; `name` names it in the generated code.
pub fn import(bytes: &[u8], name: &str) -> Result<ImportedModel, Error> {
    let imported = tflite::import::import(bytes, name)?;
    let graph = imported.graph;
    let prepared = interp::prepare(&graph).map_err(|e| Error::Unsupported {
        origin: Origin::default(),
        layer: e.layer,
        message: e.message,
    })?;
    Ok(ImportedModel {
        quantized: Quantized {
            graph,
            prepared,
            float: FloatWeights {
                layers: Default::default(),
            },
            qat_ranges: 0,
        },
        float_input: imported.float_input,
        float_output: imported.float_output,
    })
}

/// Lower, verify and schedule: the network as the backends see it.
pub fn lowered(g: &FixedGraph) -> Result<lower::Lowered, Error> {
    let lowered = lower::lower(g).map_err(|e| Error::Unsupported {
        origin: origin_of(g, &e.layer),
        layer: e.layer,
        message: e.message,
    })?;
    lower::verify(&lowered).map_err(Error::Internal)?;
    Ok(lower::schedule::schedule(lowered))
}

/// Where a layer is in the source (a lowered node's name is its layer's).
fn origin_of(g: &FixedGraph, layer: &str) -> Origin {
    g.order
        .iter()
        .find(|id| g.node(**id).name == layer)
        .map(|id| g.origins[id.0.index()].clone())
        .unwrap_or_default()
}

/// Quantize ([`quantize`]), plan and check the memory, and emit what the
/// options ask for.
pub fn compile(
    g: &FixedGraph,
    weights: Weights,
    calibration: Option<&[u8]>,
    opts: &Options,
) -> Result<Artifacts, Error> {
    let quantized = quantize(g, weights, calibration)?;
    emit(quantized, opts)
}

/// Plan, check and emit an already quantized network.
pub fn emit(quantized: Quantized, opts: &Options) -> Result<Artifacts, Error> {
    let l = &quantized.graph.lowered;
    let plan = plan::check(l, plan::plan(l))?;
    let tflite = match &opts.tflite {
        Some(o) => Some(tflite::write::write(&quantized.graph, o)?),
        None => None,
    };
    let c = match &opts.c {
        Some(o) => Some(c::write(&quantized.graph, &quantized.prepared, &plan, o)?),
        None => None,
    };
    Ok(Artifacts {
        quantized,
        plan,
        tflite,
        c,
    })
}
