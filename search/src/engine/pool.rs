//! Average and max pooling (global average pooling as a per-sample mean),
//! forward and backward.

use super::{placement, Kind, Layer, Net};
use mnet_compiler::ops::{PoolKind, Window};
use rayon::prelude::*;

pub(super) fn forward_pool(net: &mut Net, layers: &[Layer], i: usize, out: &mut [f32]) {
    let layer = &layers[i];
    let b = net.batch;
    let x = |k: usize| &net.acts[layer.inputs[k]];
    let xs = |k: usize| &layers[layer.inputs[k]].shape;
    kind!(layer, Kind::Pool { kind, window });
    if *kind == PoolKind::Avg && global_pool(xs(0), window) {
        // Global average pool: a per-sample mean over pixels,
        // vectorised over channels.
        let c = xs(0)[2];
        let pixels = xs(0)[0] * xs(0)[1];
        out.par_chunks_mut(c)
            .zip(x(0).par_chunks(pixels * c))
            .for_each(|(o, xn)| {
                o.iter_mut().for_each(|v| *v = 0.0);
                for row in xn.chunks_exact(c) {
                    o.iter_mut().zip(row).for_each(|(a, v)| *a += v);
                }
                o.iter_mut().for_each(|v| *v /= pixels as f32);
            });
    } else {
        let avg = *kind == PoolKind::Avg;
        pool(xs(0), b, window, |win, o| {
            out[o] = if avg {
                win.taps().map(|t| x(0)[t]).sum::<f32>() / win.len() as f32
            } else {
                win.taps().map(|t| x(0)[t]).fold(f32::MIN, f32::max)
            };
        });
    }
}

pub(super) fn backward_pool(
    net: &mut Net,
    layers: &[Layer],
    i: usize,
    dy: &[f32],
    _fresh: &mut [bool],
) {
    let layer = &layers[i];
    let b = net.batch;
    let xs = |k: usize| &layers[layer.inputs[k]].shape;
    kind!(layer, Kind::Pool { kind, window });
    if *kind == PoolKind::Avg && global_pool(xs(0), window) {
        let j = layer.inputs[0];
        let c = xs(0)[2];
        let pixels = xs(0)[0] * xs(0)[1];
        net.grads[j]
            .par_chunks_mut(pixels * c)
            .zip(dy.par_chunks(c))
            .for_each(|(gn, d)| {
                for row in gn.chunks_exact_mut(c) {
                    row.iter_mut()
                        .zip(d)
                        .for_each(|(g, v)| *g += v / pixels as f32);
                }
            });
    } else {
        let avg = *kind == PoolKind::Avg;
        let j = layer.inputs[0];
        let (xv, gx) = (&net.acts[j], &mut net.grads[j]);
        pool(xs(0), b, window, |win, o| {
            if avg {
                let share = dy[o] / win.len() as f32;
                win.taps().for_each(|t| gx[t] += share);
            } else if let Some(t) = win.taps().max_by(|a, c| xv[*a].total_cmp(&xv[*c])) {
                gx[t] += dy[o];
            }
        });
    }
}

/// Whether a pooling window covers the whole map in one step.
fn global_pool(s: &[usize], window: &Window) -> bool {
    s.len() == 3 && *window == Window::tiling([s[0] as u32, s[1] as u32])
}

/// The in-image taps of one pooling window over one channel of one sample.
struct PoolTaps {
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    w: usize,
    c: usize,
    /// Index of (row 0, column 0) of this sample and channel.
    base: usize,
}

impl PoolTaps {
    fn len(&self) -> usize {
        self.rows.len() * self.cols.len()
    }

    /// Input indices, row by row.
    fn taps(&self) -> impl Iterator<Item = usize> + '_ {
        self.rows.clone().flat_map(move |iy| {
            self.cols
                .clone()
                .map(move |ix| self.base + (iy * self.w + ix) * self.c)
        })
    }
}

/// Visit each output element of a pooling window with the window's
/// in-image taps.
fn pool(s: &[usize], b: usize, window: &Window, mut f: impl FnMut(&PoolTaps, usize)) {
    let (h, w, c) = (s[0], s[1], s[2]);
    let p = placement(window, s);
    let (oh, ow) = (p.out[0] as usize, p.out[1] as usize);
    for n in 0..b {
        for oy in 0..oh {
            let rows = p.rows(oy);
            for ox in 0..ow {
                let cols = p.cols(ox);
                for ch in 0..c {
                    let window = PoolTaps {
                        rows: rows.clone(),
                        cols: cols.clone(),
                        w,
                        c,
                        base: n * h * w * c + ch,
                    };
                    f(&window, ((n * oh + oy) * ow + ox) * c + ch);
                }
            }
        }
    }
}
