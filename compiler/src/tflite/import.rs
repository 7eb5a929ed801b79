//! `.tflite` import: a full-integer int8 model (TensorFlow's converter's or
//! mnet's) to mnet's quantized network ([`QuantGraph`]), which the memory
//! planner, the C backend, the TFLite writer and the reference interpreter
//! take as they take a network written in `.mnet`.
//!
//! Every operator is checked on its own — opcode, version, tensor types,
//! quantization and options — and every one mnet cannot lower is reported,
//! all at once ([`ImportError::Unsupported`]). A float32 input through
//! QUANTIZE and a float32 output through DEQUANTIZE are taken as the int8
//! network between them ([`Imported::float_input`], `float_output`).
//! FULLY_CONNECTED becomes a 1x1 conv between reshapes, as mnet lowers a
//! dense layer; a per-tensor weight scale becomes one scale per channel.
//! Every output's shape is computed from the operator's inputs (a dynamic
//! batch leaves placeholders in the file) and checked against the declared
//! one on the dimensions the file fixes; the int32 shape arithmetic a
//! dynamic batch puts before a RESHAPE (Keras' Flatten and Dense on a map)
//! is folded into its new shape and the operators dropped.

use super::read::{self, Budget, Context, ReadError, Tensor};
use crate::lower::{LKind, LNode, Lowered, NodeParams, QParams, QWeights, QuantGraph};
use crate::ops::{Activation, FusedAct, Padding, PoolKind, Window};
use mnet_tflite_schema as fb;
use std::collections::BTreeMap;
use std::fmt;

use super::opcode;

/// An operator mnet cannot lower, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Index in the subgraph's operator list.
    pub operator: usize,
    /// Schema name (`MEAN`) or custom code.
    pub opcode: String,
    pub version: i32,
    pub reason: String,
}

/// Why a `.tflite` file does not import.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImportError {
    /// Not a readable flatbuffer.
    Read(ReadError),
    /// A readable model that is not one network mnet compiles (several
    /// subgraphs, inputs or outputs, float tensors, a graph that does not
    /// connect).
    Model(String),
    /// Operators mnet cannot lower, every one of them.
    Unsupported(Vec<Problem>),
}

impl From<ReadError> for ImportError {
    fn from(e: ReadError) -> ImportError {
        ImportError::Read(e)
    }
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            ImportError::Read(e) => write!(f, "{e}"),
            ImportError::Model(m) => write!(f, "{m}"),
            ImportError::Unsupported(ps) => {
                write!(
                    f,
                    "{} operator{} cannot be compiled:",
                    ps.len(),
                    if ps.len() == 1 { "" } else { "s" }
                )?;
                for p in ps {
                    write!(
                        f,
                        "\n  operator {} ({} v{}): {}",
                        p.operator, p.opcode, p.version, p.reason
                    )?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ImportError {}

/// An imported model.
#[derive(Clone, Debug)]
pub struct Imported {
    pub graph: QuantGraph,
    /// The file's input is float32, quantized by a QUANTIZE the import took
    /// as the int8 input (with that QUANTIZE's output quantization).
    pub float_input: bool,
    /// The file's output is float32, dequantized by a DEQUANTIZE the import
    /// took as the int8 output.
    pub float_output: bool,
}

/// The newest version of each operator mnet lowers (what LiteRT 2.3
/// registers; the tensor types and options each version adds are checked
/// one by one).
const VERSIONS: &[(i32, i32)] = &[
    (opcode::ADD, 5),
    (opcode::AVERAGE_POOL_2D, 3),
    (opcode::CONCATENATION, 4),
    (opcode::CONV_2D, 8),
    (opcode::DEPTHWISE_CONV_2D, 7),
    (opcode::DEQUANTIZE, 6),
    (opcode::FULLY_CONNECTED, 14),
    (opcode::MAX_POOL_2D, 3),
    (opcode::MEAN, 3),
    (opcode::RELU, 3),
    (opcode::RELU6, 3),
    (opcode::RESHAPE, 2),
    (opcode::SOFTMAX, 3),
    (opcode::PAD, 4),
    (opcode::PADV2, 4),
    (opcode::SQUEEZE, 2),
    (opcode::LEAKY_RELU, 2),
    (opcode::QUANTIZE, 4),
    (opcode::HARD_SWISH, 1),
];

/// A C-safe, bounded form of a tensor name for the node (comments, the
/// weights' names).
fn node_name(name: &str, index: usize) -> String {
    let clean: String = name
        .split(';')
        .next()
        .unwrap_or("")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_./:-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect::<String>()
        .replace("*/", "_/")
        .replace("/*", "/_");
    if clean.is_empty() {
        format!("t{index}")
    } else {
        clean
    }
}

/// A network name from a file stem: a C identifier.
pub fn network_name(stem: &str) -> String {
    let mut s: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(48)
        .collect();
    if !s.starts_with(|c: char| c.is_ascii_alphabetic()) {
        s.insert_str(0, "model_");
    }
    s
}

type R<T> = Result<T, String>;

/// An option field's value, or the planus error as text.
fn fbr<T>(r: fb::planus::Result<T>) -> R<T> {
    r.map_err(|e| e.to_string())
}

fn dtype_name(d: &Result<fb::TensorType, i128>) -> String {
    match d {
        Ok(t) => format!("{t:?}").to_uppercase(),
        Err(v) => format!("type {v}"),
    }
}

fn is(t: &Tensor, want: fb::TensorType) -> bool {
    t.dtype == Ok(want)
}

/// Activation quantization: int8, one scale and zero point.
fn act_q(t: &Tensor) -> R<QParams> {
    if !is(t, fb::TensorType::Int8) {
        return Err(format!(
            "tensor `{}` is {}: mnet compiles int8 activations",
            t.name,
            dtype_name(&t.dtype)
        ));
    }
    let q = t
        .quant
        .as_ref()
        .filter(|q| !q.scales.is_empty())
        .ok_or_else(|| format!("int8 tensor `{}` has no quantization", t.name))?;
    if q.details || q.scales.len() != 1 || q.zero_points.len() != 1 {
        return Err(format!(
            "tensor `{}` is quantized per axis ({} scales): activations take one scale",
            t.name,
            q.scales.len()
        ));
    }
    let (scale, zp) = (q.scales[0], q.zero_points[0]);
    if !(scale.is_finite() && scale > 0.0 && (-128..=127).contains(&zp)) {
        return Err(format!(
            "tensor `{}` has scale {scale:e} and zero point {zp}",
            t.name
        ));
    }
    Ok(QParams {
        scale,
        zero_point: zp as i32,
    })
}

/// A TFLite shape as mnet's: without the batch dimension of 1; a shape of
/// rank 2 or 3 whose first dimension is not 1 keeps it (the rows a reshape
/// makes of a map for a FULLY_CONNECTED applied per pixel).
fn mnet_shape(name: &str, s: &[i32]) -> R<Vec<u32>> {
    let keep_all = s.first() != Some(&1) && (2..=3).contains(&s.len());
    if s.len() < 2 || s.len() > 4 || (s[0] != 1 && !keep_all) {
        return Err(format!(
            "tensor `{name}` has shape {s:?}: mnet compiles [1, ...] tensors of rank 2 to 4 (batch 1)"
        ));
    }
    let dims: Vec<u32> = s[usize::from(!keep_all)..]
        .iter()
        .map(|&d| {
            u32::try_from(d)
                .ok()
                .filter(|&d| d > 0 && d <= 1 << 20)
                .ok_or_else(|| format!("tensor `{name}` has shape {s:?}"))
        })
        .collect::<R<_>>()?;
    if dims.iter().map(|&d| d as u64).product::<u64>() > MAX_ELEMENTS {
        return Err(format!(
            "tensor `{name}` has shape {s:?}: more than {MAX_ELEMENTS} values"
        ));
    }
    Ok(dims)
}

/// The most values one activation may hold (256 MiB of int8).
const MAX_ELEMENTS: u64 = 1 << 28;

/// A folded int32 tensor: its shape and values.
type Folded = (Vec<i32>, Vec<i32>);

fn fused(a: fb::ActivationFunctionType) -> R<Option<FusedAct>> {
    match a {
        fb::ActivationFunctionType::None => Ok(None),
        fb::ActivationFunctionType::Relu => Ok(Some(FusedAct::Relu)),
        fb::ActivationFunctionType::Relu6 => Ok(Some(FusedAct::Relu6)),
        other => Err(format!("fused activation {other:?} is not lowered")),
    }
}

fn padding(p: fb::Padding) -> Padding {
    match p {
        fb::Padding::Same => Padding::Same,
        fb::Padding::Valid => Padding::Valid,
    }
}

fn stride(h: i32, w: i32) -> R<[u32; 2]> {
    match (u32::try_from(h), u32::try_from(w)) {
        (Ok(h), Ok(w)) if h > 0 && w > 0 && h <= 1 << 16 && w <= 1 << 16 => Ok([h, w]),
        _ => Err(format!("stride {h}x{w}")),
    }
}

fn no_dilation(h: i32, w: i32) -> R<()> {
    if (h, w) == (1, 1) {
        Ok(())
    } else {
        Err(format!("dilation {h}x{w}: mnet lowers dilation 1"))
    }
}

/// What one operator reads and writes, as the file declares them.
struct OpView<'a> {
    model: fb::ModelRef<'a>,
    tensors: &'a [Tensor],
    inputs: Vec<i32>,
    outputs: Vec<i32>,
}

/// What the import knows beyond the file's declared shapes: the shapes it
/// computed (a dynamic batch leaves placeholders in the file) and the int32
/// tensors it folded (the shape arithmetic before a reshape).
#[derive(Default)]
struct Known {
    shapes: BTreeMap<i32, Vec<i32>>,
    consts: BTreeMap<i32, Folded>,
}

impl<'a> OpView<'a> {
    fn tensor(&self, i: i32) -> R<&'a Tensor> {
        usize::try_from(i)
            .ok()
            .and_then(|i| self.tensors.get(i))
            .ok_or_else(|| {
                format!(
                    "names tensor {i}, but the subgraph has {}",
                    self.tensors.len()
                )
            })
    }

    fn input(&self, k: usize) -> R<&'a Tensor> {
        match self.inputs.get(k) {
            Some(&i) if i >= 0 => self.tensor(i),
            _ => Err(format!("has no input {k}")),
        }
    }

    fn optional_input(&self, k: usize) -> R<Option<&'a Tensor>> {
        match self.inputs.get(k) {
            Some(&i) if i >= 0 => self.tensor(i).map(Some),
            _ => Ok(None),
        }
    }

    fn output(&self) -> R<&'a Tensor> {
        if self.outputs.len() != 1 {
            return Err(format!(
                "has {} outputs; mnet lowers one",
                self.outputs.len()
            ));
        }
        self.tensor(self.outputs[0])
    }

    /// The bytes of a constant tensor of `n` elements of `size` bytes.
    fn constant(&self, t: &Tensor, n: usize, size: usize) -> R<&'a [u8]> {
        if t.buffer == 0 {
            return Err(format!("`{}` is not a constant", t.name));
        }
        let data = read::buffer_data(self.model, t.buffer).map_err(|e| e.0)?;
        if data.len() != n * size {
            return Err(format!(
                "constant `{}` of shape {:?} holds {} bytes, not {}",
                t.name,
                t.shape,
                data.len(),
                n * size
            ));
        }
        Ok(data)
    }

    /// The TFLite shape of input `k`: computed, else declared.
    fn tshape(&self, known: &Known, k: usize) -> R<Vec<i32>> {
        let t = self.input(k)?;
        Ok(known
            .shapes
            .get(&self.inputs[k])
            .cloned()
            .unwrap_or_else(|| t.shape.clone()))
    }

    /// Input `k` as int32 values with their shape: folded, or a constant.
    fn folded(&self, known: &Known, k: usize) -> R<Folded> {
        if let Some(f) = self.inputs.get(k).and_then(|i| known.consts.get(i)) {
            return Ok(f.clone());
        }
        let t = self.input(k)?;
        Ok((t.shape.clone(), self.int32s(t)?))
    }

    fn int32s(&self, t: &Tensor) -> R<Vec<i32>> {
        if !is(t, fb::TensorType::Int32) {
            return Err(format!(
                "`{}` is {}, not INT32",
                t.name,
                dtype_name(&t.dtype)
            ));
        }
        let n = elements(t)?;
        Ok(self
            .constant(t, n, 4)?
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect())
    }
}

fn elements(t: &Tensor) -> R<usize> {
    t.shape.iter().try_fold(1usize, |acc, &d| {
        usize::try_from(d)
            .ok()
            .and_then(|d| acc.checked_mul(d))
            .filter(|&n| n <= 1 << 30)
            .ok_or_else(|| format!("tensor `{}` has shape {:?}", t.name, t.shape))
    })
}

/// Per-output-channel weight scales: one per channel along `dim`, or one
/// for the whole tensor repeated; the zero points must be 0.
fn weight_scales(t: &Tensor, channels: usize, dim: i32) -> R<Vec<f32>> {
    if !is(t, fb::TensorType::Int8) {
        return Err(format!(
            "weights `{}` are {}: mnet compiles int8 weights",
            t.name,
            dtype_name(&t.dtype)
        ));
    }
    if t.sparse {
        return Err(format!("weights `{}` are sparse", t.name));
    }
    let q = t
        .quant
        .as_ref()
        .filter(|q| !q.scales.is_empty() && !q.details)
        .ok_or_else(|| format!("weights `{}` have no int8 quantization", t.name))?;
    if q.zero_points.iter().any(|&z| z != 0) {
        return Err(format!(
            "weights `{}` have a nonzero zero point: TFLite int8 weights are symmetric",
            t.name
        ));
    }
    let scales = if q.scales.len() == 1 {
        vec![q.scales[0]; channels]
    } else if q.scales.len() == channels && q.dimension == dim {
        q.scales.clone()
    } else {
        return Err(format!(
            "weights `{}` have {} scales along axis {}; mnet takes one, or one per output channel along axis {dim}",
            t.name,
            q.scales.len(),
            q.dimension
        ));
    };
    if let Some(s) = scales.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        return Err(format!("weights `{}` have scale {s:e}", t.name));
    }
    Ok(scales)
}

/// Int8 weights and int32 bias of a weighted op.
fn weights(v: &OpView, channels: usize, dim: i32) -> R<QWeights> {
    let w = v.input(1)?;
    let n = elements(w)?;
    let scales = weight_scales(w, channels, dim)?;
    let weight = v.constant(w, n, 1)?.iter().map(|&b| b as i8).collect();
    let bias = match v.optional_input(2)? {
        None => vec![0; channels],
        Some(b) => {
            if !is(b, fb::TensorType::Int32) {
                return Err(format!(
                    "bias `{}` is {}: mnet takes an int32 bias",
                    b.name,
                    dtype_name(&b.dtype)
                ));
            }
            if elements(b)? != channels {
                return Err(format!(
                    "bias `{}` has shape {:?} for {channels} output channels",
                    b.name, b.shape
                ));
            }
            v.int32s(b)?
        }
    };
    Ok(QWeights {
        weight,
        bias,
        scales,
    })
}

/// A node to add: kind, inputs (tensor indices or earlier nodes of this
/// op), shape, fused activation, quantization, weights.
struct New {
    kind: LKind,
    inputs: Vec<Src>,
    shape: Vec<u32>,
    act: Option<FusedAct>,
    q: QParams,
    weights: Option<QWeights>,
    suffix: &'static str,
}

#[derive(Clone, Copy)]
enum Src {
    Tensor(i32),
    /// The previous node this op added.
    Previous,
}

fn same_q(a: QParams, b: QParams, what: &str) -> R<()> {
    if a == b {
        Ok(())
    } else {
        Err(format!(
            "{what}: output quantization ({:e}, {}) differs from the input's ({:e}, {}), which TFLM's kernel does not rescale",
            b.scale, b.zero_point, a.scale, a.zero_point
        ))
    }
}

/// Lower one operator to nodes, or say why not.
/// Lower one operator to nodes and its output's TFLite shape (computed
/// from its inputs), or say why not.
fn lower_op(
    v: &OpView,
    known: &Known,
    code: i32,
    options: Option<fb::BuiltinOptionsRef>,
) -> R<(Vec<New>, Vec<i32>)> {
    use fb::BuiltinOptionsRef as O;
    let out = v.output()?;
    let oq = act_q(out)?;
    let x = v.input(0)?;
    let xq = act_q(x)?;
    let xt = v.tshape(known, 0)?;
    let xshape = mnet_shape(&x.name, &xt)?;
    let one = |kind: LKind,
               act: Option<FusedAct>,
               weights: Option<QWeights>,
               out_t: Vec<i32>|
     -> R<(Vec<New>, Vec<i32>)> {
        let mut inputs = vec![Src::Tensor(v.inputs[0])];
        if matches!(kind, LKind::Add) || matches!(kind, LKind::Concat) {
            inputs = v.inputs.iter().map(|&i| Src::Tensor(i)).collect();
        }
        let shape = mnet_shape(&out.name, &out_t)?;
        Ok((
            vec![New {
                kind,
                inputs,
                shape,
                act,
                q: oq,
                weights,
                suffix: "",
            }],
            out_t,
        ))
    };
    let map = |s: &[u32], c: u32| -> Vec<i32> {
        std::iter::once(1)
            .chain(s.iter().map(|&d| d as i32))
            .chain(std::iter::once(c as i32))
            .collect()
    };
    let chw = |s: &[u32]| -> R<[u32; 3]> {
        match s {
            [h, w, c] if xt.len() == 4 => Ok([*h, *w, *c]),
            _ => Err(format!(
                "input shape {s:?}: mnet convolves [1, H, W, C] tensors"
            )),
        }
    };
    match code {
        opcode::CONV_2D => {
            let Some(O::Conv2DOptions(o)) = options else {
                return Err("no Conv2DOptions".into());
            };
            no_dilation(fbr(o.dilation_h_factor())?, fbr(o.dilation_w_factor())?)?;
            let bias_type = o.quantized_bias_type().map_err(|e| e.to_string())?;
            if !matches!(bias_type, fb::TensorType::Float32 | fb::TensorType::Int32) {
                return Err(format!(
                    "quantized_bias_type {bias_type:?}: mnet accumulates in int32"
                ));
            }
            let [h, w_, cin] = chw(&xshape)?;
            let w = v.input(1)?;
            let [o_, kh, kw, wi] = match w.shape[..] {
                [a, b, c, d] if a > 0 && b > 0 && c > 0 && d > 0 => [a, b, c, d].map(|d| d as u32),
                _ => return Err(format!("weights `{}` have shape {:?}", w.name, w.shape)),
            };
            if wi != cin {
                return Err(format!(
                    "weights `{}` take {wi} input channels of {cin}: grouped convolutions are not lowered",
                    w.name
                ));
            }
            let qw = weights(v, o_ as usize, 0)?;
            let window = Window {
                kernel: [kh, kw],
                stride: stride(fbr(o.stride_h())?, fbr(o.stride_w())?)?,
                padding: padding(fbr(o.padding())?),
            };
            let [oh, ow] = window.out_size([h, w_])?;
            one(
                LKind::Conv { out: o_, window },
                fused(fbr(o.fused_activation_function())?)?,
                Some(qw),
                map(&[oh, ow], o_),
            )
        }
        opcode::DEPTHWISE_CONV_2D => {
            let Some(O::DepthwiseConv2DOptions(o)) = options else {
                return Err("no DepthwiseConv2DOptions".into());
            };
            no_dilation(fbr(o.dilation_h_factor())?, fbr(o.dilation_w_factor())?)?;
            let [h, w_, c] = chw(&xshape)?;
            let w = v.input(1)?;
            let [kh, kw] = match w.shape[..] {
                [1, b, cc, d] if b > 0 && cc > 0 && d as u32 == c => [b as u32, cc as u32],
                [1, _, _, d] if d > 0 && d as u32 != c => {
                    return Err(format!(
                        "depth multiplier {} ({d} output channels of {c} inputs): mnet lowers multiplier 1",
                        d as u32 / c.max(1)
                    ))
                }
                _ => return Err(format!("weights `{}` have shape {:?}", w.name, w.shape)),
            };
            let qw = weights(v, c as usize, 3)?;
            let window = Window {
                kernel: [kh, kw],
                stride: stride(fbr(o.stride_h())?, fbr(o.stride_w())?)?,
                padding: padding(fbr(o.padding())?),
            };
            let [oh, ow] = window.out_size([h, w_])?;
            one(
                LKind::Depthwise { window },
                fused(fbr(o.fused_activation_function())?)?,
                Some(qw),
                map(&[oh, ow], c),
            )
        }
        opcode::FULLY_CONNECTED => {
            let Some(O::FullyConnectedOptions(o)) = options else {
                return Err("no FullyConnectedOptions".into());
            };
            if fbr(o.weights_format())? != fb::FullyConnectedOptionsWeightsFormat::Default {
                return Err("shuffled weights are not lowered".into());
            }
            let bias_type = o.quantized_bias_type().map_err(|e| e.to_string())?;
            if !matches!(bias_type, fb::TensorType::Float32 | fb::TensorType::Int32) {
                return Err(format!(
                    "quantized_bias_type {bias_type:?}: mnet accumulates in int32"
                ));
            }
            let w = v.input(1)?;
            let (units, depth) = match w.shape[..] {
                [a, b] if a > 0 && b > 0 => (a as u32, b as u32),
                _ => return Err(format!("weights `{}` have shape {:?}", w.name, w.shape)),
            };
            let qw = weights(v, units as usize, 0)?;
            let act = fused(fbr(o.fused_activation_function())?)?;
            let in_elems: u64 = xshape.iter().map(|&d| d as u64).product();
            let keep = fbr(o.keep_num_dims())?;
            if keep && xshape.last() != Some(&depth) {
                return Err(format!(
                    "keep_num_dims with input {xshape:?} for weights of depth {depth}"
                ));
            }
            if !keep && !in_elems.is_multiple_of(depth as u64) {
                return Err(format!(
                    "input of {in_elems} values for weights of depth {depth}"
                ));
            }
            // Rows of `depth` values (more than one: the FULLY_CONNECTED
            // of a dense layer on a map, each row a pixel).
            let rows = (in_elems / depth as u64) as u32;
            // TFLite's output: the input's dimensions but the last with
            // keep_num_dims, else [rows, units].
            let out_t: Vec<i32> = if keep {
                xt[..xt.len() - 1]
                    .iter()
                    .copied()
                    .chain(std::iter::once(units as i32))
                    .collect()
            } else {
                vec![rows as i32, units as i32]
            };
            let oshape = mnet_shape(&out.name, &out_t)?;
            let conv = |inputs: Vec<Src>, shape: Vec<u32>| New {
                kind: LKind::Conv {
                    out: units,
                    window: Window::tiling([1, 1]),
                },
                inputs,
                shape,
                act,
                q: oq,
                weights: Some(qw.clone()),
                suffix: "",
            };
            // [h, w, depth] with keep_num_dims is a 1x1 conv; anything else
            // is flattened to [1, rows, depth] and the result reshaped.
            if keep && xshape.len() == 3 {
                return Ok((vec![conv(vec![Src::Tensor(v.inputs[0])], oshape)], out_t));
            }
            let mut nodes = Vec::new();
            let mut src = Src::Tensor(v.inputs[0]);
            if xshape != [1, rows, depth] {
                nodes.push(New {
                    kind: LKind::Reshape,
                    inputs: vec![src],
                    shape: vec![1, rows, depth],
                    act: None,
                    q: xq,
                    weights: None,
                    suffix: "/flatten",
                });
                src = Src::Previous;
            }
            nodes.push(conv(vec![src], vec![1, rows, units]));
            if oshape != [1, rows, units] {
                let last = nodes.last_mut().expect("the conv");
                last.suffix = "/conv";
                nodes.push(New {
                    kind: LKind::Reshape,
                    inputs: vec![Src::Previous],
                    shape: oshape,
                    act: None,
                    q: oq,
                    weights: None,
                    suffix: "",
                });
            }
            Ok((nodes, out_t))
        }
        opcode::AVERAGE_POOL_2D | opcode::MAX_POOL_2D => {
            let Some(O::Pool2DOptions(o)) = options else {
                return Err("no Pool2DOptions".into());
            };
            same_q(xq, oq, "pooling")?;
            let [h, w_, c] = chw(&xshape)?;
            let kernel = stride(fbr(o.filter_height())?, fbr(o.filter_width())?)
                .map_err(|_| "filter size out of range".to_string())?;
            let window = Window {
                kernel,
                stride: stride(fbr(o.stride_h())?, fbr(o.stride_w())?)?,
                padding: padding(fbr(o.padding())?),
            };
            let kind = if code == opcode::MAX_POOL_2D {
                PoolKind::Max
            } else {
                PoolKind::Avg
            };
            let [oh, ow] = window.out_size([h, w_])?;
            one(
                LKind::Pool { kind, window },
                fused(fbr(o.fused_activation_function())?)?,
                None,
                map(&[oh, ow], c),
            )
        }
        opcode::ADD => {
            let act = match options {
                Some(O::AddOptions(o)) => fused(fbr(o.fused_activation_function())?)?,
                None => None,
                Some(_) => return Err("options of another operator".into()),
            };
            if v.inputs.len() != 2 {
                return Err(format!("{} inputs", v.inputs.len()));
            }
            let y = v.input(1)?;
            act_q(y)?;
            let yt = v.tshape(known, 1)?;
            if yt != xt {
                return Err(format!(
                    "shapes {xt:?} + {yt:?}: mnet adds tensors of one shape (no broadcasting)"
                ));
            }
            one(LKind::Add, act, None, xt)
        }
        opcode::CONCATENATION => {
            let Some(O::ConcatenationOptions(o)) = options else {
                return Err("no ConcatenationOptions".into());
            };
            if fused(fbr(o.fused_activation_function())?)?.is_some() {
                return Err("a fused activation on a concatenation".into());
            }
            let rank = xt.len() as i32;
            let axis = fbr(o.axis())?;
            if axis != -1 && axis != rank - 1 {
                return Err(format!(
                    "axis {axis} of rank {rank}: mnet concatenates along the channels (the last axis)"
                ));
            }
            let mut out_t = xt.clone();
            *out_t.last_mut().expect("rank 2 to 4") = 0;
            for k in 0..v.inputs.len() {
                let t = v.input(k)?;
                same_q(act_q(t)?, oq, "concatenation")?;
                let s = v.tshape(known, k)?;
                if s.len() != xt.len() || s[..s.len() - 1] != xt[..xt.len() - 1] {
                    return Err(format!("input shapes {xt:?} and {s:?}"));
                }
                let last = out_t.last_mut().expect("rank 2 to 4");
                *last = last.saturating_add(s[s.len() - 1]);
            }
            one(LKind::Concat, None, None, out_t)
        }
        opcode::RESHAPE | opcode::SQUEEZE => {
            same_q(xq, oq, "reshape")?;
            let size: i64 = xshape.iter().map(|&d| d as i64).product();
            let target: Vec<i32> = if code == opcode::SQUEEZE {
                let dims = match options {
                    Some(O::SqueezeOptions(o)) => {
                        read::values(fbr(o.squeeze_dims())?, &Budget::for_file(0))
                            .map_err(|e| e.0)?
                    }
                    _ => vec![],
                };
                let rank = xt.len() as i32;
                let dims: Vec<i32> = dims
                    .iter()
                    .map(|&d| if d < 0 { d + rank } else { d })
                    .collect();
                xt.iter()
                    .enumerate()
                    .filter(|&(k, &d)| !(d == 1 && (dims.is_empty() || dims.contains(&(k as i32)))))
                    .map(|(_, &d)| d)
                    .collect()
            } else if let Ok((_, t)) = v.folded(known, 1) {
                t
            } else if let Some(O::ReshapeOptions(o)) = options {
                read::values(fbr(o.new_shape())?, &Budget::for_file(0)).map_err(|e| e.0)?
            } else {
                out.shape.clone()
            };
            // One -1 takes what the others leave.
            let known_part: i64 = target
                .iter()
                .filter(|&&d| d != -1)
                .try_fold(1i64, |a, &d| {
                    a.checked_mul(d as i64).filter(|p| p.abs() <= 1 << 40)
                })
                .ok_or_else(|| format!("new shape {target:?}"))?;
            let out_t: Vec<i32> = match target.iter().filter(|&&d| d == -1).count() {
                0 => target.clone(),
                1 if known_part > 0 && size % known_part == 0 => target
                    .iter()
                    .map(|&d| {
                        if d == -1 {
                            (size / known_part) as i32
                        } else {
                            d
                        }
                    })
                    .collect(),
                _ => return Err(format!("new shape {target:?} for {xt:?}")),
            };
            let out_size = out_t.iter().try_fold(1i64, |a, &d| {
                a.checked_mul(d as i64).filter(|p| p.abs() <= 1 << 40)
            });
            if out_size != Some(size) {
                return Err(format!("{xt:?} -> {out_t:?} changes the size"));
            }
            let (mut nodes, out_t) = one(LKind::Reshape, None, None, out_t)?;
            nodes[0].inputs.truncate(1);
            Ok((nodes, out_t))
        }
        opcode::PAD | opcode::PADV2 => {
            same_q(xq, oq, "pad")?;
            let p = v.folded(known, 1)?.1;
            if code == opcode::PADV2 {
                if let Some(c) = v.optional_input(2)? {
                    act_q(c)?;
                    let value = v.constant(c, 1, 1)?[0] as i8;
                    if value as i32 != oq.zero_point {
                        return Err(format!(
                            "pads with {value}, not the zero point {}: mnet pads with zeros",
                            oq.zero_point
                        ));
                    }
                }
            }
            if xshape.len() != 3 || p.len() != 8 {
                return Err(format!("paddings {p:?} of input {:?}", x.shape));
            }
            if p[0] != 0 || p[1] != 0 || p[6] != 0 || p[7] != 0 {
                return Err(format!("paddings {p:?}: mnet pads height and width only"));
            }
            let pads = [p[2], p[3], p[4], p[5]];
            if pads.iter().any(|&d| !(0..=1 << 16).contains(&d)) {
                return Err(format!("paddings {p:?}"));
            }
            let [h, w_, c] = chw(&xshape)?;
            let out_t = vec![1, h as i32 + p[2] + p[3], w_ as i32 + p[4] + p[5], c as i32];
            one(
                LKind::Pad {
                    pads: pads.map(|d| d as u32),
                },
                None,
                None,
                out_t,
            )
        }
        opcode::SOFTMAX => {
            let Some(O::SoftmaxOptions(o)) = options else {
                return Err("no SoftmaxOptions".into());
            };
            let beta = fbr(o.beta())?;
            if beta != 1.0 {
                return Err(format!("beta {beta}: mnet's softmax has beta 1"));
            }
            if oq.scale != 1.0 / 256.0 || oq.zero_point != -128 {
                return Err(format!(
                    "output quantization ({:e}, {}): TFLM's int8 softmax writes (1/256, -128)",
                    oq.scale, oq.zero_point
                ));
            }
            one(LKind::Softmax, None, None, xt)
        }
        opcode::MEAN => {
            let Some(O::ReducerOptions(o)) = options else {
                return Err("no ReducerOptions".into());
            };
            let keep = fbr(o.keep_dims())?;
            let axes = v.folded(known, 1)?.1;
            let rank = xt.len() as i32;
            let mut norm: Vec<i32> = axes
                .iter()
                .map(|&a| if a < 0 { a + rank } else { a })
                .collect();
            norm.sort_unstable();
            if rank != 4 || norm != [1, 2] {
                return Err(format!(
                    "axes {axes:?} of a rank-{rank} input: mnet lowers the mean over height and width"
                ));
            }
            let [_, _, c] = chw(&xshape)?;
            let out_t = if keep {
                vec![1, 1, 1, c as i32]
            } else {
                vec![1, c as i32]
            };
            one(LKind::Mean, None, None, out_t)
        }
        opcode::QUANTIZE => one(LKind::Requantize, None, None, xt),
        opcode::RELU | opcode::RELU6 => {
            same_q(xq, oq, "relu")?;
            let a = if code == opcode::RELU {
                Activation::Relu
            } else {
                Activation::Relu6
            };
            one(LKind::Act(a), None, None, xt)
        }
        opcode::HARD_SWISH => one(LKind::Act(Activation::HardSwish), None, None, xt),
        opcode::LEAKY_RELU => {
            let Some(O::LeakyReluOptions(o)) = options else {
                return Err("no LeakyReluOptions".into());
            };
            let alpha = fbr(o.alpha())?;
            if !alpha.is_finite() {
                return Err(format!("alpha {alpha}"));
            }
            one(
                LKind::Act(Activation::LeakyRelu {
                    alpha: crate::ops::Real(alpha),
                }),
                None,
                None,
                xt,
            )
        }
        _ => Err("mnet does not lower this operator".into()),
    }
}

/// Whether a computed shape agrees with a tensor's declared one on every
/// dimension the file knows (its `shape_signature` has -1 for the others;
/// a file without one declares them all).
fn declared_fits(d: &Tensor, t: &[i32]) -> bool {
    if d.signature.is_empty() {
        return d.shape == t;
    }
    d.signature.len() == t.len()
        && d.shape.len() == t.len()
        && (0..t.len()).all(|k| d.signature[k] == -1 || d.shape[k] == t[k])
}

/// The value of a shape-arithmetic operator on folded or constant int32
/// inputs (1-D: what a reshape's computed shape is made of), if it can be
/// computed.
fn fold(
    v: &OpView,
    known: &Known,
    code: i32,
    options: Option<fb::BuiltinOptionsRef>,
) -> Option<Folded> {
    use fb::BuiltinOptionsRef as O;
    let input = |k: usize| v.folded(known, k).ok();
    let index = |i: i32, len: usize| -> Option<usize> {
        let i = if i < 0 { i + len as i32 } else { i };
        usize::try_from(i).ok().filter(|&i| i < len)
    };
    match code {
        opcode::SHAPE => {
            let s = v.tshape(known, 0).ok()?;
            Some((vec![s.len() as i32], s))
        }
        opcode::CAST => input(0),
        opcode::GATHER => {
            let ((pd, params), (id, idx)) = (input(0)?, input(1)?);
            if pd.len() != 1 {
                return None;
            }
            if let Some(O::GatherOptions(o)) = options {
                if o.axis().ok()? != 0 {
                    return None;
                }
            }
            let data = idx
                .iter()
                .map(|&i| index(i, params.len()).map(|i| params[i]))
                .collect::<Option<Vec<i32>>>()?;
            Some((id, data))
        }
        opcode::REDUCE_PROD => {
            let ((xd, x), (_, axes)) = (input(0)?, input(1)?);
            if xd.len() != 1 || axes != [0] {
                return None;
            }
            let keep = match options {
                Some(O::ReducerOptions(o)) => o.keep_dims().ok()?,
                _ => false,
            };
            let p = x.iter().try_fold(1i32, |a, &d| a.checked_mul(d))?;
            Some((if keep { vec![1] } else { vec![] }, vec![p]))
        }
        opcode::CONCATENATION | opcode::PACK => {
            let mut data = Vec::new();
            for k in 0..v.inputs.len() {
                let (d, x) = input(k)?;
                if d.len() > 1 || (code == opcode::PACK && x.len() != 1) {
                    return None;
                }
                data.extend(x);
            }
            Some((vec![data.len() as i32], data))
        }
        opcode::STRIDED_SLICE => {
            let ((xd, x), (_, b), (_, e), (_, st)) = (input(0)?, input(1)?, input(2)?, input(3)?);
            let Some(O::StridedSliceOptions(o)) = options else {
                return None;
            };
            if xd.len() != 1 || b.len() != 1 || e.len() != 1 || st != [1] {
                return None;
            }
            let len = x.len() as i32;
            let clamp = |i: i32| (if i < 0 { i + len } else { i }).clamp(0, len);
            let start = if o.begin_mask().ok()? & 1 != 0 {
                0
            } else {
                clamp(b[0])
            };
            let end = if o.end_mask().ok()? & 1 != 0 {
                len
            } else {
                clamp(e[0])
            };
            if o.shrink_axis_mask().ok()? & 1 != 0 {
                let i = index(b[0], x.len())?;
                return Some((vec![], vec![x[i]]));
            }
            let data: Vec<i32> = x[start.min(end) as usize..end as usize].to_vec();
            Some((vec![data.len() as i32], data))
        }
        _ => None,
    }
}

/// Import a `.tflite` model (see the module docs). `name` is the network's
/// name in the generated code (see [`network_name`]).
pub fn import(bytes: &[u8], name: &str) -> Result<Imported, ImportError> {
    let m = read::model_v3(bytes)?;
    let budget = Budget::for_file(bytes.len());
    let model_err = |s: String| ImportError::Model(s);
    let subgraphs = m
        .subgraphs()
        .at(|| "the model".into())?
        .ok_or_else(|| model_err("the model has no subgraphs".into()))?;
    if subgraphs.len() != 1 {
        return Err(model_err(format!(
            "the model has {} subgraphs (control flow or several signatures): mnet compiles one",
            subgraphs.len()
        )));
    }
    let sg = subgraphs
        .get(0)
        .expect("one subgraph")
        .at(|| "subgraph 0".into())?;
    let mut tensors = Vec::new();
    if let Some(ts) = sg.tensors().at(|| "subgraph 0".into())? {
        for (i, t) in ts.iter().enumerate() {
            tensors.push(read::tensor(t.at(|| format!("tensor {i}"))?, i, &budget)?);
        }
    }
    let mut codes = Vec::new();
    if let Some(cs) = m.operator_codes().at(|| "the model".into())? {
        for (i, c) in cs.iter().enumerate() {
            let c = c.at(|| format!("operator code {i}"))?;
            let (code, version) = read::builtin_code(c, i)?;
            let label = if code == opcode::CUSTOM {
                format!(
                    "custom `{}`",
                    c.custom_code()
                        .at(|| format!("operator code {i}"))?
                        .unwrap_or("")
                )
            } else {
                read::operator_name(code)
            };
            codes.push((code, version, label));
        }
    }
    let ends = |v: Option<fb::planus::Vector<i32>>, what: &str| -> Result<i32, ImportError> {
        let v = read::values(v, &budget)?;
        match v[..] {
            [t] if t >= 0 && (t as usize) < tensors.len() => Ok(t),
            _ => Err(model_err(format!(
                "the model has {} {what}s ({v:?}): mnet compiles a network of one input and one output",
                v.len()
            ))),
        }
    };
    let mut input = ends(sg.inputs().at(|| "subgraph 0".into())?, "input")?;
    let mut output = ends(sg.outputs().at(|| "subgraph 0".into())?, "output")?;
    let ops_ref = sg.operators().at(|| "subgraph 0".into())?;
    let mut ops = Vec::new();
    if let Some(os) = ops_ref {
        for (k, op) in os.iter().enumerate() {
            let at = || format!("operator {k}");
            let op = op.at(at)?;
            let index = op.opcode_index().at(at)? as usize;
            let Some(c) = codes.get(index) else {
                return Err(model_err(format!(
                    "operator {k} names operator code {index}, but the model has {}",
                    codes.len()
                )));
            };
            let view = OpView {
                model: m,
                tensors: &tensors,
                inputs: read::values(op.inputs().at(at)?, &budget)?,
                outputs: read::values(op.outputs().at(at)?, &budget)?,
            };
            ops.push((k, c.clone(), view, op));
        }
    }
    // The float edges: QUANTIZE from a float32 input, DEQUANTIZE to a
    // float32 output.
    let mut skip = vec![false; ops.len()];
    let mut float_input = false;
    let mut float_output = false;
    if is(&tensors[input as usize], fb::TensorType::Float32) {
        let first = ops
            .iter()
            .position(|(_, _, v, _)| v.inputs.contains(&input));
        match first {
            Some(k)
                if ops[k].1 .0 == opcode::QUANTIZE
                    && ops[k].2.outputs.len() == 1
                    && ops
                        .iter()
                        .filter(|(_, _, v, _)| v.inputs.contains(&input))
                        .count()
                        == 1 =>
            {
                skip[k] = true;
                input = ops[k].2.outputs[0];
                float_input = true;
            }
            _ => {
                return Err(model_err(format!(
                    "the input `{}` is FLOAT32 and not quantized by one QUANTIZE: mnet compiles int8 models (full-integer quantization)",
                    tensors[input as usize].name
                )))
            }
        }
    }
    if is(&tensors[output as usize], fb::TensorType::Float32) {
        match ops
            .iter()
            .position(|(_, _, v, _)| v.outputs.contains(&output))
        {
            Some(k) if ops[k].1 .0 == opcode::DEQUANTIZE && ops[k].2.inputs.len() == 1 => {
                skip[k] = true;
                output = ops[k].2.inputs[0];
                float_output = true;
            }
            _ => {
                return Err(model_err(format!(
                    "the output `{}` is FLOAT32 and not made by a DEQUANTIZE: mnet compiles int8 models (full-integer quantization)",
                    tensors[output as usize].name
                )))
            }
        }
    }
    // The int32 shape arithmetic a dynamic batch adds before a RESHAPE
    // (Keras' Flatten and Dense on a map: SHAPE, STRIDED_SLICE, GATHER,
    // REDUCE_PROD, PACK): operators whose int32 outputs only feed RESHAPE's
    // shape input, or other such operators, are not lowered but folded
    // ([`fold`]) into the reshape's new shape.
    let shape_arith = [
        opcode::SHAPE,
        opcode::STRIDED_SLICE,
        opcode::PACK,
        opcode::CONCATENATION,
        opcode::GATHER,
        opcode::CAST,
        opcode::REDUCE_PROD,
    ];
    loop {
        let mut changed = false;
        for k in 0..ops.len() {
            let (_, (code, _, _), view, _) = &ops[k];
            if skip[k] || !shape_arith.contains(code) || view.outputs.is_empty() {
                continue;
            }
            let only_shapes = view.outputs.iter().all(|&t| {
                t != output
                    && usize::try_from(t)
                        .ok()
                        .and_then(|t| tensors.get(t))
                        .is_some_and(|t| is(t, fb::TensorType::Int32))
                    && ops.iter().enumerate().all(|(c, (_, (code, _, _), v, _))| {
                        v.inputs.iter().enumerate().all(|(slot, &i)| {
                            i != t || skip[c] || (*code == opcode::RESHAPE && slot == 1)
                        })
                    })
            });
            if only_shapes {
                skip[k] = true;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let input_t = &tensors[input as usize];
    if input_t.shape.first() != Some(&1) {
        return Err(model_err(format!(
            "the input `{}` has shape {:?}: mnet compiles batch 1",
            input_t.name, input_t.shape
        )));
    }
    let input_q = act_q(input_t).map_err(|e| model_err(format!("the input: {e}")))?;
    let input_shape = mnet_shape(&input_t.name, &input_t.shape)
        .map_err(|e| model_err(format!("the input: {e}")))?;
    let mut nodes = vec![LNode {
        kind: LKind::Input,
        inputs: vec![],
        shape: input_shape,
        act: None,
        name: node_name(&input_t.name, input as usize),
        batch_norm: None,
        params: None,
        fused: vec![],
    }];
    let mut qparams = vec![input_q];
    let mut weights = BTreeMap::new();
    // Tensor -> node holding its value.
    let mut value: BTreeMap<i32, usize> = BTreeMap::from([(input, 0)]);
    let mut problems = Vec::new();
    let mut names = std::collections::BTreeSet::from([nodes[0].name.clone()]);
    let mut known = Known::default();
    known
        .shapes
        .insert(input, tensors[input as usize].shape.clone());
    for (k, (index, (code, version, label), view, op)) in ops.iter().enumerate() {
        if skip[k] {
            // The shape arithmetic, folded where it can be (a reshape
            // after it falls back to its options or declared shape).
            if shape_arith.contains(code) && view.outputs.len() == 1 {
                if let Some(f) = fold(view, &known, *code, op.builtin_options().ok().flatten()) {
                    known.consts.insert(view.outputs[0], f);
                }
            }
            continue;
        }
        let problem = |reason: String| Problem {
            operator: *index,
            opcode: label.clone(),
            version: *version,
            reason,
        };
        let max = VERSIONS.iter().find(|(c, _)| c == code).map(|&(_, v)| v);
        let lowered = match max {
            None => Err("mnet does not lower this operator".to_string()),
            Some(max) if *version > max || *version < 1 => Err(format!(
                "version {version}: mnet knows this operator up to version {max}"
            )),
            Some(_) => match op.builtin_options() {
                Err(e) => Err(format!("its options: {e}")),
                Ok(options) => lower_op(view, &known, *code, options),
            },
        };
        let news = match lowered {
            // Where the file's shape is static it must be the one computed.
            Ok((_, t)) if !declared_fits(&tensors[view.outputs[0] as usize], &t) => {
                let d = &tensors[view.outputs[0] as usize];
                problems.push(problem(format!(
                    "its output `{}` is declared {:?}, its inputs give {t:?}",
                    d.name, d.shape
                )));
                continue;
            }
            Ok((n, t)) => {
                known.shapes.insert(view.outputs[0], t);
                n
            }
            Err(reason) => {
                problems.push(problem(reason));
                continue;
            }
        };
        // Link to the nodes holding the inputs.
        let mut missing = None;
        let mut previous = None;
        let out_t = view.outputs[0];
        let base = node_name(&tensors[out_t as usize].name, out_t as usize);
        for n in &news {
            let mut ins = Vec::new();
            for s in &n.inputs {
                match s {
                    Src::Previous => ins.push(previous.expect("a previous node")),
                    Src::Tensor(t) => match value.get(t) {
                        Some(&i) => ins.push(i),
                        None => missing = Some(*t),
                    },
                }
            }
            if missing.is_some() {
                break;
            }
            let mut name = format!("{base}{}", n.suffix);
            let stem = name.clone();
            let mut dup = 1;
            while !names.insert(name.clone()) {
                dup += 1;
                name = format!("{stem}_{dup}");
            }
            let mut node = LNode {
                kind: n.kind.clone(),
                inputs: ins,
                shape: n.shape.clone(),
                act: n.act,
                name,
                batch_norm: None,
                params: None,
                fused: vec![],
            };
            if let Some(qw) = &n.weights {
                // The layout follows from the kind and the input's shape.
                let input = &nodes[node.inputs[0]].shape;
                node.params = Some(NodeParams {
                    tensors: vec![],
                    layout: crate::lower::weights::weight_layout(&node, input),
                });
                weights.insert(nodes.len(), qw.clone());
            }
            nodes.push(node);
            qparams.push(n.q);
            previous = Some(nodes.len() - 1);
        }
        match missing {
            // Fed by an operator already reported.
            Some(_) if !problems.is_empty() => continue,
            Some(t) => {
                return Err(model_err(format!(
                    "operator {index} ({label}) reads tensor {t} `{}`, which is neither the input, a constant it takes, nor computed before it",
                    tensors.get(t as usize).map_or("", |t| t.name.as_str())
                )))
            }
            None => {}
        }
        value.insert(out_t, nodes.len() - 1);
    }
    if !problems.is_empty() {
        return Err(ImportError::Unsupported(problems));
    }
    let out = *value.get(&output).ok_or_else(|| {
        model_err(format!(
            "the output `{}` is computed by no operator",
            tensors[output as usize].name
        ))
    })?;
    let lowered = Lowered {
        name: name.to_string(),
        nodes,
        output: out,
    };
    crate::lower::verify(&lowered).map_err(|e| model_err(format!("the imported network: {e}")))?;
    Ok(Imported {
        graph: QuantGraph {
            lowered,
            qparams,
            weights,
        },
        float_input,
        float_output,
    })
}
