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

use crate::ir::{Const, Op, Padding, Slot};

/// Largest tensor accepted (elements); keeps every product in range.
pub const MAX_ELEMENTS: u64 = 1 << 31;

/// Cost of one layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LayerCost {
    pub macs: u64,
    pub params: u64,
    pub weight_bytes: u64,
    pub working_bytes: u64,
}

fn elems(shape: &[u32]) -> u64 {
    shape.iter().map(|&d| d as u64).product()
}

fn out_size(input: u32, k: u32, stride: u32, padding: Padding) -> Result<u32, String> {
    match padding {
        Padding::Same => Ok(input.div_ceil(stride)),
        Padding::Valid => {
            if input < k {
                Err(format!(
                    "window of {k} does not fit in an input of {input} with `padding: valid`"
                ))
            } else {
                Ok((input - k + 1).div_ceil(stride))
            }
        }
    }
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

fn spatial(
    op: &Op,
    input: &[u32],
    k: [u32; 2],
    s: [u32; 2],
    p: Padding,
    c: u32,
) -> Result<Vec<u32>, String> {
    let x = hwc(op, input)?;
    let h = out_size(x[0], k[0], s[0], p)?;
    let w = out_size(x[1], k[1], s[1], p)?;
    Ok(vec![h, w, c])
}

/// Output shape of `op` applied to `inputs`, or why it cannot be applied.
pub fn infer(op: &Op, inputs: &[&[u32]]) -> Result<Vec<u32>, String> {
    let out = match op {
        Op::Input { shape } => shape.clone(),
        Op::Conv2d {
            out,
            kernel,
            stride,
            padding,
        } => spatial(op, inputs[0], *kernel, *stride, *padding, *out)?,
        Op::DepthwiseConv2d {
            kernel,
            stride,
            padding,
        } => {
            let c = hwc(op, inputs[0])?[2];
            spatial(op, inputs[0], *kernel, *stride, *padding, c)?
        }
        Op::AvgPool {
            size,
            stride,
            padding,
        }
        | Op::MaxPool {
            size,
            stride,
            padding,
        } => {
            let c = hwc(op, inputs[0])?[2];
            spatial(op, inputs[0], *size, *stride, *padding, c)?
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
        Op::BatchNorm | Op::Relu | Op::Relu6 | Op::Softmax => inputs[0].to_vec(),
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
    let (macs, weights, biases) = match op {
        Op::Conv2d {
            out: cout, kernel, ..
        } => {
            let cin = inputs[0][2] as u64;
            let w = kernel[0] as u64 * kernel[1] as u64 * cin * *cout as u64;
            (elems(&out[..2]) * w, w, *cout as u64)
        }
        Op::DepthwiseConv2d { kernel, .. } => {
            let c = inputs[0][2] as u64;
            let w = kernel[0] as u64 * kernel[1] as u64 * c;
            (elems(&out[..2]) * w, w, c)
        }
        Op::Dense { out: n } => {
            let w = elems(inputs[0]) * *n as u64;
            (w, w, *n as u64)
        }
        _ => (0, 0, 0),
    };
    let working = if fused || matches!(op, Op::Input { .. }) {
        0
    } else {
        inputs.iter().map(|s| elems(s)).sum::<u64>() + elems(out)
    };
    LayerCost {
        macs,
        params: weights + biases,
        weight_bytes: weights + 4 * biases,
        working_bytes: working,
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
        (Op::Conv2d { kernel, .. } | Op::DepthwiseConv2d { kernel, .. }, Slot::Kernel) => {
            *kernel = as_pair(v)?
        }
        (
            Op::Conv2d { stride, .. }
            | Op::DepthwiseConv2d { stride, .. }
            | Op::AvgPool { stride, .. }
            | Op::MaxPool { stride, .. },
            Slot::Stride,
        ) => *stride = as_pair(v)?,
        (Op::AvgPool { size, .. } | Op::MaxPool { size, .. }, Slot::Size) => *size = as_pair(v)?,
        (
            Op::Conv2d { padding, .. }
            | Op::DepthwiseConv2d { padding, .. }
            | Op::AvgPool { padding, .. }
            | Op::MaxPool { padding, .. },
            Slot::Padding,
        ) => {
            *padding = match v {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(out: u32, k: [u32; 2], s: [u32; 2], p: Padding) -> Op {
        Op::Conv2d {
            out,
            kernel: k,
            stride: s,
            padding: p,
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
            kernel: [3, 3],
            stride: [2, 2],
            padding: Padding::Same,
        };
        assert_eq!(infer(&op, &[&[7, 7, 8]]).unwrap(), vec![4, 4, 8]);
        // Window larger than input with VALID is an error.
        let op = Op::AvgPool {
            size: [5, 5],
            stride: [1, 1],
            padding: Padding::Valid,
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
            kernel: [3, 3],
            stride: [2, 2],
            padding: Padding::Same,
        };
        let c = cost(&op, &[&[49, 10, 84]], &[25, 5, 84], false);
        assert_eq!(c.macs, 94_500);
        assert_eq!(c.params, 9 * 84 + 84);
        // dense 196 -> 12 from a [1, 1, 196] map.
        let op = Op::Dense { out: 12 };
        let c = cost(&op, &[&[1, 1, 196]], &[12], false);
        assert_eq!((c.macs, c.params, c.weight_bytes), (2352, 2364, 2352 + 48));
        // A fused activation costs nothing.
        let c = cost(&Op::Relu6, &[&[4, 4, 8]], &[4, 4, 8], true);
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
