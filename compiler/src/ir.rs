//! The mnet IR: layers on a petgraph `StableDiGraph`, in two stages.
//!
//! A [`SearchGraph`] is what elaboration produces from a `.mnet` network: layer
//! nodes whose attributes may be bound to choice points, `Select` nodes that
//! pick one input per option of a choice (alternative sub-blocks, skips,
//! depths), and guards saying under which options a node exists. A
//! [`FixedGraph`] has none of that: every attribute is concrete and every node
//! has an inferred shape. The two are distinct types, so a backend cannot be
//! handed a graph that still has choices. Node ids are typed newtypes over
//! petgraph indices; source spans live in side tables beside the nodes.

use mnet_grammar::Span;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use std::fmt;

/// Id of a node in a [`SearchGraph`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SNodeId(pub NodeIndex);

/// Id of a node in a [`FixedGraph`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FNodeId(pub NodeIndex);

/// Id of a choice point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChoiceId(pub u32);

impl fmt::Display for SNodeId {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "%{}", self.0.index())
    }
}

impl fmt::Display for FNodeId {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "%{}", self.0.index())
    }
}

impl fmt::Display for ChoiceId {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

pub use crate::ops::{Const, Op, Padding, Slot};

/// What a choice point chooses between.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChoiceKind {
    /// A channel count (FBNetV2 channel masks).
    Width(Vec<u32>),
    /// A categorical choice over constants (kernel size, stride, ...).
    Values(Vec<Const>),
    /// A categorical choice over alternative sub-blocks.
    Branch(u32),
    /// Option 0 skips the block (identity or avg-pool shortcut), 1 keeps it.
    Skip,
    /// `repeat lo..=hi`: option k repeats the body `lo + k` times.
    Depth { lo: u32, hi: u32 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    pub kind: ChoiceKind,
    pub span: Span,
}

impl Choice {
    pub fn options(&self) -> usize {
        match &self.kind {
            ChoiceKind::Width(w) => w.len(),
            ChoiceKind::Values(v) => v.len(),
            ChoiceKind::Branch(n) => *n as usize,
            ChoiceKind::Skip => 2,
            ChoiceKind::Depth { lo, hi } => (hi - lo + 1) as usize,
        }
    }

    /// Human-readable label of one option.
    pub fn option_label(&self, opt: usize) -> String {
        match &self.kind {
            ChoiceKind::Width(w) => w[opt].to_string(),
            ChoiceKind::Values(v) => v[opt].to_string(),
            ChoiceKind::Branch(_) => format!("alternative {}", opt + 1),
            ChoiceKind::Skip => if opt == 0 { "skip" } else { "keep" }.to_string(),
            ChoiceKind::Depth { lo, .. } => (*lo as usize + opt).to_string(),
        }
    }

    /// Description for IR dumps, e.g. `width 4..=276 step 4`.
    pub fn describe(&self) -> String {
        match &self.kind {
            ChoiceKind::Width(w) => {
                if w.len() > 2 {
                    let step = w[1] - w[0];
                    if w.windows(2).all(|p| p[1] - p[0] == step) {
                        return format!(
                            "width {}..={} step {} ({} options)",
                            w[0],
                            w[w.len() - 1],
                            step,
                            w.len()
                        );
                    }
                }
                let parts: Vec<String> = w.iter().map(|x| x.to_string()).collect();
                format!("width [{}]", parts.join(", "))
            }
            ChoiceKind::Values(v) => {
                let parts: Vec<String> = v.iter().map(|x| x.to_string()).collect();
                format!("values [{}]", parts.join(", "))
            }
            ChoiceKind::Branch(n) => format!("branch of {n} alternatives"),
            ChoiceKind::Skip => "skip {skip, keep}".to_string(),
            ChoiceKind::Depth { lo, hi } => format!("depth {lo}..={hi}"),
        }
    }
}

/// A condition on one choice: the node exists when the choice takes one of
/// the options in `mask` (bit i = option i). Choices that guard have at most
/// 64 options.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cond {
    pub choice: ChoiceId,
    pub mask: u64,
}

/// How a `Select` node picks its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SelectKind {
    /// Input i for option i.
    Branch,
    /// Inputs `[identity, block]`. The skip path pools by `pool` (the block's
    /// stride) when the block downsamples.
    Skip { pool: Option<[u32; 2]> },
    /// Input k for option k (k + lo repetitions).
    Depth,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SearchOp {
    Layer(Op),
    Select { choice: ChoiceId, kind: SelectKind },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchNode {
    pub op: SearchOp,
    /// Attributes set by choices (the op holds option 0's value).
    pub bindings: Vec<(Slot, ChoiceId)>,
    /// All conditions must hold for the node to exist.
    pub guard: Vec<Cond>,
    /// Hierarchical name, e.g. `ds_block_2/conv2d_0`.
    pub name: String,
}

/// Where a node came from: its own span and the block call sites that led
/// to it, innermost first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    pub span: Span,
    pub call_sites: Vec<Span>,
}

/// Board profile named by `target`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Board {
    pub name: String,
    pub core: String,
    pub sram_bytes: u64,
    pub flash_bytes: u64,
    /// The core clock, Hz (what a latency budget is measured at).
    pub clock_hz: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BudgetKind {
    Ops,
    Sram,
    Flash,
    /// Microseconds per inference at the target board's clock, predicted by
    /// the latency model of its core.
    Latency,
}

impl BudgetKind {
    pub fn name(self) -> &'static str {
        match self {
            BudgetKind::Ops => "ops",
            BudgetKind::Sram => "sram",
            BudgetKind::Flash => "flash",
            BudgetKind::Latency => "latency",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Budget {
    pub kind: BudgetKind,
    pub limit: u64,
    pub span: Span,
}

/// Network-level facts shared by both graph stages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkInfo {
    pub name: String,
    pub span: Span,
    pub input_name: String,
    pub input_shape: Vec<u32>,
    pub output_shape: Option<Vec<u32>>,
    pub output_span: Span,
    pub target: Option<(Board, Span)>,
    pub budgets: Vec<Budget>,
}

/// A network with choice points (or none: a fixed network is a search space
/// of one).
#[derive(Clone, Debug)]
pub struct SearchGraph {
    pub info: NetworkInfo,
    pub graph: StableDiGraph<SearchNode, u32>,
    /// Nodes in creation order, which is topological.
    pub order: Vec<SNodeId>,
    pub origins: Vec<Origin>,
    pub choices: Vec<Choice>,
    pub output: SNodeId,
}

impl SearchGraph {
    pub fn node(&self, id: SNodeId) -> &SearchNode {
        &self.graph[id.0]
    }

    pub fn origin(&self, id: SNodeId) -> &Origin {
        &self.origins[id.0.index()]
    }

    pub fn choice(&self, id: ChoiceId) -> &Choice {
        &self.choices[id.0 as usize]
    }

    /// Inputs of a node in argument order.
    pub fn inputs(&self, id: SNodeId) -> Vec<SNodeId> {
        ordered_inputs(&self.graph, id.0)
            .into_iter()
            .map(SNodeId)
            .collect()
    }

    /// Number of layer nodes (not counting the input and selects).
    pub fn layer_count(&self) -> usize {
        self.order
            .iter()
            .filter(|id| matches!(&self.node(**id).op, SearchOp::Layer(op) if !matches!(op, Op::Input { .. })))
            .count()
    }

    /// Text dump of the graph: one line a node, then the choice table.
    pub fn dump(&self, sources: &mnet_grammar::Sources) -> String {
        let mut out = format!(
            "network {} ({}: i8{:?})\n",
            self.info.name, self.info.input_name, self.info.input_shape
        );
        for &id in &self.order {
            let node = self.node(id);
            let inputs: Vec<String> = self.inputs(id).iter().map(|i| i.to_string()).collect();
            let what = match &node.op {
                SearchOp::Layer(op) => {
                    let mut s = format!("{}({})", op.name(), inputs.join(", "));
                    let attrs = op.attrs();
                    let bound: Vec<(Slot, ChoiceId)> = node.bindings.clone();
                    let attrs: Vec<String> = attrs
                        .into_iter()
                        .map(|(slot, v)| match bound.iter().find(|(s, _)| *s == slot) {
                            Some((_, c)) => format!("{}={}", slot.name(), c),
                            None => format!("{}={}", slot.name(), v),
                        })
                        .collect();
                    if !attrs.is_empty() {
                        s.push(' ');
                        s.push_str(&attrs.join(" "));
                    }
                    s
                }
                SearchOp::Select { choice, kind } => {
                    let k = match kind {
                        SelectKind::Branch => "branch".to_string(),
                        SelectKind::Skip { pool: None } => "skip".to_string(),
                        SelectKind::Skip { pool: Some(p) } => {
                            format!("skip pool={}x{}", p[0], p[1])
                        }
                        SelectKind::Depth => "depth".to_string(),
                    };
                    format!("select {k} {choice} [{}]", inputs.join(", "))
                }
            };
            let guard = if node.guard.is_empty() {
                String::new()
            } else {
                let conds: Vec<String> = node
                    .guard
                    .iter()
                    .map(|c| {
                        let ch = self.choice(c.choice);
                        let opts: Vec<String> = (0..ch.options())
                            .filter(|o| c.mask & (1 << o) != 0)
                            .map(|o| ch.option_label(o))
                            .collect();
                        format!("{}∈{{{}}}", c.choice, opts.join(","))
                    })
                    .collect();
                format!("  if {}", conds.join(" & "))
            };
            out.push_str(&format!(
                "  {} = {}{}  ; {} @ {}\n",
                id,
                what,
                guard,
                node.name,
                short_location(sources, self.origin(id).span)
            ));
        }
        out.push_str(&format!("  output {}\n", self.output));
        if !self.choices.is_empty() {
            out.push_str("choices\n");
            for (i, c) in self.choices.iter().enumerate() {
                out.push_str(&format!(
                    "  c{} = {}  @ {}\n",
                    i,
                    c.describe(),
                    short_location(sources, c.span)
                ));
            }
        }
        out
    }
}

/// `file:line:col` with only the file name (stable across checkouts).
pub fn short_location(sources: &mnet_grammar::Sources, span: Span) -> String {
    let loc = sources.location(span);
    match loc.rsplit_once('/') {
        Some((_, tail)) => tail.to_string(),
        None => loc,
    }
}

fn ordered_inputs<N>(graph: &StableDiGraph<N, u32>, id: NodeIndex) -> Vec<NodeIndex> {
    let mut edges: Vec<(u32, NodeIndex)> = graph
        .edges_directed(id, Direction::Incoming)
        .map(|e| (*e.weight(), e.source()))
        .collect();
    edges.sort();
    edges.into_iter().map(|(_, n)| n).collect()
}

/// A node of a fixed network: a concrete layer and its output shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FixedNode {
    pub op: Op,
    pub shape: Vec<u32>,
    pub name: String,
    /// A batch norm or activation folded into the layer before it.
    pub fused: bool,
}

/// A network without choices, with inferred shapes. Only
/// [`resolve`](crate::analysis::resolve) builds one.
#[derive(Clone, Debug)]
pub struct FixedGraph {
    pub info: NetworkInfo,
    pub graph: StableDiGraph<FixedNode, u32>,
    /// Topological execution order.
    pub order: Vec<FNodeId>,
    pub origins: Vec<Origin>,
    pub output: FNodeId,
}

impl FixedGraph {
    pub fn node(&self, id: FNodeId) -> &FixedNode {
        &self.graph[id.0]
    }

    /// The network as it runs at inference: without its dropout layers
    /// (each reader of one reads its input). The other nodes keep their
    /// names and fusion flags, which the fusion rule already decided as if
    /// the dropouts were not there.
    pub fn without_dropout(&self) -> FixedGraph {
        let mut g = self.clone();
        let dropouts: Vec<FNodeId> = g
            .order
            .iter()
            .copied()
            .filter(|&id| matches!(g.node(id).op, Op::Dropout { .. }))
            .collect();
        for d in dropouts {
            let input = g.inputs(d)[0];
            let outs: Vec<(petgraph::graph::NodeIndex, u32)> = g
                .graph
                .edges_directed(d.0, petgraph::Direction::Outgoing)
                .map(|e| (petgraph::visit::EdgeRef::target(&e), *e.weight()))
                .collect();
            for (c, slot) in outs {
                g.graph.add_edge(input.0, c, slot);
            }
            g.graph.remove_node(d.0);
            if g.output == d {
                g.output = input;
            }
            let at = g.order.iter().position(|&x| x == d).expect("in order");
            g.order.remove(at);
            g.origins.remove(at);
        }
        g
    }

    pub fn inputs(&self, id: FNodeId) -> Vec<FNodeId> {
        ordered_inputs(&self.graph, id.0)
            .into_iter()
            .map(FNodeId)
            .collect()
    }

    /// Consumers of a node's output.
    pub fn consumers(&self, id: FNodeId) -> Vec<FNodeId> {
        let mut v: Vec<FNodeId> = self
            .graph
            .neighbors_directed(id.0, Direction::Outgoing)
            .map(FNodeId)
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Text dump: one line a node with its shape.
    pub fn dump(&self) -> String {
        let mut out = format!(
            "network {} ({}: i8{:?})\n",
            self.info.name, self.info.input_name, self.info.input_shape
        );
        for &id in &self.order {
            let node = self.node(id);
            let inputs: Vec<String> = self.inputs(id).iter().map(|i| i.to_string()).collect();
            let attrs: Vec<String> = node
                .op
                .attrs()
                .into_iter()
                .map(|(s, v)| format!("{}={}", s.name(), v))
                .collect();
            out.push_str(&format!(
                "  {} = {}({}){}{} -> {:?}\n",
                id,
                node.op.name(),
                inputs.join(", "),
                if attrs.is_empty() { "" } else { " " },
                attrs.join(" "),
                node.shape
            ));
        }
        out.push_str(&format!("  output {}\n", self.output));
        out
    }
}
