//! Lowering: a fixed network to the ops the int8 backends emit, then float
//! weights, calibration and int8 quantization.
//!
//! [`lower`] legalises the fixed graph: batch norms and activations fold
//! and fuse where the fixed graph's `fused` flags say (the one rule,
//! [`crate::ops::fusion`]; an activation that cannot fuse is its own op),
//! global average pooling becomes a full-window average pool, flatten
//! becomes reshape, and a dense layer becomes a 1x1 conv between reshapes.
//! [`weights`] holds the float parameters (read from a file by [`io`] or
//! random for a seed), [`calibrate`] finds each activation's float range and
//! [`quantize`] gives the int8 network.

pub mod calibrate;
pub mod io;
pub mod quantize;
pub mod schedule;
pub mod weights;

pub use calibrate::{calibrate, synthetic_inputs, INPUT_RANGE};
pub use quantize::{quantize, QParams, QWeights, QuantGraph};
pub use weights::{FloatWeights, LayerWeights, BN_EPSILON};

use crate::ir::{FNodeId, FixedGraph, Op};
use crate::ops::{Activation, FusedAct, PoolKind, WeightLayout, Window};
use std::collections::BTreeMap;

/// An op after legalisation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LKind {
    Input,
    Conv {
        out: u32,
        window: Window,
    },
    Depthwise {
        window: Window,
    },
    Pool {
        kind: PoolKind,
        window: Window,
    },
    Add,
    Concat,
    Pad {
        pads: [u32; 4],
    },
    Reshape,
    Softmax,
    /// The mean over height and width, requantized to its own quantization
    /// (TFLite MEAN over axes 1 and 2, what Keras' GlobalAveragePooling2D
    /// converts to; imported models only: mnet lowers its own global
    /// average pooling to an average pool). The output is `[1, 1, C]` or
    /// `[C]`.
    Mean,
    /// An activation that runs as its own op (one that could not fuse).
    Act(Activation),
    /// int8 to int8 in another quantization (TFLite QUANTIZE): a concat
    /// input brought to the concat's.
    Requantize,
}

impl LKind {
    pub fn is_weighted(&self) -> bool {
        matches!(self, LKind::Conv { .. } | LKind::Depthwise { .. })
    }

    /// Whether the output is quantized over its own float range (pools,
    /// reshapes and pads keep their input's quantization; softmax has a
    /// fixed one).
    pub fn has_own_range(&self) -> bool {
        match self {
            LKind::Softmax | LKind::Pool { .. } | LKind::Reshape | LKind::Pad { .. } => false,
            // TFLM's RELU6 clamps in its input's quantization (it ignores
            // the output's), RELU requantizes: both are exact with the
            // input's.
            LKind::Act(a) => a.fused().is_none(),
            // Takes the quantization of the concat it feeds.
            LKind::Requantize => false,
            LKind::Input
            | LKind::Conv { .. }
            | LKind::Depthwise { .. }
            | LKind::Add
            | LKind::Mean
            | LKind::Concat => true,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            LKind::Input => "input",
            LKind::Conv { .. } => "conv2d",
            LKind::Depthwise { .. } => "depthwise_conv2d",
            LKind::Pool { kind, .. } => kind.name(),
            LKind::Add => "add",
            LKind::Concat => "concat",
            LKind::Pad { .. } => "pad",
            LKind::Reshape => "reshape",
            LKind::Softmax => "softmax",
            LKind::Mean => "mean",
            LKind::Act(a) => a.name(),
            LKind::Requantize => "requantize",
        }
    }

    /// The sliding window of a conv, depthwise conv or pool.
    pub fn window(&self) -> Option<&Window> {
        match self {
            LKind::Conv { window, .. }
            | LKind::Depthwise { window }
            | LKind::Pool { window, .. } => Some(window),
            LKind::Input
            | LKind::Add
            | LKind::Concat
            | LKind::Pad { .. }
            | LKind::Reshape
            | LKind::Softmax
            | LKind::Mean
            | LKind::Act(_)
            | LKind::Requantize => None,
        }
    }
}

/// The float parameters a weighted node is made from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeParams {
    /// Full names and weights-file shapes: the layer's `weight` and `bias`,
    /// then the folded batch norm's `gamma`, `beta`, `mean`, `var`.
    pub tensors: Vec<(String, Vec<usize>)>,
    /// How the weight's elements map to output channels.
    pub layout: WeightLayout,
}

/// One node of a lowered network. Node 0 is the input; nodes are in
/// execution order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LNode {
    pub kind: LKind,
    pub inputs: Vec<usize>,
    pub shape: Vec<u32>,
    /// The activation fused into its output, if any.
    pub act: Option<FusedAct>,
    /// Name of the source layer (weights are looked up by it).
    pub name: String,
    /// Name of the batch norm folded into it, if any.
    pub batch_norm: Option<String>,
    /// Parameters of a weighted node.
    pub params: Option<NodeParams>,
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

/// The tensors of `op` on `input` named for layer `layer`.
fn named_tensors(layer: &str, op: &Op, input: &[u32]) -> Vec<(String, Vec<usize>)> {
    op.tensors(input)
        .into_iter()
        .map(|t| (format!("{layer}.{}", t.suffix), t.shape))
        .collect()
}

/// Legalise a fixed network (see the module docs).
pub fn lower(g: &FixedGraph) -> Result<Lowered, LowerError> {
    let stripped;
    let g = if g
        .order
        .iter()
        .any(|&id| matches!(g.node(id).op, Op::Dropout { .. }))
    {
        stripped = g.without_dropout();
        &stripped
    } else {
        g
    };
    let mut nodes: Vec<LNode> = Vec::new();
    // Fixed node -> lowered node holding its value.
    let mut map: BTreeMap<FNodeId, usize> = BTreeMap::new();
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
        let in_shape: Vec<u32> = ins
            .first()
            .map(|&j| nodes[j].shape.clone())
            .unwrap_or_default();
        let params = || {
            Some(NodeParams {
                tensors: named_tensors(&n.name, &n.op, &in_shape),
                layout: n.op.weight_layout(&in_shape).expect("a weighted layer"),
            })
        };
        let new = |kind: LKind, inputs: Vec<usize>| LNode {
            kind,
            inputs,
            shape: n.shape.clone(),
            act: None,
            name: n.name.clone(),
            batch_norm: None,
            params: None,
            fused: Vec::new(),
        };
        let idx = match &n.op {
            // (Removed above: the identity at inference.)
            Op::Dropout { .. } => ins[0],
            Op::Input { .. } => {
                nodes.push(new(LKind::Input, vec![]));
                nodes.len() - 1
            }
            Op::Conv2d { out, window } => {
                let mut c = new(
                    LKind::Conv {
                        out: *out,
                        window: *window,
                    },
                    ins,
                );
                c.params = params();
                nodes.push(c);
                nodes.len() - 1
            }
            Op::DepthwiseConv2d { window } => {
                let mut c = new(LKind::Depthwise { window: *window }, ins);
                c.params = params();
                nodes.push(c);
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
                        window: Window::tiling([1, 1]),
                    },
                    vec![xin],
                );
                conv.shape = vec![1, 1, *out];
                conv.params = params();
                nodes.push(conv);
                let ci = nodes.len() - 1;
                let mut r = new(LKind::Reshape, vec![ci]);
                r.name = format!("{}/reshape", n.name);
                nodes.push(r);
                dense_of.insert(nodes.len() - 1, ci);
                nodes.len() - 1
            }
            Op::Pool { kind, window } => {
                nodes.push(new(
                    LKind::Pool {
                        kind: *kind,
                        window: *window,
                    },
                    ins,
                ));
                nodes.len() - 1
            }
            Op::GlobalAvgPool => {
                let s = &nodes[ins[0]].shape;
                nodes.push(new(
                    LKind::Pool {
                        kind: PoolKind::Avg,
                        window: Window::tiling([s[0], s[1]]),
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
                // TFLite's CONCATENATION needs every input in the output's
                // quantization. An input with a quantization of its own that
                // no other concat reads is given the concat's (its other
                // readers adapt); any other (the network input, a pool,
                // reshape or pad sharing its own input's, a tensor two
                // concats join) gets a requantize.
                let concats = |j: &FNodeId| {
                    g.consumers(*j)
                        .iter()
                        .filter(|c| g.node(**c).op == Op::Concat)
                        .count()
                };
                let shared: Vec<bool> = g.inputs(id).iter().map(|j| concats(j) > 1).collect();
                let mut joined = Vec::with_capacity(ins.len());
                for (&j, shared) in ins.iter().zip(shared) {
                    let own = nodes[j].kind.has_own_range() && nodes[j].kind != LKind::Input;
                    if own && !shared {
                        joined.push(j);
                    } else {
                        let mut r = new(LKind::Requantize, vec![j]);
                        r.shape = nodes[j].shape.clone();
                        r.name = format!("{}/requantize_{}", n.name, joined.len());
                        nodes.push(r);
                        joined.push(nodes.len() - 1);
                    }
                }
                nodes.push(new(LKind::Concat, joined));
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
                nodes.push(new(LKind::Softmax, ins));
                nodes.len() - 1
            }
            // Batch norms and activations fuse where the one rule says so
            // (the `fused` flag, `crate::ops::fusion`).
            Op::BatchNorm => {
                let p = dense_of.get(&ins[0]).copied().unwrap_or(ins[0]);
                if !n.fused || !nodes[p].kind.is_weighted() || nodes[p].batch_norm.is_some() {
                    return Err(err(
                        "internal: a batch norm that does not fold passed the checks",
                    ));
                }
                nodes[p].batch_norm = Some(n.name.clone());
                let bn = named_tensors(&n.name, &n.op, &n.shape);
                if let Some(params) = &mut nodes[p].params {
                    params.tensors.extend(bn);
                }
                nodes[p].fused.push(n.name.clone());
                ins[0]
            }
            Op::Act(a) => match a.fused().filter(|_| n.fused) {
                Some(f) => {
                    let p = dense_of.get(&ins[0]).copied().unwrap_or(ins[0]);
                    if nodes[p].act.is_some() {
                        return Err(err("internal: a second activation fused into one op"));
                    }
                    nodes[p].act = Some(f);
                    nodes[p].fused.push(n.name.clone());
                    ins[0]
                }
                None => {
                    nodes.push(new(LKind::Act(*a), ins));
                    nodes.len() - 1
                }
            },
        };
        map.insert(id, idx);
    }
    Ok(Lowered {
        name: g.info.name.clone(),
        nodes,
        output: map[&g.output],
    })
}

/// Check that a lowered network is well formed: the input first, every
/// node reading earlier nodes with the arity of its kind, weighted nodes
/// with parameters, and every output shape what its op makes of its
/// inputs. Lowering's bugs stop here, not in a backend.
pub fn verify(l: &Lowered) -> Result<(), String> {
    let first = l.nodes.first().ok_or("the network has no nodes")?;
    if first.kind != LKind::Input || !first.inputs.is_empty() {
        return Err("node 0 is not the input".into());
    }
    if l.output >= l.nodes.len() {
        return Err(format!("the output {} is not a node", l.output));
    }
    let elems = |s: &[u32]| s.iter().map(|&d| d as u64).product::<u64>();
    for (i, n) in l.nodes.iter().enumerate().skip(1) {
        let bad = |what: &str| Err(format!("node {i} ({}): {what}", n.name));
        if n.inputs.is_empty() || n.inputs.iter().any(|&j| j >= i) {
            return bad("reads a node that does not run before it");
        }
        let x = &l.nodes[n.inputs[0]].shape;
        let arity_ok = match n.kind {
            LKind::Add => n.inputs.len() == 2,
            LKind::Concat => n.inputs.len() >= 2,
            LKind::Input => false,
            LKind::Conv { .. }
            | LKind::Depthwise { .. }
            | LKind::Pool { .. }
            | LKind::Pad { .. }
            | LKind::Reshape
            | LKind::Softmax
            | LKind::Mean
            | LKind::Act(_)
            | LKind::Requantize => n.inputs.len() == 1,
        };
        if !arity_ok {
            return bad("has the wrong number of inputs");
        }
        if n.kind.is_weighted() != n.params.is_some() {
            return bad("weights and kind disagree");
        }
        let want: Option<Vec<u32>> = match &n.kind {
            LKind::Conv { out, window } => window
                .out_size([x[0], x[1]])
                .ok()
                .map(|[h, w]| vec![h, w, *out]),
            LKind::Depthwise { window } | LKind::Pool { window, .. } => window
                .out_size([x[0], x[1]])
                .ok()
                .map(|[h, w]| vec![h, w, x[2]]),
            LKind::Pad { pads } => Some(vec![
                x[0] + pads[0] + pads[1],
                x[1] + pads[2] + pads[3],
                x[2],
            ]),
            LKind::Reshape => (elems(x) == elems(&n.shape)).then(|| n.shape.clone()),
            LKind::Mean => match (&x[..], &n.shape[..]) {
                ([_, _, c], [1, 1, d]) | ([_, _, c], [d]) if c == d => Some(n.shape.clone()),
                _ => None,
            },
            LKind::Concat => {
                let mut s = x.clone();
                let last = s.len() - 1;
                s[last] = n.inputs.iter().map(|&j| l.nodes[j].shape[last]).sum();
                Some(s)
            }
            LKind::Add | LKind::Softmax | LKind::Act(_) | LKind::Requantize | LKind::Input => {
                Some(x.clone())
            }
        };
        if want.as_ref() != Some(&n.shape) {
            return bad(&format!("has shape {:?}, its op gives {want:?}", n.shape));
        }
    }
    Ok(())
}
