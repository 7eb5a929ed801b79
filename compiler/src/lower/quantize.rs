//! Int8 quantization with the TFLite spec: per-channel symmetric int8
//! weights, int32 biases and asymmetric per-tensor int8 activations over
//! their calibrated ranges; softmax outputs at 1/256, -128; pools,
//! reshapes and pads sharing their input's quantization, concat inputs
//! sharing the concat's.

use super::weights::FloatWeights;
use super::{LKind, Lowered};
use std::collections::BTreeMap;

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
    // Own quantizations first: over the calibrated range, softmax's fixed.
    let mut qparams: Vec<QParams> = l
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            if n.kind == LKind::Softmax {
                QParams {
                    scale: 1.0 / 256.0,
                    zero_point: -128,
                }
            } else {
                QParams::from_range(ranges[i].0, ranges[i].1)
            }
        })
        .collect();
    // A concat's inputs take its quantization: lowering made each of them
    // a node with a quantization of its own that no other concat reads, or
    // a requantize. Outer concats first, so that a concat fed to another
    // passes the outer one's on to its own inputs.
    let mut taken = vec![false; l.nodes.len()];
    for (i, n) in l.nodes.iter().enumerate().rev() {
        if n.kind == LKind::Concat {
            for &j in &n.inputs {
                qparams[j] = qparams[i];
                taken[j] = true;
            }
        }
    }
    // Then the nodes that share their input's (pools, reshapes, pads, lone
    // relus), in order, from their inputs' final quantization.
    for (i, n) in l.nodes.iter().enumerate() {
        if !n.kind.has_own_range() && n.kind != LKind::Softmax && !taken[i] {
            qparams[i] = qparams[n.inputs[0]];
        }
    }
    let mut weights = BTreeMap::new();
    for (i, n) in l.nodes.iter().enumerate() {
        let Some(p) = &n.params else { continue };
        let (wf, bf) = w.folded(n);
        let cout = p.layout.channels;
        let channel_of = |k: usize| p.layout.channel_of(k);
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
