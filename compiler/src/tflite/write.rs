//! The TFLite flatbuffer backend.
//!
//! Writes the schema subset mnet needs (`reference/tflite-int8.md` section 1)
//! with the `flatbuffers` builder and hand-written table layouts: `TFL3`,
//! schema version 3, buffer 0 the empty sentinel, every constant payload at a
//! 16-byte file offset, operator versions as the TFLite converter writes them
//! for int8. Each tensor carries a batch dimension of 1 in front of mnet's
//! shape.

use crate::lower::{LKind, QuantGraph};
use crate::ops::{Activation, FusedAct, Padding, PoolKind};
use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};

use super::{opcode, options};

const INT8: i8 = 9;
const INT32: i8 = 2;

/// Vtable slot of field `id`.
const fn slot(id: u16) -> u16 {
    4 + 2 * id
}

fn act_code(a: Option<FusedAct>) -> i8 {
    match a {
        None => 0,
        Some(FusedAct::Relu) => 1,
        Some(FusedAct::Relu6) => 3,
    }
}

fn padding_code(p: Padding) -> i8 {
    match p {
        Padding::Same => 0,
        Padding::Valid => 1,
    }
}

/// (builtin code, version) of a lowered op.
pub fn op_code(kind: &LKind) -> (i32, i32) {
    match kind {
        LKind::Conv { .. } => (opcode::CONV_2D, 3),
        LKind::Depthwise { .. } => (opcode::DEPTHWISE_CONV_2D, 3),
        LKind::Pool {
            kind: PoolKind::Avg,
            ..
        } => (opcode::AVERAGE_POOL_2D, 2),
        LKind::Pool {
            kind: PoolKind::Max,
            ..
        } => (opcode::MAX_POOL_2D, 2),
        LKind::Add => (opcode::ADD, 2),
        LKind::Concat => (opcode::CONCATENATION, 2),
        LKind::Pad { .. } => (opcode::PAD, 2),
        LKind::Reshape => (opcode::RESHAPE, 1),
        LKind::Softmax => (opcode::SOFTMAX, 2),
        LKind::Mean => (opcode::MEAN, 2),
        LKind::Requantize => (opcode::QUANTIZE, 1),
        LKind::Act(Activation::Relu) => (opcode::RELU, 2),
        LKind::Act(Activation::Relu6) => (opcode::RELU6, 2),
        LKind::Act(Activation::HardSwish) => (opcode::HARD_SWISH, 1),
        LKind::Act(Activation::LeakyRelu { .. }) => (opcode::LEAKY_RELU, 2),
        LKind::Input => unreachable!("the input is not an operator"),
    }
}

/// A tensor to write.
struct TensorDesc {
    shape: Vec<i32>,
    dtype: i8,
    buffer: u32,
    name: String,
    scales: Vec<f32>,
    zero_points: Vec<i64>,
    quantized_dimension: i32,
}

struct Writer {
    tensors: Vec<TensorDesc>,
    /// Constant payloads; index + 1 is the buffer index (0 is the sentinel).
    buffers: Vec<Vec<u8>>,
}

impl Writer {
    fn constant(&mut self, desc: TensorDesc, data: Vec<u8>) -> i32 {
        self.buffers.push(data);
        let mut desc = desc;
        desc.buffer = self.buffers.len() as u32;
        self.tensors.push(desc);
        self.tensors.len() as i32 - 1
    }

    /// An unquantized INT32 constant (Pad paddings, Reshape new shape).
    fn int32_constant(&mut self, name: String, shape: Vec<i32>, values: &[i32]) -> i32 {
        self.constant(
            TensorDesc {
                shape,
                dtype: INT32,
                buffer: 0,
                name,
                scales: vec![],
                zero_points: vec![],
                quantized_dimension: 0,
            },
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )
    }
}

fn with_batch(shape: &[u32]) -> Vec<i32> {
    std::iter::once(1)
        .chain(shape.iter().map(|&d| d as i32))
        .collect()
}

/// Options of the TFLite backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// The model's `description` field.
    pub description: String,
    /// Write mnet's plan of the activations as the model's
    /// `OfflineMemoryAllocation` metadata ([`crate::plan::tflm_offsets`]),
    /// which TFLM then follows instead of planning them itself.
    pub offline_plan: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            description: format!("mnet {}", env!("CARGO_PKG_VERSION")),
            offline_plan: true,
        }
    }
}

/// Why a network cannot be written as a flatbuffer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error(
        "the model would need {bytes} bytes of constants, more than a flatbuffer holds (2 GiB)"
    )]
    TooLarge { bytes: u64 },
}

/// Serialise a quantized network as a `.tflite` flatbuffer.
pub fn write(q: &QuantGraph, opts: &Options) -> Result<Vec<u8>, Error> {
    let l = &q.lowered;
    // Flatbuffer offsets are 32-bit signed: everything must fit in 2 GiB.
    let bytes: u64 = q
        .weights
        .values()
        .map(|w| w.weight.len() as u64 + 4 * w.bias.len() as u64)
        .sum();
    if bytes >= (1 << 31) - (1 << 20) {
        return Err(Error::TooLarge { bytes });
    }
    let mut w = Writer {
        tensors: Vec::new(),
        buffers: Vec::new(),
    };
    // One activation tensor per node that produces a value.
    let mut act_tensor = vec![-1i32; l.nodes.len()];
    for (i, n) in l.nodes.iter().enumerate() {
        let qp = q.qparams[i];
        w.tensors.push(TensorDesc {
            shape: with_batch(&n.shape),
            dtype: INT8,
            buffer: 0,
            name: n.name.clone(),
            scales: vec![qp.scale],
            zero_points: vec![qp.zero_point as i64],
            quantized_dimension: 0,
        });
        act_tensor[i] = w.tensors.len() as i32 - 1;
    }
    // Operators: (opcode index, inputs, outputs, options).
    struct OpDesc {
        code: (i32, i32),
        inputs: Vec<i32>,
        outputs: Vec<i32>,
        kind: LKind,
        act: Option<FusedAct>,
        new_shape: Vec<i32>,
    }
    let mut ops = Vec::new();
    for (i, n) in l.nodes.iter().enumerate() {
        if n.kind == LKind::Input {
            continue;
        }
        let mut inputs: Vec<i32> = n.inputs.iter().map(|&j| act_tensor[j]).collect();
        if let Some(qw) = q.weights.get(&i) {
            let (wshape, cout) = crate::lower::weights::weight_shape(l, n);
            let in_scale = q.qparams[n.inputs[0]].scale;
            let depthwise = matches!(n.kind, LKind::Depthwise { .. });
            let wt = w.constant(
                TensorDesc {
                    shape: wshape.iter().map(|&d| d as i32).collect(),
                    dtype: INT8,
                    buffer: 0,
                    name: format!("{}.weight", n.name),
                    scales: qw.scales.clone(),
                    zero_points: vec![0; qw.scales.len()],
                    quantized_dimension: if depthwise { 3 } else { 0 },
                },
                qw.weight.iter().map(|&v| v as u8).collect(),
            );
            let bt = w.constant(
                TensorDesc {
                    shape: vec![cout as i32],
                    dtype: INT32,
                    buffer: 0,
                    name: format!("{}.bias", n.name),
                    scales: qw.scales.iter().map(|&s| in_scale * s).collect(),
                    zero_points: vec![0; qw.scales.len()],
                    quantized_dimension: 0,
                },
                qw.bias.iter().flat_map(|b| b.to_le_bytes()).collect(),
            );
            inputs.push(wt);
            inputs.push(bt);
        }
        let mut new_shape = Vec::new();
        match &n.kind {
            LKind::Pad { pads } => {
                let p: Vec<i32> = vec![
                    0,
                    0,
                    pads[0] as i32,
                    pads[1] as i32,
                    pads[2] as i32,
                    pads[3] as i32,
                    0,
                    0,
                ];
                inputs.push(w.int32_constant(format!("{}.paddings", n.name), vec![4, 2], &p));
            }
            LKind::Reshape => {
                new_shape = with_batch(&n.shape);
                let dims = vec![new_shape.len() as i32];
                inputs.push(w.int32_constant(format!("{}.shape", n.name), dims, &new_shape));
            }
            LKind::Mean => {
                // Axes 1 and 2; the output's rank says keep_dims.
                new_shape = with_batch(&n.shape);
                inputs.push(w.int32_constant(format!("{}.axes", n.name), vec![2], &[1, 2]));
            }
            LKind::Input
            | LKind::Conv { .. }
            | LKind::Depthwise { .. }
            | LKind::Pool { .. }
            | LKind::Add
            | LKind::Concat
            | LKind::Softmax
            | LKind::Act(_)
            | LKind::Requantize => {}
        }
        ops.push(OpDesc {
            code: op_code(&n.kind),
            inputs,
            outputs: vec![act_tensor[i]],
            kind: n.kind.clone(),
            act: n.act,
            new_shape,
        });
    }
    // The offline plan: an int32 buffer [version 1, subgraph 0, tensors,
    // one arena offset per tensor], -1 for the constants (TFLM's format,
    // `micro_allocation_info.cc`).
    let offline_buffer = opts.offline_plan.then(|| {
        let (offsets, _) = crate::plan::tflm_offsets(l);
        let mut words = vec![1i32, 0, w.tensors.len() as i32];
        words.extend((0..w.tensors.len()).map(|t| offsets.get(t).map_or(-1, |&o| o as i32)));
        w.buffers
            .push(words.iter().flat_map(|v| v.to_le_bytes()).collect());
        w.buffers.len() as u32
    });
    // Operator codes in order of first use.
    let mut codes: Vec<(i32, i32)> = Vec::new();
    for op in &ops {
        if !codes.contains(&op.code) {
            codes.push(op.code);
        }
    }

    let mut b = FlatBufferBuilder::with_capacity(1 << 16);
    // Buffers first, payloads 16-byte aligned (see `aligned_bytes`).
    let mut buffer_offsets = Vec::new();
    {
        let t = b.start_table();
        buffer_offsets.push(b.end_table(t));
    }
    for data in &w.buffers {
        let v = aligned_bytes(&mut b, data);
        let t = b.start_table();
        b.push_slot_always(slot(0), v);
        buffer_offsets.push(b.end_table(t));
    }
    let buffers = b.create_vector(&buffer_offsets);

    let mut tensor_offsets = Vec::new();
    for t in &w.tensors {
        let shape = b.create_vector(&t.shape);
        let name = b.create_string(&t.name);
        let quant = if t.scales.is_empty() {
            None
        } else {
            let scales = b.create_vector(&t.scales);
            let zps = b.create_vector(&t.zero_points);
            let qt = b.start_table();
            b.push_slot_always(slot(2), scales);
            b.push_slot_always(slot(3), zps);
            b.push_slot(slot(6), t.quantized_dimension, 0);
            Some(b.end_table(qt))
        };
        let tt = b.start_table();
        b.push_slot_always(slot(0), shape);
        b.push_slot(slot(1), t.dtype, 0);
        b.push_slot(slot(2), t.buffer, 0);
        b.push_slot_always(slot(3), name);
        if let Some(q) = quant {
            b.push_slot_always(slot(4), q);
        }
        tensor_offsets.push(b.end_table(tt));
    }
    let tensors = b.create_vector(&tensor_offsets);

    let mut op_offsets = Vec::new();
    for op in &ops {
        let (tag, options) = builtin_options(&mut b, op.kind.clone(), op.act, &op.new_shape);
        let inputs = b.create_vector(&op.inputs);
        let outputs = b.create_vector(&op.outputs);
        let index = codes.iter().position(|c| *c == op.code).expect("code") as u32;
        let t = b.start_table();
        b.push_slot(slot(0), index, 0);
        b.push_slot_always(slot(1), inputs);
        b.push_slot_always(slot(2), outputs);
        if let Some(o) = options {
            b.push_slot(slot(3), tag, 0);
            b.push_slot_always(slot(4), o);
        }
        op_offsets.push(b.end_table(t));
    }
    let operators = b.create_vector(&op_offsets);
    let sg_inputs = b.create_vector(&[act_tensor[0]]);
    let sg_outputs = b.create_vector(&[act_tensor[l.output]]);
    let sg_name = b.create_string("main");
    let sg = b.start_table();
    b.push_slot_always(slot(0), tensors);
    b.push_slot_always(slot(1), sg_inputs);
    b.push_slot_always(slot(2), sg_outputs);
    b.push_slot_always(slot(3), operators);
    b.push_slot_always(slot(4), sg_name);
    let sg = b.end_table(sg);
    let subgraphs = b.create_vector(&[sg]);

    let mut code_offsets = Vec::new();
    for (code, version) in &codes {
        let t = b.start_table();
        b.push_slot(slot(0), (*code).min(127) as i8, 0);
        b.push_slot(slot(2), *version, 1);
        b.push_slot(slot(3), *code, 0);
        code_offsets.push(b.end_table(t));
    }
    let operator_codes = b.create_vector(&code_offsets);
    let description = b.create_string(&opts.description);
    let metadata = offline_buffer.map(|index| {
        let name = b.create_string("OfflineMemoryAllocation");
        let t = b.start_table();
        b.push_slot_always(slot(0), name);
        b.push_slot(slot(1), index, 0);
        let entry = b.end_table(t);
        b.create_vector(&[entry])
    });
    let m = b.start_table();
    b.push_slot_always(slot(0), 3u32);
    b.push_slot_always(slot(1), operator_codes);
    b.push_slot_always(slot(2), subgraphs);
    b.push_slot_always(slot(3), description);
    b.push_slot_always(slot(4), buffers);
    if let Some(m) = metadata {
        b.push_slot_always(slot(6), m);
    }
    let model = b.end_table(m);
    // Make the whole file a multiple of 16 bytes so offsets that are
    // 16-aligned from the end are 16-aligned from the start: finish adds the
    // root offset and the identifier (8 bytes) after aligning to 8.
    while !(b.unfinished_data().len() + 8).is_multiple_of(16) {
        b.push(0u8);
    }
    b.finish(model, Some("TFL3"));
    Ok(b.finished_data().to_vec())
}

/// A `[ubyte]` vector whose payload ends up at a 16-byte file offset
/// (the builder writes back to front, and the file length is made a
/// multiple of 16 in [`write`]).
fn aligned_bytes<'a>(
    b: &mut FlatBufferBuilder<'a>,
    data: &[u8],
) -> WIPOffset<flatbuffers::Vector<'a, u8>> {
    while !(b.unfinished_data().len() + data.len()).is_multiple_of(16) {
        b.push(0u8);
    }
    b.create_vector(data)
}

fn builtin_options(
    b: &mut FlatBufferBuilder,
    kind: LKind,
    act: Option<FusedAct>,
    new_shape: &[i32],
) -> (u8, Option<WIPOffset<UnionWIPOffset>>) {
    let (tag, off) = match kind {
        LKind::Conv { window, .. } => {
            let t = b.start_table();
            b.push_slot(slot(0), padding_code(window.padding), 0);
            b.push_slot(slot(1), window.stride[1] as i32, 0);
            b.push_slot(slot(2), window.stride[0] as i32, 0);
            b.push_slot(slot(3), act_code(act), 0);
            (options::CONV_2D, b.end_table(t))
        }
        LKind::Depthwise { window } => {
            let t = b.start_table();
            b.push_slot(slot(0), padding_code(window.padding), 0);
            b.push_slot(slot(1), window.stride[1] as i32, 0);
            b.push_slot(slot(2), window.stride[0] as i32, 0);
            b.push_slot(slot(3), 1i32, 0);
            b.push_slot(slot(4), act_code(act), 0);
            (options::DEPTHWISE_CONV_2D, b.end_table(t))
        }
        LKind::Pool { window, .. } => {
            let t = b.start_table();
            b.push_slot(slot(0), padding_code(window.padding), 0);
            b.push_slot(slot(1), window.stride[1] as i32, 0);
            b.push_slot(slot(2), window.stride[0] as i32, 0);
            b.push_slot(slot(3), window.kernel[1] as i32, 0);
            b.push_slot(slot(4), window.kernel[0] as i32, 0);
            b.push_slot(slot(5), act_code(act), 0);
            (options::POOL_2D, b.end_table(t))
        }
        LKind::Softmax => {
            let t = b.start_table();
            b.push_slot(slot(0), 1.0f32, 0.0);
            (options::SOFTMAX, b.end_table(t))
        }
        LKind::Concat => {
            let t = b.start_table();
            b.push_slot(slot(0), -1i32, 0);
            (options::CONCATENATION, b.end_table(t))
        }
        LKind::Add => {
            let t = b.start_table();
            b.push_slot(slot(0), act_code(act), 0);
            (options::ADD, b.end_table(t))
        }
        LKind::Reshape => {
            let v = b.create_vector(new_shape);
            let t = b.start_table();
            b.push_slot_always(slot(0), v);
            (options::RESHAPE, b.end_table(t))
        }
        LKind::Pad { .. } => {
            let t = b.start_table();
            (options::PAD, b.end_table(t))
        }
        LKind::Mean => {
            let t = b.start_table();
            b.push_slot(slot(0), new_shape.len() == 4, false);
            (options::REDUCER, b.end_table(t))
        }
        LKind::Act(Activation::LeakyRelu { alpha }) => {
            let t = b.start_table();
            b.push_slot(slot(0), alpha.0, 0.0);
            (options::LEAKY_RELU, b.end_table(t))
        }
        LKind::Act(Activation::HardSwish) => {
            let t = b.start_table();
            (options::HARD_SWISH, b.end_table(t))
        }
        LKind::Act(Activation::Relu | Activation::Relu6) | LKind::Requantize => return (0, None),
        LKind::Input => unreachable!(),
    };
    (tag, Some(off.as_union_value()))
}
