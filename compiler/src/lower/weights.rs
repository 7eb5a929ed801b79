//! Float parameters of a lowered network, by layer name: read from a
//! weights file ([`super::io`]), drawn at random for a seed, and folded
//! (a batch norm into the weights and bias of the layer before it).

use super::{LKind, LNode, Lowered};
use rand::{RngExt, SeedableRng};
use std::collections::BTreeMap;

/// Float parameters of one weighted layer, in its weights-file layout
/// ([`crate::ops::Op::tensors`]).
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

/// (TFLite weight shape, output channels) of a weighted node: conv
/// `[out, kh, kw, in]` (a dense layer's 1x1 conv `[out, 1, 1, in]`),
/// depthwise `[1, kh, kw, c]`.
pub fn weight_shape(l: &Lowered, n: &LNode) -> (Vec<usize>, usize) {
    weight_shape_on(n, &l.nodes[n.inputs[0]].shape)
}

/// [`weight_shape`] of a node on an input of shape `input`.
pub fn weight_shape_on(n: &LNode, input: &[u32]) -> (Vec<usize>, usize) {
    let cin = *input.last().unwrap_or(&1) as usize;
    match &n.kind {
        LKind::Conv { out, window } => {
            let [kh, kw] = window.kernel.map(|k| k as usize);
            (vec![*out as usize, kh, kw, cin], *out as usize)
        }
        LKind::Depthwise { window } => {
            let [kh, kw] = window.kernel.map(|k| k as usize);
            (vec![1, kh, kw, cin], cin)
        }
        LKind::Input
        | LKind::Pool { .. }
        | LKind::Add
        | LKind::Concat
        | LKind::Pad { .. }
        | LKind::Reshape
        | LKind::Softmax
        | LKind::Mean
        | LKind::Act(_)
        | LKind::Requantize => unreachable!("{} has no weights", n.name),
    }
}

/// The weight layout of a weighted node on an input of shape `input`, from
/// [`weight_shape_on`].
pub fn weight_layout(n: &LNode, input: &[u32]) -> crate::ops::WeightLayout {
    let (shape, channels) = weight_shape_on(n, input);
    crate::ops::WeightLayout {
        channels,
        per_channel: shape.iter().product::<usize>() / channels.max(1),
        channel_last: matches!(n.kind, LKind::Depthwise { .. }),
    }
}

/// A standard normal sample (Box-Muller).
pub fn normal(rng: &mut rand_chacha::ChaCha8Rng) -> f32 {
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random_range(0.0f32..1.0);
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
}

impl FloatWeights {
    /// Deterministic random weights: He-normal weights, small biases and
    /// batch-norm statistics drawn near their usual values, so a random
    /// network has realistic, non-saturating activations.
    pub fn random(l: &Lowered, seed: u64) -> FloatWeights {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut layers = BTreeMap::new();
        for n in &l.nodes {
            let Some(p) = &n.params else { continue };
            let count = p.layout.channels * p.layout.per_channel;
            let cout = p.layout.channels;
            // Fan-in: the taps of one output (a depthwise channel's kernel).
            let fan_in = if p.layout.channel_last {
                p.layout.per_channel
            } else {
                count / cout.max(1)
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
    pub fn folded(&self, n: &LNode) -> (Vec<f32>, Vec<f32>) {
        let w = &self.layers[&n.name];
        let layout = n.params.as_ref().expect("a weighted node").layout;
        let mut weight = w.weight.clone();
        let mut bias = w.bias.clone();
        if let Some([gamma, beta, mean, var]) = &w.batch_norm {
            let k: Vec<f32> = (0..layout.channels)
                .map(|c| gamma[c] / (var[c] + BN_EPSILON).sqrt())
                .collect();
            for (c, b) in bias.iter_mut().enumerate() {
                *b = (*b - mean[c]) * k[c] + beta[c];
            }
            if layout.channel_last {
                // [1, kh, kw, c]: one row of channels per tap.
                for row in weight.chunks_exact_mut(layout.channels) {
                    row.iter_mut().zip(&k).for_each(|(v, k)| *v *= k);
                }
            } else {
                for (row, k) in weight.chunks_exact_mut(layout.per_channel).zip(&k) {
                    row.iter_mut().for_each(|v| *v *= k);
                }
            }
        }
        (weight, bias)
    }
}
