//! Executing networks on the host: the float forward pass of a lowered
//! network ([`f32`], what calibration runs), TFLM's fixed-point arithmetic
//! ([`arith`]) and the int8 reference interpreter built on it ([`interp`]),
//! the golden model every backend is compared with; many inputs at once on
//! the JIT or the interpreter ([`batch`]). The layout helpers below are
//! shared by the interpreter and the float pass.

pub mod arith;
pub mod batch;
pub mod f32;
pub mod interp;

use crate::lower::{LNode, Lowered};

/// Channel concatenation of NHWC tensors (last axis).
pub fn concat<T: Copy>(n: &LNode, l: &Lowered, values: &[Vec<T>]) -> Vec<T> {
    let outer: usize = n.shape[..n.shape.len() - 1]
        .iter()
        .map(|&d| d as usize)
        .product();
    let mut out = Vec::with_capacity(outer * *n.shape.last().unwrap() as usize);
    for o in 0..outer {
        for &i in &n.inputs {
            let c = *l.nodes[i].shape.last().unwrap() as usize;
            out.extend_from_slice(&values[i][o * c..(o + 1) * c]);
        }
    }
    out
}

/// Spatial padding of an `[H, W, C]` tensor with `fill`.
pub fn pad<T: Copy>(x: &[T], s: &[u32], pads: [u32; 4], fill: T) -> Vec<T> {
    let (h, w, c) = (s[0] as usize, s[1] as usize, s[2] as usize);
    let (oh, ow) = (
        h + (pads[0] + pads[1]) as usize,
        w + (pads[2] + pads[3]) as usize,
    );
    let mut out = vec![fill; oh * ow * c];
    for y in 0..h {
        for xx in 0..w {
            let dst = ((y + pads[0] as usize) * ow + xx + pads[2] as usize) * c;
            out[dst..dst + c].copy_from_slice(&x[(y * w + xx) * c..(y * w + xx + 1) * c]);
        }
    }
    out
}
