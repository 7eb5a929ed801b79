//! The supernet of a search space (FBNetV2): one training-engine network
//! that holds every option of every choice at once.
//!
//! Built from the compiler's relaxed view of the space
//! ([`mnet_compiler::analysis::relax`]): every layer at its largest width;
//! a width choice multiplies the layer's output by Σᵢ gᵢ·maskᵢ (maskᵢ keeps
//! the first wᵢ channels); the categorical options a layer binds (kernel
//! sizes) are layers of their own, mixed as Σᵢ gᵢ·opᵢ(x); a select (an
//! alternative, a skip, a depth) mixes its inputs the same way, a skipped
//! block's input through its avg-pool shortcut. The gates g come from the
//! search (Gumbel-softmax samples of the architecture logits), one per
//! option in the flat order of [`Relaxed::offset`].
//!
//! Every tensor carries the probability that each of its channels exists
//! (its channel *distribution*: the width masks, passed through the layers
//! that keep channels, mixed at selects, concatenated at concats). The
//! distribution is applied again after every layer that would make an
//! absent channel non-zero (a batch norm, a biased layer without one), so
//! at one-hot gates the supernet computes exactly the chosen network with
//! its weights sliced out of the supernet's ([`Supernet::inherit`]), and
//! at soft gates a batch norm cannot normalise a mask away.

use crate::engine::{Init, Kind, Net, NetBuilder};
use mnet_compiler::analysis::relax::{Plan, Relaxed};
use mnet_compiler::analysis::space::shortcut_op;
use mnet_compiler::ir::{FixedGraph, Op, SNodeId, SearchGraph, SearchOp, SelectKind};

/// How a node's channel distribution follows from the gates.
#[derive(Clone, Debug)]
enum Dist {
    /// Every channel, always.
    Ones(usize),
    /// A searched channel count: the choice and its options' counts, out
    /// of `c`.
    Width {
        choice: usize,
        values: Vec<u32>,
        c: usize,
    },
    /// The distribution of another node.
    Same(usize),
    /// A select over nodes (one per option), out of `c` channels.
    Mix {
        choice: usize,
        inputs: Vec<usize>,
        c: usize,
    },
    /// The inputs' channels one after another.
    Concat(Vec<usize>),
    /// A flattened map: the node's distribution at each of `reps` pixels.
    Tile { node: usize, reps: usize },
}

/// What a mixing layer's weights are.
#[derive(Clone, Debug)]
enum MixOf {
    /// A select's: the gate of each option.
    Select { choice: usize },
    /// A layer's categorical options: per variant, the product of the
    /// gates of its (choice, option) pairs.
    Variants(Vec<Vec<(usize, usize)>>),
}

/// A supernet and how its gates reach its layers.
#[derive(Clone, Debug)]
pub struct Supernet {
    pub net: Net,
    pub relaxed: Relaxed,
    dists: Vec<Dist>,
    /// Per channel-mask layer: its parameter and the node whose
    /// distribution it applies.
    masks: Vec<(usize, usize)>,
    /// Per mixing layer: its parameter and what its weights are.
    mixes: Vec<(usize, MixOf)>,
    /// Per search node, its variants' parameter-name prefixes (the node's
    /// name when it has one variant).
    names: Vec<Vec<String>>,
    /// The last distributions set (per node).
    current: Vec<Vec<f32>>,
    offsets: Vec<usize>,
}

fn elems(s: &[u32]) -> usize {
    s.iter().map(|&d| d as usize).product()
}

impl Supernet {
    /// Build the supernet of `g` for a batch size, weights initialised by
    /// `init` from `seed`.
    pub fn new(g: &SearchGraph, batch: usize, seed: u64, init: Init) -> Result<Supernet, String> {
        let relaxed = Relaxed::new(g).map_err(|e| e.message)?;
        let offsets: Vec<usize> = (0..=g.choices.len())
            .map(|c| {
                if c < g.choices.len() {
                    relaxed.offset(mnet_compiler::ir::ChoiceId(c as u32))
                } else {
                    relaxed.options()
                }
            })
            .collect();
        let n = g.order.len();
        let mut b = NetBuilder::new(seed, init);
        let mut at = vec![0usize; n];
        let mut dists: Vec<Dist> = Vec::with_capacity(n);
        // Per node: its distribution is every channel, always.
        let mut full: Vec<bool> = Vec::with_capacity(n);
        let mut masks = Vec::new();
        let mut mixes = Vec::new();
        let mut names = vec![Vec::new(); n];
        let mut logits = 0;
        let shape_of = |id: usize| -> Vec<usize> {
            relaxed
                .shape(SNodeId(petgraph::stable_graph::NodeIndex::new(id)))
                .iter()
                .map(|&d| d as usize)
                .collect()
        };
        let sid = |id: usize| SNodeId(petgraph::stable_graph::NodeIndex::new(id));
        // Whether a node's only reader is a layer of this op.
        let sole_reader_is = |id: usize, f: &dyn Fn(&Op) -> bool| {
            let r = relaxed.readers(sid(id));
            r.len() == 1
                && id != g.output.0.index()
                && matches!(&g.node(sid(r[0].0)).op, SearchOp::Layer(op) if f(op))
        };
        for pos in 0..n {
            let id = sid(pos);
            let node = g.node(id);
            let ins: Vec<usize> = g.inputs(id).iter().map(|i| at[i.0.index()]).collect();
            let in_nodes: Vec<usize> = g.inputs(id).iter().map(|i| i.0.index()).collect();
            let shape = shape_of(pos);
            let c = *shape.last().unwrap_or(&1);
            let (layer, dist, zeroes) = match relaxed.plan(id) {
                Plan::Layer { variants, out } => {
                    let op0 = &variants[0].op;
                    if matches!(op0, Op::Softmax) && id == g.output && shape.len() == 1 {
                        // Folded into the loss.
                        let l = ins[0];
                        at[pos] = l;
                        logits = l;
                        dists.push(Dist::Same(in_nodes[0]));
                        full.push(full[in_nodes[0]]);
                        continue;
                    }
                    let bn_follows = sole_reader_is(pos, &|op| matches!(op, Op::BatchNorm));
                    let act_folds = matches!(op0, Op::BatchNorm)
                        && sole_reader_is(
                            pos,
                            &|op| matches!(op, Op::Act(a) if a.fused().is_some()),
                        );
                    let folded_act = matches!(op0, Op::Act(a) if a.fused().is_some())
                        && matches!(&b.layers()[ins[0]].kind, Kind::BatchNorm { act: None, .. })
                        && relaxed.readers(g.inputs(id)[0]).len() == 1;
                    let quantized = !bn_follows;
                    let mut layers = Vec::new();
                    for (k, v) in variants.iter().enumerate() {
                        let name = if variants.len() == 1 {
                            node.name.clone()
                        } else {
                            format!("{}@{k}", node.name)
                        };
                        layers.push(b.op(&v.op, &ins, shape.clone(), &name, folded_act, quantized));
                        names[pos].push(name);
                    }
                    let layer = if layers.len() == 1 {
                        layers[0]
                    } else {
                        let p = b.param(
                            format!("{}.mix", node.name),
                            vec![layers.len()],
                            vec![0.0; layers.len()],
                            false,
                        );
                        mixes.push((
                            p,
                            MixOf::Variants(variants.iter().map(|v| v.combo.clone()).collect()),
                        ));
                        b.push(
                            Kind::Mix { weights: p },
                            layers,
                            shape.clone(),
                            format!("{}.mix", node.name),
                            quantized,
                        )
                    };
                    let dist = match (out, op0) {
                        (Some((choice, values)), _) => Dist::Width {
                            choice: *choice,
                            values: values.clone(),
                            c,
                        },
                        (None, Op::Input { .. } | Op::Conv2d { .. } | Op::Dense { .. }) => {
                            Dist::Ones(c)
                        }
                        (None, Op::Concat) => Dist::Concat(in_nodes.clone()),
                        (None, Op::Flatten) => Dist::Tile {
                            node: in_nodes[0],
                            reps: c / shape_of(in_nodes[0]).last().copied().unwrap_or(1).max(1),
                        },
                        (None, Op::Reshape { .. }) => Dist::Ones(c),
                        (
                            None,
                            Op::DepthwiseConv2d { .. }
                            | Op::BatchNorm
                            | Op::Act(_)
                            | Op::Pool { .. }
                            | Op::GlobalAvgPool
                            | Op::Add
                            | Op::Pad { .. }
                            | Op::Softmax
                            | Op::Dropout { .. },
                        ) => Dist::Same(in_nodes[0]),
                    };
                    // Whether the layer's output can hold a non-zero value
                    // in an absent channel that no later layer masks.
                    let zeroes = match op0 {
                        Op::Conv2d { .. } | Op::Dense { .. } | Op::DepthwiseConv2d { .. } => {
                            bn_follows
                        }
                        Op::BatchNorm => act_folds,
                        Op::Act(a) => !folded_act && a.apply(0.0) == 0.0,
                        Op::Softmax => false,
                        Op::Reshape { .. } => true,
                        Op::Input { .. }
                        | Op::Pool { .. }
                        | Op::GlobalAvgPool
                        | Op::Add
                        | Op::Concat
                        | Op::Pad { .. }
                        | Op::Flatten
                        | Op::Dropout { .. } => true,
                    };
                    if matches!(op0, Op::Reshape { .. }) && !full[in_nodes[0]] {
                        return Err(format!(
                            "`{}` reshapes a tensor whose channel count is searched; mnet search can flatten it, not reshape it",
                            node.name
                        ));
                    }
                    (layer, dist, zeroes)
                }
                Plan::Select { choice, kind } => {
                    let mut inputs = ins.clone();
                    if let SelectKind::Skip { pool: Some(p) } = kind {
                        let s0 = shape_of(in_nodes[0]);
                        let mut ps = shape.clone();
                        *ps.last_mut().unwrap() = *s0.last().unwrap();
                        inputs[0] = b.op(
                            &shortcut_op(*p),
                            &ins[..1],
                            ps,
                            &node.name.replace("select", "shortcut"),
                            false,
                            true,
                        );
                    }
                    let p = b.param(
                        format!("{}.mix", node.name),
                        vec![inputs.len()],
                        vec![0.0; inputs.len()],
                        false,
                    );
                    mixes.push((p, MixOf::Select { choice: *choice }));
                    let layer = b.push(
                        Kind::Mix { weights: p },
                        inputs,
                        shape.clone(),
                        node.name.clone(),
                        true,
                    );
                    let dist = Dist::Mix {
                        choice: *choice,
                        inputs: in_nodes.clone(),
                        c,
                    };
                    (layer, dist, true)
                }
            };
            full.push(match &dist {
                Dist::Ones(_) => true,
                Dist::Width { values, c, .. } => values.iter().all(|&w| w as usize == *c),
                Dist::Same(i) | Dist::Tile { node: i, .. } => full[*i],
                Dist::Mix { inputs, c, .. } => inputs
                    .iter()
                    .all(|&i| full[i] && *shape_of(i).last().unwrap_or(&1) == *c),
                Dist::Concat(inputs) => inputs.iter().all(|&i| full[i]),
            });
            dists.push(dist);
            let mut out = layer;
            if !zeroes && !full[pos] {
                let p = b.param(format!("{}.mask", node.name), vec![c], vec![1.0; c], false);
                masks.push((p, pos));
                let quantized = b.layers()[layer].quantized;
                out = b.push(
                    Kind::ChannelMask { mask: p },
                    vec![layer],
                    shape.clone(),
                    format!("{}.mask", node.name),
                    quantized,
                );
            }
            at[pos] = out;
            if id == g.output {
                logits = out;
            }
        }
        let net = b.finish(logits, batch);
        let current = vec![Vec::new(); n];
        Ok(Supernet {
            net,
            relaxed,
            dists,
            masks,
            mixes,
            names,
            current,
            offsets,
        })
    }

    /// Length of the flat gate vector.
    pub fn options(&self) -> usize {
        *self.offsets.last().unwrap()
    }

    /// Set the gates (one per option, flat; each choice's should sum to 1):
    /// every channel mask and mixing weight follows.
    pub fn set_gates(&mut self, gates: &[f32]) {
        assert_eq!(gates.len(), self.options(), "one gate per option");
        let off = &self.offsets;
        let mut m: Vec<Vec<f32>> = Vec::with_capacity(self.dists.len());
        for d in &self.dists {
            let v = match d {
                Dist::Ones(c) => vec![1.0; *c],
                Dist::Width { choice, values, c } => {
                    let mut v = vec![0.0; *c];
                    for (o, &w) in values.iter().enumerate() {
                        let gate = gates[off[*choice] + o];
                        v[..w as usize].iter_mut().for_each(|x| *x += gate);
                    }
                    v
                }
                Dist::Same(n) => m[*n].clone(),
                Dist::Mix { choice, inputs, c } => {
                    let mut v = vec![0.0; *c];
                    for (o, &i) in inputs.iter().enumerate() {
                        let gate = gates[off[*choice] + o];
                        v.iter_mut().zip(&m[i]).for_each(|(x, y)| *x += gate * y);
                    }
                    v
                }
                Dist::Concat(inputs) => inputs.iter().flat_map(|&i| m[i].clone()).collect(),
                Dist::Tile { node, reps } => {
                    let one = &m[*node];
                    (0..*reps).flat_map(|_| one.iter().copied()).collect()
                }
            };
            m.push(v);
        }
        for &(p, node) in &self.masks {
            self.net.params[p].value.copy_from_slice(&m[node]);
        }
        for (p, of) in &self.mixes {
            let w = &mut self.net.params[*p].value;
            match of {
                MixOf::Select { choice } => {
                    for (o, x) in w.iter_mut().enumerate() {
                        *x = gates[off[*choice] + o];
                    }
                }
                MixOf::Variants(combos) => {
                    for (x, combo) in w.iter_mut().zip(combos) {
                        *x = combo.iter().map(|&(c, o)| gates[off[c] + o]).product();
                    }
                }
            }
        }
        self.current = m;
    }

    /// The gradient of the loss with respect to every gate, from the
    /// gradients the last backward pass left on the masks and mixing
    /// weights (which are then cleared, so no weight optimizer moves them).
    pub fn gate_grads(&mut self, gates: &[f32]) -> Vec<f32> {
        let off = &self.offsets;
        let mut dg = vec![0.0f32; self.options()];
        let mut dm: Vec<Vec<f32>> = self.current.iter().map(|v| vec![0.0; v.len()]).collect();
        for &(p, node) in &self.masks {
            let g = &mut self.net.params[p].grad;
            dm[node].iter_mut().zip(g.iter()).for_each(|(a, b)| *a += b);
            g.iter_mut().for_each(|x| *x = 0.0);
        }
        for (p, of) in &self.mixes {
            let prm = &mut self.net.params[*p];
            match of {
                MixOf::Select { choice } => {
                    for (o, g) in prm.grad.iter().enumerate() {
                        dg[off[*choice] + o] += g;
                    }
                }
                MixOf::Variants(combos) => {
                    for (g, combo) in prm.grad.iter().zip(combos) {
                        for (k, &(c, o)) in combo.iter().enumerate() {
                            let others: f32 = combo
                                .iter()
                                .enumerate()
                                .filter(|(j, _)| *j != k)
                                .map(|(_, &(c2, o2))| gates[off[c2] + o2])
                                .product();
                            dg[off[c] + o] += g * others;
                        }
                    }
                }
            }
            prm.grad.iter_mut().for_each(|x| *x = 0.0);
        }
        for n in (0..self.dists.len()).rev() {
            let d = std::mem::take(&mut dm[n]);
            match &self.dists[n] {
                Dist::Ones(_) => {}
                Dist::Width { choice, values, .. } => {
                    for (o, &w) in values.iter().enumerate() {
                        dg[off[*choice] + o] += d[..w as usize].iter().sum::<f32>();
                    }
                }
                Dist::Same(i) => dm[*i].iter_mut().zip(&d).for_each(|(a, b)| *a += b),
                Dist::Mix { choice, inputs, .. } => {
                    for (o, &i) in inputs.iter().enumerate() {
                        let gate = gates[off[*choice] + o];
                        let mi = &self.current[i];
                        dg[off[*choice] + o] += mi.iter().zip(&d).map(|(a, b)| a * b).sum::<f32>();
                        dm[i].iter_mut().zip(&d).for_each(|(a, b)| *a += gate * b);
                    }
                }
                Dist::Concat(inputs) => {
                    let mut at = 0;
                    for &i in inputs {
                        let k = dm[i].len();
                        dm[i]
                            .iter_mut()
                            .zip(&d[at..at + k])
                            .for_each(|(a, b)| *a += b);
                        at += k;
                    }
                }
                Dist::Tile { node, .. } => {
                    let k = dm[*node].len();
                    for chunk in d.chunks_exact(k) {
                        dm[*node].iter_mut().zip(chunk).for_each(|(a, b)| *a += b);
                    }
                }
            }
        }
        dg
    }

    /// Per search node, the supernet channels that are the chosen
    /// network's channels under `assignment`, in order.
    fn channel_maps(&self, assignment: &[u16]) -> Vec<Vec<usize>> {
        let mut maps: Vec<Vec<usize>> = Vec::with_capacity(self.dists.len());
        for d in &self.dists {
            let v = match d {
                Dist::Ones(c) => (0..*c).collect(),
                Dist::Width { choice, values, .. } => {
                    (0..values[assignment[*choice] as usize] as usize).collect()
                }
                Dist::Same(n) => maps[*n].clone(),
                Dist::Mix { choice, inputs, .. } => {
                    maps[inputs[assignment[*choice] as usize]].clone()
                }
                Dist::Concat(inputs) => {
                    let mut v = Vec::new();
                    let mut at = 0;
                    for &i in inputs {
                        v.extend(maps[i].iter().map(|&c| at + c));
                        at += self.channels_of(i);
                    }
                    v
                }
                Dist::Tile { node, reps } => {
                    let c = self.channels_of(*node);
                    (0..*reps)
                        .flat_map(|r| maps[*node].iter().map(move |&k| r * c + k))
                        .collect()
                }
            };
            maps.push(v);
        }
        maps
    }

    /// The supernet channel count of a node.
    fn channels_of(&self, node: usize) -> usize {
        let s = self
            .relaxed
            .shape(SNodeId(petgraph::stable_graph::NodeIndex::new(node)));
        *s.last().unwrap_or(&1) as usize
    }

    /// Copy the supernet's weights of the network `assignment` picks into
    /// `fixed_net`, the engine network of `fixed` (its resolution): every
    /// parameter by name, sliced to the chosen channels (and the chosen
    /// variant of a layer with categorical options).
    pub fn inherit(
        &self,
        g: &SearchGraph,
        assignment: &[u16],
        fixed: &FixedGraph,
        fixed_net: &mut Net,
    ) -> Result<(), String> {
        let maps = self.channel_maps(assignment);
        let by_name: std::collections::HashMap<&str, usize> = g
            .order
            .iter()
            .map(|id| (g.node(*id).name.as_str(), id.0.index()))
            .collect();
        let super_params: std::collections::HashMap<&str, usize> = self
            .net
            .params
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.as_str(), i))
            .collect();
        let fixed_nodes: std::collections::HashMap<&str, mnet_compiler::ir::FNodeId> = fixed
            .order
            .iter()
            .map(|id| (fixed.node(*id).name.as_str(), *id))
            .collect();
        for p in &mut fixed_net.params {
            let (layer, field) = p
                .name
                .rsplit_once('.')
                .ok_or_else(|| format!("internal: parameter `{}`", p.name))?;
            let &node = by_name
                .get(layer)
                .ok_or_else(|| format!("internal: no search node `{layer}`"))?;
            let variant = match self
                .relaxed
                .plan(SNodeId(petgraph::stable_graph::NodeIndex::new(node)))
            {
                Plan::Layer { variants, .. } => variants
                    .iter()
                    .position(|v| v.combo.iter().all(|&(c, o)| assignment[c] as usize == o))
                    .ok_or_else(|| format!("internal: no variant of `{layer}`"))?,
                Plan::Select { .. } => 0,
            };
            let sname = format!("{}.{field}", self.names[node][variant]);
            let &sp = super_params
                .get(sname.as_str())
                .ok_or_else(|| format!("internal: no supernet parameter `{sname}`"))?;
            let src = &self.net.params[sp];
            let out_map = &maps[node];
            let fid = fixed_nodes[layer];
            let in_map: Vec<usize> = match fixed.inputs(fid).first() {
                Some(&i) => {
                    // A skipped block's shortcut keeps its select's channels.
                    let name = &fixed.node(i).name;
                    let sn = by_name
                        .get(name.as_str())
                        .or_else(|| by_name.get(name.replace("shortcut", "select").as_str()))
                        .copied()
                        .ok_or_else(|| format!("internal: no search node `{name}`"))?;
                    // A dense layer reads a map flattened.
                    let fs = &fixed.node(i).shape;
                    let ss = self
                        .relaxed
                        .shape(SNodeId(petgraph::stable_graph::NodeIndex::new(sn)));
                    let (fc, sc) = (*fs.last().unwrap() as usize, *ss.last().unwrap() as usize);
                    let pixels = elems(fs) / fc.max(1);
                    (0..pixels)
                        .flat_map(|r| maps[sn].iter().map(move |&k| r * sc + k))
                        .collect()
                }
                None => Vec::new(),
            };
            p.value = match (field, src.shape.len()) {
                ("weight", 4)
                    if src.shape[0] == 1
                        && p.shape[0] == 1
                        && matches!(fixed.node(fid).op, Op::DepthwiseConv2d { .. }) =>
                {
                    // [1, kh, kw, c]
                    let taps = src.shape[1] * src.shape[2];
                    let sc = src.shape[3];
                    (0..taps)
                        .flat_map(|t| out_map.iter().map(move |&c| src.value[t * sc + c]))
                        .collect()
                }
                ("weight", 4) => {
                    // [cout, kh, kw, cin]
                    let (taps, sc) = (src.shape[1] * src.shape[2], src.shape[3]);
                    let cin: Vec<usize> = in_map[..p.shape[3]].to_vec();
                    out_map
                        .iter()
                        .flat_map(|&o| {
                            let cin = &cin;
                            (0..taps).flat_map(move |t| {
                                cin.iter().map(move |&i| src.value[(o * taps + t) * sc + i])
                            })
                        })
                        .collect()
                }
                ("weight", 2) => {
                    // [cout, k]
                    let k = src.shape[1];
                    out_map
                        .iter()
                        .flat_map(|&o| in_map.iter().map(move |&i| src.value[o * k + i]))
                        .collect()
                }
                _ => out_map.iter().map(|&c| src.value[c]).collect(),
            };
            if p.value.len() != p.shape.iter().product::<usize>() {
                return Err(format!(
                    "internal: `{}` sliced to {} values for shape {:?}",
                    p.name,
                    p.value.len(),
                    p.shape
                ));
            }
        }
        Ok(())
    }
}
