//! The relaxed cost model of differentiable search: a space's ops, params,
//! flash and per-node working memory as smooth functions of a probability
//! per option of every choice, with exact gradients.
//!
//! A supernet holds every option at once, so every tensor's spatial shape is
//! fixed and only its channel count (last axis) varies with the choices.
//! Each tensor carries its *expected* channel count and each node a
//! *liveness* weight, the probability that a chosen path takes its value to
//! the output (a noisy-or over its readers: a select passes on the weight of
//! the option that reads it, so guards and dead code come out of the same
//! rule). A node's cost is the compiler's own cost of the layer
//! ([`crate::ops::shape::cost`], with shapes from
//! [`crate::ops::shape::infer`] and fusion from [`crate::ops::fusion::fuse`])
//! interpolated multilinearly between the integer channel counts around the
//! expected ones (exact for the bilinear costs of convolutions), averaged
//! over the options of the categorical choices it binds (kernel sizes, ...),
//! and weighted by its liveness. At one-hot probabilities every figure is
//! the exact figure of that network (`mnet stats --pick`), which the tests
//! check over random picks of every example space. Gradients are carried
//! forward with every value (a [`Dual`] holds one partial derivative per
//! option), so they are exact, not differences.

use crate::analysis::latency::{layer_cost, BoardModel};
use crate::analysis::space::{bind_op, shortcut_op, Producer};
use crate::ir::*;
use crate::ops::fusion::fuse;
use crate::ops::shape::{infer, set_attr, LayerCost};
use crate::ops::FusionClass;
use mnet_grammar::Span;

/// Most combinations of categorical options one layer may bind.
const MAX_VARIANTS: usize = 256;

/// A value and its partial derivatives with respect to every option's
/// probability (the flat order of [`Relaxed::offset`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Dual {
    pub value: f64,
    pub grad: Vec<f64>,
}

impl Dual {
    pub fn constant(n: usize, value: f64) -> Dual {
        Dual {
            value,
            grad: vec![0.0; n],
        }
    }

    fn var(n: usize, i: usize, value: f64) -> Dual {
        let mut d = Dual::constant(n, value);
        d.grad[i] = 1.0;
        d
    }

    fn is_constant(&self) -> bool {
        self.grad.iter().all(|&g| g == 0.0)
    }

    /// `self += k * o`.
    fn add_scaled(&mut self, o: &Dual, k: f64) {
        self.value += k * o.value;
        for (a, b) in self.grad.iter_mut().zip(&o.grad) {
            *a += k * b;
        }
    }

    fn mul(&self, o: &Dual) -> Dual {
        Dual {
            value: self.value * o.value,
            grad: self
                .grad
                .iter()
                .zip(&o.grad)
                .map(|(a, b)| a * o.value + self.value * b)
                .collect(),
        }
    }

    fn scale(&self, k: f64) -> Dual {
        Dual {
            value: self.value * k,
            grad: self.grad.iter().map(|g| g * k).collect(),
        }
    }

    /// `1 - self`.
    fn complement(&self) -> Dual {
        Dual {
            value: 1.0 - self.value,
            grad: self.grad.iter().map(|g| -g).collect(),
        }
    }
}

/// Why a space has no supernet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelaxError {
    pub message: String,
    /// The choice or node it is about.
    pub span: Span,
}

/// One combination of the categorical options a layer binds, and the layer
/// under it (its `out`, when searched, is set per evaluation).
#[derive(Clone, Debug)]
pub struct Variant {
    /// (choice, option) pairs.
    pub combo: Vec<(usize, usize)>,
    /// The layer, with a searched `out` at its largest.
    pub op: Op,
}

/// What the supernet does at one search node.
#[derive(Clone, Debug)]
pub enum Plan {
    Layer {
        variants: Vec<Variant>,
        /// A searched channel count: the choice and each option's value.
        out: Option<(usize, Vec<u32>)>,
    },
    Select {
        choice: usize,
        kind: SelectKind,
    },
}

/// The supernet of a search space, ready to evaluate expected costs.
#[derive(Clone, Debug)]
pub struct Relaxed {
    /// Choice c's options are `offsets[c]..offsets[c + 1]` of the flat
    /// probability vector.
    offsets: Vec<usize>,
    plans: Vec<Plan>,
    inputs: Vec<Vec<usize>>,
    /// Per node, its readers and the input slot each reads it by.
    readers: Vec<Vec<(usize, usize)>>,
    /// Per node, its supernet shape (every channel count at its largest).
    shapes: Vec<Vec<u32>>,
    names: Vec<String>,
    output: usize,
    /// The target board's latency model, if it has one.
    model: Option<BoardModel>,
}

/// The expected figures at one point of the probabilities.
#[derive(Clone, Debug)]
pub struct Expected {
    pub macs: Dual,
    pub params: Dual,
    pub flash_bytes: Dual,
    /// Predicted instructions on the target board's core (constant 0
    /// without a model).
    pub instructions: Dual,
    /// Per costed layer (and skip shortcut): its name and liveness times
    /// its expected working bytes (inputs plus output, 0 when fused).
    pub working: Vec<(String, Dual)>,
    /// Per node, its liveness weight and expected channel count.
    pub liveness: Vec<f64>,
    pub channels: Vec<f64>,
}

impl Expected {
    pub fn ops(&self) -> Dual {
        self.macs.scale(2.0)
    }

    /// The largest node's working memory (the SpArSe peak at one-hot
    /// probabilities).
    pub fn peak_working(&self) -> f64 {
        self.working
            .iter()
            .map(|(_, d)| d.value)
            .fold(0.0, f64::max)
    }

    /// A smooth maximum of the nodes' working memory: `tau * ln sum
    /// exp(w / tau)`, between the peak and the peak plus `tau * ln(nodes)`.
    pub fn smooth_peak_working(&self, tau: f64) -> Dual {
        let n = self.macs.grad.len();
        let peak = self.peak_working();
        let weights: Vec<f64> = self
            .working
            .iter()
            .map(|(_, d)| ((d.value - peak) / tau).exp())
            .collect();
        let sum: f64 = weights.iter().sum();
        let mut out = Dual::constant(n, peak + tau * sum.ln());
        for ((_, d), w) in self.working.iter().zip(&weights) {
            for (a, b) in out.grad.iter_mut().zip(&d.grad) {
                *a += w / sum * b;
            }
        }
        out
    }
}

/// The options of a choice that binds a channel count, as numbers.
fn channel_values(c: &Choice) -> Option<Vec<u32>> {
    match &c.kind {
        ChoiceKind::Width(w) => Some(w.clone()),
        ChoiceKind::Values(v) => v
            .iter()
            .map(|x| match x {
                Const::Int(n) => u32::try_from(*n).ok(),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

fn with_channels(spatial: &[u32], c: u32) -> Vec<u32> {
    let mut s = spatial.to_vec();
    s.push(c);
    s
}

/// The largest channel count a choice offers.
fn largest(values: &[u32]) -> u32 {
    values.iter().copied().max().unwrap_or(1)
}

impl Relaxed {
    /// Build the supernet of `g`. Fails when two options of a choice give a
    /// layer different spatial shapes (a stride choice, or alternatives that
    /// do not agree), which one supernet cannot hold.
    pub fn new(g: &SearchGraph) -> Result<Relaxed, RelaxError> {
        let mut offsets = vec![0];
        for c in &g.choices {
            offsets.push(offsets.last().unwrap() + c.options());
        }
        let n = g.order.len();
        let mut plans = Vec::with_capacity(n);
        let mut inputs = Vec::with_capacity(n);
        let mut readers = vec![Vec::new(); n];
        let mut shapes: Vec<Vec<u32>> = Vec::with_capacity(n);
        let mut names = Vec::with_capacity(n);
        for (pos, &id) in g.order.iter().enumerate() {
            debug_assert_eq!(id.0.index(), pos, "nodes are in creation order");
            let node = g.node(id);
            let ins: Vec<usize> = g.inputs(id).iter().map(|i| i.0.index()).collect();
            for (slot, &i) in ins.iter().enumerate() {
                readers[i].push((pos, slot));
            }
            let span = g.origin(id).span;
            let fail = |message: String| RelaxError { message, span };
            let in_shapes: Vec<&[u32]> = ins.iter().map(|&i| shapes[i].as_slice()).collect();
            let (plan, shape) = match &node.op {
                SearchOp::Layer(_) => {
                    let mut out = None;
                    let mut categorical: Vec<usize> = Vec::new();
                    for (slot, c) in &node.bindings {
                        let choice = g.choice(*c);
                        let channels = matches!(slot, Slot::Out)
                            .then(|| channel_values(choice))
                            .flatten();
                        match channels {
                            Some(values) => out = Some((c.0 as usize, values)),
                            None if !categorical.contains(&(c.0 as usize)) => {
                                categorical.push(c.0 as usize)
                            }
                            None => {}
                        }
                    }
                    let mut combos: Vec<Vec<(usize, usize)>> = vec![vec![]];
                    for &c in &categorical {
                        let k = g.choices[c].options();
                        if combos.len() * k > MAX_VARIANTS {
                            return Err(fail(format!(
                                "`{}` binds more than {MAX_VARIANTS} combinations of options; a supernet holds each with its own weights",
                                node.name
                            )));
                        }
                        combos = combos
                            .into_iter()
                            .flat_map(|combo| {
                                (0..k).map(move |o| {
                                    let mut v = combo.clone();
                                    v.push((c, o));
                                    v
                                })
                            })
                            .collect();
                    }
                    let mut variants = Vec::with_capacity(combos.len());
                    let mut shape: Option<(Vec<u32>, String)> = None;
                    for combo in combos {
                        let option = |c: ChoiceId| {
                            combo
                                .iter()
                                .find(|(k, _)| *k == c.0 as usize)
                                .map_or(0, |(_, o)| *o)
                        };
                        let mut op = bind_op(g, node, option);
                        if let Some((_, values)) = &out {
                            set_attr(&mut op, Slot::Out, &Const::Int(largest(values) as u64))
                                .map_err(&fail)?;
                        }
                        let s = infer(&op, &in_shapes)
                            .map_err(|m| fail(format!("`{}`: {m}", node.name)))?;
                        let label = combo
                            .iter()
                            .map(|&(c, o)| g.choices[c].option_label(o))
                            .collect::<Vec<_>>()
                            .join(", ");
                        match &shape {
                            None => shape = Some((s, label)),
                            Some((s0, l0)) if *s0 != s => {
                                return Err(fail(format!(
                                    "`{}` has shape {s0:?} with {l0} but {s:?} with {label}; mnet search mixes the options of a choice in one supernet, so they must give the same shape",
                                    node.name
                                )))
                            }
                            Some(_) => {}
                        }
                        variants.push(Variant { combo, op });
                    }
                    let shape = shape.expect("at least one variant").0;
                    (Plan::Layer { variants, out }, shape)
                }
                SearchOp::Select { choice, kind } => {
                    let mut alts: Vec<Vec<u32>> = in_shapes.iter().map(|s| s.to_vec()).collect();
                    if let SelectKind::Skip { pool: Some(p) } = kind {
                        alts[0] = infer(&shortcut_op(*p), &in_shapes[..1])
                            .map_err(|m| fail(format!("`{}`: {m}", node.name)))?;
                    }
                    let first = &alts[0];
                    let spatial = &first[..first.len() - 1];
                    if let Some(other) = alts
                        .iter()
                        .find(|s| s.len() != first.len() || s[..s.len() - 1] != *spatial)
                    {
                        return Err(fail(format!(
                            "the options of `{}` give shapes {first:?} and {other:?}; mnet search mixes them in one supernet, so they may differ only in channels",
                            node.name
                        )));
                    }
                    let c = alts.iter().map(|s| *s.last().unwrap()).max().unwrap();
                    (
                        Plan::Select {
                            choice: choice.0 as usize,
                            kind: *kind,
                        },
                        with_channels(spatial, c),
                    )
                }
            };
            plans.push(plan);
            inputs.push(ins);
            shapes.push(shape);
            names.push(node.name.clone());
        }
        Ok(Relaxed {
            offsets,
            plans,
            inputs,
            readers,
            shapes,
            names,
            output: g.output.0.index(),
            model: BoardModel::of_network(&g.info),
        })
    }

    /// Where choice `c`'s options start in the flat probability vector.
    pub fn offset(&self, c: ChoiceId) -> usize {
        self.offsets[c.0 as usize]
    }

    /// Length of the flat probability vector (every option of every choice).
    pub fn options(&self) -> usize {
        *self.offsets.last().unwrap()
    }

    /// The supernet shape of a node (channels at their largest).
    pub fn shape(&self, id: SNodeId) -> &[u32] {
        &self.shapes[id.0.index()]
    }

    /// What the supernet does at a node.
    pub fn plan(&self, id: SNodeId) -> &Plan {
        &self.plans[id.0.index()]
    }

    /// The nodes that read a node, with the input slot each reads it by.
    pub fn readers(&self, id: SNodeId) -> &[(usize, usize)] {
        &self.readers[id.0.index()]
    }

    /// The flat probabilities of one network (one-hot per choice).
    pub fn one_hot(&self, assignment: &[u16]) -> Vec<f64> {
        let mut p = vec![0.0; self.options()];
        for (c, &o) in assignment.iter().enumerate() {
            p[self.offsets[c] + o as usize] = 1.0;
        }
        p
    }

    /// Expected costs at `probs` (one value per option, see
    /// [`Relaxed::offset`]; each choice's should sum to 1). Errors only if
    /// the compiler rejects a layer at a channel count near the expected
    /// one, which the supernet's construction makes unlikely.
    pub fn eval(&self, probs: &[f64]) -> Result<Expected, String> {
        assert_eq!(probs.len(), self.options(), "one probability per option");
        let n_opts = probs.len();
        let n = self.plans.len();
        let p =
            |c: usize, o: usize| Dual::var(n_opts, self.offsets[c] + o, probs[self.offsets[c] + o]);
        // How much reader r uses node `pos` through input `slot`.
        let uses = |live: &[Dual], r: usize, slot: usize| match &self.plans[r] {
            Plan::Layer { .. } => live[r].clone(),
            Plan::Select { choice, .. } => live[r].mul(&p(*choice, slot)),
        };
        // Liveness, from the output back; and how many readers the fixed
        // network would give each node (for fusion: a reader counts when it
        // is more likely used than not, which is exact at one-hot).
        let mut live = vec![Dual::constant(n_opts, 0.0); n];
        let mut readers = vec![0usize; n];
        for pos in (0..n).rev() {
            let mut unused = Dual::constant(n_opts, 1.0);
            let mut count = usize::from(pos == self.output);
            for &(r, slot) in &self.readers[pos] {
                let u = uses(&live, r, slot);
                if u.value >= 0.5 {
                    count += match &self.plans[r] {
                        Plan::Select {
                            kind: SelectKind::Skip { pool: Some(_) },
                            ..
                        } if slot == 0 => 1,
                        Plan::Select { .. } => readers[r],
                        Plan::Layer { variants, .. }
                            if variants[0].op.fusion_class() == FusionClass::Identity =>
                        {
                            readers[r]
                        }
                        Plan::Layer { .. } => 1,
                    };
                }
                unused = unused.mul(&u.complement());
            }
            readers[pos] = count;
            live[pos] = if pos == self.output {
                Dual::constant(n_opts, 1.0)
            } else {
                unused.complement()
            };
        }
        let mut channels: Vec<Dual> = Vec::with_capacity(n);
        let mut producers: Vec<Producer> = Vec::with_capacity(n);
        let mut totals = Totals::new(n_opts);
        for (pos, plan) in self.plans.iter().enumerate() {
            let ins = &self.inputs[pos];
            let (c, producer) = match plan {
                Plan::Layer { variants, out } => {
                    // Fusion reads through identity layers (dropout).
                    let mut from = ins.first().copied();
                    while let Some(i) = from {
                        match &self.plans[i] {
                            Plan::Layer { variants, .. }
                                if variants[0].op.fusion_class() == FusionClass::Identity =>
                            {
                                from = self.inputs[i].first().copied()
                            }
                            _ => break,
                        }
                    }
                    let sole = from.is_some_and(|i| readers[i] == 1);
                    let producer = ins.first().map_or(Producer::Closed, |&i| producers[i]);
                    let out = out.as_ref().map(|(c, values)| {
                        let mut e = Dual::constant(n_opts, 0.0);
                        for (o, &v) in values.iter().enumerate() {
                            e.add_scaled(&p(*c, o), v as f64);
                        }
                        e
                    });
                    let inputs: Vec<(&[u32], &Dual)> = ins
                        .iter()
                        .map(|&i| {
                            let s = &self.shapes[i];
                            (&s[..s.len() - 1], &channels[i])
                        })
                        .collect();
                    let mut node = NodeCost::new(n_opts);
                    let mut produced = Producer::Closed;
                    for v in variants {
                        let mut weight = Dual::constant(n_opts, 1.0);
                        for &(c, o) in &v.combo {
                            weight = weight.mul(&p(c, o));
                        }
                        let (cost, prod) = self
                            .layer_cost(&v.op, &inputs, out.as_ref(), producer, sole)
                            .map_err(|m| format!("{}: {m}", self.names[pos]))?;
                        produced = prod;
                        node.add_weighted(&cost, &weight);
                    }
                    if !matches!(variants[0].op, Op::Input { .. }) {
                        totals.add(&self.names[pos], &node, &live[pos]);
                    }
                    (node.channels, produced)
                }
                Plan::Select { choice, kind } => {
                    let mut c = Dual::constant(n_opts, 0.0);
                    let mut best = (f64::MIN, Producer::Closed);
                    for (slot, &i) in ins.iter().enumerate() {
                        let q = p(*choice, slot);
                        let (ci, prod) = match kind {
                            SelectKind::Skip { pool: Some(pool) } if slot == 0 => {
                                let s = &self.shapes[i];
                                let (cost, prod) = self
                                    .layer_cost(
                                        &shortcut_op(*pool),
                                        &[(&s[..s.len() - 1], &channels[i])],
                                        None,
                                        producers[i],
                                        true,
                                    )
                                    .map_err(|m| format!("{}: {m}", self.names[pos]))?;
                                let mut node = NodeCost::new(n_opts);
                                node.add_weighted(&cost, &Dual::constant(n_opts, 1.0));
                                let name = self.names[pos].replace("select", "shortcut");
                                totals.add(&name, &node, &live[pos].mul(&q));
                                (node.channels, prod)
                            }
                            _ => (channels[i].clone(), producers[i]),
                        };
                        if q.value > best.0 {
                            best = (q.value, prod);
                        }
                        c = add(&c, &ci.mul(&q));
                    }
                    (c, best.1)
                }
            };
            channels.push(c);
            producers.push(producer);
        }
        Ok(Expected {
            macs: totals.macs,
            params: totals.params,
            flash_bytes: totals.flash,
            instructions: totals.instructions,
            working: totals.working,
            liveness: live.iter().map(|d| d.value).collect(),
            channels: channels.iter().map(|d| d.value).collect(),
        })
    }

    /// The expected cost of one layer: the compiler's cost at the integer
    /// channel counts around the expected ones, interpolated
    /// multilinearly. Also what its output can take in (fusion).
    fn layer_cost(
        &self,
        op: &Op,
        inputs: &[(&[u32], &Dual)],
        out: Option<&Dual>,
        producer: Producer,
        sole: bool,
    ) -> Result<(NodeCost, Producer), String> {
        let (fused, produced) = match fuse(op, producer, sole) {
            Ok(f) => f,
            // The supernet shares a tensor the fixed network would not.
            Err(_) => fuse(op, producer, true).unwrap_or((false, Producer::Closed)),
        };
        // Every channel count: its two corners, and the weight of the upper
        // one (a constant count has one corner).
        // Counts that are the same function of the probabilities (the two
        // inputs of an add, tied widths) are one variable.
        let vars: Vec<&Dual> = inputs.iter().map(|(_, d)| *d).chain(out).collect();
        let same = |a: &Dual, b: &Dual| {
            (a.value - b.value).abs() <= 1e-9 * a.value.abs().max(1.0)
                && a.grad
                    .iter()
                    .zip(&b.grad)
                    .all(|(x, y)| (x - y).abs() <= 1e-9)
        };
        let var_of: Vec<usize> = (0..vars.len())
            .map(|k| (0..k).find(|&j| same(vars[j], vars[k])).unwrap_or(k))
            .collect();
        match self.corner_cost(op, inputs, out, &vars, &var_of, fused) {
            Ok(total) => Ok((total, produced)),
            // An op that needs equal channels (add) has them in every
            // network: its inputs are one variable, the first's.
            Err(_) if inputs.len() > 1 => {
                let tied: Vec<usize> = (0..vars.len())
                    .map(|k| if k < inputs.len() { 0 } else { var_of[k] })
                    .collect();
                let total = self.corner_cost(op, inputs, out, &vars, &tied, fused)?;
                Ok((total, produced))
            }
            Err(e) => Err(e),
        }
    }

    /// [`Relaxed::layer_cost`] with variable `k` taking the corners of
    /// variable `var_of[k]`.
    fn corner_cost(
        &self,
        op: &Op,
        inputs: &[(&[u32], &Dual)],
        out: Option<&Dual>,
        vars: &[&Dual],
        var_of: &[usize],
        fused: bool,
    ) -> Result<NodeCost, String> {
        let n_opts = self.options();
        let corners: Vec<(u32, Option<Dual>)> = vars
            .iter()
            .map(|d| {
                // Rounding noise must not move a count to the cell below.
                let lo = (d.value + 1e-9).floor().max(1.0);
                if d.is_constant() && (d.value - lo).abs() <= 1e-9 {
                    (lo as u32, None)
                } else {
                    let mut t = (*d).clone();
                    t.value -= lo;
                    (lo as u32, Some(t))
                }
            })
            .collect();
        let free: Vec<usize> = (0..corners.len())
            .filter(|&k| corners[k].1.is_some() && var_of[k] == k)
            .collect();
        let mut total = NodeCost::new(n_opts);
        for mask in 0..1usize << free.len() {
            let mut weight = Dual::constant(n_opts, 1.0);
            let mut value: Vec<u32> = (0..corners.len()).map(|j| corners[var_of[j]].0).collect();
            for (bit, &k) in free.iter().enumerate() {
                let t = corners[k].1.as_ref().expect("a free corner");
                if mask >> bit & 1 == 1 {
                    weight = weight.mul(t);
                    for (j, v) in value.iter_mut().enumerate() {
                        if var_of[j] == k {
                            *v += 1;
                        }
                    }
                } else {
                    weight = weight.mul(&t.complement());
                }
            }
            let shapes: Vec<Vec<u32>> = inputs
                .iter()
                .zip(&value)
                .map(|((s, _), &c)| with_channels(s, c))
                .collect();
            let mut op = op.clone();
            if out.is_some() {
                set_attr(&mut op, Slot::Out, &Const::Int(value[inputs.len()] as u64))?;
            }
            let refs: Vec<&[u32]> = shapes.iter().map(|s| s.as_slice()).collect();
            let shape = infer(&op, &refs)?;
            let c = layer_cost(self.model.as_ref(), &op, &refs, &shape, fused);
            total.add_corner(&c, *shape.last().unwrap_or(&1), &weight);
        }
        Ok(total)
    }
}

fn add(a: &Dual, b: &Dual) -> Dual {
    let mut s = a.clone();
    s.add_scaled(b, 1.0);
    s
}

/// The expected cost and output channels of one layer.
#[derive(Clone, Debug)]
struct NodeCost {
    macs: Dual,
    params: Dual,
    weight_bytes: Dual,
    working: Dual,
    instructions: Dual,
    channels: Dual,
}

impl NodeCost {
    fn new(n: usize) -> NodeCost {
        let z = Dual::constant(n, 0.0);
        NodeCost {
            macs: z.clone(),
            params: z.clone(),
            weight_bytes: z.clone(),
            working: z.clone(),
            instructions: z.clone(),
            channels: z,
        }
    }

    fn add_corner(&mut self, c: &LayerCost, channels: u32, w: &Dual) {
        self.macs.add_scaled(w, c.macs as f64);
        self.params.add_scaled(w, c.params as f64);
        self.weight_bytes.add_scaled(w, c.weight_bytes as f64);
        self.working.add_scaled(w, c.working_bytes as f64);
        self.instructions.add_scaled(w, c.instructions as f64);
        self.channels.add_scaled(w, channels as f64);
    }

    fn add_weighted(&mut self, o: &NodeCost, w: &Dual) {
        for (a, b) in [
            (&mut self.macs, &o.macs),
            (&mut self.params, &o.params),
            (&mut self.weight_bytes, &o.weight_bytes),
            (&mut self.working, &o.working),
            (&mut self.instructions, &o.instructions),
            (&mut self.channels, &o.channels),
        ] {
            *a = add(a, &b.mul(w));
        }
    }
}

struct Totals {
    macs: Dual,
    params: Dual,
    flash: Dual,
    instructions: Dual,
    working: Vec<(String, Dual)>,
}

impl Totals {
    fn new(n: usize) -> Totals {
        let z = Dual::constant(n, 0.0);
        Totals {
            macs: z.clone(),
            params: z.clone(),
            flash: z.clone(),
            instructions: z,
            working: Vec::new(),
        }
    }

    fn add(&mut self, name: &str, c: &NodeCost, live: &Dual) {
        self.macs = add(&self.macs, &c.macs.mul(live));
        self.params = add(&self.params, &c.params.mul(live));
        self.flash = add(&self.flash, &c.weight_bytes.mul(live));
        self.instructions = add(&self.instructions, &c.instructions.mul(live));
        self.working.push((name.to_string(), c.working.mul(live)));
    }
}
