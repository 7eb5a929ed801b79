//! The execution order of a lowered network: as written, or a greedy order
//! that frees memory early where branches meet, whichever the memory plan
//! ([`crate::plan`]) lays out in the smaller arena.

use super::Lowered;
use crate::plan::plan;

fn elems(shape: &[u32]) -> usize {
    shape.iter().map(|&d| d as usize).product()
}

/// Choose the execution order: the given topological order, or a greedy
/// one that at each step runs the ready layer that frees the most memory
/// (bytes of inputs it reads last, minus its output), whichever plans to the
/// smaller arena. For a chain both are the same; where branches meet (a
/// concat of parallel convs, say) the order decides which tensors are alive
/// together.
pub fn schedule(l: Lowered) -> Lowered {
    let greedy = greedy_order(&l);
    if greedy.iter().enumerate().all(|(k, &i)| k == i) {
        return l;
    }
    let candidate = reorder(&l, &greedy);
    if plan(&candidate).arena_size < plan(&l).arena_size {
        candidate
    } else {
        l
    }
}

fn greedy_order(l: &Lowered) -> Vec<usize> {
    let n = l.nodes.len();
    let mut readers = vec![0usize; n];
    for node in &l.nodes {
        for &j in &node.inputs {
            readers[j] += 1;
        }
    }
    let mut remaining = readers.clone();
    let mut done = vec![false; n];
    let mut order = vec![0];
    done[0] = true;
    for _ in 1..n {
        let mut best: Option<(i64, usize)> = None;
        for i in 1..n {
            if done[i] || !l.nodes[i].inputs.iter().all(|&j| done[j]) {
                continue;
            }
            let freed: i64 = l.nodes[i]
                .inputs
                .iter()
                .filter(|&&j| remaining[j] == l.nodes[i].inputs.iter().filter(|&&k| k == j).count())
                .map(|&j| elems(&l.nodes[j].shape) as i64)
                .sum();
            let gain = freed - elems(&l.nodes[i].shape) as i64;
            if best.is_none_or(|(g, _)| gain > g) {
                best = Some((gain, i));
            }
        }
        let (_, i) = best.expect("a DAG always has a ready node");
        done[i] = true;
        for &j in &l.nodes[i].inputs {
            remaining[j] -= 1;
        }
        order.push(i);
    }
    order
}

/// The network with its nodes in `order` (old indices), inputs renumbered.
fn reorder(l: &Lowered, order: &[usize]) -> Lowered {
    let mut new_index = vec![0usize; order.len()];
    for (k, &old) in order.iter().enumerate() {
        new_index[old] = k;
    }
    let nodes = order
        .iter()
        .map(|&old| {
            let mut node = l.nodes[old].clone();
            node.inputs = node.inputs.iter().map(|&j| new_index[j]).collect();
            node
        })
        .collect();
    Lowered {
        name: l.name.clone(),
        nodes,
        output: new_index[l.output],
    }
}
