//! Shape inference and the exact cost model of one layer.
//!
//! Output sizes follow TFLite: SAME gives `ceil(in / stride)`, VALID gives
//! `ceil((in - k + 1) / stride)`. The cost model counts, per layer: MACs
//! (multiply-accumulates of conv, depthwise conv and dense; everything else
//! is 0), params (weights + biases; batch norm folds into the layer before it
//! and adds none), weight bytes (int8 weights + int32 biases, what lands in
//! flash) and working bytes (SpArSe: bytes of all inputs plus the output, int8;
//! 0 for a batch norm or activation fused into the layer before it).
//! `ops = 2 x MACs`.

use super::{Activation, Const, Op, Padding, Real, Slot, Window};

/// Largest tensor accepted (elements); keeps every product in range.
pub const MAX_ELEMENTS: u64 = 1 << 31;

/// Most bytes of weights a network may have (a layer, and all of them):
/// more fits no microcontroller, and keeps every cost sum in range.
pub const MAX_WEIGHT_BYTES: u64 = 1 << 32;

/// Cost of one layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LayerCost {
    pub macs: u64,
    pub params: u64,
    pub weight_bytes: u64,
    pub working_bytes: u64,
    /// Predicted instructions on a core (0 when no core's model was asked
    /// for: [`crate::analysis::latency::layer_cost`]).
    pub instructions: u64,
}

fn elems(shape: &[u32]) -> u64 {
    shape.iter().map(|&d| d as u64).product()
}

fn hwc<'a>(op: &Op, shape: &'a [u32]) -> Result<&'a [u32], String> {
    if shape.len() == 3 {
        Ok(shape)
    } else {
        Err(format!(
            "`{}` needs a feature map [H, W, C], but its input has shape {:?}",
            op.name(),
            shape
        ))
    }
}

fn spatial(op: &Op, input: &[u32], w: &Window, c: u32) -> Result<Vec<u32>, String> {
    let x = hwc(op, input)?;
    let [h, w] = w.out_size([x[0], x[1]])?;
    Ok(vec![h, w, c])
}

/// Output shape of `op` applied to `inputs`, or why it cannot be applied.
pub fn infer(op: &Op, inputs: &[&[u32]]) -> Result<Vec<u32>, String> {
    let out = match op {
        Op::Input { shape } => shape.clone(),
        Op::Conv2d { out, window } => spatial(op, inputs[0], window, *out)?,
        Op::DepthwiseConv2d { window } | Op::Pool { window, .. } => {
            let c = hwc(op, inputs[0])?[2];
            spatial(op, inputs[0], window, c)?
        }
        Op::Dense { out } => vec![*out],
        Op::GlobalAvgPool => vec![1, 1, hwc(op, inputs[0])?[2]],
        Op::Add => {
            if inputs[0] != inputs[1] {
                return Err(format!(
                    "`add` needs equal shapes, got {:?} and {:?}",
                    inputs[0], inputs[1]
                ));
            }
            inputs[0].to_vec()
        }
        Op::Concat => {
            let first = inputs[0];
            if first.is_empty() {
                return Err("`concat` needs tensors with at least one dimension".into());
            }
            let last = first.len() - 1;
            let mut channels = 0u64;
            for s in inputs {
                if s.len() != first.len() || s[..last] != first[..last] {
                    return Err(format!(
                        "`concat` joins along the last axis; all other dimensions must match, got {:?} and {:?}",
                        first, s
                    ));
                }
                channels += s[last] as u64;
            }
            let mut out = first.to_vec();
            out[last] = u32::try_from(channels).map_err(|_| "too many channels".to_string())?;
            out
        }
        Op::Pad { pads } => {
            let x = hwc(op, inputs[0])?;
            let h = x[0] as u64 + pads[0] as u64 + pads[1] as u64;
            let w = x[1] as u64 + pads[2] as u64 + pads[3] as u64;
            vec![
                u32::try_from(h).map_err(|_| "padded size too large")?,
                u32::try_from(w).map_err(|_| "padded size too large")?,
                x[2],
            ]
        }
        Op::Reshape { shape } => {
            if elems(shape) != elems(inputs[0]) {
                return Err(format!(
                    "cannot reshape {:?} ({} elements) to {:?} ({} elements)",
                    inputs[0],
                    elems(inputs[0]),
                    shape,
                    elems(shape)
                ));
            }
            shape.clone()
        }
        Op::Flatten => vec![u32::try_from(elems(inputs[0])).map_err(|_| "tensor too large")?],
        Op::BatchNorm | Op::Act(_) | Op::Softmax | Op::Dropout { .. } => inputs[0].to_vec(),
    };
    if out.contains(&0) {
        return Err(format!(
            "`{}` would produce an empty tensor {:?}",
            op.name(),
            out
        ));
    }
    if elems(&out) > MAX_ELEMENTS {
        return Err(format!(
            "`{}` would produce a tensor of {} elements, more than mnet supports",
            op.name(),
            elems(&out)
        ));
    }
    Ok(out)
}

/// The cost of `op` with the given input and output shapes. `fused` is true
/// for a batch norm or activation folded into the layer before it.
pub fn cost(op: &Op, inputs: &[&[u32]], out: &[u32], fused: bool) -> LayerCost {
    // Weighted layers: every weight is one MAC per output pixel (a dense
    // layer has one pixel); the bias is one value per output channel.
    let (weights, biases) = op
        .weight_counts(inputs.first().copied().unwrap_or(&[]))
        .unwrap_or((0, 0));
    // Once per output pixel for a sliding window (a dense layer: once).
    let pixels = match op.window() {
        Some(_) => elems(&out[..2]),
        None => 1,
    };
    let macs = pixels.saturating_mul(weights);
    let working = if fused || matches!(op, Op::Input { .. }) {
        0
    } else {
        inputs.iter().map(|s| elems(s)).sum::<u64>() + elems(out)
    };
    LayerCost {
        macs,
        params: weights.saturating_add(biases),
        weight_bytes: weights.saturating_add(4 * biases),
        working_bytes: working,
        instructions: 0,
    }
}

fn as_pair(v: &Const) -> Result<[u32; 2], String> {
    match v {
        Const::Int(n) => Ok([positive(*n)?, positive(*n)?]),
        Const::Tuple(xs) if xs.len() == 2 => match (&xs[0], &xs[1]) {
            (Const::Int(a), Const::Int(b)) => Ok([positive(*a)?, positive(*b)?]),
            _ => Err(format!("expected two integers, got {v}")),
        },
        _ => Err(format!(
            "expected an integer or a pair like (3, 3), got {v}"
        )),
    }
}

fn positive(n: u64) -> Result<u32, String> {
    if n == 0 {
        return Err("must be at least 1".into());
    }
    u32::try_from(n)
        .ok()
        .filter(|&v| v <= 1 << 20)
        .ok_or_else(|| format!("{n} is too large"))
}

fn non_negative(n: u64) -> Result<u32, String> {
    u32::try_from(n)
        .ok()
        .filter(|&v| v <= 1 << 20)
        .ok_or_else(|| format!("{n} is too large"))
}

/// Set one attribute of an op from a constant, checking its type and range.
pub fn set_attr(op: &mut Op, slot: Slot, v: &Const) -> Result<(), String> {
    match (op, slot) {
        (Op::Conv2d { out, .. } | Op::Dense { out }, Slot::Out) => match v {
            Const::Int(n) => *out = positive(*n)?,
            _ => return Err(format!("expected a channel count, got {v}")),
        },
        (Op::Conv2d { window, .. } | Op::DepthwiseConv2d { window }, Slot::Kernel)
        | (Op::Pool { window, .. }, Slot::Size) => window.kernel = as_pair(v)?,
        (
            Op::Conv2d { window, .. } | Op::DepthwiseConv2d { window } | Op::Pool { window, .. },
            Slot::Stride,
        ) => window.stride = as_pair(v)?,
        (
            Op::Conv2d { window, .. } | Op::DepthwiseConv2d { window } | Op::Pool { window, .. },
            Slot::Padding,
        ) => {
            window.padding = match v {
                Const::Sym(s) if s == "same" => Padding::Same,
                Const::Sym(s) if s == "valid" => Padding::Valid,
                _ => return Err(format!("expected `same` or `valid`, got {v}")),
            }
        }
        (Op::Pad { pads }, Slot::Pads) => {
            *pads = match v {
                Const::Int(n) => [non_negative(*n)?; 4],
                Const::Tuple(xs) => {
                    let ints: Vec<u32> = xs
                        .iter()
                        .map(|x| match x {
                            Const::Int(n) => non_negative(*n),
                            _ => Err(format!("expected integers, got {v}")),
                        })
                        .collect::<Result<_, _>>()?;
                    match ints.as_slice() {
                        [h, w] => [*h, *h, *w, *w],
                        [t, b, l, r] => [*t, *b, *l, *r],
                        _ => {
                            return Err(
                                "pads are `n`, `(h, w)` or `(top, bottom, left, right)`".into()
                            )
                        }
                    }
                }
                _ => return Err(format!("expected padding amounts, got {v}")),
            }
        }
        (Op::Act(Activation::LeakyRelu { alpha }), Slot::Alpha) => match v {
            Const::Real(r) if r.0.is_finite() && (0.0..1.0).contains(&r.0) => *alpha = *r,
            Const::Int(0) => *alpha = Real(0.0),
            _ => return Err(format!("expected a slope in [0, 1), like 0.2, got {v}")),
        },
        (Op::Dropout { rate }, Slot::Rate) => match v {
            Const::Real(r) if r.0.is_finite() && (0.0..1.0).contains(&r.0) => *rate = *r,
            Const::Int(0) => *rate = Real(0.0),
            _ => return Err(format!("expected a rate in [0, 1), like 0.1, got {v}")),
        },
        (Op::Reshape { shape }, Slot::Shape) => {
            let dims = match v {
                Const::Tuple(xs) => xs
                    .iter()
                    .map(|x| match x {
                        Const::Int(n) if *n > 0 && *n <= 1 << 31 => Some(*n as u32),
                        _ => None,
                    })
                    .collect::<Option<Vec<u32>>>(),
                _ => None,
            };
            match dims {
                Some(d) if !d.is_empty() && d.len() <= 3 => *shape = d,
                _ => return Err("`shape` is a list of 1 to 3 positive sizes".into()),
            }
        }
        (op, slot) => {
            return Err(format!(
                "`{}` has no attribute `{}`",
                op.name(),
                slot.name()
            ))
        }
    }
    Ok(())
}

/// The value of one attribute of an op (the inverse of [`set_attr`]), or
/// `None` if the op has no such attribute.
pub fn get_attr(op: &Op, slot: Slot) -> Option<Const> {
    let ints = |v: &[u32]| Const::Tuple(v.iter().map(|&d| Const::Int(d as u64)).collect());
    let window = op.window().map(|(w, _)| w);
    Some(match (slot, window) {
        (Slot::Out, _) => match op {
            Op::Conv2d { out, .. } | Op::Dense { out } => Const::Int(*out as u64),
            _ => return None,
        },
        (Slot::Kernel | Slot::Size, Some(w)) if op.window().map(|(_, k)| k) == Some(slot) => {
            ints(&w.kernel)
        }
        (Slot::Stride, Some(w)) => ints(&w.stride),
        (Slot::Padding, Some(w)) => Const::Sym(w.padding.as_str().to_string()),
        (Slot::Pads, _) => match op {
            Op::Pad { pads } => ints(pads),
            _ => return None,
        },
        (Slot::Shape, _) => match op {
            Op::Reshape { shape } => ints(shape),
            _ => return None,
        },
        (Slot::Alpha, _) => match op {
            Op::Act(Activation::LeakyRelu { alpha }) => Const::Real(*alpha),
            _ => return None,
        },
        (Slot::Rate, _) => match op {
            Op::Dropout { rate } => Const::Real(*rate),
            _ => return None,
        },
        (Slot::Kernel | Slot::Size, _) | (Slot::Stride | Slot::Padding, None) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::PoolKind;

    fn win(k: [u32; 2], s: [u32; 2], p: Padding) -> Window {
        Window {
            kernel: k,
            stride: s,
            padding: p,
        }
    }

    fn conv(out: u32, k: [u32; 2], s: [u32; 2], p: Padding) -> Op {
        Op::Conv2d {
            out,
            window: win(k, s, p),
        }
    }

    #[test]
    fn same_and_valid_follow_tflite() {
        // 49x10 input, 10x4 kernel, stride 2: SAME -> ceil(49/2)=25, ceil(10/2)=5.
        let op = conv(64, [10, 4], [2, 2], Padding::Same);
        assert_eq!(infer(&op, &[&[49, 10, 1]]).unwrap(), vec![25, 5, 64]);
        // VALID -> ceil((49-10+1)/2)=20, ceil((10-4+1)/2)=4.
        let op = conv(64, [10, 4], [2, 2], Padding::Valid);
        assert_eq!(infer(&op, &[&[49, 10, 1]]).unwrap(), vec![20, 4, 64]);
        // Odd sizes with stride 2 SAME: 7 -> 4.
        let op = Op::DepthwiseConv2d {
            window: win([3, 3], [2, 2], Padding::Same),
        };
        assert_eq!(infer(&op, &[&[7, 7, 8]]).unwrap(), vec![4, 4, 8]);
        // Window larger than input with VALID is an error.
        let op = Op::Pool {
            kind: PoolKind::Avg,
            window: win([5, 5], [1, 1], Padding::Valid),
        };
        assert!(infer(&op, &[&[4, 4, 8]]).is_err());
    }

    #[test]
    fn costs_by_hand() {
        // conv 10x4, 1 -> 84 channels on 49x10 SAME stride 1:
        // MACs = 49*10 * 10*4*1*84 = 1_646_400; params = 3360 + 84.
        let op = conv(84, [10, 4], [1, 1], Padding::Same);
        let out = infer(&op, &[&[49, 10, 1]]).unwrap();
        let c = cost(&op, &[&[49, 10, 1]], &out, false);
        assert_eq!(c.macs, 1_646_400);
        assert_eq!(c.params, 3360 + 84);
        assert_eq!(c.weight_bytes, 3360 + 4 * 84);
        assert_eq!(c.working_bytes, 490 + 49 * 10 * 84);
        // depthwise 3x3 stride 2 on 49x10x84 -> 25x5x84: MACs = 125*9*84.
        let op = Op::DepthwiseConv2d {
            window: win([3, 3], [2, 2], Padding::Same),
        };
        let c = cost(&op, &[&[49, 10, 84]], &[25, 5, 84], false);
        assert_eq!(c.macs, 94_500);
        assert_eq!(c.params, 9 * 84 + 84);
        // dense 196 -> 12 from a [1, 1, 196] map.
        let op = Op::Dense { out: 12 };
        let c = cost(&op, &[&[1, 1, 196]], &[12], false);
        assert_eq!((c.macs, c.params, c.weight_bytes), (2352, 2364, 2352 + 48));
        // A fused activation costs nothing.
        let c = cost(&Op::Act(Activation::Relu6), &[&[4, 4, 8]], &[4, 4, 8], true);
        assert_eq!(c, LayerCost::default());
        // An unfused add reads two tensors and writes one.
        let c = cost(&Op::Add, &[&[4, 4, 8], &[4, 4, 8]], &[4, 4, 8], false);
        assert_eq!(c.working_bytes, 3 * 128);
    }

    #[test]
    fn concat_pad_reshape() {
        assert_eq!(
            infer(&Op::Concat, &[&[4, 4, 8], &[4, 4, 3]]).unwrap(),
            vec![4, 4, 11]
        );
        assert!(infer(&Op::Concat, &[&[4, 4, 8], &[2, 4, 3]]).is_err());
        let pad = Op::Pad { pads: [1, 2, 0, 3] };
        assert_eq!(infer(&pad, &[&[4, 4, 8]]).unwrap(), vec![7, 7, 8]);
        assert_eq!(infer(&Op::Flatten, &[&[4, 4, 8]]).unwrap(), vec![128]);
        assert!(infer(&Op::Reshape { shape: vec![3, 3] }, &[&[4, 4, 8]]).is_err());
        assert_eq!(
            infer(&Op::GlobalAvgPool, &[&[25, 5, 64]]).unwrap(),
            vec![1, 1, 64]
        );
    }
}
