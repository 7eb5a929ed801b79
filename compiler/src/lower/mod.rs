//! Quantization: a fixed network plus float weights to an int8 [`QuantGraph`]
//! that follows the TFLite int8 spec.
//!
//! Three steps. [`lower`] legalises the fixed graph into the ops the int8
//! backends emit: batch norm folds into the conv/depthwise/dense before it,
//! relu/relu6 fuse into the op before them, global average pooling becomes a
//! full-window average pool, flatten becomes reshape. [`FloatWeights`] holds
//! the float parameters (random ones are deterministic for a seed), and
//! [`calibrate`] runs a float forward pass over calibration inputs to find
//! each activation's range. [`quantize`] then gives per-channel symmetric
//! int8 weights, int32 biases and asymmetric int8 activations; softmax
//! outputs are fixed at 1/256, -128, and pooling, reshape, pad and concat
//! share their input's quantization.

pub mod io;

use crate::ir::{FixedGraph, Op, Padding};
use rand::{RngExt, SeedableRng};
use std::collections::BTreeMap;

/// Fused activation of an op.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Act {
    None,
    Relu,
    Relu6,
}

/// An op after legalisation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LKind {
    Input,
    Conv {
        out: u32,
        kernel: [u32; 2],
        stride: [u32; 2],
        padding: Padding,
    },
    Depthwise {
        kernel: [u32; 2],
        stride: [u32; 2],
        padding: Padding,
    },
    AvgPool {
        size: [u32; 2],
        stride: [u32; 2],
        padding: Padding,
    },
    MaxPool {
        size: [u32; 2],
        stride: [u32; 2],
        padding: Padding,
    },
    Add,
    Concat,
    Pad {
        pads: [u32; 4],
    },
    Reshape,
    Softmax,
}

impl LKind {
    pub fn is_weighted(&self) -> bool {
        matches!(self, LKind::Conv { .. } | LKind::Depthwise { .. })
    }

    /// Whether the output is quantized over its own float range (pools,
    /// reshapes and pads keep their input's quantization; softmax has a
    /// fixed one).
    pub fn has_own_range(&self) -> bool {
        !matches!(
            self,
            LKind::Softmax
                | LKind::AvgPool { .. }
                | LKind::MaxPool { .. }
                | LKind::Reshape
                | LKind::Pad { .. }
        )
    }

    pub fn name(&self) -> &'static str {
        match self {
            LKind::Input => "input",
            LKind::Conv { .. } => "conv2d",
            LKind::Depthwise { .. } => "depthwise_conv2d",
            LKind::AvgPool { .. } => "avg_pool",
            LKind::MaxPool { .. } => "max_pool",
            LKind::Add => "add",
            LKind::Concat => "concat",
            LKind::Pad { .. } => "pad",
            LKind::Reshape => "reshape",
            LKind::Softmax => "softmax",
        }
    }
}

/// One node of a lowered network. Node 0 is the input; nodes are in
/// execution order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LNode {
    pub kind: LKind,
    pub inputs: Vec<usize>,
    pub shape: Vec<u32>,
    pub act: Act,
    /// Name of the source layer (weights are looked up by it).
    pub name: String,
    /// Name of the batch norm folded into it, if any.
    pub batch_norm: Option<String>,
    /// A 1x1 conv standing for a dense layer (its weights file tensor is
    /// `[out, in]`).
    pub from_dense: bool,
    /// Names of the layers fused into it (batch norm, activation), in
    /// order: the last one's output is this node's output.
    pub fused: Vec<String>,
}

/// A network legalised for the int8 backends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lowered {
    pub name: String,
    pub nodes: Vec<LNode>,
    pub output: usize,
}

/// Why a network cannot be lowered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LowerError {
    pub layer: String,
    pub message: String,
}

/// Legalise a fixed network (see the module docs).
pub fn lower(g: &FixedGraph) -> Result<Lowered, LowerError> {
    let mut nodes: Vec<LNode> = Vec::new();
    // Fixed node -> lowered node holding its value.
    let mut map: BTreeMap<crate::ir::FNodeId, usize> = BTreeMap::new();
    // The reshape after a dense layer's 1x1 conv -> that conv (batch norm
    // folds into it and activations fuse with it through the reshape).
    let mut dense_of: BTreeMap<usize, usize> = BTreeMap::new();
    for &id in &g.order {
        let n = g.node(id);
        let ins: Vec<usize> = g.inputs(id).iter().map(|i| map[i]).collect();
        let err = |m: &str| LowerError {
            layer: n.name.clone(),
            message: m.to_string(),
        };
        let new = |kind: LKind, inputs: Vec<usize>| LNode {
            kind,
            inputs,
            shape: n.shape.clone(),
            act: Act::None,
            name: n.name.clone(),
            batch_norm: None,
            from_dense: false,
            fused: Vec::new(),
        };
        let idx = match &n.op {
            Op::Input { .. } => {
                nodes.push(new(LKind::Input, vec![]));
                nodes.len() - 1
            }
            Op::Conv2d {
                out,
                kernel,
                stride,
                padding,
            } => {
                nodes.push(new(
                    LKind::Conv {
                        out: *out,
                        kernel: *kernel,
                        stride: *stride,
                        padding: *padding,
                    },
                    ins,
                ));
                nodes.len() - 1
            }
            Op::DepthwiseConv2d {
                kernel,
                stride,
                padding,
            } => {
                nodes.push(new(
                    LKind::Depthwise {
                        kernel: *kernel,
                        stride: *stride,
                        padding: *padding,
                    },
                    ins,
                ));
                nodes.len() - 1
            }
            Op::Dense { out } => {
                // A dense layer is a 1x1 conv over a [1, 1, K] map, wrapped in
                // reshapes: TFLite's FULLY_CONNECTED requantizes differently in
                // LiteRT and TFLM, CONV_2D the same in both (and per channel).
                let x = ins[0];
                let k: u32 = nodes[x].shape.iter().product();
                let xin = if nodes[x].shape == [1, 1, k] {
                    x
                } else {
                    let mut r = new(LKind::Reshape, vec![x]);
                    r.shape = vec![1, 1, k];
                    r.name = format!("{}/flatten", n.name);
                    nodes.push(r);
                    nodes.len() - 1
                };
                let mut conv = new(
                    LKind::Conv {
                        out: *out,
                        kernel: [1, 1],
                        stride: [1, 1],
                        padding: Padding::Valid,
                    },
                    vec![xin],
                );
                conv.shape = vec![1, 1, *out];
                conv.from_dense = true;
                nodes.push(conv);
                let ci = nodes.len() - 1;
                let mut r = new(LKind::Reshape, vec![ci]);
                r.name = format!("{}/reshape", n.name);
                nodes.push(r);
                dense_of.insert(nodes.len() - 1, ci);
                nodes.len() - 1
            }
            Op::AvgPool {
                size,
                stride,
                padding,
            } => {
                nodes.push(new(
                    LKind::AvgPool {
                        size: *size,
                        stride: *stride,
                        padding: *padding,
                    },
                    ins,
                ));
                nodes.len() - 1
            }
            Op::MaxPool {
                size,
                stride,
                padding,
            } => {
                nodes.push(new(
                    LKind::MaxPool {
                        size: *size,
                        stride: *stride,
                        padding: *padding,
                    },
                    ins,
                ));
                nodes.len() - 1
            }
            Op::GlobalAvgPool => {
                let s = &nodes[ins[0]].shape;
                let window = [s[0], s[1]];
                nodes.push(new(
                    LKind::AvgPool {
                        size: window,
                        stride: window,
                        padding: Padding::Valid,
                    },
                    ins,
                ));
                nodes.len() - 1
            }
            Op::Add => {
                nodes.push(new(LKind::Add, ins));
                nodes.len() - 1
            }
            Op::Concat => {
                nodes.push(new(LKind::Concat, ins));
                nodes.len() - 1
            }
            Op::Pad { pads } => {
                nodes.push(new(LKind::Pad { pads: *pads }, ins));
                nodes.len() - 1
            }
            Op::Reshape { .. } | Op::Flatten => {
                nodes.push(new(LKind::Reshape, ins));
                nodes.len() - 1
            }
            Op::Softmax => {
                if n.shape.len() != 1 {
                    return Err(err(
                        "softmax is lowered only on a vector ([N]); flatten first",
                    ));
                }
                nodes.push(new(LKind::Softmax, ins));
                nodes.len() - 1
            }
            Op::BatchNorm => {
                let p = dense_of.get(&ins[0]).copied().unwrap_or(ins[0]);
                if !nodes[p].kind.is_weighted()
                    || nodes[p].batch_norm.is_some()
                    || nodes[p].act != Act::None
                {
                    return Err(err(
                        "batch_norm must directly follow conv2d, depthwise_conv2d or dense",
                    ));
                }
                nodes[p].batch_norm = Some(n.name.clone());
                nodes[p].fused.push(n.name.clone());
                ins[0]
            }
            Op::Relu | Op::Relu6 => {
                let p = dense_of.get(&ins[0]).copied().unwrap_or(ins[0]);
                let producer = g.inputs(id)[0];
                let fusable = matches!(
                    nodes[p].kind,
                    LKind::Conv { .. }
                        | LKind::Depthwise { .. }
                        | LKind::AvgPool { .. }
                        | LKind::MaxPool { .. }
                        | LKind::Add
                ) && nodes[p].act == Act::None
                    && g.consumers(producer).len() == 1;
                if !fusable {
                    return Err(err(&format!(
                        "`{}` is only supported fused into the conv, depthwise conv, dense, pool or add before it",
                        n.op.name()
                    )));
                }
                nodes[p].act = if matches!(n.op, Op::Relu) {
                    Act::Relu
                } else {
                    Act::Relu6
                };
                nodes[p].fused.push(n.name.clone());
                ins[0]
            }
        };
        map.insert(id, idx);
    }
    Ok(Lowered {
        name: g.info.name.clone(),
        nodes,
        output: map[&g.output],
    })
}

/// Float parameters of one weighted layer, in TFLite layouts: conv weights
/// `[out, kh, kw, in]`, depthwise `[1, kh, kw, c]`, dense `[out, in]`.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerWeights {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    /// gamma, beta, mean, variance of a batch norm folded into the layer.
    pub batch_norm: Option<[Vec<f32>; 4]>,
}

/// Batch-norm epsilon (Keras default).
pub const BN_EPSILON: f32 = 1e-3;

/// Float weights by layer name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FloatWeights {
    pub layers: BTreeMap<String, LayerWeights>,
}

/// (weight shape, output channels) of a weighted node.
pub fn weight_shape(l: &Lowered, n: &LNode) -> (Vec<usize>, usize) {
    let in_shape = &l.nodes[n.inputs[0]].shape;
    let cin = *in_shape.last().unwrap_or(&1) as usize;
    match n.kind {
        LKind::Conv { out, kernel, .. } => (
            vec![out as usize, kernel[0] as usize, kernel[1] as usize, cin],
            out as usize,
        ),
        LKind::Depthwise { kernel, .. } => {
            (vec![1, kernel[0] as usize, kernel[1] as usize, cin], cin)
        }
        _ => unreachable!("not weighted"),
    }
}

impl FloatWeights {
    /// Deterministic random weights: He-normal weights, small biases and
    /// batch-norm statistics drawn near their usual values, so a random
    /// network has realistic, non-saturating activations.
    pub fn random(l: &Lowered, seed: u64) -> FloatWeights {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut layers = BTreeMap::new();
        for n in &l.nodes {
            if !n.kind.is_weighted() {
                continue;
            }
            let (shape, cout) = weight_shape(l, n);
            let count: usize = shape.iter().product();
            let fan_in = count / cout.max(1);
            let fan_in = if matches!(n.kind, LKind::Depthwise { .. }) {
                shape[1] * shape[2]
            } else {
                fan_in
            };
            let std = (2.0 / fan_in.max(1) as f32).sqrt();
            let weight = (0..count).map(|_| normal(&mut rng) * std).collect();
            let bias = (0..cout).map(|_| rng.random_range(-0.1f32..0.1)).collect();
            let batch_norm = n.batch_norm.as_ref().map(|_| {
                [
                    (0..cout).map(|_| rng.random_range(0.5f32..1.5)).collect(),
                    (0..cout).map(|_| rng.random_range(-0.2f32..0.2)).collect(),
                    (0..cout).map(|_| rng.random_range(-0.1f32..0.1)).collect(),
                    (0..cout).map(|_| rng.random_range(0.5f32..1.5)).collect(),
                ]
            });
            layers.insert(
                n.name.clone(),
                LayerWeights {
                    weight,
                    bias,
                    batch_norm,
                },
            );
        }
        FloatWeights { layers }
    }

    /// Weights and bias of a layer with its batch norm folded in.
    pub fn folded(&self, l: &Lowered, n: &LNode) -> (Vec<f32>, Vec<f32>) {
        let w = &self.layers[&n.name];
        let (shape, cout) = weight_shape(l, n);
        let mut weight = w.weight.clone();
        let mut bias = w.bias.clone();
        if let Some([gamma, beta, mean, var]) = &w.batch_norm {
            let per = weight.len() / cout;
            for c in 0..cout {
                let k = gamma[c] / (var[c] + BN_EPSILON).sqrt();
                bias[c] = (bias[c] - mean[c]) * k + beta[c];
                if matches!(n.kind, LKind::Depthwise { .. }) {
                    // [1, kh, kw, c]: channel is the last axis.
                    for t in 0..shape[1] * shape[2] {
                        weight[t * cout + c] *= k;
                    }
                } else {
                    for v in &mut weight[c * per..(c + 1) * per] {
                        *v *= k;
                    }
                }
            }
        }
        (weight, bias)
    }
}

/// A standard normal sample (Box-Muller).
fn normal(rng: &mut rand_chacha::ChaCha8Rng) -> f32 {
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random_range(0.0f32..1.0);
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
}

/// TFLite padding: (before, out size) for one spatial axis.
pub fn pad_before(input: u32, k: u32, stride: u32, padding: Padding) -> (i64, u32) {
    let out = match padding {
        Padding::Same => input.div_ceil(stride),
        Padding::Valid => (input + stride - k) / stride,
    };
    let total = ((out as i64 - 1) * stride as i64 + k as i64 - input as i64).max(0);
    (total / 2, out)
}

fn apply_act(v: f32, act: Act) -> f32 {
    match act {
        Act::None => v,
        Act::Relu => v.max(0.0),
        Act::Relu6 => v.clamp(0.0, 6.0),
    }
}

/// Float forward pass; returns every node's output (for calibration).
pub fn forward_f32(l: &Lowered, w: &FloatWeights, input: &[f32]) -> Vec<Vec<f32>> {
    let mut values: Vec<Vec<f32>> = Vec::with_capacity(l.nodes.len());
    for n in &l.nodes {
        let out: Vec<f32> = match &n.kind {
            LKind::Input => input.to_vec(),
            LKind::Conv {
                out,
                kernel,
                stride,
                padding,
            } => {
                let (weight, bias) = w.folded(l, n);
                let x = &values[n.inputs[0]];
                let s = &l.nodes[n.inputs[0]].shape;
                conv_f32(
                    x,
                    s,
                    &weight,
                    &bias,
                    *out as usize,
                    *kernel,
                    *stride,
                    *padding,
                    false,
                    n.act,
                )
            }
            LKind::Depthwise {
                kernel,
                stride,
                padding,
            } => {
                let (weight, bias) = w.folded(l, n);
                let x = &values[n.inputs[0]];
                let s = &l.nodes[n.inputs[0]].shape;
                conv_f32(
                    x,
                    s,
                    &weight,
                    &bias,
                    s[2] as usize,
                    *kernel,
                    *stride,
                    *padding,
                    true,
                    n.act,
                )
            }
            LKind::AvgPool {
                size,
                stride,
                padding,
            }
            | LKind::MaxPool {
                size,
                stride,
                padding,
            } => {
                let avg = matches!(n.kind, LKind::AvgPool { .. });
                let x = &values[n.inputs[0]];
                let s = &l.nodes[n.inputs[0]].shape;
                let (h, wd, c) = (s[0] as i64, s[1] as i64, s[2] as usize);
                let (ph, oh) = pad_before(s[0], size[0], stride[0], *padding);
                let (pw, ow) = pad_before(s[1], size[1], stride[1], *padding);
                let mut out = vec![0f32; oh as usize * ow as usize * c];
                for oy in 0..oh as i64 {
                    for ox in 0..ow as i64 {
                        for ch in 0..c {
                            let (mut acc, mut cnt, mut mx) = (0f32, 0, f32::MIN);
                            for ky in 0..size[0] as i64 {
                                for kx in 0..size[1] as i64 {
                                    let (iy, ix) = (
                                        oy * stride[0] as i64 - ph + ky,
                                        ox * stride[1] as i64 - pw + kx,
                                    );
                                    if iy < 0 || ix < 0 || iy >= h || ix >= wd {
                                        continue;
                                    }
                                    let v = x[(iy * wd + ix) as usize * c + ch];
                                    acc += v;
                                    cnt += 1;
                                    mx = mx.max(v);
                                }
                            }
                            let v = if avg { acc / cnt.max(1) as f32 } else { mx };
                            out[(oy * ow as i64 + ox) as usize * c + ch] = apply_act(v, n.act);
                        }
                    }
                }
                out
            }
            LKind::Add => {
                let (a, b) = (&values[n.inputs[0]], &values[n.inputs[1]]);
                a.iter()
                    .zip(b)
                    .map(|(x, y)| apply_act(x + y, n.act))
                    .collect()
            }
            LKind::Concat => concat(n, l, &values),
            LKind::Pad { pads } => {
                let x = &values[n.inputs[0]];
                let s = &l.nodes[n.inputs[0]].shape;
                pad(x, s, *pads, 0.0)
            }
            LKind::Reshape => values[n.inputs[0]].clone(),
            LKind::Softmax => {
                let x = &values[n.inputs[0]];
                let mx = x.iter().cloned().fold(f32::MIN, f32::max);
                let e: Vec<f32> = x.iter().map(|v| (v - mx).exp()).collect();
                let sum: f32 = e.iter().sum();
                e.iter().map(|v| v / sum).collect()
            }
        };
        values.push(out);
    }
    values
}

/// Channel concatenation of NHWC tensors (last axis).
pub fn concat<T: Copy>(n: &LNode, l: &Lowered, values: &[Vec<T>]) -> Vec<T> {
    let outer: usize = n.shape[..n.shape.len() - 1]
        .iter()
        .map(|&d| d as usize)
        .product();
    let mut out = Vec::with_capacity(outer * *n.shape.last().unwrap() as usize);
    for o in 0..outer {
        for &i in &n.inputs {
            let c = *l.nodes[i].shape.last().unwrap() as usize;
            out.extend_from_slice(&values[i][o * c..(o + 1) * c]);
        }
    }
    out
}

/// Spatial padding of an `[H, W, C]` tensor with `fill`.
pub fn pad<T: Copy>(x: &[T], s: &[u32], pads: [u32; 4], fill: T) -> Vec<T> {
    let (h, w, c) = (s[0] as usize, s[1] as usize, s[2] as usize);
    let (oh, ow) = (
        h + (pads[0] + pads[1]) as usize,
        w + (pads[2] + pads[3]) as usize,
    );
    let mut out = vec![fill; oh * ow * c];
    for y in 0..h {
        for xx in 0..w {
            let dst = ((y + pads[0] as usize) * ow + xx + pads[2] as usize) * c;
            out[dst..dst + c].copy_from_slice(&x[(y * w + xx) * c..(y * w + xx + 1) * c]);
        }
    }
    out
}

/// A dot product in eight lanes (so it vectorises; the order is fixed, so
/// the result is deterministic).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    for (ca, cb) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for k in 0..8 {
            lanes[k] += ca[k] * cb[k];
        }
    }
    let tail = a.len() / 8 * 8;
    let mut sum: f32 = lanes.iter().sum();
    for (x, y) in a[tail..].iter().zip(&b[tail..]) {
        sum += x * y;
    }
    sum
}

#[allow(clippy::too_many_arguments)]
fn conv_f32(
    x: &[f32],
    s: &[u32],
    weight: &[f32],
    bias: &[f32],
    cout: usize,
    kernel: [u32; 2],
    stride: [u32; 2],
    padding: Padding,
    depthwise: bool,
    act: Act,
) -> Vec<f32> {
    let (h, w, cin) = (s[0] as i64, s[1] as i64, s[2] as usize);
    let (ph, oh) = pad_before(s[0], kernel[0], stride[0], padding);
    let (pw, ow) = pad_before(s[1], kernel[1], stride[1], padding);
    let (kh, kw) = (kernel[0] as i64, kernel[1] as i64);
    let mut out = vec![0f32; oh as usize * ow as usize * cout];
    // im2col for one output pixel: taps outside the image are 0 (the float
    // model pads with zeros), so every output channel is one dot product
    // with its weight row, laid out [ky][kx][ic] like the patch.
    let mut patch = vec![0f32; (kh * kw) as usize * cin];
    for oy in 0..oh as i64 {
        for ox in 0..ow as i64 {
            patch.iter_mut().for_each(|v| *v = 0.0);
            for ky in 0..kh {
                for kx in 0..kw {
                    let (iy, ix) = (
                        oy * stride[0] as i64 - ph + ky,
                        ox * stride[1] as i64 - pw + kx,
                    );
                    if iy < 0 || ix < 0 || iy >= h || ix >= w {
                        continue;
                    }
                    let base = (iy * w + ix) as usize * cin;
                    let at = (ky * kw + kx) as usize * cin;
                    patch[at..at + cin].copy_from_slice(&x[base..base + cin]);
                }
            }
            let y = &mut out[(oy * ow as i64 + ox) as usize * cout..][..cout];
            if depthwise {
                for (oc, yv) in y.iter_mut().enumerate() {
                    let mut acc = bias[oc];
                    for t in 0..(kh * kw) as usize {
                        acc += weight[t * cout + oc] * patch[t * cin + oc];
                    }
                    *yv = apply_act(acc, act);
                }
            } else {
                let k = patch.len();
                for (oc, yv) in y.iter_mut().enumerate() {
                    *yv = apply_act(bias[oc] + dot(&weight[oc * k..(oc + 1) * k], &patch), act);
                }
            }
        }
    }
    out
}

/// Asymmetric int8 quantization of an activation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QParams {
    pub scale: f32,
    pub zero_point: i32,
}

impl QParams {
    /// From a float range (widened to include 0), TFLite-style.
    pub fn from_range(min: f32, max: f32) -> QParams {
        let (min, max) = (min.min(0.0), max.max(0.0));
        let scale = if max > min {
            (max - min) / 255.0
        } else {
            1.0 / 255.0
        };
        let zero_point = (-128.0 - min / scale).round().clamp(-128.0, 127.0) as i32;
        QParams { scale, zero_point }
    }

    pub fn quantize(&self, v: f32) -> i8 {
        ((v / self.scale).round() as i32 + self.zero_point).clamp(-128, 127) as i8
    }

    pub fn dequantize(&self, q: i8) -> f32 {
        (q as i32 - self.zero_point) as f32 * self.scale
    }
}

/// The float range the network input is assumed to have: `[-1, 1]`
/// (what `--random-weights` calibration draws from).
pub const INPUT_RANGE: (f32, f32) = (-1.0, 1.0);

/// Deterministic synthetic calibration inputs: smooth random fields in
/// `[-1, 1]` (a sum of a few random plane waves), so that convolutions see
/// correlated neighbours as they do on spectrograms and images.
pub fn synthetic_inputs(shape: &[u32], count: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x6d6e6574);
    let len: usize = shape.iter().map(|&d| d as usize).product();
    (0..count)
        .map(|_| {
            let waves: Vec<[f32; 4]> = (0..4)
                .map(|_| {
                    [
                        rng.random_range(0.0f32..0.8),
                        rng.random_range(0.0f32..0.8),
                        rng.random_range(0.0f32..6.3),
                        rng.random_range(0.2f32..0.5),
                    ]
                })
                .collect();
            (0..len)
                .map(|i| {
                    let c = *shape.last().unwrap() as usize;
                    let pos = i / c.max(1);
                    let (y, x) = if shape.len() == 3 {
                        (pos / shape[1] as usize, pos % shape[1] as usize)
                    } else {
                        (pos, 0)
                    };
                    let v: f32 = waves
                        .iter()
                        .map(|w| w[3] * (w[0] * y as f32 + w[1] * x as f32 + w[2]).sin())
                        .sum();
                    (v + rng.random_range(-0.1f32..0.1)).clamp(-1.0, 1.0)
                })
                .collect()
        })
        .collect()
}

/// Per-node float ranges over calibration inputs.
/// `input_range` fixes the input's range (synthetic calibration); `None`
/// takes it from the data.
pub fn calibrate(
    l: &Lowered,
    w: &FloatWeights,
    inputs: &[Vec<f32>],
    input_range: Option<(f32, f32)>,
) -> Vec<(f32, f32)> {
    let mut ranges = vec![(f32::MAX, f32::MIN); l.nodes.len()];
    for x in inputs {
        for (i, v) in forward_f32(l, w, x).iter().enumerate() {
            for &f in v {
                ranges[i].0 = ranges[i].0.min(f);
                ranges[i].1 = ranges[i].1.max(f);
            }
        }
    }
    if let Some(r) = input_range {
        ranges[0] = r;
    }
    ranges
}

/// Int8 parameters of a weighted layer.
#[derive(Clone, Debug, PartialEq)]
pub struct QWeights {
    pub weight: Vec<i8>,
    pub bias: Vec<i32>,
    /// One scale per output channel.
    pub scales: Vec<f32>,
}

/// A quantized network: the lowered graph, each node's output
/// quantization, and int8 weights.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantGraph {
    pub lowered: Lowered,
    pub qparams: Vec<QParams>,
    pub weights: BTreeMap<usize, QWeights>,
}

/// Quantize with calibration ranges (one per node).
pub fn quantize(l: &Lowered, w: &FloatWeights, ranges: &[(f32, f32)]) -> QuantGraph {
    let mut qparams: Vec<QParams> = Vec::with_capacity(l.nodes.len());
    for (i, n) in l.nodes.iter().enumerate() {
        let q = match n.kind {
            LKind::Softmax => QParams {
                scale: 1.0 / 256.0,
                zero_point: -128,
            },
            LKind::AvgPool { .. } | LKind::MaxPool { .. } | LKind::Reshape | LKind::Pad { .. } => {
                qparams[n.inputs[0]]
            }
            _ => QParams::from_range(ranges[i].0, ranges[i].1),
        };
        qparams.push(q);
    }
    // Concat needs its inputs to share its quantization: give them the
    // concat's (inputs are conv-like outputs in practice; others keep theirs
    // and the check in `interp` reports the mismatch).
    for (i, n) in l.nodes.iter().enumerate() {
        if n.kind == LKind::Concat {
            let q = qparams[i];
            for &j in &n.inputs {
                if !matches!(
                    l.nodes[j].kind,
                    LKind::Input
                        | LKind::AvgPool { .. }
                        | LKind::MaxPool { .. }
                        | LKind::Reshape
                        | LKind::Pad { .. }
                ) {
                    qparams[j] = q;
                }
            }
        }
    }
    let mut weights = BTreeMap::new();
    for (i, n) in l.nodes.iter().enumerate() {
        if !n.kind.is_weighted() {
            continue;
        }
        let (wf, bf) = w.folded(l, n);
        let (_, cout) = weight_shape(l, n);
        let depthwise = matches!(n.kind, LKind::Depthwise { .. });
        let per = wf.len() / cout;
        let channel_of = |k: usize| if depthwise { k % cout } else { k / per };
        let mut maxabs = vec![0f32; cout];
        for (k, v) in wf.iter().enumerate() {
            let c = channel_of(k);
            maxabs[c] = maxabs[c].max(v.abs());
        }
        let scales: Vec<f32> = maxabs
            .iter()
            .map(|&m| if m > 0.0 { m / 127.0 } else { 1.0 })
            .collect();
        let weight = wf
            .iter()
            .enumerate()
            .map(|(k, v)| {
                let s = scales[channel_of(k)];
                (v / s).round().clamp(-127.0, 127.0) as i8
            })
            .collect();
        let in_scale = qparams[n.inputs[0]].scale;
        let bias = bf
            .iter()
            .enumerate()
            .map(|(c, b)| {
                let s = in_scale as f64 * scales[c] as f64;
                (*b as f64 / s)
                    .round()
                    .clamp(i32::MIN as f64, i32::MAX as f64) as i32
            })
            .collect();
        weights.insert(
            i,
            QWeights {
                weight,
                bias,
                scales,
            },
        );
    }
    QuantGraph {
        lowered: l.clone(),
        qparams,
        weights,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tflite_padding_split() {
        // 49 rows, kernel 10, stride 1, SAME: total 9, before 4 (the odd row after).
        assert_eq!(pad_before(49, 10, 1, Padding::Same), (4, 49));
        // 10 columns, kernel 4, stride 2, SAME: out 5, total 2, before 1.
        assert_eq!(pad_before(10, 4, 2, Padding::Same), (1, 5));
        assert_eq!(pad_before(10, 4, 2, Padding::Valid), (0, 4));
    }

    #[test]
    fn range_quantization() {
        let q = QParams::from_range(-1.0, 1.0);
        assert!((q.scale - 2.0 / 255.0).abs() < 1e-9);
        assert_eq!(q.quantize(0.0), q.zero_point as i8);
        let q = QParams::from_range(0.0, 6.0);
        assert_eq!(q.zero_point, -128);
    }
}
