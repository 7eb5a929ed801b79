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

use crate::simd;
use mnet_compiler::ir::{FixedGraph, Op};
use mnet_compiler::lower::weights::normal;
use mnet_compiler::ops::{Activation, FusedAct, Placement, PoolKind, Window};
use rand::SeedableRng;
use rayon::prelude::*;

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
            | Kind::ChannelMask { .. } => None,
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
}

/// A batch norm's statistics and affine map in the last forward pass:
/// `y = clamp(scale * x + shift)`, `scale = gamma * inv`; and its work
/// buffers (per-block partial sums, per-channel sums), kept across steps.
#[derive(Clone, Debug, Default)]
struct BnSaved {
    mu: Vec<f32>,
    inv: Vec<f32>,
    scale: Vec<f32>,
    shift: Vec<f32>,
    part: Vec<f32>,
    wide: Vec<f64>,
    work: Vec<f32>,
}

/// Replace the contents of `v` (no allocation once it has the capacity).
fn refill(v: &mut Vec<f32>, values: impl Iterator<Item = f32>) {
    v.clear();
    v.extend(values);
}

/// Fake quantization for int8 QAT: weights per output channel, symmetric,
/// 255 levels; activations per tensor, asymmetric, 256 levels, over a range
/// tracked by an exponential moving average. Gradients pass straight
/// through (STE): the optimiser updates the float weights.
#[derive(Clone, Debug)]
pub struct Qat {
    /// EMA range of each quantized tensor (`None`: not a quantization point).
    pub ranges: Vec<Option<(f32, f32)>>,
    pub momentum: f32,
    /// Float weights while the quantized ones are in place.
    shadow: Vec<Vec<f32>>,
    /// Per-channel maxima (scratch).
    maxabs: Vec<f32>,
}

/// Per-channel symmetric int8 fake quantization of weights laid out with
/// `channels` output channels, channel of element `k` given by `channel(k)`
/// (`maxabs`: scratch, reused across calls).
pub fn fake_quant_weights(
    w: &mut [f32],
    channels: usize,
    channel: impl Fn(usize) -> usize,
    maxabs: &mut Vec<f32>,
) {
    maxabs.clear();
    maxabs.resize(channels, 0.0);
    for (k, v) in w.iter().enumerate() {
        let c = channel(k);
        maxabs[c] = maxabs[c].max(v.abs());
    }
    for (k, v) in w.iter_mut().enumerate() {
        let m = maxabs[channel(k)];
        if m > 0.0 {
            let s = m / 127.0;
            *v = (*v / s).round().clamp(-127.0, 127.0) * s;
        }
    }
}

/// Asymmetric int8 fake quantization of activations over `[lo, hi]`
/// (widened to include 0), as the backends quantize them.
pub fn fake_quant_activations(x: &mut [f32], lo: f32, hi: f32) {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    if hi <= lo {
        return;
    }
    let scale = (hi - lo) / 255.0;
    let zp = (-128.0 - lo / scale).round().clamp(-128.0, 127.0);
    x.par_chunks_mut(4096).for_each(|c| {
        for v in c {
            let q = ((*v / scale).round() + zp).clamp(-128.0, 127.0);
            *v = (q - zp) * scale;
        }
    });
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

impl Net {
    /// Build from a fixed network with He-initialised weights for `seed`.
    pub fn from_fixed(g: &FixedGraph, batch: usize, seed: u64) -> Net {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut layers: Vec<Layer> = Vec::new();
        let mut params: Vec<Param> = Vec::new();
        let mut index = std::collections::HashMap::new();
        let mut logits = 0;
        // A node's output is an int8 tensor unless a layer fused into it
        // reads it.
        let kept = |id| !g.consumers(id).iter().any(|c| g.node(*c).fused);
        for &id in &g.order {
            let n = g.node(id);
            let ins: Vec<usize> = g.inputs(id).iter().map(|i| index[i]).collect();
            let in_shape: Vec<usize> = ins
                .first()
                .map(|&i| layers[i].shape.clone())
                .unwrap_or_default();
            let shape: Vec<usize> = n.shape.iter().map(|&d| d as usize).collect();
            let mut weighted =
                |params: &mut Vec<Param>, wshape: Vec<usize>, fan_in: usize, cout: usize| {
                    let std = (2.0 / fan_in.max(1) as f32).sqrt();
                    let w = (0..elems(&wshape))
                        .map(|_| normal(&mut rng) * std)
                        .collect();
                    params.push(Param::new(format!("{}.weight", n.name), wshape, w, true));
                    params.push(Param::new(
                        format!("{}.bias", n.name),
                        vec![cout],
                        vec![0.0; cout],
                        false,
                    ));
                    (params.len() - 2, params.len() - 1)
                };
            let kind = match &n.op {
                Op::Input { .. } => Kind::Input,
                Op::Conv2d { out, window } => {
                    let (cin, cout, k) = (in_shape[2], *out as usize, pair(window.kernel));
                    let (weight, bias) = weighted(
                        &mut params,
                        vec![cout, k[0], k[1], cin],
                        k[0] * k[1] * cin,
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
                        weighted(&mut params, vec![1, k[0], k[1], c], k[0] * k[1], c);
                    Kind::Depthwise {
                        window: *window,
                        weight,
                        bias,
                    }
                }
                Op::Dense { out } => {
                    let (k, cout) = (elems(&in_shape), *out as usize);
                    let (weight, bias) = weighted(&mut params, vec![cout, k], k, cout);
                    Kind::Dense { weight, bias }
                }
                Op::BatchNorm => {
                    let c = *in_shape.last().unwrap();
                    let mut p = |s: &str, v: f32, train: bool| {
                        let mut prm =
                            Param::new(format!("{}.{s}", n.name), vec![c], vec![v; c], false);
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
                    let p = ins[0];
                    // Fused (the int8 rule) into a batch norm: one pass each
                    // way instead of two.
                    if let (
                        Kind::BatchNorm {
                            act: act @ None, ..
                        },
                        Some(f),
                        true,
                    ) = (&mut layers[p].kind, a.fused(), n.fused)
                    {
                        *act = Some(f);
                        layers[p].quantized = kept(id);
                        index.insert(id, p);
                        if id == g.output {
                            logits = p;
                        }
                        continue;
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
                // A final softmax over classes is folded into the loss: the
                // logits are its input.
                Op::Softmax if id == g.output && shape.len() == 1 => {
                    index.insert(id, ins[0]);
                    logits = ins[0];
                    continue;
                }
                Op::Softmax => Kind::Softmax,
            };
            layers.push(Layer {
                kind,
                inputs: ins,
                shape,
                name: n.name.clone(),
                quantized: kept(id),
            });
            index.insert(id, layers.len() - 1);
            if id == g.output {
                logits = layers.len() - 1;
            }
        }
        let mut net = Net {
            layers,
            params,
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
        };
        net.set_batch(batch);
        net
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

    /// Turn on quantization-aware training: fake-quantized weights in every
    /// pass, and fake-quantized activations at every tensor the int8
    /// backends keep (not between a layer and the batch norm or activation
    /// fused into it).
    pub fn enable_qat(&mut self) {
        let ranges = self
            .layers
            .iter()
            .map(|l| l.quantized.then_some((0.0, 0.0)))
            .collect();
        self.qat = Some(Qat {
            ranges,
            momentum: 0.99,
            shadow: Vec::new(),
            maxabs: Vec::new(),
        });
    }

    pub fn qat(&self) -> Option<&Qat> {
        self.qat.as_ref()
    }

    /// With QAT, put fake-quantized weights in place (keeping the floats).
    fn quantize_weights(&mut self) {
        let Some(q) = &mut self.qat else { return };
        let mut kept = 0;
        for l in &self.layers {
            let Some((w, depthwise)) = l.kind.weight() else {
                continue;
            };
            let p = &mut self.params[w];
            if q.shadow.len() == kept {
                q.shadow.push(Vec::new());
            }
            q.shadow[kept].clear();
            q.shadow[kept].extend_from_slice(&p.value);
            kept += 1;
            let cout = if depthwise { p.shape[3] } else { p.shape[0] };
            let per = p.value.len() / cout;
            if depthwise {
                fake_quant_weights(&mut p.value, cout, |k| k % cout, &mut q.maxabs);
            } else {
                fake_quant_weights(&mut p.value, cout, |k| k / per, &mut q.maxabs);
            }
        }
    }

    /// With QAT, put the float weights back (the optimiser updates them).
    fn restore_weights(&mut self) {
        let Some(q) = &mut self.qat else { return };
        let mut shadow = q.shadow.iter();
        for l in &self.layers {
            if let Some((weight, _)) = l.kind.weight() {
                self.params[weight]
                    .value
                    .copy_from_slice(shadow.next().expect("a float copy per weighted layer"));
            }
        }
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
        let b = self.batch;
        self.quantize_weights();
        // Borrowed out for the pass, so nothing is cloned per step.
        let layers = std::mem::take(&mut self.layers);
        for (i, layer) in layers.iter().enumerate() {
            let started = self.profile.is_some().then(std::time::Instant::now);
            let mut out = std::mem::take(&mut self.acts[i]);
            let x = |k: usize| &self.acts[layer.inputs[k]];
            let xs = |k: usize| &layers[layer.inputs[k]].shape;
            match &layer.kind {
                Kind::Input => out.copy_from_slice(input),
                Kind::Conv {
                    window,
                    weight,
                    bias,
                }
                | Kind::Depthwise {
                    window,
                    weight,
                    bias,
                } => conv_forward(
                    x(0),
                    xs(0),
                    &mut out,
                    &layer.shape,
                    pair(window.kernel),
                    pair(window.stride),
                    &self.params[*weight].value,
                    &self.params[*bias].value,
                    matches!(layer.kind, Kind::Depthwise { .. }),
                    &self.geometry[i],
                    &mut self.cols[i],
                ),
                Kind::Dense { weight, bias } => {
                    let (k, n) = (elems(xs(0)), elems(&layer.shape));
                    let (w, bb, xv) =
                        (&self.params[*weight].value, &self.params[*bias].value, x(0));
                    for s in 0..b {
                        let xi = &xv[s * k..(s + 1) * k];
                        for o in 0..n {
                            out[s * n + o] = bb[o] + dot(&w[o * k..(o + 1) * k], xi);
                        }
                    }
                }
                Kind::BatchNorm {
                    gamma,
                    beta,
                    mean,
                    var,
                    act,
                } => {
                    let (lo, hi) = match act {
                        Some(a) => (0.0, upper(*a)),
                        None => (f32::MIN, f32::MAX),
                    };
                    let c = *layer.shape.last().unwrap();
                    let xv = x(0);
                    let m = xv.len() / c;
                    let sv = &mut self.bn_saved[i];
                    if train {
                        channel_sums(xv, c, &mut sv.part, &mut sv.wide);
                        let (s1, s2) = sv.wide.split_at(c);
                        refill(&mut sv.mu, s1.iter().map(|s| (s / m as f64) as f32));
                        // The batch variance, in `inv` until it is inverted.
                        refill(
                            &mut sv.inv,
                            s2.iter()
                                .zip(&sv.mu)
                                .map(|(s, u)| ((s / m as f64) as f32 - u * u).max(0.0)),
                        );
                        for ch in 0..c {
                            let rm = &mut self.params[*mean].value[ch];
                            *rm = BN_MOMENTUM * *rm + (1.0 - BN_MOMENTUM) * sv.mu[ch];
                            let unbiased = sv.inv[ch] * m as f32 / (m.max(2) - 1) as f32;
                            let rv = &mut self.params[*var].value[ch];
                            *rv = BN_MOMENTUM * *rv + (1.0 - BN_MOMENTUM) * unbiased;
                        }
                        sv.inv
                            .iter_mut()
                            .for_each(|v| *v = 1.0 / (*v + BN_EPSILON).sqrt());
                    } else {
                        refill(&mut sv.mu, self.params[*mean].value.iter().copied());
                        refill(
                            &mut sv.inv,
                            self.params[*var]
                                .value
                                .iter()
                                .map(|v| 1.0 / (v + BN_EPSILON).sqrt()),
                        );
                    }
                    // y = scale * x + shift per channel (vectorises over a row).
                    let (g, be) = (&self.params[*gamma].value, &self.params[*beta].value);
                    refill(&mut sv.scale, (0..c).map(|ch| g[ch] * sv.inv[ch]));
                    refill(
                        &mut sv.shift,
                        (0..c).map(|ch| be[ch] - g[ch] * sv.inv[ch] * sv.mu[ch]),
                    );
                    let (scale, shift) = (&sv.scale, &sv.shift);
                    // Blocks of rows per task: one row is too little work.
                    out.par_chunks_mut(ROWS * c)
                        .zip(xv.par_chunks(ROWS * c))
                        .for_each(|(ob, xb)| {
                            simd::dispatch(
                                #[inline(always)]
                                || affine_rows(xb, ob, scale, shift, lo, hi),
                            )
                        });
                }
                Kind::Act(a) => match a.fused() {
                    // A clamp (vectorises).
                    Some(f) => {
                        let hi = upper(f);
                        out.par_chunks_mut(4096)
                            .zip(x(0).par_chunks(4096))
                            .for_each(|(o, xc)| {
                                o.iter_mut()
                                    .zip(xc)
                                    .for_each(|(o, v)| *o = v.clamp(0.0, hi));
                            });
                    }
                    None => out
                        .par_chunks_mut(4096)
                        .zip(x(0).par_chunks(4096))
                        .for_each(|(o, xc)| {
                            o.iter_mut().zip(xc).for_each(|(o, v)| *o = a.apply(*v));
                        }),
                },
                Kind::Pool { kind, window }
                    if *kind == PoolKind::Avg && global_pool(xs(0), window) =>
                {
                    // Global average pool: a per-sample mean over pixels,
                    // vectorised over channels.
                    let c = xs(0)[2];
                    let pixels = xs(0)[0] * xs(0)[1];
                    out.par_chunks_mut(c)
                        .zip(x(0).par_chunks(pixels * c))
                        .for_each(|(o, xn)| {
                            o.iter_mut().for_each(|v| *v = 0.0);
                            for row in xn.chunks_exact(c) {
                                o.iter_mut().zip(row).for_each(|(a, v)| *a += v);
                            }
                            o.iter_mut().for_each(|v| *v /= pixels as f32);
                        });
                }
                Kind::Pool { kind, window } => {
                    let avg = *kind == PoolKind::Avg;
                    pool(xs(0), b, window, |win, o| {
                        out[o] = if avg {
                            win.taps().map(|t| x(0)[t]).sum::<f32>() / win.len() as f32
                        } else {
                            win.taps().map(|t| x(0)[t]).fold(f32::MIN, f32::max)
                        };
                    });
                }
                Kind::Add => out
                    .iter_mut()
                    .zip(x(0).iter().zip(x(1)))
                    .for_each(|(o, (a, c))| *o = a + c),
                Kind::Concat => {
                    let c_out = *layer.shape.last().unwrap();
                    let outer = out.len() / c_out;
                    let mut at = 0;
                    for k in 0..layer.inputs.len() {
                        let ck = *xs(k).last().unwrap();
                        for o in 0..outer {
                            out[o * c_out + at..o * c_out + at + ck]
                                .copy_from_slice(&x(k)[o * ck..(o + 1) * ck]);
                        }
                        at += ck;
                    }
                }
                Kind::Pad { pads } => {
                    out.iter_mut().for_each(|v| *v = 0.0);
                    pad_map(xs(0), &layer.shape, b, *pads, |src, dst| {
                        out[dst] = x(0)[src]
                    });
                }
                Kind::Reshape => out.copy_from_slice(x(0)),
                Kind::Softmax => {
                    let depth = *layer.shape.last().expect("a shape");
                    for (o, xr) in out.chunks_exact_mut(depth).zip(x(0).chunks_exact(depth)) {
                        let mx = xr.iter().cloned().fold(f32::MIN, f32::max);
                        let mut sum = 0.0;
                        for (o, v) in o.iter_mut().zip(xr) {
                            *o = (v - mx).exp();
                            sum += *o;
                        }
                        o.iter_mut().for_each(|v| *v /= sum);
                    }
                }
                Kind::ChannelMask { mask } => {
                    let m = &self.params[*mask].value;
                    out.par_chunks_mut(ROWS * m.len())
                        .zip(x(0).par_chunks(ROWS * m.len()))
                        .for_each(|(ob, xb)| {
                            for (o, xr) in
                                ob.chunks_exact_mut(m.len()).zip(xb.chunks_exact(m.len()))
                            {
                                o.iter_mut()
                                    .zip(xr)
                                    .zip(m)
                                    .for_each(|((o, v), k)| *o = v * k);
                            }
                        });
                }
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
        let n = self.classes();
        let logits = &self.acts[self.logits];
        let grad = &mut self.grads[self.logits];
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
            loss += sum.ln() + mx - row[y];
            for k in 0..n {
                let p = (row[k] - mx).exp() / sum;
                grad[s * n + k] = (p - f32::from(k == y)) / labels.len() as f32;
            }
        }
        (loss / labels.len() as f32, correct)
    }

    /// Backward pass from the logits' gradient (set by [`Net::loss`]):
    /// parameter gradients are overwritten.
    pub fn backward(&mut self) {
        let b = self.batch;
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
            let xs = |k: usize| &layers[layer.inputs[k]].shape;
            match &layer.kind {
                Kind::Input => {}
                Kind::Conv {
                    window,
                    weight,
                    bias,
                }
                | Kind::Depthwise {
                    window,
                    weight,
                    bias,
                } => {
                    let depthwise = matches!(layer.kind, Kind::Depthwise { .. });
                    let j = layer.inputs[0];
                    let (mut dw, mut db) = (
                        std::mem::take(&mut self.params[*weight].grad),
                        std::mem::take(&mut self.params[*bias].grad),
                    );
                    let mut dx = std::mem::take(&mut self.grads[j]);
                    let want_dx = j != 0 || self.input_grad;
                    let overwrite = std::mem::replace(&mut fresh[j], false);
                    conv_backward(
                        &self.acts[j],
                        xs(0),
                        &dy,
                        &layer.shape,
                        b,
                        window,
                        &self.params[*weight].value,
                        &self.geometry[i],
                        &self.cols[i],
                        &mut self.scratch,
                        want_dx.then_some(&mut dx[..]),
                        overwrite,
                        &mut dw,
                        &mut db,
                        depthwise,
                    );
                    self.grads[j] = dx;
                    self.params[*weight].grad = dw;
                    self.params[*bias].grad = db;
                }
                Kind::Dense { weight, bias } => {
                    let j = layer.inputs[0];
                    let (k, n) = (elems(xs(0)), elems(&layer.shape));
                    for s in 0..b {
                        for o in 0..n {
                            let g = dy[s * n + o];
                            self.params[*bias].grad[o] += g;
                            for t in 0..k {
                                self.params[*weight].grad[o * k + t] += g * self.acts[j][s * k + t];
                                self.grads[j][s * k + t] +=
                                    g * self.params[*weight].value[o * k + t];
                            }
                        }
                    }
                }
                Kind::BatchNorm {
                    gamma, beta, act, ..
                } => {
                    let j = layer.inputs[0];
                    let c = *layer.shape.last().unwrap();
                    let mut saved = std::mem::take(&mut self.bn_saved[i]);
                    let BnSaved {
                        mu,
                        inv,
                        scale,
                        shift,
                        part,
                        work,
                        ..
                    } = &mut saved;
                    let xv = &self.acts[j];
                    let m = (xv.len() / c) as f32;
                    // One pass: sum dy and dy * x per channel, dy masked by
                    // a fused activation (the gradient passes where the
                    // output is strictly inside (0, hi); the output is
                    // recomputed from x, bit for bit as the forward pass did,
                    // rather than read), in blocks summed in order
                    // (deterministic). Then dx = c1 * dy + c3 * x + c2 with
                    // per-channel constants, masked the same way.
                    let mask = act.map(|a| (&scale[..], &shift[..], upper(a)));
                    part.resize(dy.len().div_ceil(ROWS * c) * 2 * c, 0.0);
                    part.par_chunks_mut(2 * c)
                        .zip(dy.par_chunks(ROWS * c).zip(xv.par_chunks(ROWS * c)))
                        .for_each(|(p, (gb, xb))| {
                            p.fill(0.0);
                            let (a, b) = p.split_at_mut(c);
                            simd::dispatch(
                                #[inline(always)]
                                || bn_grad_sums(gb, xb, mask, a, b),
                            );
                        });
                    work.clear();
                    work.resize(5 * c, 0.0);
                    let (sum_dy, rest) = work.split_at_mut(c);
                    let (sum_dy_xhat, rest) = rest.split_at_mut(c);
                    let (c1, rest) = rest.split_at_mut(c);
                    let (c3, c2) = rest.split_at_mut(c);
                    for p in part.chunks_exact(2 * c) {
                        sum_dy.iter_mut().zip(&p[..c]).for_each(|(x, y)| *x += y);
                        sum_dy_xhat
                            .iter_mut()
                            .zip(&p[c..])
                            .for_each(|(x, y)| *x += y);
                    }
                    // sum(dy * xhat) = inv * (sum(dy * x) - mu * sum(dy))
                    for ch in 0..c {
                        sum_dy_xhat[ch] = inv[ch] * (sum_dy_xhat[ch] - mu[ch] * sum_dy[ch]);
                        self.params[*gamma].grad[ch] += sum_dy_xhat[ch];
                        self.params[*beta].grad[ch] += sum_dy[ch];
                    }
                    let gm = &self.params[*gamma].value;
                    for ch in 0..c {
                        c1[ch] = gm[ch] * inv[ch];
                        c3[ch] = -c1[ch] / m * sum_dy_xhat[ch] * inv[ch];
                        c2[ch] = -c1[ch] / m * sum_dy[ch] - c3[ch] * mu[ch];
                    }
                    let (c1, c3, c2) = (&*c1, &*c3, &*c2);
                    // A fresh buffer is overwritten, never read.
                    let overwrite = std::mem::replace(&mut fresh[j], false);
                    let mut gx = std::mem::take(&mut self.grads[j]);
                    gx.par_chunks_mut(ROWS * c)
                        .zip(
                            dy.par_chunks(ROWS * c)
                                .zip(self.acts[j].par_chunks(ROWS * c)),
                        )
                        .for_each(|(db, (gb, xb))| {
                            simd::dispatch(
                                #[inline(always)]
                                || bn_grad_input(db, gb, xb, [c1, c3, c2], mask, overwrite),
                            )
                        });
                    self.grads[j] = gx;
                    self.bn_saved[i] = saved;
                }
                Kind::Act(a) => {
                    let j = layer.inputs[0];
                    let mut gx = std::mem::take(&mut self.grads[j]);
                    let chunks = gx
                        .par_chunks_mut(4096)
                        .zip(dy.par_chunks(4096).zip(self.acts[j].par_chunks(4096)));
                    match a.fused() {
                        Some(f) => {
                            let hi = upper(f);
                            chunks.for_each(|(gc, (dc, xc))| {
                                for ((g, d), v) in gc.iter_mut().zip(dc).zip(xc) {
                                    // Branch-free (vectorises): the mask as 0.0 or 1.0.
                                    let open = f32::from(u8::from((*v > 0.0) & (*v < hi)));
                                    *g += *d * open;
                                }
                            })
                        }
                        None => chunks.for_each(|(gc, (dc, xc))| {
                            for ((g, d), v) in gc.iter_mut().zip(dc).zip(xc) {
                                *g += *d * a.derivative(*v);
                            }
                        }),
                    }
                    self.grads[j] = gx;
                }
                Kind::Pool { kind, window }
                    if *kind == PoolKind::Avg && global_pool(xs(0), window) =>
                {
                    let j = layer.inputs[0];
                    let c = xs(0)[2];
                    let pixels = xs(0)[0] * xs(0)[1];
                    self.grads[j]
                        .par_chunks_mut(pixels * c)
                        .zip(dy.par_chunks(c))
                        .for_each(|(gn, d)| {
                            for row in gn.chunks_exact_mut(c) {
                                row.iter_mut()
                                    .zip(d)
                                    .for_each(|(g, v)| *g += v / pixels as f32);
                            }
                        });
                }
                Kind::Pool { kind, window } => {
                    let avg = *kind == PoolKind::Avg;
                    let j = layer.inputs[0];
                    let (xv, gx) = (&self.acts[j], &mut self.grads[j]);
                    pool(xs(0), b, window, |win, o| {
                        if avg {
                            let share = dy[o] / win.len() as f32;
                            win.taps().for_each(|t| gx[t] += share);
                        } else if let Some(t) = win.taps().max_by(|a, c| xv[*a].total_cmp(&xv[*c]))
                        {
                            gx[t] += dy[o];
                        }
                    });
                }
                Kind::Add => {
                    for k in 0..2 {
                        let j = layer.inputs[k];
                        self.grads[j].iter_mut().zip(&dy).for_each(|(g, d)| *g += d);
                    }
                }
                Kind::Concat => {
                    let c_out = *layer.shape.last().unwrap();
                    let outer = dy.len() / c_out;
                    let mut at = 0;
                    for k in 0..layer.inputs.len() {
                        let j = layer.inputs[k];
                        let ck = *xs(k).last().unwrap();
                        for o in 0..outer {
                            for t in 0..ck {
                                self.grads[j][o * ck + t] += dy[o * c_out + at + t];
                            }
                        }
                        at += ck;
                    }
                }
                Kind::Pad { pads } => {
                    let j = layer.inputs[0];
                    let gx = &mut self.grads[j];
                    pad_map(xs(0), &layer.shape, b, *pads, |src, dst| gx[src] += dy[dst]);
                }
                Kind::Reshape => {
                    let j = layer.inputs[0];
                    self.grads[j].iter_mut().zip(&dy).for_each(|(g, d)| *g += d);
                }
                Kind::Softmax => {
                    // dx = y * (dy - sum(dy * y)) per row.
                    let j = layer.inputs[0];
                    let depth = *layer.shape.last().expect("a shape");
                    let y = &self.acts[i];
                    for ((gx, d), yr) in self.grads[j]
                        .chunks_exact_mut(depth)
                        .zip(dy.chunks_exact(depth))
                        .zip(y.chunks_exact(depth))
                    {
                        let dot: f32 = d.iter().zip(yr).map(|(a, b)| a * b).sum();
                        for ((g, dv), yv) in gx.iter_mut().zip(d).zip(yr) {
                            *g += yv * (dv - dot);
                        }
                    }
                }
                Kind::ChannelMask { mask } => {
                    let j = layer.inputs[0];
                    let c = self.params[*mask].value.len();
                    let dm = &mut self.scratch;
                    dm.clear();
                    dm.resize(c, 0.0);
                    for (gr, xr) in dy.chunks_exact(c).zip(self.acts[j].chunks_exact(c)) {
                        dm.iter_mut()
                            .zip(gr)
                            .zip(xr)
                            .for_each(|((d, g), v)| *d += g * v);
                    }
                    let m = &self.params[*mask].value;
                    for (gx, gr) in self.grads[j].chunks_exact_mut(c).zip(dy.chunks_exact(c)) {
                        gx.iter_mut()
                            .zip(gr)
                            .zip(m)
                            .for_each(|((d, g), k)| *d += g * k);
                    }
                    self.params[*mask]
                        .grad
                        .iter_mut()
                        .zip(dm.iter())
                        .for_each(|(a, b)| *a += b);
                }
            }
            self.grads[i] = dy;
            if let (Some(t), Some(p)) = (started, self.profile.as_mut()) {
                p.resize(layers.len(), (0.0, 0.0));
                p[i].1 += t.elapsed().as_secs_f64();
            }
        }
        self.layers = layers;
        self.fresh = fresh;
        self.restore_weights();
    }
}

/// Per-channel sums of x and then of x^2 (into `sums`, 2c values) over the
/// rows of an NHWC tensor (`c` channels), in blocks of rows summed in
/// parallel (partial sums in `part`); the blocks combine in a fixed order,
/// so the result is deterministic.
fn channel_sums(x: &[f32], c: usize, part: &mut Vec<f32>, sums: &mut Vec<f64>) {
    // f32 within a block of ROWS rows (vectorises), f64 across blocks.
    part.resize(x.len().div_ceil(ROWS * c) * 2 * c, 0.0);
    part.par_chunks_mut(2 * c)
        .zip(x.par_chunks(ROWS * c))
        .for_each(|(p, block)| {
            p.fill(0.0);
            let (a, b) = p.split_at_mut(c);
            simd::dispatch(
                #[inline(always)]
                || sums_rows(block, a, b),
            );
        });
    sums.clear();
    sums.resize(2 * c, 0.0);
    for p in part.chunks_exact(2 * c) {
        sums.iter_mut().zip(p).for_each(|(s, v)| *s += *v as f64);
    }
}

/// `out = clamp(scale * x + shift, lo, hi)` per channel over rows of
/// `scale.len()` channels.
#[inline(always)]
fn affine_rows(x: &[f32], out: &mut [f32], scale: &[f32], shift: &[f32], lo: f32, hi: f32) {
    let c = scale.len();
    for (o, xr) in out.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
        for (((o, x), a), b) in o.iter_mut().zip(xr).zip(scale).zip(shift) {
            *o = (a * x + b).clamp(lo, hi);
        }
    }
}

/// Per-channel sums of x (into `a`) and x^2 (into `b`) over rows of
/// `a.len()` channels.
#[inline(always)]
fn sums_rows(x: &[f32], a: &mut [f32], b: &mut [f32]) {
    for row in x.chunks_exact(a.len()) {
        for ((s, q), v) in a.iter_mut().zip(b.iter_mut()).zip(row) {
            *s += v;
            *q += v * v;
        }
    }
}

/// A fused activation's gradient mask, as the batch-norm forward pass
/// computed the output: (scale, shift, upper bound).
type BnMask<'a> = Option<(&'a [f32], &'a [f32], f32)>;

/// 1.0 where `clamp(a * x + b, 0, hi)` is strictly inside (0, hi), else
/// 0.0 (branch-free, so it vectorises).
#[inline(always)]
fn open(a: f32, x: f32, b: f32, hi: f32) -> f32 {
    let v = a * x + b;
    f32::from(u8::from((v > 0.0) & (v < hi)))
}

/// Batch-norm backward, first pass over a block of rows: sum g (into `a`)
/// and g * x (into `b`) per channel, g masked by `mask`.
#[inline(always)]
fn bn_grad_sums(g: &[f32], x: &[f32], mask: BnMask, a: &mut [f32], b: &mut [f32]) {
    let c = a.len();
    for (g, xr) in g.chunks_exact(c).zip(x.chunks_exact(c)) {
        match mask {
            Some((scale, shift, hi)) => {
                for ((((sa, sb), gv), xv), (k, e)) in a
                    .iter_mut()
                    .zip(b.iter_mut())
                    .zip(g)
                    .zip(xr)
                    .zip(scale.iter().zip(shift))
                {
                    let gv = gv * open(*k, *xv, *e, hi);
                    *sa += gv;
                    *sb += gv * xv;
                }
            }
            None => {
                for (((sa, sb), gv), xv) in a.iter_mut().zip(b.iter_mut()).zip(g).zip(xr) {
                    *sa += gv;
                    *sb += gv * xv;
                }
            }
        }
    }
}

/// Batch-norm backward, second pass: `dx (+)= c1 * g + c3 * x + c2` per
/// channel (`k = [c1, c3, c2]`), g masked by `mask`; overwritten when
/// `overwrite`.
#[inline(always)]
fn bn_grad_input(
    dx: &mut [f32],
    g: &[f32],
    x: &[f32],
    k: [&[f32]; 3],
    mask: BnMask,
    overwrite: bool,
) {
    let c = k[0].len();
    for (d, (g, xr)) in dx
        .chunks_exact_mut(c)
        .zip(g.chunks_exact(c).zip(x.chunks_exact(c)))
    {
        let terms = d
            .iter_mut()
            .zip(g)
            .zip(xr)
            .zip(k[0])
            .zip(k[1].iter().zip(k[2]));
        match mask {
            Some((scale, shift, hi)) => {
                for (((((d, gv), xv), c1), (c3, c2)), (a, b)) in terms.zip(scale.iter().zip(shift))
                {
                    let v = c1 * (gv * open(*a, *xv, *b, hi)) + c3 * xv + c2;
                    *d = if overwrite { v } else { *d + v };
                }
            }
            None => {
                for ((((d, gv), xv), c1), (c3, c2)) in terms {
                    let v = c1 * gv + c3 * xv + c2;
                    *d = if overwrite { v } else { *d + v };
                }
            }
        }
    }
}

/// A dot product in eight lanes (vectorises; fixed order, so deterministic).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    for (ca, cb) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for k in 0..8 {
            lanes[k] += ca[k] * cb[k];
        }
    }
    let tail = a.len() / 8 * 8;
    lanes.iter().sum::<f32>()
        + a[tail..]
            .iter()
            .zip(&b[tail..])
            .map(|(x, y)| x * y)
            .sum::<f32>()
}

/// Whether a pooling window covers the whole map in one step.
fn global_pool(s: &[usize], window: &Window) -> bool {
    s.len() == 3 && *window == Window::tiling([s[0] as u32, s[1] as u32])
}

/// A window's placement over an `[H, W, C]` input.
fn placement(window: &Window, s: &[usize]) -> Placement {
    window.over([s[0] as u32, s[1] as u32])
}

/// The in-image taps of one pooling window over one channel of one sample.
struct PoolTaps {
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    w: usize,
    c: usize,
    /// Index of (row 0, column 0) of this sample and channel.
    base: usize,
}

impl PoolTaps {
    fn len(&self) -> usize {
        self.rows.len() * self.cols.len()
    }

    /// Input indices, row by row.
    fn taps(&self) -> impl Iterator<Item = usize> + '_ {
        self.rows.clone().flat_map(move |iy| {
            self.cols
                .clone()
                .map(move |ix| self.base + (iy * self.w + ix) * self.c)
        })
    }
}

/// Visit each output element of a pooling window with the window's
/// in-image taps.
fn pool(s: &[usize], b: usize, window: &Window, mut f: impl FnMut(&PoolTaps, usize)) {
    let (h, w, c) = (s[0], s[1], s[2]);
    let p = placement(window, s);
    let (oh, ow) = (p.out[0] as usize, p.out[1] as usize);
    for n in 0..b {
        for oy in 0..oh {
            let rows = p.rows(oy);
            for ox in 0..ow {
                let cols = p.cols(ox);
                for ch in 0..c {
                    let window = PoolTaps {
                        rows: rows.clone(),
                        cols: cols.clone(),
                        w,
                        c,
                        base: n * h * w * c + ch,
                    };
                    f(&window, ((n * oh + oy) * ow + ox) * c + ch);
                }
            }
        }
    }
}

fn pad_map(
    s: &[usize],
    out_shape: &[usize],
    b: usize,
    pads: [usize; 4],
    mut f: impl FnMut(usize, usize),
) {
    let (h, w, c) = (s[0], s[1], s[2]);
    let (oh, ow) = (out_shape[0], out_shape[1]);
    for n in 0..b {
        for y in 0..h {
            for x in 0..w {
                for ch in 0..c {
                    f(
                        ((n * h + y) * w + x) * c + ch,
                        ((n * oh + y + pads[0]) * ow + x + pads[2]) * c + ch,
                    );
                }
            }
        }
    }
}

thread_local! {
    static IN_GEMM: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread is inside a call to the `gemm` crate, which
/// allocates its own packing buffers on every call (its API takes none);
/// the allocation test counts every other allocation of a training step.
#[doc(hidden)]
pub fn in_gemm() -> bool {
    IN_GEMM.with(|g| g.get())
}

/// `c[m x n] (+)= a[m x k] . b[k x n]`, each matrix given by its row and
/// column strides; the bounds are checked before the `gemm` crate's
/// unchecked kernel runs.
#[allow(clippy::too_many_arguments)]
fn matmul(
    (m, n, k): (usize, usize, usize),
    c: &mut [f32],
    (c_rs, c_cs): (usize, usize),
    accumulate: bool,
    a: &[f32],
    (a_rs, a_cs): (usize, usize),
    b: &[f32],
    (b_rs, b_cs): (usize, usize),
    parallel: bool,
) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(
        last(m, n, c_rs, c_cs) < c.len()
            && last(m, k, a_rs, a_cs) < a.len()
            && last(k, n, b_rs, b_cs) < b.len()
    );
    IN_GEMM.with(|g| g.set(true));
    // SAFETY: every index the kernel touches is below the checked maxima.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            c_cs as isize,
            c_rs as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            if parallel {
                gemm::Parallelism::Rayon(0)
            } else {
                gemm::Parallelism::None
            },
        );
    }
    IN_GEMM.with(|g| g.set(false));
}

/// The copies im2col makes for one sample (the same for every sample):
/// per output pixel and kernel row, the run of in-image taps (contiguous in
/// both the input row and the im2col row) as (destination, source,
/// length).
fn im2col_runs(s: &[usize], p: &Placement) -> Vec<(usize, usize, usize)> {
    let (w, cin) = (s[1], s[2]);
    let (oh, ow) = (p.out[0] as usize, p.out[1] as usize);
    let (kh, kw) = (p.kernel[0] as usize, p.kernel[1] as usize);
    let k = kh * kw * cin;
    let mut runs = Vec::with_capacity(oh * ow * kh);
    for oy in 0..oh {
        let y0 = p.row_start(oy);
        for ox in 0..ow {
            let (x0, cols) = (p.col_start(ox), p.cols(ox));
            if cols.is_empty() {
                continue;
            }
            let kx0 = (cols.start as i64 - x0) as usize;
            for iy in p.rows(oy) {
                let ky = (iy as i64 - y0) as usize;
                runs.push((
                    (oy * ow + ox) * k + (ky * kw + kx0) * cin,
                    (iy * w + cols.start) * cin,
                    cols.len() * cin,
                ));
            }
        }
    }
    runs
}

/// im2col of a batch into `col` (`per_in` input and `per_col` im2col
/// values per sample): zeros, then the [`im2col_runs`].
fn im2col(
    x: &[f32],
    per_in: usize,
    per_col: usize,
    runs: &[(usize, usize, usize)],
    col: &mut Vec<f32>,
) {
    // Kept across steps.
    col.resize(x.len() / per_in * per_col, 0.0);
    col.par_chunks_mut(per_col)
        .zip(x.par_chunks(per_in))
        .for_each(|(col_n, x_n)| {
            col_n.fill(0.0);
            for &(dst, src, len) in runs {
                col_n[dst..dst + len].copy_from_slice(&x_n[src..src + len]);
            }
        });
}

/// What a conv layer precomputes about its geometry (per sample, so the
/// same for any batch size): a depthwise conv's tap lists, or a strided or
/// wider-than-1x1 conv's im2col copies.
#[derive(Clone, Debug, Default)]
struct Geometry {
    taps: Taps,
    runs: Vec<(usize, usize, usize)>,
}

impl Geometry {
    fn of(layer: &Layer, s: &[usize]) -> Geometry {
        let (window, depthwise) = match &layer.kind {
            Kind::Conv { window, .. } => (window, false),
            Kind::Depthwise { window, .. } => (window, true),
            Kind::Input
            | Kind::Dense { .. }
            | Kind::BatchNorm { .. }
            | Kind::Act(_)
            | Kind::Pool { .. }
            | Kind::Add
            | Kind::Concat
            | Kind::Pad { .. }
            | Kind::Reshape
            | Kind::Softmax
            | Kind::ChannelMask { .. } => return Geometry::default(),
        };
        let p = placement(window, s);
        if depthwise {
            Geometry {
                taps: Taps::new(s, &p),
                runs: Vec::new(),
            }
        } else if pointwise(pair(window.kernel), pair(window.stride)) {
            Geometry::default()
        } else {
            Geometry {
                taps: Taps::new(s, &p),
                runs: im2col_runs(s, &p),
            }
        }
    }
}

/// The number of fixed row blocks a reduction over `m` rows is split into.
fn row_blocks(m: usize) -> usize {
    (m / 512).clamp(1, 16)
}

/// Whether a conv reads its input as is (1x1, stride 1): then the input is
/// its own im2col matrix.
fn pointwise(kernel: [usize; 2], stride: [usize; 2]) -> bool {
    kernel == [1, 1] && stride == [1, 1]
}

/// Conv and depthwise conv forward, parallel over the samples of the batch.
#[allow(clippy::too_many_arguments)]
fn conv_forward(
    x: &[f32],
    s: &[usize],
    out: &mut [f32],
    out_shape: &[usize],
    kernel: [usize; 2],
    stride: [usize; 2],
    weight: &[f32],
    bias: &[f32],
    depthwise: bool,
    geo: &Geometry,
    col: &mut Vec<f32>,
) {
    let (h, w, cin) = (s[0] as i64, s[1] as i64, s[2]);
    let (oh, ow, cout) = (out_shape[0], out_shape[1], out_shape[2]);
    let (kh, kw) = (kernel[0], kernel[1]);
    let per_in = (h * w) as usize * cin;
    if !depthwise {
        // Y[M, cout] = im2col[M, K] . W^T (W is [cout, K]), then the bias.
        let k = kh * kw * cin;
        let m = out.len() / cout;
        let col: &[f32] = if pointwise(kernel, stride) {
            x
        } else {
            im2col(x, per_in, oh * ow * k, &geo.runs, col);
            col
        };
        matmul(
            (m, cout, k),
            out,
            (cout, 1),
            false,
            col,
            (k, 1),
            weight,
            (1, k),
            true,
        );
        out.par_chunks_mut(ROWS * cout).for_each(|rows| {
            for row in rows.chunks_exact_mut(cout) {
                row.iter_mut().zip(bias).for_each(|(y, bv)| *y += bv);
            }
        });
        return;
    }
    // Depthwise: per sample in parallel.
    let geo = &geo.taps;
    out.par_chunks_mut(oh * ow * cout)
        .zip(x.par_chunks(per_in))
        .for_each(|(out_n, x_n)| {
            simd::dispatch(
                #[inline(always)]
                || depthwise_forward(geo, x_n, weight, bias, out_n),
            );
        });
}

/// Conv and depthwise conv backward: the input gradient in parallel over
/// samples, a conv's weight gradient in parallel over output channels (each
/// thread owns its rows, so nothing is reduced).
#[allow(clippy::too_many_arguments)]
fn conv_backward(
    x: &[f32],
    s: &[usize],
    dy: &[f32],
    out_shape: &[usize],
    b: usize,
    window: &Window,
    weight: &[f32],
    geo: &Geometry,
    col: &[f32],
    scratch: &mut Vec<f32>,
    dx: Option<&mut [f32]>,
    overwrite_dx: bool,
    dw: &mut [f32],
    db: &mut [f32],
    depthwise: bool,
) {
    let (h, w, cin) = (s[0] as i64, s[1] as i64, s[2]);
    let (oh, ow, cout) = (out_shape[0], out_shape[1], out_shape[2]);
    let (kernel, stride) = (pair(window.kernel), pair(window.stride));
    let (kh, kw) = (kernel[0], kernel[1]);
    let per_in = (h * w) as usize * cin;
    let per_out = oh * ow * cout;
    if !depthwise {
        let k = kh * kw * cin;
        let m = dy.len() / cout;
        // dW[cout, K] += dY^T[cout, M] . im2col[M, K] (im2col kept from
        // the forward pass) and db += column sums of dY: the product's
        // output is small and its inner dimension long, so the rows are
        // split into fixed blocks whose partial products run in parallel
        // and are summed in block order (deterministic for any thread
        // count).
        let col: &[f32] = if pointwise(kernel, stride) { x } else { col };
        let blocks = row_blocks(m);
        let per = m.div_ceil(blocks);
        let part = cout * k + cout;
        scratch.resize(blocks * part, 0.0);
        scratch
            .par_chunks_mut(part)
            .enumerate()
            .for_each(|(blk, out)| {
                let (pw, pb) = out.split_at_mut(cout * k);
                let r0 = (blk * per).min(m);
                let rows = per.min(m - r0);
                pw.fill(0.0);
                pb.fill(0.0);
                matmul(
                    (cout, k, rows),
                    pw,
                    (k, 1),
                    false,
                    &dy[r0 * cout..],
                    (1, cout),
                    &col[r0 * k..],
                    (k, 1),
                    false,
                );
                for g in dy[r0 * cout..(r0 + rows) * cout].chunks_exact(cout) {
                    pb.iter_mut().zip(g).for_each(|(d, v)| *d += v);
                }
            });
        for out in scratch.chunks_exact(part) {
            let (pw, pb) = out.split_at(cout * k);
            dw.iter_mut().zip(pw).for_each(|(d, v)| *d += v);
            db.iter_mut().zip(pb).for_each(|(d, v)| *d += v);
        }
        let Some(dx) = dx else { return };
        if pointwise(kernel, stride) {
            // dX[M, cin] (+)= dY[M, cout] . W[cout, cin]
            matmul(
                (m, cin, cout),
                dx,
                (cin, 1),
                !overwrite_dx,
                dy,
                (cout, 1),
                weight,
                (k, 1),
                true,
            );
        } else {
            // dcol = dY . W, scattered back onto the input (col2im).
            let dcol = scratch;
            dcol.resize(m * k, 0.0);
            matmul(
                (m, k, cout),
                dcol,
                (k, 1),
                false,
                dy,
                (cout, 1),
                weight,
                (k, 1),
                true,
            );
            if overwrite_dx {
                dx.fill(0.0);
            }
            dx.par_chunks_mut(per_in)
                .zip(dcol.par_chunks(oh * ow * k))
                .for_each(|(dx_n, dcol_n)| {
                    for (o, &(t0, t1)) in geo.taps.pixels.iter().enumerate() {
                        let row = &dcol_n[o * k..][..k];
                        for &(t, p) in &geo.taps.taps[t0..t1] {
                            let at = t * cin;
                            for (d, v) in dx_n[p * cin..(p + 1) * cin]
                                .iter_mut()
                                .zip(&row[at..at + cin])
                            {
                                *d += v;
                            }
                        }
                    }
                });
        }
        return;
    }
    // Depthwise from here on: dX and the per-sample partial dW (and db)
    // in one pass over dY, samples in parallel; the partials are summed in
    // sample order (deterministic).
    let taps = kh * kw * cout;
    let part = taps + cout;
    scratch.resize(b * part, 0.0);
    let geo = &geo.taps;
    let run = |n: usize, acc: &mut [f32], dx_n: Option<&mut [f32]>| {
        let (dw_n, db_n) = acc.split_at_mut(taps);
        dw_n.fill(0.0);
        db_n.fill(0.0);
        let x_n = &x[n * per_in..(n + 1) * per_in];
        let dy_n = &dy[n * per_out..(n + 1) * per_out];
        match dx_n {
            Some(dx_n) => simd::dispatch(
                #[inline(always)]
                || depthwise_backward::<true>(geo, x_n, dy_n, weight, dx_n, dw_n, db_n),
            ),
            None => simd::dispatch(
                #[inline(always)]
                || depthwise_backward::<false>(geo, x_n, dy_n, weight, &mut [], dw_n, db_n),
            ),
        }
    };
    match dx {
        Some(dx) => scratch
            .par_chunks_mut(part)
            .zip(dx.par_chunks_mut(per_in))
            .enumerate()
            .for_each(|(n, (acc, dx_n))| run(n, acc, Some(dx_n))),
        None => scratch
            .par_chunks_mut(part)
            .enumerate()
            .for_each(|(n, acc)| run(n, acc, None)),
    }
    for acc in scratch.chunks_exact(part).take(b) {
        let (pw, pb) = acc.split_at(taps);
        dw.iter_mut().zip(pw).for_each(|(d, v)| *d += v);
        db.iter_mut().zip(pb).for_each(|(d, v)| *d += v);
    }
}

/// The geometry of a (depthwise) conv's taps over one sample: for each
/// output pixel, its in-image taps as (tap index, input pixel) pairs.
#[derive(Clone, Debug, Default)]
struct Taps {
    c: usize,
    /// Per output pixel: the range of its taps in `taps`.
    pixels: Vec<(usize, usize)>,
    taps: Vec<(usize, usize)>,
}

impl Taps {
    fn new(s: &[usize], p: &Placement) -> Taps {
        let (mut pixels, mut taps) = (Vec::new(), Vec::new());
        for oy in 0..p.out[0] as usize {
            for ox in 0..p.out[1] as usize {
                let start = taps.len();
                taps.extend(p.taps(oy, ox));
                pixels.push((start, taps.len()));
            }
        }
        Taps {
            c: s[2],
            pixels,
            taps,
        }
    }
}

/// Channels per register block in the depthwise kernels.
const LANES: usize = 16;

/// `LANES` values from `v` at `at`, as an array (a register block).
#[inline(always)]
fn lanes(v: &[f32], at: usize) -> [f32; LANES] {
    v[at..at + LANES].try_into().expect("LANES values")
}

/// Depthwise forward of one sample: each output pixel is the bias plus its
/// in-image taps, channels in blocks of [`LANES`] held in registers.
#[inline(always)]
fn depthwise_forward(geo: &Taps, x: &[f32], weight: &[f32], bias: &[f32], y: &mut [f32]) {
    let c = geo.c;
    for (o, &(t0, t1)) in geo.pixels.iter().enumerate() {
        let taps = &geo.taps[t0..t1];
        let mut c0 = 0;
        while c0 + LANES <= c {
            let mut acc = lanes(bias, c0);
            for &(t, p) in taps {
                let (wv, xv) = (lanes(weight, t * c + c0), lanes(x, p * c + c0));
                for l in 0..LANES {
                    acc[l] += wv[l] * xv[l];
                }
            }
            y[o * c + c0..o * c + c0 + LANES].copy_from_slice(&acc);
            c0 += LANES;
        }
        for ch in c0..c {
            let mut acc = bias[ch];
            for &(t, p) in taps {
                acc += weight[t * c + ch] * x[p * c + ch];
            }
            y[o * c + ch] = acc;
        }
    }
}

/// Depthwise backward of one sample: dX (accumulated, when `DX`) and this
/// sample's dW and db (accumulated into zeroed buffers), in one pass over
/// dY.
#[inline(always)]
fn depthwise_backward<const DX: bool>(
    geo: &Taps,
    x: &[f32],
    dy: &[f32],
    weight: &[f32],
    dx: &mut [f32],
    dw: &mut [f32],
    db: &mut [f32],
) {
    let c = geo.c;
    for (o, &(t0, t1)) in geo.pixels.iter().enumerate() {
        let taps = &geo.taps[t0..t1];
        let g = &dy[o * c..(o + 1) * c];
        db.iter_mut().zip(g).for_each(|(d, v)| *d += v);
        let mut c0 = 0;
        while c0 + LANES <= c {
            let gv = lanes(g, c0);
            for &(t, p) in taps {
                let (mut d, xv) = (lanes(dw, t * c + c0), lanes(x, p * c + c0));
                for l in 0..LANES {
                    d[l] += gv[l] * xv[l];
                }
                dw[t * c + c0..t * c + c0 + LANES].copy_from_slice(&d);
                if DX {
                    let (mut d, wv) = (lanes(dx, p * c + c0), lanes(weight, t * c + c0));
                    for l in 0..LANES {
                        d[l] += gv[l] * wv[l];
                    }
                    dx[p * c + c0..p * c + c0 + LANES].copy_from_slice(&d);
                }
            }
            c0 += LANES;
        }
        for ch in c0..c {
            for &(t, p) in taps {
                dw[t * c + ch] += g[ch] * x[p * c + ch];
                if DX {
                    dx[p * c + ch] += g[ch] * weight[t * c + ch];
                }
            }
        }
    }
}
