//! The int8 reference interpreter: TFLM's reference kernels, bit for bit.
//!
//! [`prepare`] computes what TFLM computes in each kernel's Prepare
//! (requantization multipliers and shifts, activation clamps, softmax
//! parameters); [`run`] executes the kernels. The C backend emits code from the
//! same [`Prepared`] values, so the two agree by construction and the tests
//! check that they do, and that TFLM agrees with both.

use super::arith::{
    hard_swish, hard_swish_params, mbqm, mean_multiplier, quantize_f32, quantize_multiplier,
    rdbpot, softmax_params, softmax_row, srdhm, HardSwishParams,
};
use super::pad;
use crate::lower::{LKind, QParams, QuantGraph};
use crate::ops::{Activation, FusedAct, PoolKind};

/// Per-node values fixed at preparation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prepared {
    None,
    /// conv2d, depthwise conv2d and fully connected: one multiplier and
    /// shift per output channel (one for fully connected), the clamp.
    Weighted {
        mult: Vec<i32>,
        shift: Vec<i32>,
        act_min: i32,
        act_max: i32,
    },
    /// Pools and activations that run alone: the output clamp.
    Clamp {
        act_min: i32,
        act_max: i32,
    },
    Add {
        m1: i32,
        s1: i32,
        m2: i32,
        s2: i32,
        mo: i32,
        so: i32,
        act_min: i32,
        act_max: i32,
    },
    Softmax {
        mult: i32,
        shift: i32,
        diff_min: i32,
    },
    /// MEAN: TFLM's multiplier and shift with the element count folded in.
    Mean {
        mult: i32,
        shift: i32,
    },
    /// An int8 to int8 function of one value: a lone activation or a
    /// requantize.
    Unary(Unary),
}

/// A prepared elementwise int8 function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unary {
    /// A lone relu or relu6 in its input's quantization.
    Clamp {
        lo: i32,
        hi: i32,
    },
    /// QUANTIZE int8 to int8: `QuantizeMultiplier(in_scale / out_scale)`.
    Requantize {
        in_zp: i32,
        out_zp: i32,
        mult: i32,
        shift: i32,
    },
    HardSwish(HardSwishParams),
    /// LEAKY_RELU: one multiplier for `x >= 0` (the identity), one for below.
    LeakyRelu {
        in_zp: i32,
        out_zp: i32,
        identity: (i32, i32),
        alpha: (i32, i32),
    },
}

impl Unary {
    /// The output for one input value.
    pub fn apply(&self, x: i8) -> i8 {
        match self {
            Unary::Clamp { lo, hi } => (x as i32).clamp(*lo, *hi) as i8,
            Unary::Requantize {
                in_zp,
                out_zp,
                mult,
                shift,
            } => (mbqm(x as i32 - in_zp, *mult, *shift) + out_zp).clamp(-128, 127) as i8,
            Unary::HardSwish(p) => hard_swish(x, p),
            Unary::LeakyRelu {
                in_zp,
                out_zp,
                identity,
                alpha,
            } => {
                let v = x as i32 - in_zp;
                let (m, s) = if v >= 0 { identity } else { alpha };
                (out_zp + mbqm(v, *m, *s)).clamp(-128, 127) as i8
            }
        }
    }

    /// The output for every input value, `-128..=127` in order: what the C
    /// backend looks up.
    pub fn table(&self) -> [i8; 256] {
        std::array::from_fn(|i| self.apply((i as i32 - 128) as i8))
    }
}

/// A node whose quantization a TFLM kernel refuses at Prepare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrepareError {
    pub layer: String,
    pub message: String,
}

impl Prepared {
    /// (multipliers, shifts, clamp) of a weighted node.
    pub fn weighted(&self) -> (&[i32], &[i32], i32, i32) {
        match self {
            Prepared::Weighted {
                mult,
                shift,
                act_min,
                act_max,
            } => (mult, shift, *act_min, *act_max),
            p => unreachable!("prepared as {p:?}, not as a weighted layer"),
        }
    }

    /// The clamp of a pool or a lone activation.
    pub fn clamp(&self) -> (i32, i32) {
        match self {
            Prepared::Clamp { act_min, act_max } => (*act_min, *act_max),
            p => unreachable!("prepared as {p:?}, not as a clamp"),
        }
    }
}

/// `CalculateActivationRangeQuantized`.
pub fn act_range(act: Option<FusedAct>, q: QParams) -> (i32, i32) {
    match act {
        None => (-128, 127),
        Some(FusedAct::Relu) => ((-128).max(quantize_f32(0.0, q.scale, q.zero_point)), 127),
        Some(FusedAct::Relu6) => (
            (-128).max(quantize_f32(0.0, q.scale, q.zero_point)),
            127.min(quantize_f32(6.0, q.scale, q.zero_point)),
        ),
    }
}

/// The largest left shift TFLM's `MultiplyByQuantizedMultiplier` applies
/// safely (`x * (1 << shift)` in int32; beyond, its C++ is undefined and
/// no two builds need agree).
pub const MAX_LEFT_SHIFT: i32 = 30;

/// `QuantizeMultiplier` of a real multiplier that TFLM's kernels can
/// apply: finite, not negative, and at most `2^MAX_LEFT_SHIFT`.
fn multiplier(
    real: f64,
    layer: &str,
    what: impl Fn() -> String,
) -> Result<(i32, i32), PrepareError> {
    let bad = |message: String| PrepareError {
        layer: layer.to_string(),
        message,
    };
    if !(real.is_finite() && real >= 0.0) {
        return Err(bad(format!(
            "{} is {real}: the quantization has overflowed",
            what()
        )));
    }
    let (m, shift) = quantize_multiplier(real);
    if shift > MAX_LEFT_SHIFT {
        return Err(bad(format!(
            "{} is {real:e} (2^{shift}); TFLM's kernels overflow beyond 2^{MAX_LEFT_SHIFT}: the layer's weights or activation ranges are out of proportion",
            what()
        )));
    }
    Ok((m, shift))
}

/// Prepare every node: what TFLM's Prepare computes, or why TFLM's kernels
/// would refuse (or compute garbage for) the quantization.
pub fn prepare(q: &QuantGraph) -> Result<Vec<Prepared>, PrepareError> {
    let l = &q.lowered;
    for (i, n) in l.nodes.iter().enumerate() {
        let s = q.qparams[i].scale;
        if !(s.is_finite() && s > 0.0) {
            return Err(PrepareError {
                layer: n.name.clone(),
                message: format!("its output scale is {s:e}: its activation range is not usable"),
            });
        }
        let bad_weights = q.weights.get(&i).and_then(|w| {
            w.scales
                .iter()
                .position(|s| !(s.is_finite() && *s > 0.0))
                .map(|c| (c, w.scales[c]))
        });
        if let Some((c, s)) = bad_weights {
            return Err(PrepareError {
                layer: n.name.clone(),
                message: format!(
                    "the weight scale of channel {c} is {s:e}: its weights are too large for int8"
                ),
            });
        }
    }
    l.nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let out = q.qparams[i];
            let (act_min, act_max) = act_range(n.act, out);
            let name = n.name.as_str();
            Ok(match n.kind {
                LKind::Conv { .. } | LKind::Depthwise { .. } => {
                    let in_scale = q.qparams[n.inputs[0]].scale as f64;
                    let (mult, shift) = q.weights[&i]
                        .scales
                        .iter()
                        .enumerate()
                        .map(|(c, &ws)| {
                            multiplier(in_scale * ws as f64 / out.scale as f64, name, || {
                                format!("the requantization of output channel {c}")
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?
                        .into_iter()
                        .unzip();
                    Prepared::Weighted {
                        mult,
                        shift,
                        act_min,
                        act_max,
                    }
                }
                LKind::Pool { .. } => Prepared::Clamp { act_min, act_max },
                LKind::Act(a) => {
                    let input = q.qparams[n.inputs[0]];
                    Prepared::Unary(match a {
                        // Alone, a relu or relu6 keeps its input's
                        // quantization (`LKind::has_own_range`): a clamp.
                        Activation::Relu | Activation::Relu6 => {
                            let (lo, hi) = act_range(a.fused(), out);
                            Unary::Clamp { lo, hi }
                        }
                        Activation::HardSwish => Unary::HardSwish(
                            hard_swish_params(input.scale, input.zero_point, out.scale, out.zero_point)
                                .ok_or_else(|| PrepareError {
                                    layer: n.name.clone(),
                                    message: format!(
                                        "TFLM's HARD_SWISH needs an output scale above 1/128 of the input's ({:e} vs {:e})",
                                        out.scale, input.scale
                                    ),
                                })?,
                        ),
                        Activation::LeakyRelu { alpha } => Unary::LeakyRelu {
                            in_zp: input.zero_point,
                            out_zp: out.zero_point,
                            identity: multiplier((input.scale / out.scale) as f64, name, || {
                                "the identity multiplier".into()
                            })?,
                            alpha: multiplier(
                                (input.scale * alpha.0 / out.scale) as f64,
                                name,
                                || "the alpha multiplier".into(),
                            )?,
                        },
                    })
                }
                LKind::Add => {
                    let (s1, s2) = (
                        q.qparams[n.inputs[0]].scale as f64,
                        q.qparams[n.inputs[1]].scale as f64,
                    );
                    let twice_max = 2.0 * s1.max(s2);
                    let (m1, e1) = quantize_multiplier(s1 / twice_max);
                    let (m2, e2) = quantize_multiplier(s2 / twice_max);
                    // TFLM's QuantizeMultiplierSmallerThanOneExp: below 1.
                    let real = twice_max / ((1u64 << 20) as f64 * out.scale as f64);
                    if real >= 1.0 {
                        return Err(PrepareError {
                            layer: n.name.clone(),
                            message: format!(
                                "TFLM's ADD needs the output scale above 2^-19 of the larger input's ({:e} vs {:e})",
                                out.scale,
                                s1.max(s2)
                            ),
                        });
                    }
                    let (mo, eo) = quantize_multiplier(real);
                    Prepared::Add {
                        m1,
                        s1: e1,
                        m2,
                        s2: e2,
                        mo,
                        so: eo,
                        act_min,
                        act_max,
                    }
                }
                LKind::Softmax => {
                    let in_scale = q.qparams[n.inputs[0]].scale;
                    // TFLM's QuantizeMultiplierGreaterThanOne: above 1.
                    if (in_scale as f64) * (1u64 << 26) as f64 <= 1.0 {
                        return Err(PrepareError {
                            layer: n.name.clone(),
                            message: format!(
                                "TFLM's SOFTMAX needs an input scale above 2^-26, this one is {in_scale:e}: its input's range is too narrow"
                            ),
                        });
                    }
                    let (mult, shift, diff_min) = softmax_params(in_scale);
                    Prepared::Softmax {
                        mult,
                        shift,
                        diff_min,
                    }
                }
                LKind::Requantize => {
                    let input = q.qparams[n.inputs[0]];
                    let (mult, shift) =
                        multiplier(input.scale as f64 / out.scale as f64, name, || {
                            "the requantization".into()
                        })?;
                    Prepared::Unary(Unary::Requantize {
                        in_zp: input.zero_point,
                        out_zp: out.zero_point,
                        mult,
                        shift,
                    })
                }
                LKind::Mean => {
                    let x = &l.nodes[n.inputs[0]].shape;
                    let count = (x[0] * x[1]) as i64;
                    let input = q.qparams[n.inputs[0]];
                    let (m, e) = multiplier(input.scale as f64 / out.scale as f64, name, || {
                        "the mean's rescale".into()
                    })?;
                    let (mult, shift) = mean_multiplier(m, e, count);
                    Prepared::Mean { mult, shift }
                }
                LKind::Input | LKind::Concat | LKind::Pad { .. } | LKind::Reshape => Prepared::None,
            })
        })
        .collect()
}

/// Run the network on one int8 input; returns every node's output.
pub fn run(q: &QuantGraph, prep: &[Prepared], input: &[i8]) -> Vec<Vec<i8>> {
    let l = &q.lowered;
    let mut values: Vec<Vec<i8>> = Vec::with_capacity(l.nodes.len());
    for (i, n) in l.nodes.iter().enumerate() {
        let out_q = q.qparams[i];
        let out: Vec<i8> = match (&n.kind, &prep[i]) {
            (LKind::Input, _) => input.to_vec(),
            (
                LKind::Conv { out, window },
                Prepared::Weighted {
                    mult,
                    shift,
                    act_min,
                    act_max,
                },
            ) => {
                let x = &values[n.inputs[0]];
                let s = &l.nodes[n.inputs[0]].shape;
                let w = &q.weights[&i];
                let in_zp = q.qparams[n.inputs[0]].zero_point;
                let p = window.over([s[0], s[1]]);
                let (cin, cout) = (s[2] as usize, *out as usize);
                let taps = (p.kernel[0] * p.kernel[1]) as usize;
                let mut y = vec![0i8; p.out_pixels() * cout];
                for oy in 0..p.out[0] as usize {
                    for ox in 0..p.out[1] as usize {
                        for oc in 0..cout {
                            let mut acc: i32 = 0;
                            for (t, px) in p.taps(oy, ox) {
                                let (xb, wb) = (px * cin, (oc * taps + t) * cin);
                                for ic in 0..cin {
                                    acc += w.weight[wb + ic] as i32 * (x[xb + ic] as i32 - in_zp);
                                }
                            }
                            acc += w.bias[oc];
                            let v = mbqm(acc, mult[oc], shift[oc]) + out_q.zero_point;
                            y[(oy * p.out[1] as usize + ox) * cout + oc] =
                                v.clamp(*act_min, *act_max) as i8;
                        }
                    }
                }
                y
            }
            (
                LKind::Depthwise { window },
                Prepared::Weighted {
                    mult,
                    shift,
                    act_min,
                    act_max,
                },
            ) => {
                let x = &values[n.inputs[0]];
                let s = &l.nodes[n.inputs[0]].shape;
                let w = &q.weights[&i];
                let in_zp = q.qparams[n.inputs[0]].zero_point;
                let p = window.over([s[0], s[1]]);
                let c = s[2] as usize;
                let mut y = vec![0i8; p.out_pixels() * c];
                for oy in 0..p.out[0] as usize {
                    for ox in 0..p.out[1] as usize {
                        for ch in 0..c {
                            let mut acc: i32 = 0;
                            for (t, px) in p.taps(oy, ox) {
                                acc +=
                                    w.weight[t * c + ch] as i32 * (x[px * c + ch] as i32 - in_zp);
                            }
                            acc += w.bias[ch];
                            let v = mbqm(acc, mult[ch], shift[ch]) + out_q.zero_point;
                            y[(oy * p.out[1] as usize + ox) * c + ch] =
                                v.clamp(*act_min, *act_max) as i8;
                        }
                    }
                }
                y
            }
            (LKind::Pool { kind, window }, Prepared::Clamp { act_min, act_max }) => {
                let x = &values[n.inputs[0]];
                let s = &l.nodes[n.inputs[0]].shape;
                let p = window.over([s[0], s[1]]);
                let c = s[2] as usize;
                let mut y = vec![0i8; p.out_pixels() * c];
                for oy in 0..p.out[0] as usize {
                    for ox in 0..p.out[1] as usize {
                        for ch in 0..c {
                            let (mut acc, mut cnt, mut mx) = (0i32, 0i32, -128i32);
                            for (_, px) in p.taps(oy, ox) {
                                let v = x[px * c + ch] as i32;
                                acc += v;
                                cnt += 1;
                                mx = mx.max(v);
                            }
                            let v = match kind {
                                PoolKind::Max => mx,
                                PoolKind::Avg if acc > 0 => (acc + cnt / 2) / cnt,
                                PoolKind::Avg => (acc - cnt / 2) / cnt,
                            };
                            y[(oy * p.out[1] as usize + ox) * c + ch] =
                                v.clamp(*act_min, *act_max) as i8;
                        }
                    }
                }
                y
            }
            (
                LKind::Add,
                Prepared::Add {
                    m1,
                    s1,
                    m2,
                    s2,
                    mo,
                    so,
                    act_min,
                    act_max,
                },
            ) => {
                let (a, b) = (&values[n.inputs[0]], &values[n.inputs[1]]);
                let (z1, z2) = (
                    q.qparams[n.inputs[0]].zero_point,
                    q.qparams[n.inputs[1]].zero_point,
                );
                a.iter()
                    .zip(b)
                    .map(|(&x1, &x2)| {
                        let sa = rdbpot(srdhm((x1 as i32 - z1) * (1 << 20), *m1), -s1);
                        let sb = rdbpot(srdhm((x2 as i32 - z2) * (1 << 20), *m2), -s2);
                        let r = rdbpot(srdhm(sa + sb, *mo), -so) + out_q.zero_point;
                        r.clamp(*act_min, *act_max) as i8
                    })
                    .collect()
            }
            (LKind::Concat, _) => super::concat(n, l, &values),
            (LKind::Pad { pads }, _) => pad(
                &values[n.inputs[0]],
                &l.nodes[n.inputs[0]].shape,
                *pads,
                out_q.zero_point as i8,
            ),
            (LKind::Reshape, _) => values[n.inputs[0]].clone(),
            (LKind::Mean, Prepared::Mean { mult, shift }) => {
                let x = &values[n.inputs[0]];
                let s = &l.nodes[n.inputs[0]].shape;
                let (pixels, c) = ((s[0] * s[1]) as usize, s[2] as usize);
                let in_zp = q.qparams[n.inputs[0]].zero_point;
                (0..c)
                    .map(|ch| {
                        let acc: i32 = (0..pixels).map(|p| x[p * c + ch] as i32 - in_zp).sum();
                        (mbqm(acc, *mult, *shift) + out_q.zero_point).clamp(-128, 127) as i8
                    })
                    .collect()
            }
            (LKind::Act(_) | LKind::Requantize, Prepared::Unary(u)) => {
                values[n.inputs[0]].iter().map(|&v| u.apply(v)).collect()
            }
            (
                LKind::Softmax,
                Prepared::Softmax {
                    mult,
                    shift,
                    diff_min,
                },
            ) => {
                let x = &values[n.inputs[0]];
                let depth = *n.shape.last().unwrap() as usize;
                let mut y = vec![0i8; x.len()];
                for (row, orow) in x.chunks(depth).zip(y.chunks_mut(depth)) {
                    softmax_row(row, orow, *mult, *shift, *diff_min);
                }
                y
            }
            (
                k @ (LKind::Conv { .. }
                | LKind::Depthwise { .. }
                | LKind::Pool { .. }
                | LKind::Add
                | LKind::Act(_)
                | LKind::Requantize
                | LKind::Softmax
                | LKind::Mean),
                p,
            ) => unreachable!("node {i} {k:?} prepared as {p:?}"),
        };
        values.push(out);
    }
    values
}
