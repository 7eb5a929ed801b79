//! The op table: every layer of the language, defined once.
//!
//! [`OPS`] lists the layers a `.mnet` file can call, with their parameters
//! and defaults, how many tensors they read and the op a call starts from.
//! [`Op`] is a layer with concrete attributes; its methods are the one place
//! that knows, for each op, its name, its attributes as text, its weight
//! tensors (names and layouts, as the safetensors files and the training
//! engine hold them) and its fusion class. Shape inference and the cost
//! model are in [`shape`], the sliding window of convolutions and pools in
//! [`window`]. Every match on [`Op`] in the compiler and the engine is
//! exhaustive, so adding an op is a compile error wherever it must be
//! handled, never a run-time panic.

pub mod fusion;
pub mod shape;
pub mod window;

pub use window::{Padding, Placement, Window};

use std::fmt;

/// Average or max pooling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PoolKind {
    Avg,
    Max,
}

impl PoolKind {
    pub fn name(self) -> &'static str {
        match self {
            PoolKind::Avg => "avg_pool",
            PoolKind::Max => "max_pool",
        }
    }
}

/// A real number attribute (`alpha: 0.2`), compared and hashed by its
/// bits so ops stay `Eq` and `Hash`.
#[derive(Clone, Copy, Debug)]
pub struct Real(pub f32);

impl PartialEq for Real {
    fn eq(&self, o: &Real) -> bool {
        self.0.to_bits() == o.0.to_bits()
    }
}

impl Eq for Real {}

impl std::hash::Hash for Real {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.0.to_bits().hash(h)
    }
}

impl PartialOrd for Real {
    fn partial_cmp(&self, o: &Real) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for Real {
    fn cmp(&self, o: &Real) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0)
    }
}

impl fmt::Display for Real {
    /// As source: `0.2`, `1.0` (always with a decimal point).
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// An elementwise activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    Relu,
    Relu6,
    /// `x * relu6(x + 3) / 6` (MobileNetV3).
    HardSwish,
    /// `x` for `x >= 0`, else `alpha * x`.
    LeakyRelu {
        alpha: Real,
    },
}

impl Activation {
    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Relu6 => "relu6",
            Activation::HardSwish => "hard_swish",
            Activation::LeakyRelu { .. } => "leaky_relu",
        }
    }

    /// The float function.
    pub fn apply(self, v: f32) -> f32 {
        match self {
            Activation::Relu => v.max(0.0),
            Activation::Relu6 => v.clamp(0.0, 6.0),
            Activation::HardSwish => v * (v + 3.0).clamp(0.0, 6.0) / 6.0,
            Activation::LeakyRelu { alpha } => {
                if v > 0.0 {
                    v
                } else {
                    v * alpha.0
                }
            }
        }
    }

    /// The derivative at `v` (the training engine's backward pass; at a
    /// kink, the side the forward pass takes `v` from).
    pub fn derivative(self, v: f32) -> f32 {
        match self {
            Activation::Relu => f32::from(u8::from(v > 0.0)),
            Activation::Relu6 => f32::from(u8::from(v > 0.0 && v < 6.0)),
            Activation::HardSwish if v <= -3.0 => 0.0,
            Activation::HardSwish if v >= 3.0 => 1.0,
            Activation::HardSwish => (2.0 * v + 3.0) / 6.0,
            Activation::LeakyRelu { alpha } => {
                if v > 0.0 {
                    1.0
                } else {
                    alpha.0
                }
            }
        }
    }

    /// The fused form, if TFLite can fuse it into the op before it.
    pub fn fused(self) -> Option<FusedAct> {
        match self {
            Activation::Relu => Some(FusedAct::Relu),
            Activation::Relu6 => Some(FusedAct::Relu6),
            Activation::HardSwish | Activation::LeakyRelu { .. } => None,
        }
    }
}

/// An activation fused into the op before it: TFLite's
/// `fused_activation_function`, a clamp of that op's int8 output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FusedAct {
    Relu,
    Relu6,
}

impl FusedAct {
    pub fn activation(self) -> Activation {
        match self {
            FusedAct::Relu => Activation::Relu,
            FusedAct::Relu6 => Activation::Relu6,
        }
    }

    /// The float function.
    pub fn apply(self, v: f32) -> f32 {
        self.activation().apply(v)
    }

    /// The float range it clamps to (`hi` infinite for relu).
    pub fn bounds(self) -> (f32, f32) {
        match self {
            FusedAct::Relu => (0.0, f32::INFINITY),
            FusedAct::Relu6 => (0.0, 6.0),
        }
    }
}

/// A layer with concrete attributes. Shapes are NHWC without the batch
/// dimension: `[H, W, C]` for feature maps, `[N]` after dense/flatten.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Input {
        shape: Vec<u32>,
    },
    Conv2d {
        out: u32,
        window: Window,
    },
    DepthwiseConv2d {
        window: Window,
    },
    Dense {
        out: u32,
    },
    Pool {
        kind: PoolKind,
        window: Window,
    },
    GlobalAvgPool,
    Add,
    Concat,
    /// `[top, bottom, left, right]`
    Pad {
        pads: [u32; 4],
    },
    Reshape {
        shape: Vec<u32>,
    },
    Flatten,
    BatchNorm,
    Act(Activation),
    Softmax,
    /// Zeroes a fraction `rate` of the values in training (scaling the
    /// rest by 1 / (1 - rate)); the identity at inference, so the int8
    /// network has no such op.
    Dropout {
        rate: Real,
    },
}

/// Which attribute of an [`Op`] a parameter sets (and a choice may bind).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slot {
    Out,
    Kernel,
    Stride,
    Padding,
    Size,
    Pads,
    Shape,
    Alpha,
    Rate,
}

impl Slot {
    pub fn name(self) -> &'static str {
        match self {
            Slot::Out => "out",
            Slot::Kernel => "kernel",
            Slot::Stride => "stride",
            Slot::Padding => "padding",
            Slot::Size => "size",
            Slot::Pads => "pads",
            Slot::Shape => "shape",
            Slot::Alpha => "alpha",
            Slot::Rate => "rate",
        }
    }
}

/// A constant an attribute (or an option of a value choice) can hold.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Const {
    Int(u64),
    Real(Real),
    Sym(String),
    Tuple(Vec<Const>),
}

impl fmt::Display for Const {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Const::Int(v) => write!(f, "{v}"),
            Const::Real(v) => write!(f, "{v}"),
            Const::Sym(s) => write!(f, "{s}"),
            Const::Tuple(xs) if xs.len() == 1 => write!(f, "({},)", xs[0]),
            Const::Tuple(xs) => {
                let parts: Vec<String> = xs.iter().map(|x| x.to_string()).collect();
                write!(f, "({})", parts.join(", "))
            }
        }
    }
}

/// How many tensors a layer reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inputs {
    /// The first `n` parameters are tensors.
    Fixed(usize),
    /// Two or more tensors, positional only (`concat`).
    Many,
}

/// A parameter of a layer: name, default (`None`: required; `"size"`: the
/// value of the `size` argument) and the attribute it sets (`None` for a
/// tensor input).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Param {
    pub name: &'static str,
    pub default: Option<&'static str>,
    pub slot: Option<Slot>,
}

impl Param {
    /// The default as a constant: `None` for a required parameter and for
    /// one that defaults to another argument (`stride` of a pool is its
    /// `size`).
    pub fn default_const(&self) -> Option<Const> {
        match self.default? {
            "size" => None,
            d => Some(match (d.parse::<u64>(), d.parse::<f32>()) {
                (Ok(n), _) => Const::Int(n),
                (_, Ok(r)) => Const::Real(Real(r)),
                _ => Const::Sym(d.to_string()),
            }),
        }
    }
}

const fn tensor(name: &'static str) -> Param {
    Param {
        name,
        default: None,
        slot: None,
    }
}

const fn attr(name: &'static str, slot: Slot, default: Option<&'static str>) -> Param {
    Param {
        name,
        default,
        slot: Some(slot),
    }
}

/// A layer of the language.
#[derive(Clone, Copy, Debug)]
pub struct OpDef {
    /// The name a `.mnet` file calls it by.
    pub name: &'static str,
    pub inputs: Inputs,
    /// Parameters in order: the tensor inputs, then the attributes.
    pub params: &'static [Param],
    /// The op before the call's attributes are set.
    pub template: fn() -> Op,
}

const ONE: [u32; 2] = [1, 1];

const fn window(kernel: [u32; 2], padding: Padding) -> Window {
    Window {
        kernel,
        stride: ONE,
        padding,
    }
}

const X: &[Param] = &[tensor("x")];
const POOL: &[Param] = &[
    tensor("x"),
    attr("size", Slot::Size, None),
    attr("stride", Slot::Stride, Some("size")),
    attr("padding", Slot::Padding, Some("valid")),
];

/// Every layer the language has.
pub const OPS: &[OpDef] = &[
    OpDef {
        name: "conv2d",
        inputs: Inputs::Fixed(1),
        params: &[
            tensor("x"),
            attr("out", Slot::Out, None),
            attr("kernel", Slot::Kernel, None),
            attr("stride", Slot::Stride, Some("1")),
            attr("padding", Slot::Padding, Some("same")),
        ],
        template: || Op::Conv2d {
            out: 1,
            window: window(ONE, Padding::Same),
        },
    },
    OpDef {
        name: "depthwise_conv2d",
        inputs: Inputs::Fixed(1),
        params: &[
            tensor("x"),
            attr("kernel", Slot::Kernel, Some("3")),
            attr("stride", Slot::Stride, Some("1")),
            attr("padding", Slot::Padding, Some("same")),
        ],
        template: || Op::DepthwiseConv2d {
            window: window([3, 3], Padding::Same),
        },
    },
    OpDef {
        name: "dense",
        inputs: Inputs::Fixed(1),
        params: &[tensor("x"), attr("out", Slot::Out, None)],
        template: || Op::Dense { out: 1 },
    },
    OpDef {
        name: "avg_pool",
        inputs: Inputs::Fixed(1),
        params: POOL,
        template: || Op::Pool {
            kind: PoolKind::Avg,
            window: window(ONE, Padding::Valid),
        },
    },
    OpDef {
        name: "max_pool",
        inputs: Inputs::Fixed(1),
        params: POOL,
        template: || Op::Pool {
            kind: PoolKind::Max,
            window: window(ONE, Padding::Valid),
        },
    },
    OpDef {
        name: "global_avg_pool",
        inputs: Inputs::Fixed(1),
        params: X,
        template: || Op::GlobalAvgPool,
    },
    OpDef {
        name: "add",
        inputs: Inputs::Fixed(2),
        params: &[tensor("a"), tensor("b")],
        template: || Op::Add,
    },
    OpDef {
        name: "concat",
        inputs: Inputs::Many,
        params: &[],
        template: || Op::Concat,
    },
    OpDef {
        name: "pad",
        inputs: Inputs::Fixed(1),
        params: &[tensor("x"), attr("pads", Slot::Pads, None)],
        template: || Op::Pad { pads: [0; 4] },
    },
    OpDef {
        name: "reshape",
        inputs: Inputs::Fixed(1),
        params: &[tensor("x"), attr("shape", Slot::Shape, None)],
        template: || Op::Reshape { shape: vec![] },
    },
    OpDef {
        name: "flatten",
        inputs: Inputs::Fixed(1),
        params: X,
        template: || Op::Flatten,
    },
    OpDef {
        name: "batch_norm",
        inputs: Inputs::Fixed(1),
        params: X,
        template: || Op::BatchNorm,
    },
    OpDef {
        name: "relu",
        inputs: Inputs::Fixed(1),
        params: X,
        template: || Op::Act(Activation::Relu),
    },
    OpDef {
        name: "relu6",
        inputs: Inputs::Fixed(1),
        params: X,
        template: || Op::Act(Activation::Relu6),
    },
    OpDef {
        name: "hard_swish",
        inputs: Inputs::Fixed(1),
        params: X,
        template: || Op::Act(Activation::HardSwish),
    },
    OpDef {
        name: "leaky_relu",
        inputs: Inputs::Fixed(1),
        params: &[tensor("x"), attr("alpha", Slot::Alpha, Some("0.2"))],
        template: || Op::Act(Activation::LeakyRelu { alpha: Real(0.2) }),
    },
    OpDef {
        name: "softmax",
        inputs: Inputs::Fixed(1),
        params: X,
        template: || Op::Softmax,
    },
    OpDef {
        name: "dropout",
        inputs: Inputs::Fixed(1),
        params: &[tensor("x"), attr("rate", Slot::Rate, Some("0.1"))],
        template: || Op::Dropout { rate: Real(0.1) },
    },
];

/// The layer a name calls, if it is one.
pub fn lookup(name: &str) -> Option<&'static OpDef> {
    OPS.iter().find(|d| d.name == name)
}

/// How an op combines with the op before it in the int8 network
/// (see [`crate::lower::fusion`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FusionClass {
    /// conv2d, depthwise_conv2d, dense: a batch norm after it folds into its
    /// weights and a fusable activation into its output clamp.
    Weighted,
    /// Pools and add: a fusable activation after it becomes its clamp.
    TakesActivation,
    /// batch_norm: folds into the weighted layer before it.
    FoldsIntoWeights,
    /// An activation: fuses into the op before it where it can, else runs
    /// as its own op.
    Activation(Activation),
    /// dropout: the identity of the int8 network, invisible to fusion (the
    /// op before it fuses with the op after it as if it were not there).
    Identity,
    /// Everything else.
    Plain,
}

/// A parameter tensor of a layer: the suffix of its name (`L.weight`) and
/// its shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub suffix: &'static str,
    pub shape: Vec<usize>,
}

/// The weight layout of a weighted layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeightLayout {
    /// Output channels (one bias, one quantization scale each).
    pub channels: usize,
    /// Elements per channel.
    pub per_channel: usize,
    /// The channel is the last axis (depthwise `[1, kh, kw, c]`), not the
    /// first (`[out, ...]`).
    pub channel_last: bool,
}

impl WeightLayout {
    /// Output channel of weight element `k`.
    pub fn channel_of(&self, k: usize) -> usize {
        if self.channel_last {
            k % self.channels
        } else {
            k / self.per_channel
        }
    }
}

fn pair_text(p: [u32; 2]) -> String {
    if p[0] == p[1] {
        p[0].to_string()
    } else {
        format!("{}x{}", p[0], p[1])
    }
}

impl Op {
    /// The name used in `.mnet` source.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Conv2d { .. } => "conv2d",
            Op::DepthwiseConv2d { .. } => "depthwise_conv2d",
            Op::Dense { .. } => "dense",
            Op::Pool { kind, .. } => kind.name(),
            Op::GlobalAvgPool => "global_avg_pool",
            Op::Add => "add",
            Op::Concat => "concat",
            Op::Pad { .. } => "pad",
            Op::Reshape { .. } => "reshape",
            Op::Flatten => "flatten",
            Op::BatchNorm => "batch_norm",
            Op::Act(a) => a.name(),
            Op::Softmax => "softmax",
            Op::Dropout { .. } => "dropout",
        }
    }

    /// The sliding window of a conv, depthwise conv or pool, and the slot
    /// its kernel is set by.
    pub fn window(&self) -> Option<(&Window, Slot)> {
        match self {
            Op::Conv2d { window, .. } | Op::DepthwiseConv2d { window } => {
                Some((window, Slot::Kernel))
            }
            Op::Pool { window, .. } => Some((window, Slot::Size)),
            Op::Input { .. }
            | Op::Dense { .. }
            | Op::GlobalAvgPool
            | Op::Add
            | Op::Concat
            | Op::Pad { .. }
            | Op::Reshape { .. }
            | Op::Flatten
            | Op::BatchNorm
            | Op::Act(_)
            | Op::Softmax
            | Op::Dropout { .. } => None,
        }
    }

    /// How the op fuses in the int8 network.
    pub fn fusion_class(&self) -> FusionClass {
        match self {
            Op::Conv2d { .. } | Op::DepthwiseConv2d { .. } | Op::Dense { .. } => {
                FusionClass::Weighted
            }
            Op::Pool { .. } | Op::GlobalAvgPool | Op::Add => FusionClass::TakesActivation,
            Op::BatchNorm => FusionClass::FoldsIntoWeights,
            Op::Act(a) => FusionClass::Activation(*a),
            Op::Dropout { .. } => FusionClass::Identity,
            Op::Input { .. }
            | Op::Concat
            | Op::Pad { .. }
            | Op::Reshape { .. }
            | Op::Flatten
            | Op::Softmax => FusionClass::Plain,
        }
    }

    /// Conv, depthwise conv and dense: the layers with weights.
    pub fn is_weighted(&self) -> bool {
        self.fusion_class() == FusionClass::Weighted
    }

    /// The `weight` shape of a weighted layer on an input of shape
    /// `input` (conv `[out, kh, kw, in]`, depthwise `[1, kh, kw, c]`, dense
    /// `[out, in]`) and its output channels (one bias each); without
    /// allocating, for the cost model.
    fn weight_dims(&self, input: &[u32]) -> Option<(&'static [usize], [usize; 4], usize)> {
        // (the first `rank` entries of the array are the shape)
        let cin = input.last().copied().unwrap_or(1) as usize;
        let elems: usize = input.iter().map(|&d| d as usize).product();
        const FOUR: &[usize] = &[0, 1, 2, 3];
        const TWO: &[usize] = &[0, 1];
        match self {
            Op::Conv2d { out, window } => {
                let [kh, kw] = window.kernel.map(|k| k as usize);
                Some((FOUR, [*out as usize, kh, kw, cin], *out as usize))
            }
            Op::DepthwiseConv2d { window } => {
                let [kh, kw] = window.kernel.map(|k| k as usize);
                Some((FOUR, [1, kh, kw, cin], cin))
            }
            Op::Dense { out } => Some((TWO, [*out as usize, elems, 1, 1], *out as usize)),
            Op::Input { .. }
            | Op::Pool { .. }
            | Op::GlobalAvgPool
            | Op::Add
            | Op::Concat
            | Op::Pad { .. }
            | Op::Reshape { .. }
            | Op::Flatten
            | Op::BatchNorm
            | Op::Act(_)
            | Op::Softmax
            | Op::Dropout { .. } => None,
        }
    }

    /// (weights, biases) of a weighted layer: what it stores per output.
    pub fn weight_counts(&self, input: &[u32]) -> Option<(u64, u64)> {
        let (_, dims, channels) = self.weight_dims(input)?;
        // Saturating: the cost model reports a layer too large, never a
        // wrapped figure.
        let weights = dims.iter().fold(1u64, |a, &d| a.saturating_mul(d as u64));
        Some((weights, channels as u64))
    }

    /// The parameter tensors of the layer on an input of shape `input`, as
    /// the weights files and the training engine hold them: conv
    /// `weight [out, kh, kw, in]`, depthwise `weight [1, kh, kw, c]`, dense
    /// `weight [out, in]`, each with `bias [out]`; batch norm `gamma`,
    /// `beta`, `mean`, `var` `[c]`.
    pub fn tensors(&self, input: &[u32]) -> Vec<TensorSpec> {
        let t = |suffix, shape| TensorSpec { suffix, shape };
        if let Some((axes, dims, channels)) = self.weight_dims(input) {
            return vec![
                t("weight", axes.iter().map(|&a| dims[a]).collect()),
                t("bias", vec![channels]),
            ];
        }
        match self {
            Op::BatchNorm => {
                let c = input.last().copied().unwrap_or(1) as usize;
                ["gamma", "beta", "mean", "var"]
                    .into_iter()
                    .map(|s| t(s, vec![c]))
                    .collect()
            }
            // (The weighted layers returned above.)
            Op::Conv2d { .. }
            | Op::DepthwiseConv2d { .. }
            | Op::Dense { .. }
            | Op::Input { .. }
            | Op::Pool { .. }
            | Op::GlobalAvgPool
            | Op::Add
            | Op::Concat
            | Op::Pad { .. }
            | Op::Reshape { .. }
            | Op::Flatten
            | Op::Act(_)
            | Op::Softmax
            | Op::Dropout { .. } => vec![],
        }
    }

    /// The layout of a weighted layer's `weight` tensor on an input of
    /// shape `input`.
    pub fn weight_layout(&self, input: &[u32]) -> Option<WeightLayout> {
        let (_, dims, channels) = self.weight_dims(input)?;
        let elems: usize = dims.iter().product();
        Some(WeightLayout {
            channels,
            per_channel: elems / channels.max(1),
            channel_last: matches!(self, Op::DepthwiseConv2d { .. }),
        })
    }

    /// Short attribute summary for tables, e.g. `10x4/1 same`.
    pub fn attrs_short(&self) -> String {
        self.attrs_short_with(|_| None)
    }

    /// [`Op::attrs_short`], with the attributes a choice sets shown by
    /// `bound` (e.g. `c3`) instead of their value.
    pub fn attrs_short_with(&self, bound: impl Fn(Slot) -> Option<String>) -> String {
        if let Op::Pad { pads } = self {
            return bound(Slot::Pads)
                .unwrap_or_else(|| format!("{},{},{},{}", pads[0], pads[1], pads[2], pads[3]));
        }
        let Some((w, kslot)) = self.window() else {
            return String::new();
        };
        format!(
            "{}/{} {}",
            bound(kslot).unwrap_or_else(|| format!("{}x{}", w.kernel[0], w.kernel[1])),
            bound(Slot::Stride).unwrap_or_else(|| pair_text(w.stride)),
            bound(Slot::Padding).unwrap_or_else(|| w.padding.as_str().to_string())
        )
    }

    /// The attributes as `(slot, printed value)`, for IR dumps.
    pub fn attrs(&self) -> Vec<(Slot, String)> {
        let pair = |p: [u32; 2]| format!("({}, {})", p[0], p[1]);
        let mut v = Vec::new();
        if let Op::Conv2d { out, .. } | Op::Dense { out } = self {
            v.push((Slot::Out, out.to_string()));
        }
        if let Some((w, kslot)) = self.window() {
            v.push((kslot, pair(w.kernel)));
            v.push((Slot::Stride, pair(w.stride)));
            v.push((Slot::Padding, w.padding.as_str().to_string()));
        }
        if let Op::Dropout { rate } = self {
            v.push((Slot::Rate, rate.to_string()));
        }
        if let Op::Pad { pads } = self {
            v.push((
                Slot::Pads,
                format!("({}, {}, {}, {})", pads[0], pads[1], pads[2], pads[3]),
            ));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_layer_names_itself_and_has_its_parameters() {
        for def in OPS {
            let op = (def.template)();
            assert_eq!(op.name(), def.name);
            assert_eq!(lookup(def.name).map(|d| d.name), Some(def.name));
            if let Inputs::Fixed(n) = def.inputs {
                assert!(def.params[..n].iter().all(|p| p.slot.is_none()));
                assert!(def.params[n..].iter().all(|p| p.slot.is_some()));
            }
            // Every attribute can be read, and set to its default.
            for p in def.params {
                let Some(slot) = p.slot else { continue };
                let mut t = (def.template)();
                assert!(
                    shape::get_attr(&t, slot).is_some(),
                    "{}: no `{}`",
                    def.name,
                    p.name
                );
                if let Some(d) = p.default_const() {
                    shape::set_attr(&mut t, slot, &d)
                        .unwrap_or_else(|e| panic!("{}: default of `{}`: {e}", def.name, p.name));
                }
            }
        }
    }
}
