//! Resolution: one option for every choice turns a [`SearchGraph`] into a
//! [`FixedGraph`].
//!
//! `--pick min` and `--pick max` take the networks with the fewest and most
//! ops found by the exact analysis ([`crate::analysis::space`]); `--pick random:SEED`
//! draws every choice uniformly with a seeded ChaCha8 generator, so the same
//! seed gives the same network on every machine. Skipped blocks disappear
//! (or become their avg-pool shortcut), unchosen alternatives are dropped,
//! layers that then reach no output are removed (dead code), and every
//! attribute takes its option's value.

use crate::analysis::space::{
    bind_op, eval_layer, shortcut_op, Assignment, Producer, SpaceSummary, TensorInfo,
};
use crate::ir::*;
use petgraph::stable_graph::StableDiGraph;
use petgraph::Direction;
use rand::{RngExt, SeedableRng};
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

/// How to pick one network from a space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    Min,
    Max,
    Random(u64),
}

impl FromStr for Pick {
    type Err = String;
    fn from_str(s: &str) -> Result<Pick, String> {
        match s {
            "min" => Ok(Pick::Min),
            "max" => Ok(Pick::Max),
            _ => match s.strip_prefix("random:") {
                Some(seed) => seed
                    .parse::<u64>()
                    .map(Pick::Random)
                    .map_err(|_| format!("`{seed}` is not a seed; write random:42")),
                None => Err(format!(
                    "unknown pick `{s}`; expected min, max or random:SEED"
                )),
            },
        }
    }
}

impl fmt::Display for Pick {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Pick::Min => write!(f, "min"),
            Pick::Max => write!(f, "max"),
            Pick::Random(s) => write!(f, "random:{s}"),
        }
    }
}

/// The full assignment a pick stands for (choices that do not matter get
/// option 0).
pub fn assignment(g: &SearchGraph, summary: &SpaceSummary, pick: Pick) -> Vec<u16> {
    let partial: Assignment = match pick {
        Pick::Min => summary.argmin_ops.clone(),
        Pick::Max => summary.argmax_ops.clone(),
        Pick::Random(seed) => {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            g.choices
                .iter()
                .map(|c| Some(rng.random_range(0..c.options()) as u16))
                .collect()
        }
    };
    partial.into_iter().map(|o| o.unwrap_or(0)).collect()
}

/// Build the fixed network for a full assignment. Fails only if the
/// assignment reaches a shape error, which [`crate::analysis::space::analyze`] rules
/// out for every assignment of a checked space.
pub fn resolve(g: &SearchGraph, choice: &[u16]) -> Result<FixedGraph, String> {
    let mut graph: StableDiGraph<FixedNode, u32> = StableDiGraph::new();
    let mut order = Vec::new();
    let mut origins = Vec::new();
    // Search node -> fixed node holding its tensor, and that tensor.
    let mut map: HashMap<SNodeId, (FNodeId, TensorInfo)> = HashMap::new();
    let mut add = |graph: &mut StableDiGraph<FixedNode, u32>,
                   node: FixedNode,
                   inputs: &[FNodeId],
                   origin: Origin| {
        let id = FNodeId(graph.add_node(node));
        for (slot, i) in inputs.iter().enumerate() {
            graph.add_edge(i.0, id.0, slot as u32);
        }
        order.push(id);
        origins.push(origin);
        id
    };
    for &id in &g.order {
        let node = g.node(id);
        let exists = node
            .guard
            .iter()
            .all(|cond| cond.mask & (1 << choice[cond.choice.0 as usize]) != 0);
        if !exists {
            continue;
        }
        let inputs = g.inputs(id);
        let get = |n: &SNodeId| {
            map.get(n)
                .cloned()
                .ok_or_else(|| format!("internal: {} reads a missing tensor", node.name))
        };
        match &node.op {
            SearchOp::Layer(_) => {
                let op = bind_op(g, node, |c| choice[c.0 as usize] as usize);
                let ins: Vec<(FNodeId, TensorInfo)> =
                    inputs.iter().map(get).collect::<Result<_, _>>()?;
                let infos: Vec<&TensorInfo> = ins.iter().map(|(_, t)| t).collect();
                let ev = eval_layer(&op, &infos, true, None)
                    .map_err(|(m, _)| format!("{}: {m}", node.name))?;
                let fid = add(
                    &mut graph,
                    FixedNode {
                        op,
                        shape: ev.out.shape.clone(),
                        name: node.name.clone(),
                        fused: ev.fused,
                    },
                    &ins.iter().map(|(f, _)| *f).collect::<Vec<_>>(),
                    g.origin(id).clone(),
                );
                map.insert(id, (fid, ev.out));
            }
            SearchOp::Select { choice: c, kind } => {
                let o = choice[c.0 as usize] as usize;
                let picked = match kind {
                    SelectKind::Branch | SelectKind::Depth => get(&inputs[o])?,
                    SelectKind::Skip { pool } => {
                        if o == 1 {
                            get(&inputs[1])?
                        } else {
                            let (fid, info) = get(&inputs[0])?;
                            match pool {
                                None => (fid, info),
                                Some(p) => {
                                    let op = shortcut_op(*p);
                                    let ev = eval_layer(&op, &[&info], true, None)
                                        .map_err(|(m, _)| format!("{}: {m}", node.name))?;
                                    let pid = add(
                                        &mut graph,
                                        FixedNode {
                                            op,
                                            shape: ev.out.shape.clone(),
                                            name: node.name.replace("select", "shortcut"),
                                            fused: false,
                                        },
                                        &[fid],
                                        g.origin(id).clone(),
                                    );
                                    (pid, ev.out)
                                }
                            }
                        }
                    }
                };
                map.insert(id, picked);
            }
        }
    }
    let output = map
        .get(&g.output)
        .map(|(f, _)| *f)
        .ok_or("internal: the output does not exist")?;
    // Dead code: a layer whose value no chosen path takes to the output
    // (`y = conv2d(x); x = skippable add(x, y)` with the add skipped) is not
    // part of the network; the space analysis counts it the same way.
    let mut live = vec![false; graph.node_count()];
    let mut stack = vec![output];
    while let Some(id) = stack.pop() {
        if !std::mem::replace(&mut live[id.0.index()], true) {
            stack.extend(
                graph
                    .neighbors_directed(id.0, Direction::Incoming)
                    .map(FNodeId),
            );
        }
    }
    live[order[0].0.index()] = true;
    let (mut kept_order, mut kept_origins) = (Vec::new(), Vec::new());
    for (id, origin) in order.into_iter().zip(origins) {
        if live[id.0.index()] {
            kept_order.push(id);
            kept_origins.push(origin);
        } else {
            graph.remove_node(id.0);
        }
    }
    let (order, origins) = (kept_order, kept_origins);
    let mut fixed = FixedGraph {
        info: g.info.clone(),
        graph,
        order,
        origins,
        output,
    };
    mark_fusion(&mut fixed)?;
    Ok(fixed)
}

/// Set every node's `fused` flag by the one fusion rule
/// ([`crate::ops::fusion::fuse`]): a layer is its input's sole reader when
/// no other node reads that input and it is not the network's output.
pub fn mark_fusion(g: &mut FixedGraph) -> Result<(), String> {
    // A dropout is not in the int8 network: a reader of it reads its input
    // (and it is the output when it is).
    fn through(g: &FixedGraph, mut i: FNodeId) -> FNodeId {
        while is_dropout(g, i) {
            i = g.inputs(i)[0];
        }
        i
    }
    fn is_dropout(g: &FixedGraph, i: FNodeId) -> bool {
        g.node(i).op.fusion_class() == crate::ops::FusionClass::Identity
    }
    fn readers(g: &FixedGraph, i: FNodeId) -> usize {
        g.consumers(i)
            .iter()
            .map(|&c| if is_dropout(g, c) { readers(g, c) } else { 1 })
            .sum::<usize>()
            + usize::from(i == g.output)
    }
    let mut producer: HashMap<FNodeId, Producer> = HashMap::new();
    for id in g.order.clone() {
        let input = g.inputs(id).first().map(|&i| through(g, i));
        let from = input.map_or(Producer::Closed, |i| producer[&i]);
        let sole = input.is_some_and(|i| readers(g, i) == 1);
        let node = &mut g.graph[id.0];
        let (fused, out) = crate::ops::fusion::fuse(&node.op, from, sole)
            .map_err(|e| format!("{}: {}", node.name, e.message))?;
        node.fused = fused;
        producer.insert(id, out);
    }
    Ok(())
}
