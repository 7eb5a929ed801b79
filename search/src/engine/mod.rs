//! The training engine: f32 NHWC tensors with a batch dimension, forward and
//! backward over a static graph.
//!
//! A [`Net`] is built once from a fixed network ([`Net::from_fixed`]); its
//! layers run forward in execution order and backward in reverse, with every
//! activation and gradient buffer allocated once for a batch size and reused
//! across steps. Parameters are named as `mnet compile --weights` reads them
//! (`L.weight`, `L.bias`, `B.gamma`, `B.beta`, `B.mean`, `B.var`), so trained
//! weights compile as they are. A final softmax is folded into the loss
//! (softmax cross-entropy on its input).

/// Destructure the kind of a layer the dispatch has matched already.
macro_rules! kind {
    ($layer:expr, $pat:pat) => {
        let $pat = &$layer.kind else {
            unreachable!("{} is not {}", $layer.name, stringify!($pat))
        };
    };
}

mod elementwise;
mod linear;
mod norm;
mod pool;
mod qat;

use linear::{pointwise, Geometry};
use norm::BnSaved;

pub use linear::in_gemm;
pub use qat::{fake_quant_activations, fake_quant_weights, Qat};

use mnet_compiler::ir::{FixedGraph, Op};
use mnet_compiler::lower::weights::normal;
use mnet_compiler::ops::{Activation, FusedAct, Placement, PoolKind, Window};
use rand::{RngExt, SeedableRng};

/// Rows (pixels) per parallel task in row-wise kernels.
const ROWS: usize = 256;

/// Batch-norm epsilon and running-statistics momentum.
pub const BN_EPSILON: f32 = 1e-3;
pub const BN_MOMENTUM: f32 = 0.9;

/// A trainable parameter: values, gradient, optimizer state.
#[derive(Clone, Debug)]
pub struct Param {
    pub name: String,
    pub shape: Vec<usize>,
    pub value: Vec<f32>,
    pub grad: Vec<f32>,
    /// First-moment state (SGD momentum, Adam's m).
    pub momentum: Vec<f32>,
    /// Second-moment state (Adam's v); allocated by Adam on first use.
    pub second: Vec<f32>,
    /// Weight decay applies (weights, not biases or batch-norm parameters).
    pub decay: bool,
}

impl Param {
    /// An empty parameter (a placeholder while a group is stepped).
    pub fn placeholder() -> Param {
        Param {
            name: String::new(),
            shape: vec![],
            value: vec![],
            grad: vec![],
            momentum: vec![],
            second: vec![],
            decay: false,
        }
    }

    fn new(name: String, shape: Vec<usize>, value: Vec<f32>, decay: bool) -> Param {
        let n = value.len();
        Param {
            name,
            shape,
            value,
            grad: vec![0.0; n],
            momentum: vec![0.0; n],
            second: Vec::new(),
            decay,
        }
    }
}

/// What a layer computes.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    Input,
    Conv {
        window: Window,
        weight: usize,
        bias: usize,
    },
    Depthwise {
        window: Window,
        weight: usize,
        bias: usize,
    },
    Dense {
        weight: usize,
        bias: usize,
    },
    BatchNorm {
        gamma: usize,
        beta: usize,
        mean: usize,
        var: usize,
        /// A relu or relu6 fused after it.
        act: Option<FusedAct>,
    },
    Act(Activation),
    Pool {
        kind: PoolKind,
        window: Window,
    },
    Add,
    Concat,
    Pad {
        pads: [usize; 4],
    },
    /// Reshape or flatten: the same values.
    Reshape,
    /// Softmax over the last axis (one that is not the network's final
    /// classifier, which the loss takes instead).
    Softmax,
    /// Per-channel scaling of a tensor by a parameter (the channel masks of
    /// a width search: the search sets or learns the values).
    ChannelMask {
        mask: usize,
    },
    /// Inverted dropout in training (each value kept with probability 1 -
    /// rate and scaled by 1 / (1 - rate)); the identity in evaluation.
    Dropout {
        rate: f32,
    },
    /// A weighted sum of inputs that differ at most in their channel count
    /// (fewer channels are zeros), one weight per input in a parameter:
    /// the options of a choice in a supernet.
    Mix {
        weights: usize,
    },
}

impl Kind {
    /// The weight parameter of a conv, depthwise conv or dense layer, and
    /// whether its channel is the last axis (depthwise).
    pub fn weight(&self) -> Option<(usize, bool)> {
        match self {
            Kind::Conv { weight, .. } | Kind::Dense { weight, .. } => Some((*weight, false)),
            Kind::Depthwise { weight, .. } => Some((*weight, true)),
            Kind::Input
            | Kind::BatchNorm { .. }
            | Kind::Act(_)
            | Kind::Pool { .. }
            | Kind::Add
            | Kind::Concat
            | Kind::Pad { .. }
            | Kind::Reshape
            | Kind::Softmax
            | Kind::ChannelMask { .. }
            | Kind::Dropout { .. }
            | Kind::Mix { .. } => None,
        }
    }
}

/// A layer: what, which inputs, output shape per sample.
#[derive(Clone, Debug)]
pub struct Layer {
    pub kind: Kind,
    pub inputs: Vec<usize>,
    pub shape: Vec<usize>,
    pub name: String,
    /// Its output is a tensor of the int8 network (not the inside of a
    /// fused op), so quantization-aware training fake-quantizes it.
    pub quantized: bool,
}

/// A network ready to train.
#[derive(Clone, Debug)]
pub struct Net {
    pub layers: Vec<Layer>,
    pub params: Vec<Param>,
    /// The logits layer (the input of a final softmax, or the output).
    pub logits: usize,
    pub batch: usize,
    acts: Vec<Vec<f32>>,
    grads: Vec<Vec<f32>>,
    /// Per batch-norm layer: what the last forward pass used.
    bn_saved: Vec<BnSaved>,
    /// Per conv layer that needs one: its im2col matrix, kept from the
    /// forward pass for the weight gradient and reused across steps.
    cols: Vec<Vec<f32>>,
    /// Per conv layer: its precomputed geometry.
    geometry: Vec<Geometry>,
    /// Per layer, in the backward pass: no gradient written yet.
    fresh: Vec<bool>,
    /// Scratch space of the backward pass (partial sums of weight
    /// gradients), reused across steps.
    scratch: Vec<f32>,
    /// Quantization-aware training, when enabled.
    qat: Option<Qat>,
    /// Compute the gradient with respect to the network input (off in
    /// training: a first conv then skips its most expensive product).
    pub input_grad: bool,
    /// When set, per-layer (forward, backward) seconds accumulate here.
    pub profile: Option<Vec<(f64, f64)>>,
    /// Biases that do not train: those of a conv, depthwise conv or dense
    /// whose batch norm folds into it (the norm's beta subsumes them).
    frozen: Vec<usize>,
    /// Per dropout layer, the mask of the last training pass (0 or
    /// 1 / (1 - rate) per value), and the generator that draws them.
    masks: Vec<Vec<f32>>,
    mask_rng: rand_chacha::ChaCha8Rng,
    /// Keep the drawn dropout masks instead of drawing new ones each
    /// training pass (gradient checks).
    pub fixed_masks: bool,
}

/// How weights start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Init {
    /// Glorot (Xavier) uniform, Keras' default: limit sqrt(6 / (fan_in +
    /// fan_out)), fans counted as Keras does (a depthwise kernel's fan-out
    /// is its taps).
    #[default]
    Glorot,
    /// He (Kaiming) normal: std sqrt(2 / fan_in).
    He,
}

impl std::str::FromStr for Init {
    type Err = String;
    fn from_str(s: &str) -> Result<Init, String> {
        match s {
            "glorot" => Ok(Init::Glorot),
            "he" => Ok(Init::He),
            _ => Err(format!("`{s}`: expected glorot or he")),
        }
    }
}

/// The state [`Net::snapshot`] saves.
#[derive(Clone, Debug)]
pub struct Snapshot {
    values: Vec<Vec<f32>>,
    ranges: Option<Vec<Option<(f32, f32)>>>,
}

/// A window's placement over an `[H, W, C]` input.
fn placement(window: &Window, s: &[usize]) -> Placement {
    window.over([s[0] as u32, s[1] as u32])
}

fn elems(shape: &[usize]) -> usize {
    shape.iter().product()
}

fn pair(p: [u32; 2]) -> [usize; 2] {
    [p[0] as usize, p[1] as usize]
}

/// The upper bound of a fused activation (relu: none).
fn upper(act: FusedAct) -> f32 {
    match act {
        FusedAct::Relu => f32::MAX,
        FusedAct::Relu6 => 6.0,
    }
}

/// The most memory `mnet train` lets a network and batch take (8 GiB): past
/// it the engine's buffers would not fit a workstation, and no
/// microcontroller network needs them.
pub const MEMORY_LIMIT: u128 = 8 << 30;

/// About how many bytes [`Net::from_fixed`] and training steps hold for `g`
/// at `batch`: each parameter four times (value, gradient, two optimizer
/// moments), each layer's activation and gradient per sample, and a conv's
/// unfolded input (forward and backward) per sample; all f32. Read before
/// building, so a batch or network past [`MEMORY_LIMIT`] is an error, not
/// an aborted allocation.
pub fn training_bytes(g: &FixedGraph, batch: usize) -> u128 {
    let (mut params, mut per_sample) = (0u128, 0u128);
    let prod = |s: &[u32]| s.iter().map(|&d| d as u128).product::<u128>();
    for &id in &g.order {
        let n = g.node(id);
        let input = g
            .inputs(id)
            .first()
            .map(|&i| g.node(i).shape.clone())
            .unwrap_or_default();
        params +=
            n.op.tensors(&input)
                .iter()
                .map(|t| t.shape.iter().map(|&d| d as u128).product::<u128>())
                .sum::<u128>();
        let out = prod(&n.shape);
        per_sample += 2 * out;
        if let Op::Conv2d { window, .. } = &n.op {
            let pixels = out / (*n.shape.last().unwrap_or(&1)).max(1) as u128;
            let [kh, kw] = pair(window.kernel);
            let cin = *input.last().unwrap_or(&1) as u128;
            per_sample += 2 * pixels * (kh * kw) as u128 * cin;
        }
    }
    4 * (4 * params + per_sample * batch as u128)
}

/// Builds a [`Net`] layer by layer: [`Net::from_fixed_with`] for a fixed
/// network, and the search's supernet, which adds its own mixing and
/// masking layers between the compiler's ops.
pub struct NetBuilder {
    layers: Vec<Layer>,
    params: Vec<Param>,
    rng: rand_chacha::ChaCha8Rng,
    init: Init,
    seed: u64,
}

impl NetBuilder {
    pub fn new(seed: u64, init: Init) -> NetBuilder {
        NetBuilder {
            layers: Vec::new(),
            params: Vec::new(),
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed),
            init,
            seed,
        }
    }

    /// The layers so far.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// Add a parameter (not initialised by `init`); returns its index.
    pub fn param(
        &mut self,
        name: String,
        shape: Vec<usize>,
        value: Vec<f32>,
        decay: bool,
    ) -> usize {
        self.params.push(Param::new(name, shape, value, decay));
        self.params.len() - 1
    }

    /// Add a layer of any kind; returns its index.
    pub fn push(
        &mut self,
        kind: Kind,
        inputs: Vec<usize>,
        shape: Vec<usize>,
        name: String,
        quantized: bool,
    ) -> usize {
        self.layers.push(Layer {
            kind,
            inputs,
            shape,
            name,
            quantized,
        });
        self.layers.len() - 1
    }

    /// Add the layer of the compiler's `op` reading layers `inputs`, with
    /// output shape `shape` (per sample) and parameters named after `name`;
    /// `fused`: the int8 rule fuses it into the layer before (an activation
    /// after a batch norm then runs inside the batch norm); `quantized`:
    /// its output is a tensor of the int8 network. Returns the layer that
    /// holds its output.
    pub fn op(
        &mut self,
        op: &Op,
        inputs: &[usize],
        shape: Vec<usize>,
        name: &str,
        fused: bool,
        quantized: bool,
    ) -> usize {
        let in_shape: Vec<usize> = inputs
            .first()
            .map(|&i| self.layers[i].shape.clone())
            .unwrap_or_default();
        let (init, rng, params) = (self.init, &mut self.rng, &mut self.params);
        let mut weighted = |wshape: Vec<usize>, fan_in: usize, fan_out: usize, cout: usize| {
            let w = match init {
                Init::He => {
                    let std = (2.0 / fan_in.max(1) as f32).sqrt();
                    (0..elems(&wshape)).map(|_| normal(rng) * std).collect()
                }
                Init::Glorot => {
                    let limit = (6.0 / (fan_in + fan_out).max(1) as f32).sqrt();
                    (0..elems(&wshape))
                        .map(|_| limit * (2.0 * rng.random::<f32>() - 1.0))
                        .collect()
                }
            };
            params.push(Param::new(format!("{name}.weight"), wshape, w, true));
            params.push(Param::new(
                format!("{name}.bias"),
                vec![cout],
                vec![0.0; cout],
                false,
            ));
            (params.len() - 2, params.len() - 1)
        };
        let kind = match op {
            Op::Input { .. } => Kind::Input,
            Op::Conv2d { out, window } => {
                let (cin, cout, k) = (in_shape[2], *out as usize, pair(window.kernel));
                let (weight, bias) = weighted(
                    vec![cout, k[0], k[1], cin],
                    k[0] * k[1] * cin,
                    k[0] * k[1] * cout,
                    cout,
                );
                Kind::Conv {
                    window: *window,
                    weight,
                    bias,
                }
            }
            Op::DepthwiseConv2d { window } => {
                let (c, k) = (in_shape[2], pair(window.kernel));
                let (weight, bias) =
                    weighted(vec![1, k[0], k[1], c], k[0] * k[1] * c, k[0] * k[1], c);
                Kind::Depthwise {
                    window: *window,
                    weight,
                    bias,
                }
            }
            Op::Dense { out } => {
                let (k, cout) = (elems(&in_shape), *out as usize);
                let (weight, bias) = weighted(vec![cout, k], k, cout, cout);
                Kind::Dense { weight, bias }
            }
            Op::BatchNorm => {
                let c = *in_shape.last().unwrap();
                let mut p = |s: &str, v: f32, train: bool| {
                    let mut prm = Param::new(format!("{name}.{s}"), vec![c], vec![v; c], false);
                    if !train {
                        prm.grad.clear();
                        prm.momentum.clear();
                    }
                    params.push(prm);
                    params.len() - 1
                };
                Kind::BatchNorm {
                    gamma: p("gamma", 1.0, true),
                    beta: p("beta", 0.0, true),
                    mean: p("mean", 0.0, false),
                    var: p("var", 1.0, false),
                    act: None,
                }
            }
            Op::Act(a) => {
                let p = inputs[0];
                // Fused (the int8 rule) into a batch norm: one pass each
                // way instead of two.
                if let (
                    Kind::BatchNorm {
                        act: act @ None, ..
                    },
                    Some(f),
                    true,
                ) = (&mut self.layers[p].kind, a.fused(), fused)
                {
                    *act = Some(f);
                    self.layers[p].quantized = quantized;
                    return p;
                }
                Kind::Act(*a)
            }
            Op::Pool { kind, window } => Kind::Pool {
                kind: *kind,
                window: *window,
            },
            Op::GlobalAvgPool => Kind::Pool {
                kind: PoolKind::Avg,
                window: Window::tiling([in_shape[0] as u32, in_shape[1] as u32]),
            },
            Op::Add => Kind::Add,
            Op::Concat => Kind::Concat,
            Op::Pad { pads } => Kind::Pad {
                pads: pads.map(|p| p as usize),
            },
            Op::Reshape { .. } | Op::Flatten => Kind::Reshape,
            Op::Softmax => Kind::Softmax,
            Op::Dropout { rate } => Kind::Dropout { rate: rate.0 },
        };
        self.push(kind, inputs.to_vec(), shape, name.to_string(), quantized)
    }

    /// The network, with `logits` the layer the loss reads.
    pub fn finish(self, logits: usize, batch: usize) -> Net {
        let mut net = Net {
            layers: self.layers,
            params: self.params,
            logits,
            batch: 0,
            acts: vec![],
            grads: vec![],
            bn_saved: vec![],
            cols: vec![],
            geometry: vec![],
            fresh: vec![],
            scratch: vec![],
            qat: None,
            input_grad: false,
            profile: None,
            frozen: Vec::new(),
            masks: Vec::new(),
            mask_rng: rand_chacha::ChaCha8Rng::seed_from_u64(self.seed ^ 0xd20_0007),
            fixed_masks: false,
        };
        // A batch norm that folds into the layer before it makes that
        // layer's bias redundant: it stays 0 (it folds anyway).
        for l in &net.layers {
            if let (Kind::BatchNorm { .. }, Some(&p)) = (&l.kind, l.inputs.first()) {
                // Folded: the producer's output is not an int8 tensor.
                if let Kind::Conv { bias, .. }
                | Kind::Depthwise { bias, .. }
                | Kind::Dense { bias, .. } = net.layers[p].kind
                {
                    if !net.layers[p].quantized {
                        net.frozen.push(bias);
                    }
                }
            }
        }
        net.set_batch(batch);
        net
    }
}

impl Net {
    /// Build from a fixed network with the default initialisation for
    /// `seed`.
    pub fn from_fixed(g: &FixedGraph, batch: usize, seed: u64) -> Net {
        Net::from_fixed_with(g, batch, seed, Init::default())
    }

    /// Build from a fixed network with weights initialised by `init`.
    pub fn from_fixed_with(g: &FixedGraph, batch: usize, seed: u64, init: Init) -> Net {
        let mut b = NetBuilder::new(seed, init);
        let mut index = std::collections::HashMap::new();
        let mut logits = 0;
        // A node's output is an int8 tensor unless a layer fused into it
        // reads it.
        // (A dropout is not in the int8 network: look through it, and it
        // is no quantization point itself.)
        fn kept(g: &FixedGraph, id: mnet_compiler::ir::FNodeId) -> bool {
            if matches!(g.node(id).op, Op::Dropout { .. }) {
                return false;
            }
            fn fused_reader(g: &FixedGraph, id: mnet_compiler::ir::FNodeId) -> bool {
                g.consumers(id).iter().any(|&c| match g.node(c).op {
                    Op::Dropout { .. } => fused_reader(g, c),
                    _ => g.node(c).fused,
                })
            }
            !fused_reader(g, id)
        }
        for &id in &g.order {
            let n = g.node(id);
            let ins: Vec<usize> = g.inputs(id).iter().map(|i| index[i]).collect();
            let shape: Vec<usize> = n.shape.iter().map(|&d| d as usize).collect();
            // A final softmax over classes is folded into the loss: the
            // logits are its input.
            let at = if matches!(n.op, Op::Softmax) && id == g.output && shape.len() == 1 {
                ins[0]
            } else {
                b.op(&n.op, &ins, shape, &n.name, n.fused, kept(g, id))
            };
            index.insert(id, at);
            if id == g.output {
                logits = at;
            }
        }
        b.finish(logits, batch)
    }

    /// Reseed the generator of dropout masks (a resumed run draws the
    /// masks an uninterrupted one would).
    pub fn reseed_masks(&mut self, seed: u64) {
        self.mask_rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0xd20_0007);
    }

    /// Start every residual branch as the identity (Goyal et al. 2017): the
    /// gamma of a batch norm that feeds an `add` directly (no activation
    /// after it) is set to 0. Returns how many were set.
    pub fn zero_residual_gammas(&mut self) -> usize {
        let mut gammas = Vec::new();
        for l in &self.layers {
            if l.kind != Kind::Add {
                continue;
            }
            for &j in &l.inputs {
                if let Kind::BatchNorm {
                    gamma, act: None, ..
                } = self.layers[j].kind
                {
                    gammas.push(gamma);
                }
            }
        }
        gammas.sort_unstable();
        gammas.dedup();
        for &g in &gammas {
            self.params[g].value.iter_mut().for_each(|v| *v = 0.0);
        }
        gammas.len()
    }

    /// Allocate the activation and gradient buffers for a batch size.
    pub fn set_batch(&mut self, batch: usize) {
        self.batch = batch;
        self.acts = self
            .layers
            .iter()
            .map(|l| vec![0.0; batch * elems(&l.shape)])
            .collect();
        self.grads = self
            .layers
            .iter()
            .map(|l| vec![0.0; batch * elems(&l.shape)])
            .collect();
        self.bn_saved = self.layers.iter().map(|_| BnSaved::default()).collect();
        self.masks = self.layers.iter().map(|_| Vec::new()).collect();
        self.cols = self.layers.iter().map(|_| Vec::new()).collect();
        self.geometry = self
            .layers
            .iter()
            .map(|l| match l.inputs.first() {
                Some(&j) => Geometry::of(l, &self.layers[j].shape),
                None => Geometry::default(),
            })
            .collect();
    }

    /// Insert a channel mask after layer `after` (every reader of `after`
    /// reads the mask instead) with initial values `values`, one per
    /// channel; returns the mask parameter's index. Call before
    /// [`Net::enable_qat`].
    pub fn add_channel_mask(&mut self, after: usize, values: Vec<f32>) -> usize {
        let c = *self.layers[after].shape.last().expect("a shape");
        assert_eq!(values.len(), c, "one mask value per channel");
        let name = format!("{}.mask", self.layers[after].name);
        self.params
            .push(Param::new(name.clone(), vec![c], values, false));
        let mask = self.params.len() - 1;
        for l in &mut self.layers {
            for k in &mut l.inputs {
                if *k > after {
                    *k += 1;
                } else if *k == after {
                    *k = after + 1;
                }
            }
        }
        if self.logits >= after {
            self.logits += 1;
        }
        let layer = Layer {
            kind: Kind::ChannelMask { mask },
            inputs: vec![after],
            shape: self.layers[after].shape.clone(),
            name,
            quantized: self.layers[after].quantized,
        };
        self.layers.insert(after + 1, layer);
        self.set_batch(self.batch);
        mask
    }

    /// The logits of the last forward pass (`batch x classes`).
    pub fn logits(&self) -> &[f32] {
        &self.acts[self.logits]
    }

    /// The gradient of the loss with respect to the input (after
    /// [`Net::backward`]).
    pub fn input_grad(&self) -> &[f32] {
        &self.grads[0]
    }

    pub fn classes(&self) -> usize {
        elems(&self.layers[self.logits].shape)
    }

    /// Forward pass on a batch (`batch x input` values). `train` uses batch
    /// statistics in batch norm (and updates the running ones).
    pub fn forward(&mut self, input: &[f32], train: bool) {
        self.quantize_weights();
        // Borrowed out for the pass, so nothing is cloned per step.
        let layers = std::mem::take(&mut self.layers);
        for (i, layer) in layers.iter().enumerate() {
            let started = self.profile.is_some().then(std::time::Instant::now);
            let mut out = std::mem::take(&mut self.acts[i]);
            match &layer.kind {
                Kind::Input => out.copy_from_slice(input),
                Kind::Conv { .. } | Kind::Depthwise { .. } => {
                    linear::forward_conv(self, &layers, i, &mut out)
                }
                Kind::Dense { .. } => linear::forward_dense(self, &layers, i, &mut out),
                Kind::BatchNorm { .. } => {
                    norm::forward_batch_norm(self, &layers, i, &mut out, train)
                }
                Kind::Act(_) => elementwise::forward_act(self, &layers, i, &mut out),
                Kind::Pool { .. } => pool::forward_pool(self, &layers, i, &mut out),
                Kind::Add => elementwise::forward_add(self, &layers, i, &mut out),
                Kind::Concat => elementwise::forward_concat(self, &layers, i, &mut out),
                Kind::Pad { .. } => elementwise::forward_pad(self, &layers, i, &mut out),
                Kind::Reshape => elementwise::forward_reshape(self, &layers, i, &mut out),
                Kind::Dropout { .. } => {
                    elementwise::forward_dropout(self, &layers, i, &mut out, train)
                }
                Kind::Softmax => elementwise::forward_softmax(self, &layers, i, &mut out),
                Kind::ChannelMask { .. } => {
                    elementwise::forward_channel_mask(self, &layers, i, &mut out)
                }
                Kind::Mix { .. } => elementwise::forward_mix(self, &layers, i, &mut out),
            }
            if let Some(q) = self.qat.as_mut() {
                if let Some(range) = q.ranges[i] {
                    let (lo, hi) = if train {
                        let (lo, hi) = out
                            .iter()
                            .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
                        let m = q.momentum;
                        let r = if range == (0.0, 0.0) {
                            (lo, hi)
                        } else {
                            (m * range.0 + (1.0 - m) * lo, m * range.1 + (1.0 - m) * hi)
                        };
                        q.ranges[i] = Some(r);
                        r
                    } else {
                        range
                    };
                    fake_quant_activations(&mut out, lo, hi);
                }
            }
            self.acts[i] = out;
            if let (Some(t), Some(p)) = (started, self.profile.as_mut()) {
                p.resize(layers.len(), (0.0, 0.0));
                p[i].0 += t.elapsed().as_secs_f64();
            }
        }
        self.layers = layers;
        self.restore_weights();
    }

    /// Softmax cross-entropy of the last forward pass against `labels`;
    /// writes the logits' gradient and returns (mean loss, correct count).
    pub fn loss(&mut self, labels: &[usize]) -> (f32, usize) {
        self.loss_smoothed(labels, 0.0)
    }

    /// [`Net::loss`] against labels smoothed by `smoothing`: the target
    /// puts 1 - smoothing + smoothing / classes on the label and
    /// smoothing / classes on every other class (as Keras does).
    pub fn loss_smoothed(&mut self, labels: &[usize], smoothing: f32) -> (f32, usize) {
        let n = self.classes();
        let logits = &self.acts[self.logits];
        let grad = &mut self.grads[self.logits];
        let (off, on) = (smoothing / n as f32, 1.0 - smoothing + smoothing / n as f32);
        let mut loss = 0.0;
        let mut correct = 0;
        for (s, &y) in labels.iter().enumerate() {
            let row = &logits[s * n..(s + 1) * n];
            let mx = row.iter().cloned().fold(f32::MIN, f32::max);
            let sum: f32 = row.iter().map(|v| (v - mx).exp()).sum();
            let argmax = row
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(k, _)| k)
                .unwrap_or(0);
            correct += usize::from(argmax == y);
            // -sum q_k log p_k, with log p_k = row_k - mx - ln(sum).
            let lse = sum.ln() + mx;
            for k in 0..n {
                let q = if k == y { on } else { off };
                if q != 0.0 {
                    loss += q * (lse - row[k]);
                }
                let p = (row[k] - mx).exp() / sum;
                grad[s * n + k] = (p - q) / labels.len() as f32;
            }
        }
        (loss / labels.len() as f32, correct)
    }

    /// Set the parameters (and batch-norm statistics) from safetensors
    /// written by [`crate::train::weights_safetensors`] for a network of
    /// the same layers: every parameter must be there, float32, of its
    /// shape (`.range` tensors of quantization-aware training are read by
    /// compile, not here). Errors name the tensor.
    pub fn load_safetensors(&mut self, bytes: &[u8]) -> Result<(), String> {
        let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| e.to_string())?;
        let known: std::collections::HashSet<&str> =
            self.params.iter().map(|p| p.name.as_str()).collect();
        if let Some(extra) = st
            .names()
            .into_iter()
            .find(|n| !known.contains(&n[..]) && !n.ends_with(".range"))
        {
            return Err(format!(
                "tensor `{extra}` is not a parameter of this network"
            ));
        }
        for p in &mut self.params {
            let t = st
                .tensor(&p.name)
                .map_err(|_| format!("no tensor `{}`", p.name))?;
            if t.dtype() != safetensors::Dtype::F32 {
                return Err(format!(
                    "tensor `{}` is {:?}, expected F32",
                    p.name,
                    t.dtype()
                ));
            }
            if t.shape() != p.shape.as_slice() {
                return Err(format!(
                    "tensor `{}` has shape {:?}, expected {:?}",
                    p.name,
                    t.shape(),
                    p.shape
                ));
            }
            let values: Vec<f32> = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return Err(format!(
                    "tensor `{}` has a non-finite value at index {i}",
                    p.name
                ));
            }
            p.value = values;
        }
        Ok(())
    }

    /// Every parameter's values and the quantization-aware training
    /// ranges (a snapshot to restore with [`Net::restore`]).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            values: self.params.iter().map(|p| p.value.clone()).collect(),
            ranges: self.qat.as_ref().map(|q| q.ranges.clone()),
        }
    }

    /// Put back a [`Net::snapshot`].
    pub fn restore(&mut self, s: Snapshot) {
        for (p, v) in self.params.iter_mut().zip(s.values) {
            p.value = v;
        }
        if let (Some(q), Some(r)) = (self.qat.as_mut(), s.ranges) {
            q.ranges = r;
        }
    }

    /// Backward pass from the logits' gradient (set by [`Net::loss`]):
    /// parameter gradients are overwritten.
    pub fn backward(&mut self) {
        for p in &mut self.params {
            p.grad.iter_mut().for_each(|g| *g = 0.0);
        }
        // A gradient buffer is "fresh" until its first writer: pointwise
        // convs and batch norms overwrite it, other ops zero it first, so no
        // buffer is cleared that is then overwritten anyway.
        let mut fresh = std::mem::take(&mut self.fresh);
        fresh.clear();
        fresh.resize(self.layers.len(), true);
        fresh[self.logits] = false;
        self.quantize_weights();
        let layers = std::mem::take(&mut self.layers);
        for (i, layer) in layers.iter().enumerate().skip(1).rev() {
            let started = self.profile.is_some().then(std::time::Instant::now);
            let mut dy = std::mem::take(&mut self.grads[i]);
            if fresh[i] {
                // Nothing reads this layer's output (cannot happen in a checked network).
                dy.iter_mut().for_each(|v| *v = 0.0);
            }
            let overwrites = matches!(layer.kind, Kind::BatchNorm { .. })
                || matches!(layer.kind, Kind::Conv { window, .. } if pointwise(pair(window.kernel), pair(window.stride)));
            for &j in &layer.inputs {
                if fresh[j] && !overwrites {
                    self.grads[j].iter_mut().for_each(|v| *v = 0.0);
                    fresh[j] = false;
                }
            }
            let (ls, f) = (&layers[..], &mut fresh[..]);
            match &layer.kind {
                Kind::Input => {}
                Kind::Conv { .. } | Kind::Depthwise { .. } => {
                    linear::backward_conv(self, ls, i, &dy, f)
                }
                Kind::Dense { .. } => linear::backward_dense(self, ls, i, &dy, f),
                Kind::BatchNorm { .. } => norm::backward_batch_norm(self, ls, i, &dy, f),
                Kind::Act(_) => elementwise::backward_act(self, ls, i, &dy, f),
                Kind::Pool { .. } => pool::backward_pool(self, ls, i, &dy, f),
                Kind::Add => elementwise::backward_add(self, ls, i, &dy, f),
                Kind::Concat => elementwise::backward_concat(self, ls, i, &dy, f),
                Kind::Pad { .. } => elementwise::backward_pad(self, ls, i, &dy, f),
                Kind::Reshape => elementwise::backward_reshape(self, ls, i, &dy, f),
                Kind::Dropout { .. } => elementwise::backward_dropout(self, ls, i, &dy, f),
                Kind::Softmax => elementwise::backward_softmax(self, ls, i, &dy, f),
                Kind::ChannelMask { .. } => elementwise::backward_channel_mask(self, ls, i, &dy, f),
                Kind::Mix { .. } => elementwise::backward_mix(self, ls, i, &dy, f),
            }
            self.grads[i] = dy;
            if let (Some(t), Some(p)) = (started, self.profile.as_mut()) {
                p.resize(layers.len(), (0.0, 0.0));
                p[i].1 += t.elapsed().as_secs_f64();
            }
        }
        self.layers = layers;
        self.fresh = fresh;
        for &b in &self.frozen {
            self.params[b].grad.iter_mut().for_each(|g| *g = 0.0);
        }
        self.restore_weights();
    }
}
