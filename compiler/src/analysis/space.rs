//! Exact analysis of a search space by dynamic programming over its frontier.
//!
//! A search space can hold 10^30 networks, so it is never enumerated. Instead
//! the nodes are visited in topological order carrying a set of *states*: the
//! concrete shapes of the tensors still needed later and the options of the
//! choices still referenced later. A choice enters a state when a node that
//! exists in that state first needs it, and leaves after its last use; a
//! tensor leaves after its last consumer. States that agree on all of that are
//! merged, keeping per state the number of networks that reach it and the
//! min and max of every total (sums for MACs, params and weight bytes; max for
//! the SpArSe peak working memory, where min over paths of max(path, c) is
//! max(min over paths, c)). For the search spaces mnet is built for, the
//! frontier stays at a few hundred states.
//!
//! The same pass is the shape checker: every state that reaches a node is a
//! set of networks, so a node that fails in some state is an error of the
//! space, reported once with the options that lead to it. A node whose value
//! no chosen path takes to the output is dead code in that state: it is not
//! evaluated and costs nothing (resolution removes it the same way), and a
//! state left without layers is an error. Networks that differ only in
//! choices that never matter (a width inside a skipped block or in dead
//! code) count once.

use crate::analysis::latency::{layer_cost, BoardModel};
use crate::ir::*;
use crate::ops::shape::{infer, set_attr, LayerCost, MAX_WEIGHT_BYTES};
use crate::ops::{FusionClass, PoolKind, Window};
use mnet_grammar::{Diagnostic, Sources};
use num_bigint::BigUint;
use rustc_hash::FxHashMap as HashMap;
use smallvec::SmallVec;
use std::collections::BTreeMap;
use std::rc::Rc;

/// Most states the frontier may hold.
const MAX_STATES: usize = 200_000;

/// Most node evaluations (a node in one state with one setting of the
/// options it reads) the whole analysis may do: a bound on its time (about
/// a microsecond each) and memory, checked as it goes.
const MAX_WORK: usize = 5_000_000;

pub use crate::ops::fusion::Producer;

/// A concrete tensor: its shape and what produced it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TensorInfo {
    pub shape: Vec<u32>,
    pub producer: Producer,
}

/// The result of a layer on concrete inputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerEval {
    pub out: TensorInfo,
    pub cost: LayerCost,
    /// A batch norm or activation folded into the layer before it.
    pub fused: bool,
}

/// Why a layer fails on its inputs: (message, hint).
pub type LayerError = (String, Option<String>);

/// Evaluate a layer: shape, cost and fusion ([`crate::ops::fusion`]).
/// `sole_reader`: the layer is the only reader of its input, which is not
/// the network's output.
pub fn eval_layer(
    op: &Op,
    inputs: &[&TensorInfo],
    sole_reader: bool,
    model: Option<&BoardModel>,
) -> Result<LayerEval, LayerError> {
    let shapes: Vec<&[u32]> = inputs.iter().map(|t| t.shape.as_slice()).collect();
    let shape = infer(op, &shapes).map_err(|m| (m, None))?;
    let input = inputs.first().map_or(Producer::Closed, |t| t.producer);
    let (fused, producer) =
        crate::ops::fusion::fuse(op, input, sole_reader).map_err(|e| (e.message, e.hint))?;
    let cost = layer_cost(model, op, &shapes, &shape, fused);
    if cost.weight_bytes > MAX_WEIGHT_BYTES {
        return Err((
            format!(
                "`{}` would need {} bytes of weights, more than mnet supports ({} GiB)",
                op.name(),
                cost.weight_bytes,
                MAX_WEIGHT_BYTES >> 30
            ),
            Some("fewer channels or a smaller kernel".into()),
        ));
    }
    Ok(LayerEval {
        out: TensorInfo { shape, producer },
        cost,
        fused,
    })
}

/// The avg-pool shortcut of a skipped block that downsamples by `pool`.
pub fn shortcut_op(pool: [u32; 2]) -> Op {
    Op::Pool {
        kind: PoolKind::Avg,
        window: Window {
            kernel: pool,
            stride: pool,
            padding: Padding::Same,
        },
    }
}

/// The concrete op of a node under the given option of each bound choice.
pub fn bind_op(g: &SearchGraph, node: &SearchNode, option: impl Fn(ChoiceId) -> usize) -> Op {
    let SearchOp::Layer(op) = &node.op else {
        unreachable!("bind_op on a select")
    };
    let mut op = op.clone();
    for (slot, c) in &node.bindings {
        let choice = g.choice(*c);
        let value = match &choice.kind {
            ChoiceKind::Width(w) => Const::Int(w[option(*c)] as u64),
            ChoiceKind::Values(v) => v[option(*c)].clone(),
            _ => unreachable!("attributes bind to width and value choices"),
        };
        set_attr(&mut op, *slot, &value).expect("options are checked during elaboration");
    }
    op
}

/// Totals of one network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Totals {
    pub macs: u64,
    pub params: u64,
    pub flash_bytes: u64,
    pub peak_working_bytes: u64,
    /// Predicted instructions on the target board's core (0 without a
    /// model; [`crate::analysis::latency::layer_cost`]).
    pub instructions: u64,
}

impl Totals {
    pub fn ops(&self) -> u64 {
        2 * self.macs
    }

    fn add(&mut self, c: &LayerCost) {
        self.macs = self.macs.saturating_add(c.macs);
        self.params = self.params.saturating_add(c.params);
        self.flash_bytes = self.flash_bytes.saturating_add(c.weight_bytes);
        self.peak_working_bytes = self.peak_working_bytes.max(c.working_bytes);
        self.instructions = self.instructions.saturating_add(c.instructions);
    }

    fn min_with(&mut self, o: &Totals) {
        self.macs = self.macs.min(o.macs);
        self.params = self.params.min(o.params);
        self.flash_bytes = self.flash_bytes.min(o.flash_bytes);
        self.peak_working_bytes = self.peak_working_bytes.min(o.peak_working_bytes);
        self.instructions = self.instructions.min(o.instructions);
    }

    fn max_with(&mut self, o: &Totals) {
        self.macs = self.macs.max(o.macs);
        self.params = self.params.max(o.params);
        self.flash_bytes = self.flash_bytes.max(o.flash_bytes);
        self.peak_working_bytes = self.peak_working_bytes.max(o.peak_working_bytes);
        self.instructions = self.instructions.max(o.instructions);
    }

    /// The total a budget of `kind` limits (instructions for a latency
    /// budget: [`crate::analysis::stats::BudgetCheck::needed`] converts).
    pub fn get(&self, kind: BudgetKind) -> u64 {
        match kind {
            BudgetKind::Ops => self.ops(),
            BudgetKind::Sram => self.peak_working_bytes,
            BudgetKind::Flash => self.flash_bytes,
            BudgetKind::Latency => self.instructions,
        }
    }
}

/// One option per choice; `None` for a choice that does not matter.
pub type Assignment = Vec<Option<u16>>;

/// The range of one node's shape and cost over the space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRange {
    pub shape_min: Vec<u32>,
    pub shape_max: Vec<u32>,
    pub min: LayerCost,
    pub max: LayerCost,
    /// Fused in every network where it exists.
    pub fused: bool,
}

/// What the analysis found.
#[derive(Clone, Debug)]
pub struct SpaceSummary {
    /// Distinct networks (assignments of the choices that matter).
    pub count: BigUint,
    pub min: Totals,
    pub max: Totals,
    /// The network with the fewest ops (ties: smallest option indices).
    pub argmin_ops: Assignment,
    /// The network with the most ops.
    pub argmax_ops: Assignment,
    /// Per search node (by index), its range; `None` for selects and nodes
    /// that exist in no network.
    pub node_ranges: Vec<Option<NodeRange>>,
    /// Most frontier states held at once.
    pub peak_states: usize,
}

/// A frontier state: live tensors (node position, interned tensor id) and
/// live choices (choice, option), both sorted by their first field.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    tensors: SmallVec<[(u32, u32); 4]>,
    choices: SmallVec<[(u32, u16); 6]>,
    /// The network has a live layer so far.
    layers: bool,
}

/// Tensor infos by id, so states hash and compare small integers.
#[derive(Default)]
struct Interner {
    ids: HashMap<TensorInfo, u32>,
    infos: Vec<TensorInfo>,
}

impl Interner {
    /// The same tensor with its channel count forgotten (rank-3 maps only).
    fn spatial_only(&mut self, id: u32) -> u32 {
        let t = &self.infos[id as usize];
        if t.shape.len() != 3 || t.shape[2] == 0 {
            return id;
        }
        let shape = vec![t.shape[0], t.shape[1], 0];
        self.intern(TensorInfo {
            shape,
            producer: Producer::Closed,
        })
    }

    fn intern(&mut self, t: TensorInfo) -> u32 {
        if let Some(&id) = self.ids.get(&t) {
            return id;
        }
        let id = self.infos.len() as u32;
        self.infos.push(t.clone());
        self.ids.insert(t, id);
        id
    }
}

impl Key {
    fn choice(&self, c: ChoiceId) -> Option<u16> {
        self.choices
            .binary_search_by_key(&c.0, |(k, _)| *k)
            .ok()
            .map(|i| self.choices[i].1)
    }

    fn tensor_id(&self, n: SNodeId) -> Option<u32> {
        let i = n.0.index() as u32;
        self.tensors
            .binary_search_by_key(&i, |(k, _)| *k)
            .ok()
            .map(|j| self.tensors[j].1)
    }

    fn tensor<'t>(&self, n: SNodeId, interner: &'t Interner) -> Option<&'t TensorInfo> {
        let i = n.0.index() as u32;
        self.tensors
            .binary_search_by_key(&i, |(k, _)| *k)
            .ok()
            .map(|j| &interner.infos[self.tensors[j].1 as usize])
    }
}

/// Decided (choice, option) pairs, sorted by choice.
type Decisions = Vec<(u32, u16)>;

/// A number of networks: a machine integer until it overflows.
#[derive(Clone, Debug)]
enum Count {
    Small(u128),
    Big(BigUint),
}

impl Count {
    fn add(&mut self, o: Count) {
        *self = match (std::mem::replace(self, Count::Small(0)), o) {
            (Count::Small(a), Count::Small(b)) => match a.checked_add(b) {
                Some(v) => Count::Small(v),
                None => Count::Big(BigUint::from(a) + BigUint::from(b)),
            },
            (Count::Small(a), Count::Big(b)) | (Count::Big(b), Count::Small(a)) => {
                Count::Big(b + BigUint::from(a))
            }
            (Count::Big(a), Count::Big(b)) => Count::Big(a + b),
        }
    }

    fn into_big(self) -> BigUint {
        match self {
            Count::Small(v) => BigUint::from(v),
            Count::Big(v) => v,
        }
    }
}

/// The choices decided along one path, newest first; shared between the
/// states that branch from it, so deciding a choice costs one small node.
#[derive(Clone, Debug, Default)]
struct Path(Option<Rc<PathNode>>);

#[derive(Debug)]
struct PathNode {
    choice: u32,
    option: u16,
    prev: Path,
}

impl Path {
    fn push(&self, choice: u32, option: u16) -> Path {
        Path(Some(Rc::new(PathNode {
            choice,
            option,
            prev: self.clone(),
        })))
    }

    /// The decisions sorted by choice: the order paths are compared in.
    fn sorted(&self) -> Vec<(u32, u16)> {
        let mut v = Vec::new();
        let mut cur = &self.0;
        while let Some(node) = cur {
            v.push((node.choice, node.option));
            cur = &node.prev.0;
        }
        v.sort_unstable();
        v
    }
}

#[derive(Clone, Debug)]
struct Acc {
    count: Count,
    min: Totals,
    max: Totals,
    /// Decided choices along the path with the fewest / most ops.
    amin: Path,
    amax: Path,
}

impl Acc {
    fn merge(&mut self, o: Acc) {
        self.count.add(o.count);
        if o.min.macs < self.min.macs
            || (o.min.macs == self.min.macs && o.amin.sorted() < self.amin.sorted())
        {
            self.amin = o.amin;
        }
        if o.max.macs > self.max.macs
            || (o.max.macs == self.max.macs && o.amax.sorted() < self.amax.sorted())
        {
            self.amax = o.amax;
        }
        self.min.min_with(&o.min);
        self.max.max_with(&o.max);
    }
}

fn insert_sorted<A: smallvec::Array<Item = (u32, u16)>>(v: &mut SmallVec<A>, c: u32, o: u16) {
    let i = v.partition_point(|(k, _)| *k < c);
    v.insert(i, (c, o));
}

/// Branch a state over the options of `c` if it is not decided yet.
fn decide(g: &SearchGraph, key: Key, acc: Acc, c: ChoiceId) -> Vec<(Key, Acc)> {
    if key.choice(c).is_some() {
        return vec![(key, acc)];
    }
    let n = g.choice(c).options();
    (0..n)
        .map(|o| {
            let mut k = key.clone();
            insert_sorted(&mut k.choices, c.0, o as u16);
            let mut a = acc.clone();
            a.amin = a.amin.push(c.0, o as u16);
            a.amax = a.amax.push(c.0, o as u16);
            (k, a)
        })
        .collect()
}

/// Describe the options that lead to a state, for an error message.
fn witness(g: &SearchGraph, sources: &Sources, path: &[(u32, u16)]) -> Option<String> {
    if path.is_empty() {
        return None;
    }
    let parts: Vec<String> = path
        .iter()
        .map(|(c, o)| {
            let ch = g.choice(ChoiceId(*c));
            let what = match ch.kind {
                ChoiceKind::Width(_) => "width",
                ChoiceKind::Values(_) => "value",
                ChoiceKind::Branch(_) => "choice",
                ChoiceKind::Skip => "skippable",
                ChoiceKind::Depth { .. } => "depth",
            };
            format!(
                "{what} at {} = {}",
                short_location(sources, ch.span),
                ch.option_label(*o as usize)
            )
        })
        .collect();
    Some(format!("this happens when {}", parts.join(", ")))
}

/// How much of a tensor a consumer reads in a state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Use {
    Nothing,
    /// Height and width only: the skip path of a kept block.
    Spatial,
    Full,
}

fn usage(g: &SearchGraph, consumer: SNodeId, slot: u32, key: &Key) -> Use {
    let node = g.node(consumer);
    for cond in &node.guard {
        if let Some(o) = key.choice(cond.choice) {
            if cond.mask & (1 << o) == 0 {
                return Use::Nothing;
            }
        }
    }
    match node.op {
        SearchOp::Layer(_) => Use::Full,
        SearchOp::Select { choice, kind } => match key.choice(choice) {
            None => Use::Full,
            Some(o) => match kind {
                SelectKind::Branch | SelectKind::Depth if slot == o as u32 => Use::Full,
                SelectKind::Branch | SelectKind::Depth => Use::Nothing,
                SelectKind::Skip { .. } => match (slot, o) {
                    (0, 0) | (1, 1) => Use::Full,
                    (0, _) => Use::Spatial,
                    _ => Use::Nothing,
                },
            },
        },
    }
}

/// Analyse a search space: check every network's shapes and compute the
/// exact range of every total. Errors are diagnostics on the failing nodes.
pub fn analyze(g: &SearchGraph, sources: &Sources) -> Result<SpaceSummary, Vec<Diagnostic>> {
    let n = g.order.len();
    // Instructions are predicted for the target board's core, if it has a
    // model (and a clock).
    let model = BoardModel::of_network(&g.info);
    // Last use of every tensor and every choice, by position.
    let mut tensor_last = vec![0usize; n];
    let mut choice_last = vec![0usize; g.choices.len()];
    for (pos, &id) in g.order.iter().enumerate() {
        debug_assert_eq!(id.0.index(), pos);
        for input in g.inputs(id) {
            tensor_last[input.0.index()] = tensor_last[input.0.index()].max(pos);
        }
        let node = g.node(id);
        let mut touch =
            |c: ChoiceId| choice_last[c.0 as usize] = choice_last[c.0 as usize].max(pos);
        node.guard.iter().for_each(|cond| touch(cond.choice));
        node.bindings.iter().for_each(|(_, c)| touch(*c));
        if let SearchOp::Select { choice, .. } = node.op {
            touch(choice);
        }
    }
    tensor_last[g.output.0.index()] = usize::MAX;

    let interner = std::cell::RefCell::new(Interner::default());
    let uses = Uses::new(g);
    let consumers = &uses.consumers;
    // A layer that may fuse into its input's producer reads, besides its
    // own, the choices that tell who else reads that producer: keep them
    // in the states until then.
    for (pos, &id) in g.order.iter().enumerate() {
        if fuses_into_producer(g.node(id)) {
            for c in sole_reader_choices(g, &uses, g.inputs(id)[0]) {
                choice_last[c.0 as usize] = choice_last[c.0 as usize].max(pos);
            }
        }
    }
    let mut states: HashMap<Key, Acc> = HashMap::default();
    states.insert(
        Key {
            tensors: SmallVec::new(),
            choices: SmallVec::new(),
            layers: false,
        },
        Acc {
            count: Count::Small(1),
            min: Totals::default(),
            max: Totals::default(),
            amin: Path::default(),
            amax: Path::default(),
        },
    );
    // Per failing node, the error of the smallest failing path (so the
    // message does not depend on hash order).
    let mut errors: BTreeMap<usize, (Vec<(u32, u16)>, Diagnostic)> = BTreeMap::new();
    let mut ranges: Vec<Option<NodeRange>> = vec![None; n];
    let mut peak_states = 1;
    let mut work = 0usize;

    for (pos, &id) in g.order.iter().enumerate() {
        let node = g.node(id);
        let inputs = g.inputs(id);
        let mut next: HashMap<Key, Acc> =
            HashMap::with_capacity_and_hasher(states.len() * 2, Default::default());
        let finish = |mut key: Key, acc: Acc, out: Option<u32>, next: &mut HashMap<Key, Acc>| {
            key.tensors.retain(|(t, _)| tensor_last[*t as usize] > pos);
            if let Some(tid) = out {
                if tensor_last[pos] > pos {
                    let i = key.tensors.partition_point(|(t, _)| (*t as usize) < pos);
                    key.tensors.insert(i, (pos as u32, tid));
                }
            }
            // Forget what no later node of this state reads: a tensor
            // only a decided select passes over, or of which a kept
            // block's skip path needs only the spatial size.
            let mut i = 0;
            while i < key.tensors.len() {
                let (t, tid) = key.tensors[i];
                let need = consumers[t as usize]
                    .iter()
                    .filter(|(c, _)| *c > pos)
                    .map(|(c, slot)| usage(g, g.order[*c], *slot, &key))
                    .max()
                    .unwrap_or(Use::Full);
                match need {
                    Use::Nothing => {
                        key.tensors.remove(i);
                        continue;
                    }
                    Use::Spatial => key.tensors[i].1 = interner.borrow_mut().spatial_only(tid),
                    Use::Full => {}
                }
                i += 1;
            }
            key.choices.retain(|(c, _)| choice_last[*c as usize] > pos);
            match next.get_mut(&key) {
                Some(a) => a.merge(acc),
                None => {
                    next.insert(key, acc);
                }
            }
        };
        let mut reads: Vec<ChoiceId> = node.bindings.iter().map(|(_, c)| *c).collect();
        if let SearchOp::Select { choice, .. } = node.op {
            reads.push(choice);
        }
        type Memo = HashMap<
            (SmallVec<[u32; 4]>, SmallVec<[u16; 4]>, bool),
            Result<(u32, Option<LayerCost>), NodeError>,
        >;
        let mut memo: Memo = HashMap::default();
        // What this node will cost, known before it is paid.
        let ahead = states.iter().fold(0usize, |sum, (key, _)| {
            let branches = reads
                .iter()
                .filter(|c| key.choice(**c).is_none())
                .fold(1usize, |p, c| p.saturating_mul(g.choice(*c).options()));
            sum.saturating_add(branches)
        });
        let mut too_big = false;
        if work.saturating_add(ahead) > MAX_WORK {
            work = work.saturating_add(ahead);
        }
        for (key, acc) in std::mem::take(&mut states) {
            if next.len() > MAX_STATES || work > MAX_WORK {
                too_big = true;
                break;
            }
            // Which states does the node exist in, and reach the output
            // in? A node whose value no chosen path takes to the output
            // is dead code: not part of that network, not evaluated.
            let mut active = Vec::new();
            for ((k, a), l) in live(g, &uses, id, (key, acc)) {
                if l {
                    active.push((k, a));
                } else {
                    finish(k, a, None, &mut next);
                }
            }
            // Decide the choices the node reads.
            for &c in &reads {
                let open = active.iter().filter(|(k, _)| k.choice(c).is_none()).count();
                if open.saturating_mul(g.choice(c).options()) + active.len() > MAX_STATES {
                    too_big = true;
                    break;
                }
                active = active
                    .into_iter()
                    .flat_map(|(k, a)| decide(g, k, a, c))
                    .collect();
            }
            if too_big {
                break;
            }
            work += active.len();
            // Whether a layer that may fuse into its input's producer is
            // that producer's only reader (deciding, lazily, the choices
            // that tell); every other layer's states pass as they are.
            let mut sole_of = Vec::new();
            if fuses_into_producer(node) {
                let mut split = Vec::with_capacity(active.len());
                for (k, a) in active {
                    for (k, a, sole) in sole_reader(g, &uses, inputs[0], (k, a)) {
                        split.push((k, a));
                        sole_of.push(sole);
                    }
                }
                active = split;
            }
            // Whether the network has a layer so far (a skipped block's
            // shortcut pool is one).
            let costs = match &node.op {
                SearchOp::Layer(op) => !matches!(op, Op::Input { .. }),
                SearchOp::Select { kind, .. } => matches!(kind, SelectKind::Skip { pool: Some(_) }),
            };
            for (at, (mut key, mut acc)) in active.into_iter().enumerate() {
                let sole = sole_of.get(at).copied().unwrap_or(true);
                // A node's result depends only on its input tensors, the
                // options it reads and whether it is its input's only
                // reader: evaluate each combination once.
                let memo_key: (SmallVec<[u32; 4]>, SmallVec<[u16; 4]>, bool) = (
                    inputs
                        .iter()
                        .map(|i| key.tensor_id(*i).unwrap_or(u32::MAX))
                        .collect(),
                    reads
                        .iter()
                        .map(|c| key.choice(*c).expect("decided"))
                        .collect(),
                    sole,
                );
                let result = match memo.get(&memo_key) {
                    Some(r) => r.clone(),
                    None => {
                        let r = eval_node(
                            g,
                            node,
                            &inputs,
                            &key,
                            &interner.borrow(),
                            sole,
                            model.as_ref(),
                        );
                        let r = r.map(|(info, cost, fused)| {
                            if let Some(cost) = cost {
                                let r = ranges[pos].get_or_insert_with(|| NodeRange {
                                    shape_min: info.shape.clone(),
                                    shape_max: info.shape.clone(),
                                    min: cost,
                                    max: cost,
                                    fused,
                                });
                                for (i, d) in info.shape.iter().enumerate() {
                                    if i < r.shape_min.len() {
                                        r.shape_min[i] = r.shape_min[i].min(*d);
                                        r.shape_max[i] = r.shape_max[i].max(*d);
                                    }
                                }
                                r.min = LayerCost {
                                    macs: r.min.macs.min(cost.macs),
                                    params: r.min.params.min(cost.params),
                                    weight_bytes: r.min.weight_bytes.min(cost.weight_bytes),
                                    working_bytes: r.min.working_bytes.min(cost.working_bytes),
                                    instructions: r.min.instructions.min(cost.instructions),
                                };
                                r.max = LayerCost {
                                    macs: r.max.macs.max(cost.macs),
                                    params: r.max.params.max(cost.params),
                                    weight_bytes: r.max.weight_bytes.max(cost.weight_bytes),
                                    working_bytes: r.max.working_bytes.max(cost.working_bytes),
                                    instructions: r.max.instructions.max(cost.instructions),
                                };
                                r.fused &= fused;
                            }
                            (interner.borrow_mut().intern(info), cost)
                        });
                        // Bounded: a layer whose inputs differ in every
                        // state (a width after a width) would fill it with
                        // results it never reuses.
                        if memo.len() >= 1 << 16 {
                            memo.clear();
                        }
                        memo.insert(memo_key, r.clone());
                        r
                    }
                };
                match result {
                    Ok((tid, cost)) => {
                        if let Some(cost) = cost {
                            acc.min.add(&cost);
                            acc.max.add(&cost);
                            key.layers |= costs;
                        }
                        finish(key, acc, Some(tid), &mut next);
                    }
                    Err(msg) => {
                        let path = acc.amin.sorted();
                        if errors.get(&pos).is_some_and(|(p, _)| *p <= path) {
                            continue;
                        }
                        let d = {
                            let origin = g.origin(id);
                            let mut d = Diagnostic::error(origin.span, msg.0).with_label(msg.1);
                            for site in origin.call_sites.iter().take(4) {
                                d = d.with_secondary(*site, "in this call");
                            }
                            if let Some(w) = witness(g, sources, &path) {
                                d = d.with_note(w);
                            }
                            if let Some(h) = msg.2 {
                                d = d.with_hint(h);
                            }
                            d
                        };
                        errors.insert(pos, (path, d));
                    }
                }
            }
        }
        if work > MAX_WORK {
            let origin = g.origin(id);
            return Err(vec![Diagnostic::error(
                origin.span,
                "the search space is too large to analyse exactly",
            )
            .with_label(format!(
                "{work} combinations of shapes and options would be evaluated up to here (the limit is {MAX_WORK})"
            ))
            .with_hint(
                "give wide widths a step (`width(8..=512 step 8)`), or tie widths that must agree to one named choice: `c = width(...)`",
            )]);
        }
        if too_big || next.len() > MAX_STATES {
            let origin = g.origin(id);
            return Err(vec![Diagnostic::error(
                origin.span,
                "the search space is too entangled to analyse",
            )
            .with_label(format!(
                "more than {MAX_STATES} distinct shape combinations reach this layer"
            ))
            .with_hint(
                "tie widths that must agree to one named choice: `c = width(...)`",
            )]);
        }
        peak_states = peak_states.max(next.len());
        states = next;
    }

    // The output of every network must match the declared shape.
    if let Some(want) = &g.info.output_shape {
        let mut wrong: Vec<(Decisions, Vec<u32>)> = states
            .iter()
            .map(|(key, acc)| {
                (
                    acc.amin.sorted(),
                    key.tensor(g.output, &interner.borrow())
                        .expect("output is live")
                        .shape
                        .clone(),
                )
            })
            .filter(|(_, got)| got != want)
            .collect();
        wrong.sort();
        if let Some((path, got)) = wrong.first() {
            {
                let mut d = Diagnostic::error(
                    g.info.output_span,
                    "the network's output does not have the declared shape",
                )
                .with_label(format!("declared {want:?}"))
                .with_secondary(
                    g.origin(g.output).span,
                    format!("the result has shape {got:?}"),
                );
                if let Some(w) = witness(g, sources, path) {
                    d = d.with_note(w);
                }
                errors.insert(usize::MAX, (path.clone(), d));
            }
        }
    }
    // A choice may not leave a network without layers.
    let mut empty: Vec<Decisions> = states
        .iter()
        .filter(|(key, _)| !key.layers)
        .map(|(_, acc)| acc.amin.sorted())
        .collect();
    empty.sort();
    if let Some(path) = empty.first() {
        let mut d = Diagnostic::error(g.info.span, "a network of this space has no layers")
            .with_label("its output would be its input");
        if let Some(w) = witness(g, sources, path) {
            d = d.with_note(w);
        }
        errors.insert(usize::MAX - 1, (path.clone(), d));
    }
    if !errors.is_empty() {
        return Err(errors.into_values().map(|(_, d)| d).collect());
    }
    let mut total: Option<Acc> = None;
    for (_, acc) in states {
        match &mut total {
            Some(t) => t.merge(acc),
            None => total = Some(acc),
        }
    }
    let total = total.expect("at least one network");
    let to_assignment = |v: &[(u32, u16)]| {
        let mut a: Assignment = vec![None; g.choices.len()];
        for (c, o) in v {
            a[*c as usize] = Some(*o);
        }
        a
    };
    Ok(SpaceSummary {
        count: total.count.into_big(),
        min: total.min,
        max: total.max,
        argmin_ops: to_assignment(&total.amin.sorted()),
        argmax_ops: to_assignment(&total.amax.sorted()),
        node_ranges: ranges,
        peak_states,
    })
}

/// (message, label, hint)
type NodeError = (String, String, Option<String>);

/// Whether a node is a layer that may fuse into the op producing its input
/// (a batch norm, a fusable activation), which depends on who else reads
/// that op's output.
fn fuses_into_producer(node: &SearchNode) -> bool {
    match &node.op {
        SearchOp::Layer(op) => match op.fusion_class() {
            FusionClass::FoldsIntoWeights => true,
            FusionClass::Activation(a) => a.fused().is_some(),
            FusionClass::Weighted
            | FusionClass::TakesActivation
            | FusionClass::Identity
            | FusionClass::Plain => false,
        },
        SearchOp::Select { .. } => false,
    }
}

/// The op that really produces a node's value in one network: a layer, or
/// the avg-pool shortcut of a skipped downsampling block (at its select).
#[derive(Clone, Copy)]
enum Source {
    Layer(SNodeId),
    Shortcut(SNodeId),
}

type State = (Key, Acc);

/// Whether node `c` exists, deciding its guard's choices in order until one
/// fails (as resolution reads them).
fn exists(g: &SearchGraph, c: SNodeId, st: State) -> Vec<(State, bool)> {
    let guard = &g.node(c).guard;
    let mut out = Vec::new();
    let mut pending = vec![(st, 0usize)];
    while let Some(((k, a), i)) = pending.pop() {
        let Some(cond) = guard.get(i) else {
            out.push(((k, a), true));
            continue;
        };
        for (k, a) in decide(g, k, a, cond.choice) {
            let o = k.choice(cond.choice).expect("decided");
            if cond.mask & (1 << o) != 0 {
                pending.push(((k, a), i + 1));
            } else {
                out.push(((k, a), false));
            }
        }
    }
    out
}

/// The real producer of `n`'s value, through the selects that pass it.
fn sources(g: &SearchGraph, n: SNodeId, st: State) -> Vec<(State, Source)> {
    let SearchOp::Select { choice, kind } = g.node(n).op else {
        // A dropout passes its input's value on (it is not in the int8
        // network).
        if is_identity(g, n) {
            return sources(g, g.inputs(n)[0], st);
        }
        return vec![(st, Source::Layer(n))];
    };
    let inputs = g.inputs(n);
    decide(g, st.0, st.1, choice)
        .into_iter()
        .flat_map(|(k, a)| {
            let o = k.choice(choice).expect("decided") as usize;
            match kind {
                SelectKind::Branch | SelectKind::Depth => sources(g, inputs[o], (k, a)),
                SelectKind::Skip { pool: Some(_) } if o == 0 => {
                    vec![((k, a), Source::Shortcut(n))]
                }
                SelectKind::Skip { .. } => sources(g, inputs[o], (k, a)),
            }
        })
        .collect()
}

/// A layer that is the identity of the int8 network (dropout): fusion and
/// reader counts look through it.
fn is_identity(g: &SearchGraph, n: SNodeId) -> bool {
    matches!(&g.node(n).op, SearchOp::Layer(op) if op.fusion_class() == FusionClass::Identity)
}

/// Who reads each node, and which nodes reach the output wherever they
/// exist.
struct Uses {
    /// Consumers of every node (by position): (position, input slot).
    consumers: Vec<Vec<(usize, u32)>>,
    /// By position: the node is the output, or a consumer that exists
    /// wherever it does always reads it and is itself `always` live.
    always: Vec<bool>,
    /// By position, for nodes not `always` live: the choices [`live`]
    /// may read (the node's guard, its readers' guards and selects, on to
    /// the output), sorted.
    reads: Vec<Vec<u32>>,
    /// [`live`] by node and the options of its `reads` (u16::MAX for
    /// undecided): the decisions it adds and whether the node is live.
    memo: std::cell::RefCell<HashMap<LiveKey, Vec<(Decisions, bool)>>>,
}

type LiveKey = (usize, SmallVec<[u16; 8]>);

impl Uses {
    fn new(g: &SearchGraph) -> Uses {
        let n = g.order.len();
        let mut consumers: Vec<Vec<(usize, u32)>> = vec![Vec::new(); n];
        for (pos, &id) in g.order.iter().enumerate() {
            for (slot, input) in g.inputs(id).iter().enumerate() {
                consumers[input.0.index()].push((pos, slot as u32));
            }
        }
        // A node is always live when the conditions under which its live
        // readers read it cover wherever it exists: a reader whose guard
        // (and, for a select, choice) is implied by the node's guard, or
        // readers that differ in one choice and together take all its
        // options (a skippable block's first layer and its skip path).
        let mut always = vec![false; n];
        for pos in (0..n).rev() {
            let id = g.order[pos];
            let node = g.node(id);
            if id == g.output {
                always[pos] = true;
                continue;
            }
            let implied = |w: &Cond| {
                node.guard
                    .iter()
                    .any(|c| c.choice == w.choice && c.mask & !w.mask == 0)
            };
            let mut masks: Vec<(ChoiceId, u64)> = Vec::new();
            for &(c, slot) in &consumers[pos] {
                if !always[c] {
                    continue;
                }
                let consumer = g.node(g.order[c]);
                let mut conds: Vec<Cond> = consumer.guard.clone();
                if let SearchOp::Select { choice, .. } = consumer.op {
                    conds.push(Cond {
                        choice,
                        mask: 1 << slot,
                    });
                }
                conds.retain(|w| !implied(w));
                match conds.as_slice() {
                    [] => {
                        always[pos] = true;
                        break;
                    }
                    [w] => match masks.iter_mut().find(|(c, _)| *c == w.choice) {
                        Some((_, m)) => *m |= w.mask,
                        None => masks.push((w.choice, w.mask)),
                    },
                    _ => {}
                }
            }
            always[pos] |= masks.iter().any(|(c, m)| {
                let options = g.choices[c.0 as usize].options() as u32;
                // Options the node's own guard already rules out count as
                // covered.
                let allowed = node
                    .guard
                    .iter()
                    .filter(|w| w.choice == *c)
                    .fold(u64::MAX, |acc, w| acc & w.mask);
                let full = if options >= 64 {
                    u64::MAX
                } else {
                    (1u64 << options) - 1
                };
                (*m | !allowed) & full == full
            });
        }
        let mut uses = Uses {
            consumers,
            always,
            reads: vec![Vec::new(); n],
            memo: Default::default(),
        };
        for pos in 0..n {
            if !uses.always[pos] {
                let id = g.order[pos];
                let mut out: Vec<ChoiceId> = g.node(id).guard.iter().map(|c| c.choice).collect();
                live_choices(g, &uses, id, &mut out, &mut Vec::new());
                let mut r: Vec<u32> = out.into_iter().map(|c| c.0).collect();
                r.sort_unstable();
                r.dedup();
                uses.reads[pos] = r;
            }
        }
        uses
    }
}

/// The states of `st` split by whether `n` is live: it exists and its value
/// reaches the network's output, through a layer that is live itself or a
/// live select that picks it. A network holds only its live layers (dead
/// code is removed after the choices are made, in
/// [`crate::analysis::resolve`] too). The choices that tell are decided
/// lazily and from the output back — whether a reader is live before which
/// input a select picks, and `n`'s own guard last — so a choice is decided
/// only where it shapes the network, and networks that differ only in the
/// choices of dead code count once.
fn live(g: &SearchGraph, uses: &Uses, n: SNodeId, st: State) -> Vec<(State, bool)> {
    let pos = n.0.index();
    if uses.always[pos] {
        return exists(g, n, st);
    }
    // The answer depends only on the options of the choices it may read:
    // remember it, so readers shared by many paths (a diamond of layers in
    // dead code) are asked once, not once per path.
    let memo_key: LiveKey = (
        pos,
        uses.reads[pos]
            .iter()
            .map(|&c| st.0.choice(ChoiceId(c)).unwrap_or(u16::MAX))
            .collect(),
    );
    if let Some(known) = uses.memo.borrow().get(&memo_key) {
        return known
            .iter()
            .map(|(decisions, l)| {
                let (mut k, mut a) = st.clone();
                for &(c, o) in decisions {
                    insert_sorted(&mut k.choices, c, o);
                    a.amin = a.amin.push(c, o);
                    a.amax = a.amax.push(c, o);
                }
                ((k, a), *l)
            })
            .collect();
    }
    let before: Vec<(u32, u16)> = st.0.choices.to_vec();
    let mut read = Vec::new();
    let mut pending = vec![st];
    for &(cpos, slot) in &uses.consumers[pos] {
        let c = g.order[cpos];
        let mut next = Vec::new();
        for st in pending {
            for (st, l) in live(g, uses, c, st) {
                if !l {
                    next.push(st);
                    continue;
                }
                match g.node(c).op {
                    SearchOp::Layer(_) => read.push(st),
                    SearchOp::Select { choice, .. } => {
                        for (k, a) in decide(g, st.0, st.1, choice) {
                            if k.choice(choice).expect("decided") as u32 == slot {
                                read.push((k, a));
                            } else {
                                next.push((k, a));
                            }
                        }
                    }
                }
            }
        }
        pending = next;
    }
    let mut out: Vec<(State, bool)> = pending.into_iter().map(|st| (st, false)).collect();
    for st in read {
        out.extend(exists(g, n, st));
    }
    let known = out
        .iter()
        .map(|((k, _), l)| {
            let added: Decisions = k
                .choices
                .iter()
                .filter(|d| before.binary_search(d).is_err())
                .copied()
                .collect();
            (added, *l)
        })
        .collect();
    uses.memo.borrow_mut().insert(memo_key, known);
    out
}

/// How many nodes read the value of `v` in the network (the network's
/// output counts as a reader), counting up to 2; selects that pass the
/// value on count their own readers.
fn readers(g: &SearchGraph, uses: &Uses, v: SNodeId, st: State) -> Vec<(State, u32)> {
    let mut states = vec![(st, u32::from(v == g.output))];
    let mut seen = Vec::new();
    for &(pos, slot) in &uses.consumers[v.0.index()] {
        let c = g.order[pos];
        let select = match g.node(c).op {
            SearchOp::Select { choice, kind } => Some((choice, kind)),
            SearchOp::Layer(_) if seen.contains(&pos) => continue,
            SearchOp::Layer(_) => {
                seen.push(pos);
                None
            }
        };
        let mut next = Vec::new();
        for (st, count) in states {
            if count >= 2 {
                next.push((st, count));
                continue;
            }
            // Only a live reader counts: dead code is gone from the
            // network.
            for (st, l) in live(g, uses, c, st) {
                // A live dropout passes the value to its own readers.
                if l && select.is_none() && is_identity(g, c) {
                    next.extend(
                        readers(g, uses, c, st)
                            .into_iter()
                            .map(|(st, m)| (st, count + m)),
                    );
                    continue;
                }
                let Some((choice, kind)) = select.filter(|_| l) else {
                    next.push((st, count + u32::from(l)));
                    continue;
                };
                for (k, a) in decide(g, st.0, st.1, choice) {
                    let o = k.choice(choice).expect("decided") as u32;
                    if o != slot {
                        next.push(((k, a), count));
                    } else if matches!(kind, SelectKind::Skip { pool: Some(_) }) && o == 0 {
                        // The skipped block's shortcut pool reads it.
                        next.push(((k, a), count + 1));
                    } else {
                        next.extend(
                            readers(g, uses, c, (k, a))
                                .into_iter()
                                .map(|(st, m)| (st, count + m)),
                        );
                    }
                }
            }
        }
        states = next;
    }
    states
}

/// The states of `st` split by whether the producer of `input` has exactly
/// one reader.
fn sole_reader(g: &SearchGraph, uses: &Uses, input: SNodeId, st: State) -> Vec<(Key, Acc, bool)> {
    sources(g, input, st)
        .into_iter()
        .flat_map(|(st, src)| {
            let v = match src {
                Source::Layer(p) | Source::Shortcut(p) => p,
            };
            readers(g, uses, v, st)
        })
        .map(|((k, a), count)| (k, a, count == 1))
        .collect()
}

/// Every choice [`sole_reader`] may read for `input`.
fn sole_reader_choices(g: &SearchGraph, uses: &Uses, input: SNodeId) -> Vec<ChoiceId> {
    fn back(
        g: &SearchGraph,
        uses: &Uses,
        n: SNodeId,
        out: &mut Vec<ChoiceId>,
        seen: &mut Vec<SNodeId>,
    ) {
        if let SearchOp::Select { choice, .. } = g.node(n).op {
            out.push(choice);
            for i in g.inputs(n) {
                back(g, uses, i, out, seen);
            }
        }
        if is_identity(g, n) {
            back(g, uses, g.inputs(n)[0], out, seen);
        }
        forward(g, uses, n, out, seen);
    }
    fn forward(
        g: &SearchGraph,
        uses: &Uses,
        v: SNodeId,
        out: &mut Vec<ChoiceId>,
        seen: &mut Vec<SNodeId>,
    ) {
        if seen.contains(&v) {
            return;
        }
        seen.push(v);
        for &(pos, _) in &uses.consumers[v.0.index()] {
            let c = g.order[pos];
            out.extend(g.node(c).guard.iter().map(|cond| cond.choice));
            live_choices(g, uses, c, out, &mut Vec::new());
            if let SearchOp::Select { choice, .. } = g.node(c).op {
                out.push(choice);
                forward(g, uses, c, out, seen);
            }
            if is_identity(g, c) {
                forward(g, uses, c, out, seen);
            }
        }
    }
    let (mut out, mut seen) = (Vec::new(), Vec::new());
    back(g, uses, input, &mut out, &mut seen);
    out.sort();
    out.dedup();
    out
}

/// Every choice [`live`] may read for `n`.
fn live_choices(
    g: &SearchGraph,
    uses: &Uses,
    n: SNodeId,
    out: &mut Vec<ChoiceId>,
    seen: &mut Vec<SNodeId>,
) {
    if uses.always[n.0.index()] || seen.contains(&n) {
        return;
    }
    seen.push(n);
    for &(pos, _) in &uses.consumers[n.0.index()] {
        let c = g.order[pos];
        out.extend(g.node(c).guard.iter().map(|cond| cond.choice));
        if let SearchOp::Select { choice, .. } = g.node(c).op {
            out.push(choice);
        }
        live_choices(g, uses, c, out, seen);
    }
}

/// Evaluate one node in one state: its output tensor and, for layers, its
/// cost and whether it is fused.
fn eval_node(
    g: &SearchGraph,
    node: &SearchNode,
    inputs: &[SNodeId],
    key: &Key,
    interner: &Interner,
    sole_reader: bool,
    model: Option<&BoardModel>,
) -> Result<(TensorInfo, Option<LayerCost>, bool), NodeError> {
    let missing = || {
        (
            "internal: a layer reads a tensor that does not exist in this network".to_string(),
            String::new(),
            None,
        )
    };
    match &node.op {
        SearchOp::Layer(_) => {
            let op = bind_op(g, node, |c| key.choice(c).expect("decided") as usize);
            let ins: Vec<&TensorInfo> = inputs
                .iter()
                .map(|i| key.tensor(*i, interner))
                .collect::<Option<_>>()
                .ok_or_else(missing)?;
            let ev = eval_layer(&op, &ins, sole_reader, model).map_err(|(m, hint)| {
                let shapes: Vec<String> = ins.iter().map(|t| format!("{:?}", t.shape)).collect();
                (m, format!("input {}", shapes.join(", ")), hint)
            })?;
            Ok((ev.out, Some(ev.cost), ev.fused))
        }
        SearchOp::Select { choice, kind } => {
            let o = key.choice(*choice).expect("decided") as usize;
            match kind {
                SelectKind::Branch | SelectKind::Depth => {
                    let t = key.tensor(inputs[o], interner).ok_or_else(missing)?;
                    Ok((t.clone(), None, false))
                }
                SelectKind::Skip { pool } => {
                    let identity = key.tensor(inputs[0], interner).ok_or_else(missing)?;
                    if o == 0 {
                        return Ok(match pool {
                            Some(p) => {
                                let ev = eval_layer(&shortcut_op(*p), &[identity], true, model)
                                    .map_err(|(m, h)| (m, "on the skip path".to_string(), h))?;
                                (ev.out, Some(ev.cost), false)
                            }
                            None => (identity.clone(), None, false),
                        });
                    }
                    // Kept: the skip path must agree with the block in rank
                    // and spatial size (the identity's channel count may
                    // have been forgotten, see `Use::Spatial`).
                    let block = key.tensor(inputs[1], interner).ok_or_else(missing)?;
                    let mut skip_shape = identity.shape.clone();
                    if let (Some(p), 3) = (pool, skip_shape.len()) {
                        skip_shape[0] = skip_shape[0].div_ceil(p[0]);
                        skip_shape[1] = skip_shape[1].div_ceil(p[1]);
                    }
                    let spatial = |s: &[u32]| {
                        let dims: Vec<String> = s
                            .iter()
                            .take(if s.len() == 3 { 2 } else { s.len() })
                            .map(|d| d.to_string())
                            .collect();
                        dims.join("x")
                    };
                    if skip_shape.len() != block.shape.len()
                        || spatial(&skip_shape) != spatial(&block.shape)
                    {
                        return Err((
                            "the skip path and the block disagree in shape".to_string(),
                            format!(
                                "skipping gives {}, the block gives {}",
                                spatial(&skip_shape),
                                spatial(&block.shape)
                            ),
                            Some("a skippable block must keep the spatial size, or downsample by its stride with `padding: same`".to_string()),
                        ));
                    }
                    Ok((block.clone(), None, false))
                }
            }
        }
    }
}

/// A network count for people: exact, plus a power of ten when it is long.
pub fn format_count(n: &BigUint) -> String {
    let s = n.to_string();
    if s.len() <= 7 {
        return s;
    }
    format!("{s} (~{}.{}e{})", &s[..1], &s[1..3], s.len() - 1)
}
