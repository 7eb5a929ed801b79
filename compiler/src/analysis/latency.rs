//! The latency model of the generated C: instructions per step of
//! `NAME_invoke` predicted from the step's shape, per core, by a linear
//! model whose coefficients were fitted on emulator measurements of
//! networks sampled from the example spaces (`compiler/examples/latency_fit.rs`
//! writes them to `stdlib/latency.json`).
//!
//! A step's features are counts its kernel's cost follows: for the matrix
//! kernel, the inner-loop steps of each width of call (channels x groups
//! of 4 inputs), the channel passes and outputs, the widening and the
//! gather (bytes and kernel rows); for the depthwise row kernel, the taps of 4 channels on its
//! fast (all rows, 2 or 3 columns) and general paths, the requantized
//! groups, pixels and rows; for the rest, the elements moved. A fused
//! conv+depthwise step has both. The same features serve the fit and the
//! prediction, so they are defined once, here.

use crate::back::c::Cpu;
use crate::back::dsp::{self, Kernel};
use crate::ir::{Board, NetworkInfo};
use crate::lower::{LKind, Lowered};
use crate::ops::shape::{cost, LayerCost};
use crate::ops::{Op, PoolKind, Window};
use crate::plan::MemoryPlan;
use std::collections::BTreeMap;

/// The features of one step.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// The node the step is named by (the depthwise conv of a fused pair).
    pub node: usize,
    /// The conv computed inside it, if fused.
    pub fused: Option<usize>,
    /// Which model predicts it.
    pub class: &'static str,
    pub x: Vec<f64>,
}

fn mm_features(l: &Lowered, plan: &MemoryPlan, i: usize, runs: &[usize], max: usize) -> Vec<f64> {
    let n = &l.nodes[i];
    let (k, gather) = match dsp::kernel_of(l, plan, i) {
        Some(Kernel::Mm { k, direct }) => (k, !direct),
        _ => {
            let inp = &l.nodes[n.inputs[0]].shape;
            (inp[2] as usize, false)
        }
    };
    let rows = match &n.kind {
        LKind::Conv { window, .. } if gather => window.kernel[0] as usize,
        _ => 0,
    };
    mm_x(k, rows, n.shape[2] as usize, runs, max)
}

/// How many features [`mm_x`] gives (a fused conv+depthwise step's
/// depthwise features follow them).
const MM_FEATURES: usize = 12;

/// The matrix kernel's features: `k` inputs per output, gathered by im2col
/// from `rows` kernel rows (0: read in place), `cout` outputs per pixel,
/// pixels in runs of `runs`, each run in the calls of [`dsp::chunks`]: per
/// width of call (1 to 6 pixels, one output channel at a time) its
/// inner-loop steps (channels x groups of 4 inputs); the channel passes
/// and their outputs; the widening, the gather (bytes and kernel rows) and
/// the calls.
fn mm_x(k: usize, rows: usize, cout: usize, runs: &[usize], max: usize) -> Vec<f64> {
    let gather = rows > 0;
    let k4 = k.div_ceil(4);
    let mut calls = [0f64; dsp::MAX_WIDTH + 1];
    for &r in runs {
        for w in dsp::chunks(r, k4, max) {
            calls[w] += 1.0;
        }
    }
    let c = cout as f64;
    let pixels: f64 = runs.iter().sum::<usize>() as f64;
    let mut x: Vec<f64> = (1..=dsp::MAX_WIDTH)
        .map(|w| calls[w] * c * k4 as f64)
        .collect();
    x.extend([
        calls.iter().sum::<f64>() * c,
        pixels * c,
        pixels * k4 as f64,
        if gather { pixels * k as f64 } else { 0.0 },
        pixels * rows as f64,
        calls.iter().sum(),
    ]);
    x
}

fn dw_features(l: &Lowered, d: usize) -> Vec<f64> {
    let n = &l.nodes[d];
    let LKind::Depthwise { window } = &n.kind else {
        unreachable!("a depthwise conv")
    };
    dw_x(&l.nodes[n.inputs[0]].shape, window, n.shape[2])
}

/// The depthwise row kernel's features on input `inp` ([H, W, C]).
fn dw_x(inp: &[u32], window: &Window, c: u32) -> Vec<f64> {
    let p = window.over([inp[0], inp[1]]);
    let ([ph, pw], [oh, ow]) = (p.pad, p.out);
    let ([kh, kw], [sh, sw]) = (window.kernel, window.stride);
    let (g, tail) = ((c / 4) as f64, (c % 4) as f64);
    let valid = |o: u32, s: u32, pad: u32, k: u32, len: u32| {
        let i0 = o as i64 * s as i64 - pad as i64;
        let lo = (-i0).max(0);
        let hi = (len as i64 - i0).min(k as i64);
        (hi - lo).max(0)
    };
    let (mut fast, mut slow, mut all) = (0f64, 0f64, 0f64);
    // Taps depend on the column only through its valid count: count columns
    // by it once, not per row.
    let mut cols_by: BTreeMap<i64, u32> = BTreeMap::new();
    for ox in 0..ow {
        *cols_by.entry(valid(ox, sw, pw, kw, inp[1])).or_default() += 1;
    }
    for oy in 0..oh {
        let rows = valid(oy, sh, ph, kh, inp[0]);
        for (&cols, &count) in &cols_by {
            let taps = (rows * cols) as f64 * count as f64;
            all += taps;
            if kh == 3 && kw == 3 && rows == 3 && (cols == 2 || cols == 3) {
                fast += taps;
            } else {
                slow += taps;
            }
        }
    }
    let outs = (oh * ow) as f64;
    vec![fast * g, slow * g, outs * g, outs, tail * all, oh as f64]
}

fn elems(s: &[u32]) -> f64 {
    s.iter().map(|&d| d as f64).product()
}

/// The features of every step of `NAME_invoke` for `cpu`'s kernels, in
/// order.
pub fn features(l: &Lowered, plan: &MemoryPlan, cpu: Cpu) -> Vec<Step> {
    let checked_fused = |i: usize| plan.fused[i];
    // The widest matrix kernel call, as the C backend decides it (taking
    // every layer for an SMMULR one, as nearly all are).
    let max = dsp::max_width(dsp::FS, dsp::six(l, plan, &|_| true));
    (1..l.nodes.len())
        .filter(|&i| checked_fused(i).is_none())
        .map(|i| {
            let n = &l.nodes[i];
            let fused = n
                .inputs
                .first()
                .copied()
                .filter(|&j| plan.fused[j] == Some(i));
            let dspk = cpu.dsp();
            let (class, mut x) = match (&n.kind, fused) {
                (LKind::Depthwise { .. }, Some(cv)) => {
                    let runs = dsp::fused_counts(l, cv, i);
                    let mut x = mm_features(l, plan, cv, &runs, max);
                    x.extend(dw_features(l, i));
                    ("conv+dw", x)
                }
                (LKind::Depthwise { .. }, None) if dspk && plan.scratch[i].is_none() => {
                    ("dw", dw_features(l, i))
                }
                (LKind::Depthwise { window }, None) => dw_loop_step(window, &n.shape),
                (LKind::Conv { .. }, _) => {
                    let runs = [(n.shape[0] * n.shape[1]) as usize];
                    ("conv", mm_features(l, plan, i, &runs, max))
                }
                (LKind::Pool { kind, window }, _) => pool_step(*kind, window.kernel, &n.shape),
                // A loop like a whole-map average pool's (its class: no
                // model of its own is fitted).
                (LKind::Mean, _) => {
                    let x = &l.nodes[n.inputs[0]].shape;
                    pool_step(PoolKind::Avg, [x[0], x[1]], &[1, 1, x[2]])
                }
                (LKind::Add, _) => ("add", vec![elems(&n.shape)]),
                (LKind::Softmax, _) => softmax_step(&n.shape),
                (LKind::Reshape, _) if plan.places[i] == plan.places[n.inputs[0]] => {
                    ("alias", vec![])
                }
                (LKind::Act(a), _) => (act_class(*a), vec![elems(&n.shape)]),
                (LKind::Concat, _) => ("concat", vec![elems(&n.shape)]),
                (LKind::Pad { .. }, _) => ("pad", vec![elems(&n.shape)]),
                (LKind::Requantize, _) => ("requantize", vec![elems(&n.shape)]),
                _ => ("copy", vec![elems(&n.shape)]),
            };
            finish(class, &mut x);
            Step {
                node: i,
                fused,
                class,
                x,
            }
        })
        .collect()
}

/// The step class of an activation that runs as its own step.
fn act_class(a: crate::ops::Activation) -> &'static str {
    use crate::ops::Activation::*;
    match a {
        Relu | Relu6 => "relu",
        HardSwish => "hard-swish",
        LeakyRelu { .. } => "leaky-relu",
    }
}

/// The channel-by-channel depthwise loop's features: MACs and outputs.
fn dw_loop_step(window: &Window, out: &[u32]) -> (&'static str, Vec<f64>) {
    let macs = elems(out) * (window.kernel[0] * window.kernel[1]) as f64;
    ("dw-loop", vec![macs, elems(out)])
}

/// A pool's features: the inputs it reads and its outputs.
fn pool_step(kind: PoolKind, kernel: [u32; 2], out: &[u32]) -> (&'static str, Vec<f64>) {
    let reads = elems(out) * (kernel[0] * kernel[1]) as f64;
    let name = match kind {
        PoolKind::Avg => "avg-pool",
        PoolKind::Max => "max-pool",
    };
    (name, vec![reads, elems(out)])
}

/// Softmax's features: rows and elements.
fn softmax_step(out: &[u32]) -> (&'static str, Vec<f64>) {
    let depth = *out.last().unwrap_or(&1) as f64;
    ("softmax", vec![elems(out) / depth, elems(out)])
}

/// A step's prediction: its coefficients against its features, never
/// below zero.
fn dot(w: &[f64], x: &[f64]) -> f64 {
    w.iter().zip(x).map(|(a, b)| a * b).sum::<f64>().max(0.0)
}

/// Append the constant feature (none for a step that runs nothing).
fn finish(class: &str, x: &mut Vec<f64>) {
    x.push(1.0);
    if class == "alias" {
        x.clear();
    }
}

/// The step class and features of one layer of a network, without the
/// memory plan (see [`layer_cost`]), and where in the class's coefficients
/// the features start; None for layers that run no step.
fn layer_features(
    op: &Op,
    inputs: &[&[u32]],
    out: &[u32],
    fused: bool,
    dsp: bool,
) -> Option<(&'static str, usize, Vec<f64>)> {
    let inp = inputs.first().copied().unwrap_or(&[]);
    let (class, mut x) = match op {
        _ if fused => return None,
        Op::Input { .. } | Op::Dropout { .. } | Op::Reshape { .. } | Op::Flatten => return None,
        // Batch norms only exist folded (the fusion rule rejects others).
        Op::BatchNorm => return None,
        Op::Conv2d { window, .. } => {
            let k = (window.kernel[0] * window.kernel[1] * inp[2]) as usize;
            let direct = window.kernel == [1, 1] && window.stride == [1, 1];
            let runs = [(out[0] * out[1]) as usize];
            let rows = if direct { 0 } else { window.kernel[0] as usize };
            // Calls of up to 5 pixels: whether 6-pixel calls pay is the
            // whole network's choice (`dsp::six`), which a layer cannot
            // know, and most networks (KWS, tiny) do not take them.
            (
                "conv",
                mm_x(
                    k,
                    rows,
                    out[2] as usize,
                    &runs,
                    dsp::max_width(dsp::FS, false),
                ),
            )
        }
        Op::Dense { out: c } => {
            let k = elems(inp) as usize;
            (
                "conv",
                mm_x(k, 0, *c as usize, &[1], dsp::max_width(dsp::FS, false)),
            )
        }
        // The row kernel, as the conv+depthwise model costs it (where most
        // depthwise convs run, so it is fitted on them).
        Op::DepthwiseConv2d { window } if dsp => {
            return Some(("conv+dw", MM_FEATURES, dw_x(inp, window, out[2])))
        }
        Op::DepthwiseConv2d { window } => dw_loop_step(window, out),
        Op::Pool { kind, window } => pool_step(*kind, window.kernel, out),
        // Lowered to an average pool over the whole map.
        Op::GlobalAvgPool => pool_step(PoolKind::Avg, [inp[0], inp[1]], out),
        Op::Add => ("add", vec![elems(out)]),
        Op::Softmax => softmax_step(out),
        Op::Act(a) => (act_class(*a), vec![elems(out)]),
        Op::Concat => ("concat", vec![elems(out)]),
        Op::Pad { .. } => ("pad", vec![elems(out)]),
    };
    finish(class, &mut x);
    Some((class, 0, x))
}

/// The latency model a network's budget is measured with: its target
/// board's core, the core's coefficients and the board's clock.
#[derive(Clone, Debug)]
pub struct BoardModel {
    pub cpu: Cpu,
    pub clock_hz: u64,
    classes: &'static BTreeMap<String, Vec<f64>>,
}

impl BoardModel {
    /// The model of a board, or why it has none.
    pub fn of(board: &Board) -> Result<BoardModel, String> {
        let cpu = Cpu::parse(&board.core).ok_or_else(|| {
            format!(
                "board `{}` has core `{}`, which mnet does not know",
                board.name, board.core
            )
        })?;
        let fitted = || {
            stored()
                .coefficients
                .cores
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        };
        let classes = stored().coefficients.cores.get(cpu.name()).ok_or_else(|| {
            format!(
                "mnet has no latency model for `{}` (board `{}`); the model is fitted for {}",
                cpu.name(),
                board.name,
                fitted()
            )
        })?;
        let clock_hz = board.clock_hz.ok_or_else(|| {
            format!(
                "board `{}` has no `clock`; a latency is measured at the board's clock (add e.g. `clock: 80 MHz`)",
                board.name
            )
        })?;
        Ok(BoardModel {
            cpu,
            clock_hz,
            classes,
        })
    }

    /// The model of a network's target board, if it has a usable one.
    pub fn of_network(info: &NetworkInfo) -> Option<BoardModel> {
        BoardModel::of(&info.target.as_ref()?.0).ok()
    }

    /// Coefficients `at..` of `class` applied to `x` (0 for a class the
    /// model lacks: [`CLASSES`] are all fitted, as a test checks).
    fn apply(&self, class: &str, at: usize, x: &[f64]) -> f64 {
        match self.classes.get(class) {
            Some(w) if w.len() >= at + x.len() => dot(&w[at..], x),
            _ => 0.0,
        }
    }
}

/// Microseconds `instructions` take at `clock_hz`, one instruction a
/// cycle, rounded up.
pub fn micros(instructions: u64, clock_hz: u64) -> u64 {
    (instructions as u128 * 1_000_000).div_ceil(clock_hz.max(1) as u128) as u64
}

/// The instructions that run in `us` microseconds at `clock_hz`.
pub fn instructions_in(us: u64, clock_hz: u64) -> u64 {
    (us as u128 * clock_hz as u128 / 1_000_000).min(u64::MAX as u128) as u64
}

/// [`cost`] of one layer with its predicted instructions filled in under
/// `model`. The prediction of a layer without the memory plan: every conv
/// and dense layer its own matrix-kernel step, every depthwise conv the
/// row kernel, unfused activations and concats copies; the plan's fusion
/// of a 1x1 conv into the depthwise conv it streams into and its in-place
/// placements are not known per layer. This is what search spaces are
/// costed with (`mnet stats` ranges and the search's loss); a network's
/// own budget check uses [`network_instructions`].
pub fn layer_cost(
    model: Option<&BoardModel>,
    op: &Op,
    inputs: &[&[u32]],
    out: &[u32],
    fused: bool,
) -> LayerCost {
    let mut c = cost(op, inputs, out, fused);
    if let Some(m) = model {
        if let Some((class, at, x)) = layer_features(op, inputs, out, fused, m.cpu.dsp()) {
            c.instructions = m.apply(class, at, &x).round() as u64;
        }
    }
    c
}

/// One step's prediction: its name, class and instructions.
pub type StepPrediction = (String, &'static str, f64);

/// A fixed network's predicted instructions per step of its generated C on
/// `cpu` (with the memory plan's fusions and placements); None when the
/// model has no coefficients for the core or a step's class.
pub fn network_steps(
    f: &crate::ir::FixedGraph,
    cpu: Cpu,
) -> Result<Option<Vec<StepPrediction>>, String> {
    let l = crate::pipeline::lowered(f).map_err(|e| e.to_string())?;
    Ok(lowered_steps(&l, &crate::plan::plan(&l), cpu))
}

/// [`network_steps`] of a lowered network and its plan (an imported
/// `.tflite`'s as well as a `.mnet`'s).
pub fn lowered_steps(
    l: &crate::lower::Lowered,
    plan: &crate::plan::MemoryPlan,
    cpu: Cpu,
) -> Option<Vec<StepPrediction>> {
    let steps = features(l, plan, cpu);
    let pred = predict(&stored().coefficients, cpu, &steps)?;
    Some(
        steps
            .iter()
            .zip(pred)
            .map(|(s, n)| (l.nodes[s.node].name.clone(), s.class, n))
            .collect(),
    )
}

/// A fixed network's predicted instructions per inference on its target
/// board (the sum of [`network_steps`]); None without a usable model.
pub fn network_instructions(f: &crate::ir::FixedGraph) -> Option<u64> {
    let m = BoardModel::of_network(&f.info)?;
    let steps = network_steps(f, m.cpu).ok()??;
    Some(steps.iter().map(|s| s.2).sum::<f64>().round() as u64)
}

/// Every step class [`features`] gives that runs code (`alias` runs none).
pub const CLASSES: &[&str] = &[
    "conv",
    "conv+dw",
    "dw",
    "dw-loop",
    "avg-pool",
    "max-pool",
    "add",
    "softmax",
    "concat",
    "pad",
    "requantize",
    "relu",
    "hard-swish",
    "leaky-relu",
    "copy",
];

/// Fitted coefficients: per core, per step class, one per feature.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Coefficients {
    pub cores: BTreeMap<String, BTreeMap<String, Vec<f64>>>,
}

/// The stored model and the predictions it was recorded with.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Stored {
    pub about: String,
    pub coefficients: Coefficients,
    /// (file, pick, core, predicted total) the fit wrote, to test that the
    /// stored coefficients reproduce them.
    pub recorded: Vec<Recorded>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Recorded {
    pub file: String,
    pub pick: String,
    pub core: String,
    pub predicted: u64,
}

const STORED: &str = include_str!("../../../stdlib/latency.json");

/// The model in `stdlib/latency.json`.
pub fn stored() -> &'static Stored {
    static S: std::sync::OnceLock<Stored> = std::sync::OnceLock::new();
    S.get_or_init(|| serde_json::from_str(STORED).expect("stdlib/latency.json is valid"))
}

/// Predicted instructions of each step (None: no model for the core or a
/// step's class).
pub fn predict(c: &Coefficients, core: Cpu, steps: &[Step]) -> Option<Vec<f64>> {
    let model = c.cores.get(core.name())?;
    steps
        .iter()
        .map(|s| {
            if s.x.is_empty() {
                return Some(0.0);
            }
            let w = model.get(s.class)?;
            (w.len() == s.x.len()).then(|| dot(w, &s.x))
        })
        .collect()
}

/// Weighted least squares per class: for each class, coefficients
/// minimising the squared relative error of `instructions` (each step
/// weighted by 1 / max(its instructions, 500), so small steps count as much
/// as large ones; ridge-regularised by a tiny fraction of each column's
/// scale, so constant or collinear features stay finite). A fused
/// conv+depthwise step takes the conv model's coefficients for its conv
/// part and fits the rest.
pub fn fit(samples: &[(Step, f64)]) -> BTreeMap<String, Vec<f64>> {
    let mut by: BTreeMap<&str, Vec<(&[f64], f64)>> = BTreeMap::new();
    for (s, y) in samples {
        if !s.x.is_empty() {
            by.entry(s.class).or_default().push((&s.x, *y));
        }
    }
    let mut out: BTreeMap<String, Vec<f64>> = by
        .iter()
        .filter(|(class, _)| **class != "conv+dw")
        .map(|(class, rows)| {
            let rows: Vec<(&[f64], f64, f64)> = rows.iter().map(|&(x, y)| (x, y, y)).collect();
            (class.to_string(), least_squares(&rows))
        })
        .collect();
    // A fused step's conv part is the conv model's (so that a network's
    // per-layer estimate, which costs its conv and depthwise conv apart,
    // adds up to the step's prediction): only the depthwise part and the
    // constant are fitted, on what the conv model leaves.
    if let Some(rows) = by.get("conv+dw") {
        let conv = out.get("conv").cloned();
        let w = match &conv {
            Some(conv) => {
                let rest: Vec<(&[f64], f64, f64)> = rows
                    .iter()
                    .map(|&(x, y)| {
                        let mm: f64 = x[..MM_FEATURES].iter().zip(conv).map(|(a, b)| a * b).sum();
                        (&x[MM_FEATURES..], y - mm, y)
                    })
                    .collect();
                let mut w = conv[..MM_FEATURES].to_vec();
                w.extend(least_squares(&rest));
                w
            }
            None => least_squares(&rows.iter().map(|&(x, y)| (x, y, y)).collect::<Vec<_>>()),
        };
        out.insert("conv+dw".to_string(), w);
    }
    out
}

/// Weighted least squares of `target` on `x` over rows (x, target, y),
/// each weighted by 1 / y (relative errors; y at least 500), the features
/// scaled to their largest magnitude.
fn least_squares(rows: &[(&[f64], f64, f64)]) -> Vec<f64> {
    let d = rows[0].0.len();
    let scale: Vec<f64> = (0..d)
        .map(|j| {
            rows.iter()
                .map(|r| r.0[j].abs())
                .fold(0.0, f64::max)
                .max(1.0)
        })
        .collect();
    let mut a = vec![vec![0.0; d]; d];
    let mut b = vec![0.0; d];
    for (x, t, y) in rows {
        let w = 1.0 / y.max(500.0);
        for i in 0..d {
            let xi = w * x[i] / scale[i];
            b[i] += xi * w * t;
            for j in 0..d {
                a[i][j] += xi * w * x[j] / scale[j];
            }
        }
    }
    let diag = (0..d).map(|i| a[i][i]).fold(0.0, f64::max);
    for (i, row) in a.iter_mut().enumerate() {
        row[i] += 1e-12 * diag.max(1e-300);
    }
    let w = solve(a, b);
    w.iter().zip(&scale).map(|(w, s)| w / s).collect()
}

/// Gaussian elimination with partial pivoting.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for k in 0..n {
        let p = (k..n)
            .max_by(|&i, &j| a[i][k].abs().total_cmp(&a[j][k].abs()))
            .unwrap_or(k);
        a.swap(k, p);
        b.swap(k, p);
        let piv = a[k][k];
        if piv.abs() < 1e-300 {
            continue;
        }
        let pivot_row = a[k].clone();
        for i in k + 1..n {
            let f = a[i][k] / piv;
            for (x, p) in a[i][k..].iter_mut().zip(&pivot_row[k..]) {
                *x -= f * p;
            }
            b[i] -= f * b[k];
        }
    }
    let mut x = vec![0.0; n];
    for k in (0..n).rev() {
        let s: f64 = (k + 1..n).map(|j| a[k][j] * x[j]).sum();
        x[k] = if a[k][k].abs() < 1e-300 {
            0.0
        } else {
            (b[k] - s) / a[k][k]
        };
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::resolve::{assignment, resolve, Pick};

    /// The coefficients in stdlib/latency.json give exactly the predictions
    /// the fit recorded with them.
    #[test]
    fn stored_coefficients_reproduce_the_recorded_predictions() {
        let stored = stored();
        assert!(!stored.recorded.is_empty(), "the fit records predictions");
        for r in &stored.recorded {
            let path = format!("{}/../{}", env!("CARGO_MANIFEST_DIR"), r.file);
            let text = std::fs::read_to_string(&path).unwrap();
            let checked = crate::check_source(&r.file, &text).unwrap();
            let net = &checked.networks[0];
            let pick: Pick = r.pick.parse().unwrap();
            let fixed = resolve(&net.graph, &assignment(&net.graph, &net.summary, pick)).unwrap();
            let l = crate::pipeline::lowered(&fixed).unwrap();
            let plan = crate::plan::plan(&l);
            let cpu = Cpu::parse(&r.core).unwrap();
            let p: f64 = predict(&stored.coefficients, cpu, &features(&l, &plan, cpu))
                .unwrap()
                .iter()
                .sum();
            assert_eq!(
                p.round() as u64,
                r.predicted,
                "{} {} on {}",
                r.file,
                r.pick,
                r.core
            );
        }
    }

    /// Every step class has coefficients for every fitted core, so no
    /// step is costed 0 for want of a model ("copy", a reshape that cannot
    /// alias, no sampled network has).
    #[test]
    fn every_step_class_is_fitted() {
        for (core, classes) in &stored().coefficients.cores {
            for class in CLASSES.iter().filter(|&&c| c != "copy") {
                assert!(
                    classes.contains_key(*class),
                    "{core} has no model of {class}"
                );
            }
            for class in classes.keys() {
                assert!(CLASSES.contains(&class.as_str()), "{class} is not a class");
            }
        }
    }

    /// The per-layer estimate search spaces are costed with stays near the
    /// per-step prediction with the memory plan (which it cannot know per
    /// layer: the row runs of convs fused into depthwise convs, in-place
    /// depthwise convs): median within 5% and every network within 10% on
    /// sampled networks of every example space.
    #[test]
    fn layer_estimate_follows_the_step_prediction() {
        for space in ["tiny", "kws", "ad", "vww", "fashion"] {
            let file = format!("{}/../examples/{space}.mnet", env!("CARGO_MANIFEST_DIR"));
            let text = std::fs::read_to_string(&file).unwrap();
            let checked = crate::check_source(&file, &text).unwrap();
            let net = &checked.networks[0];
            let mut errors: Vec<f64> = (0..20)
                .map(|seed| {
                    let a = assignment(&net.graph, &net.summary, Pick::Random(seed));
                    let fixed = resolve(&net.graph, &a).unwrap();
                    let estimate = crate::analysis::stats::fixed_stats(&fixed)
                        .totals
                        .instructions as f64;
                    let steps = network_instructions(&fixed).unwrap() as f64;
                    (estimate - steps).abs() / steps
                })
                .collect();
            errors.sort_by(f64::total_cmp);
            assert!(
                errors[10] < 0.05 && errors[19] < 0.10,
                "{space}: {errors:?}"
            );
        }
    }

    #[test]
    fn fit_recovers_a_linear_model() {
        let step = |a: f64, b: f64| Step {
            node: 1,
            fused: None,
            class: "add",
            x: vec![a, b, 1.0],
        };
        let samples: Vec<(Step, f64)> = (0..20)
            .map(|i| {
                let (a, b) = (i as f64 * 1000.0, ((i * 7) % 5) as f64);
                (step(a, b), 3.0 * a + 50.0 * b + 120.0)
            })
            .collect();
        let w = &fit(&samples)["add"];
        for (got, want) in w.iter().zip([3.0, 50.0, 120.0]) {
            assert!((got - want).abs() < 1e-3 * want, "{w:?}");
        }
    }
}
