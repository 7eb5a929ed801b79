//! Batch norm in training mode: batch statistics, running statistics, the
//! per-channel affine map (with a fused relu or relu6) forward, and the
//! two-pass vectorised backward, side by side.

use super::{upper, Kind, Layer, Net, BN_EPSILON, BN_MOMENTUM, ROWS};
use crate::simd;
use rayon::prelude::*;

/// A batch norm's statistics and affine map in the last forward pass:
/// `y = clamp(scale * x + shift)`, `scale = gamma * inv`; and its work
/// buffers (per-block partial sums, per-channel sums), kept across steps.
#[derive(Clone, Debug, Default)]
pub(super) struct BnSaved {
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

pub(super) fn forward_batch_norm(
    net: &mut Net,
    layers: &[Layer],
    i: usize,
    out: &mut [f32],
    train: bool,
) {
    let layer = &layers[i];
    let x = |k: usize| &net.acts[layer.inputs[k]];
    kind!(
        layer,
        Kind::BatchNorm {
            gamma,
            beta,
            mean,
            var,
            act
        }
    );

    let (lo, hi) = match act {
        Some(a) => (0.0, upper(*a)),
        None => (f32::MIN, f32::MAX),
    };
    let c = *layer.shape.last().unwrap();
    let xv = x(0);
    let m = xv.len() / c;
    let sv = &mut net.bn_saved[i];
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
            let rm = &mut net.params[*mean].value[ch];
            *rm = BN_MOMENTUM * *rm + (1.0 - BN_MOMENTUM) * sv.mu[ch];
            let unbiased = sv.inv[ch] * m as f32 / (m.max(2) - 1) as f32;
            let rv = &mut net.params[*var].value[ch];
            *rv = BN_MOMENTUM * *rv + (1.0 - BN_MOMENTUM) * unbiased;
        }
        sv.inv
            .iter_mut()
            .for_each(|v| *v = 1.0 / (*v + BN_EPSILON).sqrt());
    } else {
        refill(&mut sv.mu, net.params[*mean].value.iter().copied());
        refill(
            &mut sv.inv,
            net.params[*var]
                .value
                .iter()
                .map(|v| 1.0 / (v + BN_EPSILON).sqrt()),
        );
    }
    // y = scale * x + shift per channel (vectorises over a row).
    let (g, be) = (&net.params[*gamma].value, &net.params[*beta].value);
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

pub(super) fn backward_batch_norm(
    net: &mut Net,
    layers: &[Layer],
    i: usize,
    dy: &[f32],
    fresh: &mut [bool],
) {
    let layer = &layers[i];
    kind!(
        layer,
        Kind::BatchNorm {
            gamma,
            beta,
            act,
            ..
        }
    );

    let j = layer.inputs[0];
    let c = *layer.shape.last().unwrap();
    let mut saved = std::mem::take(&mut net.bn_saved[i]);
    let BnSaved {
        mu,
        inv,
        scale,
        shift,
        part,
        work,
        ..
    } = &mut saved;
    let xv = &net.acts[j];
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
        net.params[*gamma].grad[ch] += sum_dy_xhat[ch];
        net.params[*beta].grad[ch] += sum_dy[ch];
    }
    let gm = &net.params[*gamma].value;
    for ch in 0..c {
        c1[ch] = gm[ch] * inv[ch];
        c3[ch] = -c1[ch] / m * sum_dy_xhat[ch] * inv[ch];
        c2[ch] = -c1[ch] / m * sum_dy[ch] - c3[ch] * mu[ch];
    }
    let (c1, c3, c2) = (&*c1, &*c3, &*c2);
    // A fresh buffer is overwritten, never read.
    let overwrite = std::mem::replace(&mut fresh[j], false);
    let mut gx = std::mem::take(&mut net.grads[j]);
    gx.par_chunks_mut(ROWS * c)
        .zip(
            dy.par_chunks(ROWS * c)
                .zip(net.acts[j].par_chunks(ROWS * c)),
        )
        .for_each(|(db, (gb, xb))| {
            simd::dispatch(
                #[inline(always)]
                || bn_grad_input(db, gb, xb, [c1, c3, c2], mask, overwrite),
            )
        });
    net.grads[j] = gx;
    net.bn_saved[i] = saved;
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
