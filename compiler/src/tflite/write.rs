//! The TFLite flatbuffer backend.
//!
//! Writes the model through the types planus generates from the official
//! `schema.fbs` (`mnet-tflite-schema`, the reader's): `TFL3`, schema
//! version 3, buffer 0 the empty sentinel, every constant payload at a
//! 16-byte file offset (planus does not apply the schema's `force_align`:
//! [`aligned_bytes`] does), operator versions as the TFLite
//! converter writes them for int8, and mnet's plan of the activations as
//! `OfflineMemoryAllocation` metadata. Each tensor carries a batch
//! dimension of 1 in front of mnet's shape.

use crate::lower::{LKind, QuantGraph};
use crate::ops::{Activation, FusedAct, Padding, PoolKind};
use mnet_tflite_schema as fb;
use mnet_tflite_schema::planus::{Builder, Offset};

use super::opcode;

fn act(a: Option<FusedAct>) -> fb::ActivationFunctionType {
    match a {
        None => fb::ActivationFunctionType::None,
        Some(FusedAct::Relu) => fb::ActivationFunctionType::Relu,
        Some(FusedAct::Relu6) => fb::ActivationFunctionType::Relu6,
    }
}

fn padding(p: Padding) -> fb::Padding {
    match p {
        Padding::Same => fb::Padding::Same,
        Padding::Valid => fb::Padding::Valid,
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

/// Tensors and constant payloads as they are collected.
struct Writer {
    tensors: Vec<fb::Tensor>,
    /// Constant payloads; index + 1 is the buffer index (0 is the sentinel).
    buffers: Vec<Vec<u8>>,
}

impl Writer {
    fn constant(&mut self, mut t: fb::Tensor, data: Vec<u8>) -> i32 {
        self.buffers.push(data);
        t.buffer = self.buffers.len() as u32;
        self.tensors.push(t);
        self.tensors.len() as i32 - 1
    }

    /// An unquantized INT32 constant (Pad paddings, Reshape new shape).
    fn int32_constant(&mut self, name: String, shape: Vec<i32>, values: &[i32]) -> i32 {
        self.constant(
            tensor(name, shape, fb::TensorType::Int32, None),
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )
    }
}

fn tensor(
    name: String,
    shape: Vec<i32>,
    dtype: fb::TensorType,
    quantization: Option<fb::QuantizationParameters>,
) -> fb::Tensor {
    fb::Tensor {
        shape: Some(shape),
        type_: dtype,
        name: Some(name),
        quantization: quantization.map(Box::new),
        ..Default::default()
    }
}

fn quant(scales: Vec<f32>, dimension: i32) -> fb::QuantizationParameters {
    fb::QuantizationParameters {
        zero_point: Some(vec![0; scales.len()]),
        scale: Some(scales),
        quantized_dimension: dimension,
        ..Default::default()
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
    // One activation tensor per node, in node order (tensor i is node i).
    for (i, n) in l.nodes.iter().enumerate() {
        let qp = q.qparams[i];
        w.tensors.push(tensor(
            n.name.clone(),
            with_batch(&n.shape),
            fb::TensorType::Int8,
            Some(fb::QuantizationParameters {
                scale: Some(vec![qp.scale]),
                zero_point: Some(vec![qp.zero_point as i64]),
                ..Default::default()
            }),
        ));
    }
    let mut ops: Vec<(i32, i32, fb::Operator)> = Vec::new(); // (code, version, op)
    for (i, n) in l.nodes.iter().enumerate() {
        if n.kind == LKind::Input {
            continue;
        }
        let mut inputs: Vec<i32> = n.inputs.iter().map(|&j| j as i32).collect();
        if let Some(qw) = q.weights.get(&i) {
            let (wshape, cout) = crate::lower::weights::weight_shape(l, n);
            let in_scale = q.qparams[n.inputs[0]].scale;
            let depthwise = matches!(n.kind, LKind::Depthwise { .. });
            let wt = w.constant(
                tensor(
                    format!("{}.weight", n.name),
                    wshape.iter().map(|&d| d as i32).collect(),
                    fb::TensorType::Int8,
                    Some(quant(qw.scales.clone(), if depthwise { 3 } else { 0 })),
                ),
                qw.weight.iter().map(|&v| v as u8).collect(),
            );
            let bt = w.constant(
                tensor(
                    format!("{}.bias", n.name),
                    vec![cout as i32],
                    fb::TensorType::Int32,
                    Some(quant(qw.scales.iter().map(|&s| in_scale * s).collect(), 0)),
                ),
                qw.bias.iter().flat_map(|b| b.to_le_bytes()).collect(),
            );
            inputs.push(wt);
            inputs.push(bt);
        }
        let mut new_shape = Vec::new();
        match &n.kind {
            LKind::Pad { pads } => {
                let p = [0, 0, pads[0], pads[1], pads[2], pads[3], 0, 0].map(|v| v as i32);
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
        let (code, version) = op_code(&n.kind);
        ops.push((
            code,
            version,
            fb::Operator {
                inputs: Some(inputs),
                outputs: Some(vec![i as i32]),
                builtin_options: builtin_options(&n.kind, n.act, new_shape),
                ..Default::default()
            },
        ));
    }
    // The offline plan: an int32 buffer [version 1, subgraph 0, tensors,
    // one arena offset per tensor], -1 for the constants (TFLM's format,
    // `micro_allocation_info.cc`).
    let mut metadata = Vec::new();
    if opts.offline_plan {
        let (offsets, _) = crate::plan::tflm_offsets(l);
        let mut words = vec![1i32, 0, w.tensors.len() as i32];
        words.extend((0..w.tensors.len()).map(|t| offsets.get(t).map_or(-1, |&o| o as i32)));
        w.buffers
            .push(words.iter().flat_map(|v| v.to_le_bytes()).collect());
        metadata.push(fb::Metadata {
            name: Some("OfflineMemoryAllocation".into()),
            buffer: w.buffers.len() as u32,
        });
    }
    // Operator codes in order of first use.
    let mut codes: Vec<(i32, i32)> = Vec::new();
    for (code, version, _) in &ops {
        if !codes.contains(&(*code, *version)) {
            codes.push((*code, *version));
        }
    }
    let operators: Vec<fb::Operator> = ops
        .into_iter()
        .map(|(code, version, mut op)| {
            op.opcode_index = codes
                .iter()
                .position(|c| *c == (code, version))
                .expect("a code") as u32;
            op
        })
        .collect();
    let operator_codes: Vec<fb::OperatorCode> = codes
        .iter()
        .map(|&(code, version)| fb::OperatorCode {
            deprecated_builtin_code: code.min(127) as i8,
            custom_code: None,
            version,
            builtin_code: fb::BuiltinOperator::try_from(code).expect("a schema operator"),
        })
        .collect();
    let subgraph = fb::SubGraph {
        tensors: Some(std::mem::take(&mut w.tensors)),
        inputs: Some(vec![0]),
        outputs: Some(vec![l.output as i32]),
        operators: Some(operators),
        name: Some("main".into()),
        debug_metadata_index: -1,
    };

    let mut b = Builder::with_capacity(bytes as usize + (1 << 16));
    // Payloads first: they end the file.
    let mut payloads: Vec<Offset<[u8]>> = Vec::new();
    for data in &w.buffers {
        payloads.push(aligned_bytes(&mut b, data));
    }
    let mut buffers = vec![fb::Buffer::create(&mut b, (), 0u64, 0u64)];
    buffers.extend(
        payloads
            .into_iter()
            .map(|p| fb::Buffer::create(&mut b, p, 0u64, 0u64)),
    );
    let model = fb::Model::create(
        &mut b,
        3u32,
        operator_codes.as_slice(),
        &[subgraph][..],
        opts.description.as_str(),
        buffers.as_slice(),
        (),
        (!metadata.is_empty()).then_some(metadata.as_slice()),
        (),
        (),
        (),
    );
    Ok(fb::frame(b.finish(model, None)))
}

/// A `[ubyte]` vector whose data is 16-aligned in the file: the data
/// written with a 16-byte alignment, then its length right before it (the
/// two writes planus's generated code makes for a vector, with the
/// alignment the schema's `force_align: 16` asks for, which planus 1.3
/// does not apply itself).
fn aligned_bytes(b: &mut Builder, data: &[u8]) -> Offset<[u8]> {
    // SAFETY: each closure initialises every byte of the slice it is given.
    unsafe {
        b.write_with(data.len(), 15, |_, out| {
            for (o, &v) in out.iter_mut().zip(data) {
                o.write(v);
            }
        });
        b.write_with(4, 3, |_, out| {
            for (o, v) in out.iter_mut().zip((data.len() as u32).to_le_bytes()) {
                o.write(v);
            }
        });
    }
    b.current_offset()
}

fn builtin_options(
    kind: &LKind,
    a: Option<FusedAct>,
    new_shape: Vec<i32>,
) -> Option<fb::BuiltinOptions> {
    use fb::BuiltinOptions as O;
    Some(match kind {
        LKind::Conv { window, .. } => O::Conv2DOptions(Box::new(fb::Conv2DOptions {
            padding: padding(window.padding),
            stride_w: window.stride[1] as i32,
            stride_h: window.stride[0] as i32,
            fused_activation_function: act(a),
            dilation_w_factor: 1,
            dilation_h_factor: 1,
            quantized_bias_type: fb::TensorType::Float32,
        })),
        LKind::Depthwise { window } => {
            O::DepthwiseConv2DOptions(Box::new(fb::DepthwiseConv2DOptions {
                padding: padding(window.padding),
                stride_w: window.stride[1] as i32,
                stride_h: window.stride[0] as i32,
                depth_multiplier: 1,
                fused_activation_function: act(a),
                dilation_w_factor: 1,
                dilation_h_factor: 1,
            }))
        }
        LKind::Pool { window, .. } => O::Pool2DOptions(Box::new(fb::Pool2DOptions {
            padding: padding(window.padding),
            stride_w: window.stride[1] as i32,
            stride_h: window.stride[0] as i32,
            filter_width: window.kernel[1] as i32,
            filter_height: window.kernel[0] as i32,
            fused_activation_function: act(a),
        })),
        LKind::Softmax => O::SoftmaxOptions(Box::new(fb::SoftmaxOptions { beta: 1.0 })),
        LKind::Concat => O::ConcatenationOptions(Box::new(fb::ConcatenationOptions {
            axis: -1,
            fused_activation_function: fb::ActivationFunctionType::None,
        })),
        LKind::Add => O::AddOptions(Box::new(fb::AddOptions {
            fused_activation_function: act(a),
            pot_scale_int16: true,
        })),
        LKind::Reshape => O::ReshapeOptions(Box::new(fb::ReshapeOptions {
            new_shape: Some(new_shape),
        })),
        LKind::Pad { .. } => O::PadOptions(Box::new(fb::PadOptions {})),
        LKind::Mean => O::ReducerOptions(Box::new(fb::ReducerOptions {
            keep_dims: new_shape.len() == 4,
        })),
        LKind::Act(Activation::LeakyRelu { alpha }) => {
            O::LeakyReluOptions(Box::new(fb::LeakyReluOptions { alpha: alpha.0 }))
        }
        LKind::Act(Activation::HardSwish) => O::HardSwishOptions(Box::new(fb::HardSwishOptions {})),
        LKind::Act(Activation::Relu | Activation::Relu6) | LKind::Requantize => return None,
        LKind::Input => unreachable!("the input is not an operator"),
    })
}
