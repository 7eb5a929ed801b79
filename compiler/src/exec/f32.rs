//! The float forward pass of a lowered network (batch norms folded,
//! activations fused), one sample at a time: what calibration runs to find
//! each activation's range. Padded taps are zeros, as in the float model.

use super::{concat, pad};
use crate::lower::weights::FloatWeights;
use crate::lower::{LKind, LNode, Lowered};
use crate::ops::{FusedAct, PoolKind, Window};

fn apply(v: f32, act: Option<FusedAct>) -> f32 {
    match act {
        Some(a) => a.apply(v),
        None => v,
    }
}

/// Float forward pass; returns every node's output.
pub fn forward(l: &Lowered, w: &FloatWeights, input: &[f32]) -> Vec<Vec<f32>> {
    let mut values: Vec<Vec<f32>> = Vec::with_capacity(l.nodes.len());
    for n in &l.nodes {
        let x = n.inputs.first().map(|&j| (&values[j], &l.nodes[j].shape));
        let out: Vec<f32> = match (&n.kind, x) {
            (LKind::Input, _) => input.to_vec(),
            (LKind::Conv { out, window }, Some((x, s))) => {
                let (weight, bias) = w.folded(n);
                conv(x, s, &weight, &bias, *out as usize, window, false, n.act)
            }
            (LKind::Depthwise { window }, Some((x, s))) => {
                let (weight, bias) = w.folded(n);
                conv(x, s, &weight, &bias, s[2] as usize, window, true, n.act)
            }
            (LKind::Pool { kind, window }, Some((x, s))) => pool(x, s, *kind, window, n.act),
            (LKind::Add, _) => {
                let (a, b) = (&values[n.inputs[0]], &values[n.inputs[1]]);
                a.iter().zip(b).map(|(x, y)| apply(x + y, n.act)).collect()
            }
            (LKind::Concat, _) => concat(n, l, &values),
            (LKind::Pad { pads }, Some((x, s))) => pad(x, s, *pads, 0.0),
            (LKind::Reshape | LKind::Requantize, Some((x, _))) => x.clone(),
            (LKind::Softmax, Some((x, _))) => softmax(x, n),
            (LKind::Mean, Some((x, s))) => {
                let (pixels, c) = ((s[0] * s[1]) as usize, s[2] as usize);
                (0..c)
                    .map(|ch| (0..pixels).map(|p| x[p * c + ch]).sum::<f32>() / pixels as f32)
                    .collect()
            }
            (LKind::Act(a), Some((x, _))) => x.iter().map(|v| a.apply(*v)).collect(),
            (k, None) => unreachable!("{k:?} without an input"),
        };
        values.push(out);
    }
    values
}

/// Softmax over the last axis.
fn softmax(x: &[f32], n: &LNode) -> Vec<f32> {
    let depth = *n.shape.last().expect("a shape") as usize;
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(depth) {
        let mx = row.iter().cloned().fold(f32::MIN, f32::max);
        let e: Vec<f32> = row.iter().map(|v| (v - mx).exp()).collect();
        let sum: f32 = e.iter().sum();
        out.extend(e.iter().map(|v| v / sum));
    }
    out
}

fn pool(x: &[f32], s: &[u32], kind: PoolKind, window: &Window, act: Option<FusedAct>) -> Vec<f32> {
    let p = window.over([s[0], s[1]]);
    let c = s[2] as usize;
    let mut out = vec![0f32; p.out_pixels() * c];
    for oy in 0..p.out[0] as usize {
        for ox in 0..p.out[1] as usize {
            let o = oy * p.out[1] as usize + ox;
            for ch in 0..c {
                let (mut acc, mut cnt, mut mx) = (0f32, 0, f32::MIN);
                for (_, px) in p.taps(oy, ox) {
                    let v = x[px * c + ch];
                    acc += v;
                    cnt += 1;
                    mx = mx.max(v);
                }
                let v = match kind {
                    PoolKind::Avg => acc / cnt.max(1) as f32,
                    PoolKind::Max => mx,
                };
                out[o * c + ch] = apply(v, act);
            }
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
fn conv(
    x: &[f32],
    s: &[u32],
    weight: &[f32],
    bias: &[f32],
    cout: usize,
    window: &Window,
    depthwise: bool,
    act: Option<FusedAct>,
) -> Vec<f32> {
    let p = window.over([s[0], s[1]]);
    let cin = s[2] as usize;
    let taps = (p.kernel[0] * p.kernel[1]) as usize;
    let mut out = vec![0f32; p.out_pixels() * cout];
    // im2col for one output pixel: taps outside the image are 0 (the float
    // model pads with zeros), so every output channel is one dot product
    // with its weight row, laid out [ky][kx][ic] like the patch.
    let mut patch = vec![0f32; taps * cin];
    for oy in 0..p.out[0] as usize {
        for ox in 0..p.out[1] as usize {
            patch.iter_mut().for_each(|v| *v = 0.0);
            for (t, px) in p.taps(oy, ox) {
                patch[t * cin..(t + 1) * cin].copy_from_slice(&x[px * cin..(px + 1) * cin]);
            }
            let y = &mut out[(oy * p.out[1] as usize + ox) * cout..][..cout];
            if depthwise {
                for (oc, yv) in y.iter_mut().enumerate() {
                    let mut acc = bias[oc];
                    for t in 0..taps {
                        acc += weight[t * cout + oc] * patch[t * cin + oc];
                    }
                    *yv = apply(acc, act);
                }
            } else {
                let k = patch.len();
                for (oc, yv) in y.iter_mut().enumerate() {
                    *yv = apply(bias[oc] + dot(&weight[oc * k..(oc + 1) * k], &patch), act);
                }
            }
        }
    }
    out
}
