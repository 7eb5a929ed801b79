//! The static memory plan of an int8 network: where each activation lives in
//! one arena, and for how long.
//!
//! Liveness runs over the execution order. Unlike TFLM's planner, the plan
//! knows what the generated code does: the network input is read from the
//! caller's buffer and the output written straight to the caller's buffer
//! (neither takes arena space), a reshape is an alias of its input, and an
//! elementwise add writes over an input that dies there. Buffers are placed
//! greedily, largest first, at the lowest offset that does not overlap a
//! buffer live at the same time; every offset is 16-byte aligned.
//! [`check`] is an independent checker: it recomputes every tensor's live
//! range from the graph and verifies that no two simultaneously live tensors
//! overlap in memory.

use crate::quant::{LKind, Lowered};

/// Where a tensor lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// The caller's input buffer.
    Input,
    /// The caller's output buffer.
    Output,
    /// `[offset, offset + size)` in the arena.
    Arena { offset: usize },
}

/// The plan: one place per lowered node, the arena size, live ranges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryPlan {
    pub places: Vec<Place>,
    /// Bytes of each node's output.
    pub sizes: Vec<usize>,
    /// `[first, last]` step of each buffer root's life (node indices).
    pub live: Vec<(usize, usize)>,
    /// Node whose buffer a node's output shares (itself if none).
    pub root: Vec<usize>,
    pub arena_size: usize,
}

fn elems(shape: &[u32]) -> usize {
    shape.iter().map(|&d| d as usize).product()
}

fn align16(v: usize) -> usize {
    v.div_ceil(16) * 16
}

/// Last step at which each node's output is read (the output: the end).
fn last_uses(l: &Lowered) -> Vec<usize> {
    let mut last: Vec<usize> = (0..l.nodes.len()).collect();
    for (i, n) in l.nodes.iter().enumerate() {
        for &j in &n.inputs {
            last[j] = last[j].max(i);
        }
    }
    last[l.output] = l.nodes.len();
    last
}

/// Plan the memory of a lowered network.
pub fn plan(l: &Lowered) -> MemoryPlan {
    let n = l.nodes.len();
    let sizes: Vec<usize> = l.nodes.iter().map(|x| elems(&x.shape)).collect();
    let last = last_uses(l);
    // Buffer sharing: reshape aliases its input; add writes over a dying
    // input held in the arena.
    let mut root: Vec<usize> = (0..n).collect();
    for (i, node) in l.nodes.iter().enumerate() {
        match node.kind {
            LKind::Reshape => root[i] = root[node.inputs[0]],
            LKind::Add => {
                for &j in &node.inputs {
                    let r = root[j];
                    let shared_later = (0..n).any(|k| k != j && root[k] == r && last[k] > i);
                    if last[j] == i && r != 0 && !shared_later && sizes[j] == sizes[i] {
                        root[i] = r;
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    // The output's buffer is the caller's: whatever shares its root must not
    // be live... the output root is placed in the caller's buffer only when
    // the output does not share a root with anything else.
    let out_root = root[l.output];
    let out_exclusive = (0..n).all(|k| root[k] != out_root || k == l.output) && out_root != 0;
    let mut live = vec![(usize::MAX, 0usize); n];
    for i in 0..n {
        let r = root[i];
        live[r].0 = live[r].0.min(i);
        live[r].1 = live[r].1.max(last[i]);
    }
    let mut places = vec![Place::Arena { offset: 0 }; n];
    // Place arena roots: largest first, lowest non-conflicting offset.
    let mut roots: Vec<usize> = (0..n)
        .filter(|&i| root[i] == i && i != 0 && !(i == out_root && out_exclusive))
        .collect();
    roots.sort_by(|a, b| sizes[*b].cmp(&sizes[*a]).then(a.cmp(b)));
    let mut placed: Vec<(usize, usize, usize)> = Vec::new(); // (offset, size, root)
    let mut arena_size = 0;
    for &r in &roots {
        let size = align16(sizes[r]);
        let mut conflicts: Vec<(usize, usize)> = placed
            .iter()
            .filter(|(_, _, o)| live[*o].0 <= live[r].1 && live[r].0 <= live[*o].1)
            .map(|(off, sz, _)| (*off, *sz))
            .collect();
        conflicts.sort();
        let mut offset = 0;
        for (off, sz) in conflicts {
            if off >= offset + size {
                break;
            }
            offset = offset.max(off + sz);
        }
        placed.push((offset, size, r));
        arena_size = arena_size.max(offset + size);
        places[r] = Place::Arena { offset };
    }
    for i in 0..n {
        let r = root[i];
        places[i] = if r == 0 {
            Place::Input
        } else if r == out_root && out_exclusive {
            Place::Output
        } else {
            places[r]
        };
    }
    MemoryPlan {
        places,
        sizes,
        live,
        root,
        arena_size,
    }
}

/// Check a plan independently of how it was made, by simulating the
/// execution order: when node `i` writes its output, (1) its output may
/// overlap one of its own inputs only if it is a reshape (same bytes) or an
/// elementwise add writing exactly over that input, and (2) it must not
/// overlap any other tensor still needed after step `i` unless both hold the
/// same value (reshape aliases). The caller's input and output buffers are
/// two more memories, disjoint from the arena.
pub fn check(l: &Lowered, p: &MemoryPlan) -> Result<(), String> {
    let n = l.nodes.len();
    let last = last_uses(l);
    // Value identity: a reshape holds its input's bytes.
    let mut value: Vec<usize> = (0..n).collect();
    for (i, node) in l.nodes.iter().enumerate() {
        if node.kind == LKind::Reshape {
            value[i] = value[node.inputs[0]];
        }
    }
    // (memory, start, end) of a tensor; memory 0 arena, 1 input, 2 output.
    let span = |i: usize| -> (u8, usize, usize) {
        let size = elems(&l.nodes[i].shape);
        match p.places[i] {
            Place::Arena { offset } => (0, offset, offset + size),
            Place::Input => (1, 0, size),
            Place::Output => (2, 0, size),
        }
    };
    let overlap =
        |a: (u8, usize, usize), b: (u8, usize, usize)| a.0 == b.0 && a.1 < b.2 && b.1 < a.2;
    if span(0).0 != 1 {
        return Err("the network input must be read from the caller's buffer".into());
    }
    for (i, &v) in value.iter().enumerate() {
        let (mem, start, end) = span(i);
        if mem == 0 && (start % 16 != 0 || end > p.arena_size) {
            return Err(format!(
                "{} at [{start}, {end}) is misaligned or outside the arena of {}",
                l.nodes[i].name, p.arena_size
            ));
        }
        if mem == 1 && v != 0 {
            return Err(format!(
                "{} writes into the caller's input buffer",
                l.nodes[i].name
            ));
        }
    }
    if span(l.output).0 == 0 && (0..n).any(|k| span(k).0 == 2) {
        return Err(
            "the output lives in the arena but something writes the caller's output buffer".into(),
        );
    }
    for i in 1..n {
        let node = &l.nodes[i];
        let out = span(i);
        for &j in &node.inputs {
            if overlap(out, span(j)) {
                let same_bytes = out == span(j);
                let ok = match node.kind {
                    LKind::Reshape => same_bytes,
                    LKind::Add => same_bytes && last[j] == i,
                    _ => false,
                };
                if !ok {
                    return Err(format!(
                        "{} overwrites its input {} while reading it",
                        node.name, l.nodes[j].name
                    ));
                }
            }
        }
        for j in 0..i {
            if last[j] > i && value[j] != value[i] && overlap(out, span(j)) {
                return Err(format!(
                    "{} overwrites {}, which is still needed at step {}",
                    node.name, l.nodes[j].name, last[j]
                ));
            }
        }
    }
    Ok(())
}
