//! The layers with weights: convolutions through im2col and the `gemm`
//! crate, depthwise convolutions over precomputed tap lists in register
//! blocks, and dense layers; forward and backward side by side.

use super::{elems, pair, placement, Kind, Layer, Net, ROWS};
use crate::simd;
use mnet_compiler::ops::{Placement, Window};
use rayon::prelude::*;

pub(super) fn forward_conv(net: &mut Net, layers: &[Layer], i: usize, out: &mut [f32]) {
    let layer = &layers[i];
    let x = |k: usize| &net.acts[layer.inputs[k]];
    let xs = |k: usize| &layers[layer.inputs[k]].shape;
    kind!(
        layer,
        (Kind::Conv {
            window,
            weight,
            bias
        } | Kind::Depthwise {
            window,
            weight,
            bias
        })
    );
    conv_forward(
        x(0),
        xs(0),
        out,
        &layer.shape,
        pair(window.kernel),
        pair(window.stride),
        &net.params[*weight].value,
        &net.params[*bias].value,
        matches!(layer.kind, Kind::Depthwise { .. }),
        &net.geometry[i],
        &mut net.cols[i],
    );
}

pub(super) fn backward_conv(
    net: &mut Net,
    layers: &[Layer],
    i: usize,
    dy: &[f32],
    fresh: &mut [bool],
) {
    let layer = &layers[i];
    let b = net.batch;
    let xs = |k: usize| &layers[layer.inputs[k]].shape;
    kind!(
        layer,
        (Kind::Conv {
            window,
            weight,
            bias
        } | Kind::Depthwise {
            window,
            weight,
            bias
        })
    );

    let depthwise = matches!(layer.kind, Kind::Depthwise { .. });
    let j = layer.inputs[0];
    let (mut dw, mut db) = (
        std::mem::take(&mut net.params[*weight].grad),
        std::mem::take(&mut net.params[*bias].grad),
    );
    let mut dx = std::mem::take(&mut net.grads[j]);
    let want_dx = j != 0 || net.input_grad;
    let overwrite = std::mem::replace(&mut fresh[j], false);
    conv_backward(
        &net.acts[j],
        xs(0),
        dy,
        &layer.shape,
        b,
        window,
        &net.params[*weight].value,
        &net.geometry[i],
        &net.cols[i],
        &mut net.scratch,
        want_dx.then_some(&mut dx[..]),
        overwrite,
        &mut dw,
        &mut db,
        depthwise,
    );
    net.grads[j] = dx;
    net.params[*weight].grad = dw;
    net.params[*bias].grad = db;
}

pub(super) fn forward_dense(net: &mut Net, layers: &[Layer], i: usize, out: &mut [f32]) {
    let layer = &layers[i];
    let x = |k: usize| &net.acts[layer.inputs[k]];
    let xs = |k: usize| &layers[layer.inputs[k]].shape;
    kind!(layer, Kind::Dense { weight, bias });
    let b = net.batch;

    let (k, n) = (elems(xs(0)), elems(&layer.shape));
    let (w, bb, xv) = (&net.params[*weight].value, &net.params[*bias].value, x(0));
    for s in 0..b {
        let xi = &xv[s * k..(s + 1) * k];
        for o in 0..n {
            out[s * n + o] = bb[o] + dot(&w[o * k..(o + 1) * k], xi);
        }
    }
}

pub(super) fn backward_dense(
    net: &mut Net,
    layers: &[Layer],
    i: usize,
    dy: &[f32],
    _fresh: &mut [bool],
) {
    let layer = &layers[i];
    let xs = |k: usize| &layers[layer.inputs[k]].shape;
    kind!(layer, Kind::Dense { weight, bias });
    let b = net.batch;

    let j = layer.inputs[0];
    let (k, n) = (elems(xs(0)), elems(&layer.shape));
    for s in 0..b {
        for o in 0..n {
            let g = dy[s * n + o];
            net.params[*bias].grad[o] += g;
            for t in 0..k {
                net.params[*weight].grad[o * k + t] += g * net.acts[j][s * k + t];
                net.grads[j][s * k + t] += g * net.params[*weight].value[o * k + t];
            }
        }
    }
}

/// A dot product in eight lanes (vectorises; fixed order, so deterministic).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    for (ca, cb) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for k in 0..8 {
            lanes[k] += ca[k] * cb[k];
        }
    }
    let tail = a.len() / 8 * 8;
    lanes.iter().sum::<f32>()
        + a[tail..]
            .iter()
            .zip(&b[tail..])
            .map(|(x, y)| x * y)
            .sum::<f32>()
}

thread_local! {
    static IN_GEMM: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread is inside a call to the `gemm` crate, which
/// allocates its own packing buffers on every call (its API takes none);
/// the allocation test counts every other allocation of a training step.
#[doc(hidden)]
pub fn in_gemm() -> bool {
    IN_GEMM.with(|g| g.get())
}

/// `c[m x n] (+)= a[m x k] . b[k x n]`, each matrix given by its row and
/// column strides; the bounds are checked before the `gemm` crate's
/// unchecked kernel runs.
#[allow(clippy::too_many_arguments)]
fn matmul(
    (m, n, k): (usize, usize, usize),
    c: &mut [f32],
    (c_rs, c_cs): (usize, usize),
    accumulate: bool,
    a: &[f32],
    (a_rs, a_cs): (usize, usize),
    b: &[f32],
    (b_rs, b_cs): (usize, usize),
    parallel: bool,
) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(
        last(m, n, c_rs, c_cs) < c.len()
            && last(m, k, a_rs, a_cs) < a.len()
            && last(k, n, b_rs, b_cs) < b.len()
    );
    IN_GEMM.with(|g| g.set(true));
    // SAFETY: every index the kernel touches is below the checked maxima.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            c_cs as isize,
            c_rs as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            if parallel {
                gemm::Parallelism::Rayon(0)
            } else {
                gemm::Parallelism::None
            },
        );
    }
    IN_GEMM.with(|g| g.set(false));
}

/// The copies im2col makes for one sample (the same for every sample):
/// per output pixel and kernel row, the run of in-image taps (contiguous in
/// both the input row and the im2col row) as (destination, source,
/// length).
fn im2col_runs(s: &[usize], p: &Placement) -> Vec<(usize, usize, usize)> {
    let (w, cin) = (s[1], s[2]);
    let (oh, ow) = (p.out[0] as usize, p.out[1] as usize);
    let (kh, kw) = (p.kernel[0] as usize, p.kernel[1] as usize);
    let k = kh * kw * cin;
    let mut runs = Vec::with_capacity(oh * ow * kh);
    for oy in 0..oh {
        let y0 = p.row_start(oy);
        for ox in 0..ow {
            let (x0, cols) = (p.col_start(ox), p.cols(ox));
            if cols.is_empty() {
                continue;
            }
            let kx0 = (cols.start as i64 - x0) as usize;
            for iy in p.rows(oy) {
                let ky = (iy as i64 - y0) as usize;
                runs.push((
                    (oy * ow + ox) * k + (ky * kw + kx0) * cin,
                    (iy * w + cols.start) * cin,
                    cols.len() * cin,
                ));
            }
        }
    }
    runs
}

/// im2col of a batch into `col` (`per_in` input and `per_col` im2col
/// values per sample): zeros, then the [`im2col_runs`].
fn im2col(
    x: &[f32],
    per_in: usize,
    per_col: usize,
    runs: &[(usize, usize, usize)],
    col: &mut Vec<f32>,
) {
    // Kept across steps.
    col.resize(x.len() / per_in * per_col, 0.0);
    col.par_chunks_mut(per_col)
        .zip(x.par_chunks(per_in))
        .for_each(|(col_n, x_n)| {
            col_n.fill(0.0);
            for &(dst, src, len) in runs {
                col_n[dst..dst + len].copy_from_slice(&x_n[src..src + len]);
            }
        });
}

/// What a conv layer precomputes about its geometry (per sample, so the
/// same for any batch size): a depthwise conv's tap lists, or a strided or
/// wider-than-1x1 conv's im2col copies.
#[derive(Clone, Debug, Default)]
pub(super) struct Geometry {
    taps: Taps,
    runs: Vec<(usize, usize, usize)>,
}

impl Geometry {
    pub(super) fn of(layer: &Layer, s: &[usize]) -> Geometry {
        let (window, depthwise) = match &layer.kind {
            Kind::Conv { window, .. } => (window, false),
            Kind::Depthwise { window, .. } => (window, true),
            Kind::Input
            | Kind::Dense { .. }
            | Kind::BatchNorm { .. }
            | Kind::Act(_)
            | Kind::Pool { .. }
            | Kind::Add
            | Kind::Concat
            | Kind::Pad { .. }
            | Kind::Reshape
            | Kind::Softmax
            | Kind::ChannelMask { .. }
            | Kind::Mix { .. }
            | Kind::Dropout { .. } => return Geometry::default(),
        };
        let p = placement(window, s);
        if depthwise {
            Geometry {
                taps: Taps::new(s, &p),
                runs: Vec::new(),
            }
        } else if pointwise(pair(window.kernel), pair(window.stride)) {
            Geometry::default()
        } else {
            Geometry {
                taps: Taps::new(s, &p),
                runs: im2col_runs(s, &p),
            }
        }
    }
}

/// The number of fixed row blocks a reduction over `m` rows is split into.
fn row_blocks(m: usize) -> usize {
    (m / 512).clamp(1, 16)
}

/// Whether a conv reads its input as is (1x1, stride 1): then the input is
/// its own im2col matrix.
pub(super) fn pointwise(kernel: [usize; 2], stride: [usize; 2]) -> bool {
    kernel == [1, 1] && stride == [1, 1]
}

/// Conv and depthwise conv forward, parallel over the samples of the batch.
#[allow(clippy::too_many_arguments)]
fn conv_forward(
    x: &[f32],
    s: &[usize],
    out: &mut [f32],
    out_shape: &[usize],
    kernel: [usize; 2],
    stride: [usize; 2],
    weight: &[f32],
    bias: &[f32],
    depthwise: bool,
    geo: &Geometry,
    col: &mut Vec<f32>,
) {
    let (h, w, cin) = (s[0] as i64, s[1] as i64, s[2]);
    let (oh, ow, cout) = (out_shape[0], out_shape[1], out_shape[2]);
    let (kh, kw) = (kernel[0], kernel[1]);
    let per_in = (h * w) as usize * cin;
    if !depthwise {
        // Y[M, cout] = im2col[M, K] . W^T (W is [cout, K]), then the bias.
        let k = kh * kw * cin;
        let m = out.len() / cout;
        let col: &[f32] = if pointwise(kernel, stride) {
            x
        } else {
            im2col(x, per_in, oh * ow * k, &geo.runs, col);
            col
        };
        matmul(
            (m, cout, k),
            out,
            (cout, 1),
            false,
            col,
            (k, 1),
            weight,
            (1, k),
            true,
        );
        out.par_chunks_mut(ROWS * cout).for_each(|rows| {
            for row in rows.chunks_exact_mut(cout) {
                row.iter_mut().zip(bias).for_each(|(y, bv)| *y += bv);
            }
        });
        return;
    }
    // Depthwise: per sample in parallel.
    let geo = &geo.taps;
    out.par_chunks_mut(oh * ow * cout)
        .zip(x.par_chunks(per_in))
        .for_each(|(out_n, x_n)| {
            simd::dispatch(
                #[inline(always)]
                || depthwise_forward(geo, x_n, weight, bias, out_n),
            );
        });
}

/// Conv and depthwise conv backward: the input gradient in parallel over
/// samples, a conv's weight gradient in parallel over output channels (each
/// thread owns its rows, so nothing is reduced).
#[allow(clippy::too_many_arguments)]
fn conv_backward(
    x: &[f32],
    s: &[usize],
    dy: &[f32],
    out_shape: &[usize],
    b: usize,
    window: &Window,
    weight: &[f32],
    geo: &Geometry,
    col: &[f32],
    scratch: &mut Vec<f32>,
    dx: Option<&mut [f32]>,
    overwrite_dx: bool,
    dw: &mut [f32],
    db: &mut [f32],
    depthwise: bool,
) {
    let (h, w, cin) = (s[0] as i64, s[1] as i64, s[2]);
    let (oh, ow, cout) = (out_shape[0], out_shape[1], out_shape[2]);
    let (kernel, stride) = (pair(window.kernel), pair(window.stride));
    let (kh, kw) = (kernel[0], kernel[1]);
    let per_in = (h * w) as usize * cin;
    let per_out = oh * ow * cout;
    if !depthwise {
        let k = kh * kw * cin;
        let m = dy.len() / cout;
        // dW[cout, K] += dY^T[cout, M] . im2col[M, K] (im2col kept from
        // the forward pass) and db += column sums of dY: the product's
        // output is small and its inner dimension long, so the rows are
        // split into fixed blocks whose partial products run in parallel
        // and are summed in block order (deterministic for any thread
        // count).
        let col: &[f32] = if pointwise(kernel, stride) { x } else { col };
        let blocks = row_blocks(m);
        let per = m.div_ceil(blocks);
        let part = cout * k + cout;
        scratch.resize(blocks * part, 0.0);
        scratch
            .par_chunks_mut(part)
            .enumerate()
            .for_each(|(blk, out)| {
                let (pw, pb) = out.split_at_mut(cout * k);
                let r0 = (blk * per).min(m);
                let rows = per.min(m - r0);
                pw.fill(0.0);
                pb.fill(0.0);
                matmul(
                    (cout, k, rows),
                    pw,
                    (k, 1),
                    false,
                    &dy[r0 * cout..],
                    (1, cout),
                    &col[r0 * k..],
                    (k, 1),
                    false,
                );
                for g in dy[r0 * cout..(r0 + rows) * cout].chunks_exact(cout) {
                    pb.iter_mut().zip(g).for_each(|(d, v)| *d += v);
                }
            });
        for out in scratch.chunks_exact(part) {
            let (pw, pb) = out.split_at(cout * k);
            dw.iter_mut().zip(pw).for_each(|(d, v)| *d += v);
            db.iter_mut().zip(pb).for_each(|(d, v)| *d += v);
        }
        let Some(dx) = dx else { return };
        if pointwise(kernel, stride) {
            // dX[M, cin] (+)= dY[M, cout] . W[cout, cin]
            matmul(
                (m, cin, cout),
                dx,
                (cin, 1),
                !overwrite_dx,
                dy,
                (cout, 1),
                weight,
                (k, 1),
                true,
            );
        } else {
            // dcol = dY . W, scattered back onto the input (col2im).
            let dcol = scratch;
            dcol.resize(m * k, 0.0);
            matmul(
                (m, k, cout),
                dcol,
                (k, 1),
                false,
                dy,
                (cout, 1),
                weight,
                (k, 1),
                true,
            );
            if overwrite_dx {
                dx.fill(0.0);
            }
            dx.par_chunks_mut(per_in)
                .zip(dcol.par_chunks(oh * ow * k))
                .for_each(|(dx_n, dcol_n)| {
                    for (o, &(t0, t1)) in geo.taps.pixels.iter().enumerate() {
                        let row = &dcol_n[o * k..][..k];
                        for &(t, p) in &geo.taps.taps[t0..t1] {
                            let at = t * cin;
                            for (d, v) in dx_n[p * cin..(p + 1) * cin]
                                .iter_mut()
                                .zip(&row[at..at + cin])
                            {
                                *d += v;
                            }
                        }
                    }
                });
        }
        return;
    }
    // Depthwise from here on: dX and the per-sample partial dW (and db)
    // in one pass over dY, samples in parallel; the partials are summed in
    // sample order (deterministic).
    let taps = kh * kw * cout;
    let part = taps + cout;
    scratch.resize(b * part, 0.0);
    let geo = &geo.taps;
    let run = |n: usize, acc: &mut [f32], dx_n: Option<&mut [f32]>| {
        let (dw_n, db_n) = acc.split_at_mut(taps);
        dw_n.fill(0.0);
        db_n.fill(0.0);
        let x_n = &x[n * per_in..(n + 1) * per_in];
        let dy_n = &dy[n * per_out..(n + 1) * per_out];
        match dx_n {
            Some(dx_n) => simd::dispatch(
                #[inline(always)]
                || depthwise_backward::<true>(geo, x_n, dy_n, weight, dx_n, dw_n, db_n),
            ),
            None => simd::dispatch(
                #[inline(always)]
                || depthwise_backward::<false>(geo, x_n, dy_n, weight, &mut [], dw_n, db_n),
            ),
        }
    };
    match dx {
        Some(dx) => scratch
            .par_chunks_mut(part)
            .zip(dx.par_chunks_mut(per_in))
            .enumerate()
            .for_each(|(n, (acc, dx_n))| run(n, acc, Some(dx_n))),
        None => scratch
            .par_chunks_mut(part)
            .enumerate()
            .for_each(|(n, acc)| run(n, acc, None)),
    }
    for acc in scratch.chunks_exact(part).take(b) {
        let (pw, pb) = acc.split_at(taps);
        dw.iter_mut().zip(pw).for_each(|(d, v)| *d += v);
        db.iter_mut().zip(pb).for_each(|(d, v)| *d += v);
    }
}

/// The geometry of a (depthwise) conv's taps over one sample: for each
/// output pixel, its in-image taps as (tap index, input pixel) pairs.
#[derive(Clone, Debug, Default)]
struct Taps {
    c: usize,
    /// Per output pixel: the range of its taps in `taps`.
    pixels: Vec<(usize, usize)>,
    taps: Vec<(usize, usize)>,
}

impl Taps {
    fn new(s: &[usize], p: &Placement) -> Taps {
        let (mut pixels, mut taps) = (Vec::new(), Vec::new());
        for oy in 0..p.out[0] as usize {
            for ox in 0..p.out[1] as usize {
                let start = taps.len();
                taps.extend(p.taps(oy, ox));
                pixels.push((start, taps.len()));
            }
        }
        Taps {
            c: s[2],
            pixels,
            taps,
        }
    }
}

/// Channels per register block in the depthwise kernels.
const LANES: usize = 16;

/// `LANES` values from `v` at `at`, as an array (a register block).
#[inline(always)]
fn lanes(v: &[f32], at: usize) -> [f32; LANES] {
    v[at..at + LANES].try_into().expect("LANES values")
}

/// Depthwise forward of one sample: each output pixel is the bias plus its
/// in-image taps, channels in blocks of [`LANES`] held in registers.
#[inline(always)]
fn depthwise_forward(geo: &Taps, x: &[f32], weight: &[f32], bias: &[f32], y: &mut [f32]) {
    let c = geo.c;
    for (o, &(t0, t1)) in geo.pixels.iter().enumerate() {
        let taps = &geo.taps[t0..t1];
        let mut c0 = 0;
        while c0 + LANES <= c {
            let mut acc = lanes(bias, c0);
            for &(t, p) in taps {
                let (wv, xv) = (lanes(weight, t * c + c0), lanes(x, p * c + c0));
                for l in 0..LANES {
                    acc[l] += wv[l] * xv[l];
                }
            }
            y[o * c + c0..o * c + c0 + LANES].copy_from_slice(&acc);
            c0 += LANES;
        }
        for ch in c0..c {
            let mut acc = bias[ch];
            for &(t, p) in taps {
                acc += weight[t * c + ch] * x[p * c + ch];
            }
            y[o * c + ch] = acc;
        }
    }
}

/// Depthwise backward of one sample: dX (accumulated, when `DX`) and this
/// sample's dW and db (accumulated into zeroed buffers), in one pass over
/// dY.
#[inline(always)]
fn depthwise_backward<const DX: bool>(
    geo: &Taps,
    x: &[f32],
    dy: &[f32],
    weight: &[f32],
    dx: &mut [f32],
    dw: &mut [f32],
    db: &mut [f32],
) {
    let c = geo.c;
    for (o, &(t0, t1)) in geo.pixels.iter().enumerate() {
        let taps = &geo.taps[t0..t1];
        let g = &dy[o * c..(o + 1) * c];
        db.iter_mut().zip(g).for_each(|(d, v)| *d += v);
        let mut c0 = 0;
        while c0 + LANES <= c {
            let gv = lanes(g, c0);
            for &(t, p) in taps {
                let (mut d, xv) = (lanes(dw, t * c + c0), lanes(x, p * c + c0));
                for l in 0..LANES {
                    d[l] += gv[l] * xv[l];
                }
                dw[t * c + c0..t * c + c0 + LANES].copy_from_slice(&d);
                if DX {
                    let (mut d, wv) = (lanes(dx, p * c + c0), lanes(weight, t * c + c0));
                    for l in 0..LANES {
                        d[l] += gv[l] * wv[l];
                    }
                    dx[p * c + c0..p * c + c0 + LANES].copy_from_slice(&d);
                }
            }
            c0 += LANES;
        }
        for ch in c0..c {
            for &(t, p) in taps {
                dw[t * c + ch] += g[ch] * x[p * c + ch];
                if DX {
                    dx[p * c + ch] += g[ch] * weight[t * c + ch];
                }
            }
        }
    }
}
