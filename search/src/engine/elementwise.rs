//! The layers that move or map values without weights: activations, add,
//! concat, pad, reshape, softmax, and the channel masks and option mixes
//! of a supernet, forward and backward.

use super::{upper, Kind, Layer, Net, ROWS};
use rand::RngExt;
use rayon::prelude::*;

pub(super) fn forward_act(net: &mut Net, layers: &[Layer], i: usize, out: &mut [f32]) {
    let layer = &layers[i];
    let x = |k: usize| &net.acts[layer.inputs[k]];
    kind!(layer, Kind::Act(a));
    match a.fused() {
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
    };
}

pub(super) fn backward_act(
    net: &mut Net,
    layers: &[Layer],
    i: usize,
    dy: &[f32],
    _fresh: &mut [bool],
) {
    let layer = &layers[i];
    kind!(layer, Kind::Act(a));

    let j = layer.inputs[0];
    let mut gx = std::mem::take(&mut net.grads[j]);
    let chunks = gx
        .par_chunks_mut(4096)
        .zip(dy.par_chunks(4096).zip(net.acts[j].par_chunks(4096)));
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
    net.grads[j] = gx;
}

pub(super) fn forward_add(net: &mut Net, layers: &[Layer], i: usize, out: &mut [f32]) {
    let layer = &layers[i];
    let x = |k: usize| &net.acts[layer.inputs[k]];
    out.iter_mut()
        .zip(x(0).iter().zip(x(1)))
        .for_each(|(o, (a, c))| *o = a + c);
}

pub(super) fn backward_add(
    net: &mut Net,
    layers: &[Layer],
    i: usize,
    dy: &[f32],
    _fresh: &mut [bool],
) {
    let layer = &layers[i];

    for k in 0..2 {
        let j = layer.inputs[k];
        net.grads[j].iter_mut().zip(dy).for_each(|(g, d)| *g += d);
    }
}

pub(super) fn forward_concat(net: &mut Net, layers: &[Layer], i: usize, out: &mut [f32]) {
    let layer = &layers[i];
    let x = |k: usize| &net.acts[layer.inputs[k]];
    let xs = |k: usize| &layers[layer.inputs[k]].shape;

    let c_out = *layer.shape.last().unwrap();
    let outer = out.len() / c_out;
    let mut at = 0;
    for k in 0..layer.inputs.len() {
        let ck = *xs(k).last().unwrap();
        for o in 0..outer {
            out[o * c_out + at..o * c_out + at + ck].copy_from_slice(&x(k)[o * ck..(o + 1) * ck]);
        }
        at += ck;
    }
}

pub(super) fn backward_concat(
    net: &mut Net,
    layers: &[Layer],
    i: usize,
    dy: &[f32],
    _fresh: &mut [bool],
) {
    let layer = &layers[i];
    let xs = |k: usize| &layers[layer.inputs[k]].shape;

    let c_out = *layer.shape.last().unwrap();
    let outer = dy.len() / c_out;
    let mut at = 0;
    for k in 0..layer.inputs.len() {
        let j = layer.inputs[k];
        let ck = *xs(k).last().unwrap();
        for o in 0..outer {
            for t in 0..ck {
                net.grads[j][o * ck + t] += dy[o * c_out + at + t];
            }
        }
        at += ck;
    }
}

pub(super) fn forward_pad(net: &mut Net, layers: &[Layer], i: usize, out: &mut [f32]) {
    let layer = &layers[i];
    let b = net.batch;
    let x = |k: usize| &net.acts[layer.inputs[k]];
    let xs = |k: usize| &layers[layer.inputs[k]].shape;
    kind!(layer, Kind::Pad { pads });

    out.iter_mut().for_each(|v| *v = 0.0);
    pad_map(xs(0), &layer.shape, b, *pads, |src, dst| {
        out[dst] = x(0)[src]
    });
}

pub(super) fn backward_pad(
    net: &mut Net,
    layers: &[Layer],
    i: usize,
    dy: &[f32],
    _fresh: &mut [bool],
) {
    let layer = &layers[i];
    let b = net.batch;
    let xs = |k: usize| &layers[layer.inputs[k]].shape;
    kind!(layer, Kind::Pad { pads });

    let j = layer.inputs[0];
    let gx = &mut net.grads[j];
    pad_map(xs(0), &layer.shape, b, *pads, |src, dst| gx[src] += dy[dst]);
}

pub(super) fn forward_reshape(net: &mut Net, layers: &[Layer], i: usize, out: &mut [f32]) {
    let layer = &layers[i];
    let x = |k: usize| &net.acts[layer.inputs[k]];
    out.copy_from_slice(x(0));
}

pub(super) fn backward_reshape(
    net: &mut Net,
    layers: &[Layer],
    i: usize,
    dy: &[f32],
    _fresh: &mut [bool],
) {
    let layer = &layers[i];

    let j = layer.inputs[0];
    net.grads[j].iter_mut().zip(dy).for_each(|(g, d)| *g += d);
}

pub(super) fn forward_softmax(net: &mut Net, layers: &[Layer], i: usize, out: &mut [f32]) {
    let layer = &layers[i];
    let x = |k: usize| &net.acts[layer.inputs[k]];

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

pub(super) fn backward_softmax(
    net: &mut Net,
    layers: &[Layer],
    i: usize,
    dy: &[f32],
    _fresh: &mut [bool],
) {
    let layer = &layers[i];

    // dx = y * (dy - sum(dy * y)) per row.
    let j = layer.inputs[0];
    let depth = *layer.shape.last().expect("a shape");
    let y = &net.acts[i];
    for ((gx, d), yr) in net.grads[j]
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

pub(super) fn forward_channel_mask(net: &mut Net, layers: &[Layer], i: usize, out: &mut [f32]) {
    let layer = &layers[i];
    let x = |k: usize| &net.acts[layer.inputs[k]];
    kind!(layer, Kind::ChannelMask { mask });

    let m = &net.params[*mask].value;
    out.par_chunks_mut(ROWS * m.len())
        .zip(x(0).par_chunks(ROWS * m.len()))
        .for_each(|(ob, xb)| {
            for (o, xr) in ob.chunks_exact_mut(m.len()).zip(xb.chunks_exact(m.len())) {
                o.iter_mut()
                    .zip(xr)
                    .zip(m)
                    .for_each(|((o, v), k)| *o = v * k);
            }
        });
}

pub(super) fn backward_channel_mask(
    net: &mut Net,
    layers: &[Layer],
    i: usize,
    dy: &[f32],
    _fresh: &mut [bool],
) {
    let layer = &layers[i];
    kind!(layer, Kind::ChannelMask { mask });

    let j = layer.inputs[0];
    let c = net.params[*mask].value.len();
    // Per block of rows a partial sum (in the scratch space: a step
    // allocates nothing), added in block order: the same figure for any
    // thread count.
    let x = &net.acts[j];
    let blocks = dy.len().div_ceil(ROWS * c);
    let partials = &mut net.scratch;
    partials.clear();
    partials.resize(blocks * c, 0.0);
    partials
        .par_chunks_mut(c)
        .zip(dy.par_chunks(ROWS * c).zip(x.par_chunks(ROWS * c)))
        .for_each(|(dm, (gb, xb))| {
            for (gr, xr) in gb.chunks_exact(c).zip(xb.chunks_exact(c)) {
                dm.iter_mut()
                    .zip(gr)
                    .zip(xr)
                    .for_each(|((d, g), v)| *d += g * v);
            }
        });
    let m = &net.params[*mask].value;
    net.grads[j]
        .par_chunks_mut(ROWS * c)
        .zip(dy.par_chunks(ROWS * c))
        .for_each(|(gb, db)| {
            for (gx, gr) in gb.chunks_exact_mut(c).zip(db.chunks_exact(c)) {
                gx.iter_mut()
                    .zip(gr)
                    .zip(m)
                    .for_each(|((d, g), k)| *d += g * k);
            }
        });
    let grad = &mut net.params[*mask].grad;
    for dm in net.scratch.chunks_exact(c) {
        grad.iter_mut().zip(dm).for_each(|(a, b)| *a += b);
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

/// Inverted dropout: in training each value is kept with probability
/// 1 - rate and scaled by 1 / (1 - rate) (the mask is kept for the
/// backward pass; with `fixed_masks` it is drawn once); in evaluation the
/// identity.
pub(super) fn forward_dropout(
    net: &mut Net,
    layers: &[Layer],
    i: usize,
    out: &mut [f32],
    train: bool,
) {
    let layer = &layers[i];
    kind!(layer, Kind::Dropout { rate });
    let x = &net.acts[layer.inputs[0]];
    if !train {
        out.copy_from_slice(x);
        return;
    }
    let mask = &mut net.masks[i];
    if !(net.fixed_masks && mask.len() == out.len()) {
        let keep = 1.0 / (1.0 - rate);
        let rng = &mut net.mask_rng;
        mask.clear();
        mask.extend((0..out.len()).map(|_| {
            if rng.random::<f32>() < *rate {
                0.0
            } else {
                keep
            }
        }));
    }
    for ((o, v), m) in out.iter_mut().zip(x).zip(mask.iter()) {
        *o = v * m;
    }
}

pub(super) fn backward_dropout(
    net: &mut Net,
    layers: &[Layer],
    i: usize,
    dy: &[f32],
    _fresh: &mut [bool],
) {
    let j = layers[i].inputs[0];
    let mask = &net.masks[i];
    for ((g, d), m) in net.grads[j].iter_mut().zip(dy).zip(mask) {
        *g += d * m;
    }
}

pub(super) fn forward_mix(net: &mut Net, layers: &[Layer], i: usize, out: &mut [f32]) {
    let layer = &layers[i];
    kind!(layer, Kind::Mix { weights });
    let c = *layer.shape.last().unwrap();
    out.iter_mut().for_each(|v| *v = 0.0);
    for (k, &j) in layer.inputs.iter().enumerate() {
        let w = net.params[*weights].value[k];
        let ck = *layers[j].shape.last().unwrap();
        let x = &net.acts[j];
        if w == 0.0 {
            continue;
        }
        out.par_chunks_mut(ROWS * c)
            .zip(x.par_chunks(ROWS * ck))
            .for_each(|(ob, xb)| {
                for (o, xr) in ob.chunks_exact_mut(c).zip(xb.chunks_exact(ck)) {
                    o[..ck].iter_mut().zip(xr).for_each(|(o, v)| *o += w * v);
                }
            });
    }
}

pub(super) fn backward_mix(
    net: &mut Net,
    layers: &[Layer],
    i: usize,
    dy: &[f32],
    _fresh: &mut [bool],
) {
    let layer = &layers[i];
    kind!(layer, Kind::Mix { weights });
    let c = *layer.shape.last().unwrap();
    for (k, &j) in layer.inputs.iter().enumerate() {
        let w = net.params[*weights].value[k];
        let ck = *layers[j].shape.last().unwrap();
        // Partial dot products per block of rows (in the scratch space),
        // added in block order.
        let blocks = dy.len().div_ceil(ROWS * c);
        let partials = &mut net.scratch;
        partials.clear();
        partials.resize(blocks, 0.0);
        partials
            .par_iter_mut()
            .zip(
                net.acts[j]
                    .par_chunks(ROWS * ck)
                    .zip(dy.par_chunks(ROWS * c)),
            )
            .for_each(|(p, (xb, db))| {
                *p = xb
                    .chunks_exact(ck)
                    .zip(db.chunks_exact(c))
                    .map(|(xr, dr)| xr.iter().zip(dr).map(|(x, d)| (x * d) as f64).sum::<f64>())
                    .sum::<f64>() as f32;
            });
        let dw: f64 = net.scratch.iter().map(|&p| p as f64).sum();
        net.params[*weights].grad[k] += dw as f32;
        net.grads[j]
            .par_chunks_mut(ROWS * ck)
            .zip(dy.par_chunks(ROWS * c))
            .for_each(|(gb, db)| {
                for (g, dr) in gb.chunks_exact_mut(ck).zip(db.chunks_exact(c)) {
                    g.iter_mut().zip(dr).for_each(|(g, d)| *g += w * d);
                }
            });
    }
}
