//! Quantization-aware training: int8 fake quantization of weights (per
//! channel) and activations (per tensor, EMA ranges) at the tensors the
//! int8 network keeps, with straight-through gradients.

use super::Net;
use rayon::prelude::*;

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

impl Net {
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
    pub(super) fn quantize_weights(&mut self) {
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
    pub(super) fn restore_weights(&mut self) {
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
}
