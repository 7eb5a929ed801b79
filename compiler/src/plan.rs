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

use crate::lower::{LKind, Lowered};

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
    /// `[first, last]` steps of each tensor's life (node indices; the
    /// output lives to the end, step `nodes.len()`).
    pub life: Vec<(usize, usize)>,
    /// Node whose buffer a node's output shares (itself if none).
    pub root: Vec<usize>,
    /// Scratch of a node computed in place: (arena offset, bytes).
    pub scratch: Vec<Option<(usize, usize)>>,
    /// A conv fused into the depthwise conv that reads it (`fused[c] =
    /// Some(d)`): the conv's rows are computed on demand into a ring of
    /// [`ring_rows`] rows while `d` runs, so its whole output never exists.
    pub fused: Vec<Option<usize>>,
    pub arena_size: usize,
}

/// How a node may write over its dying input, and the scratch it then needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InPlace {
    /// Elementwise: no scratch.
    Elementwise,
    /// Depthwise conv channel by channel (TinyEngine): one input plane of
    /// scratch (with the padding all round); output channel c only lands
    /// on input channel c's slots.
    DepthwisePlanes { plane: usize },
    /// 1x1 conv pixel by pixel: one input pixel of scratch. With
    /// `cout <= cin` pixels go forwards (output pixel p ends before input
    /// pixel p + 1 starts); with `cout > cin` backwards (output pixel p
    /// starts after input pixel p - 1 ends).
    PointwisePixels { pixel: usize, backwards: bool },
}

/// Whether node `i` can compute in place over its input `j`.
pub fn in_place_kind(l: &Lowered, i: usize, j: usize) -> Option<InPlace> {
    let n = &l.nodes[i];
    let input = &l.nodes[j].shape;
    match n.kind {
        LKind::Add | LKind::Act(_) | LKind::Requantize => Some(InPlace::Elementwise),
        // The plane padded all round (the DSP kernels read every window
        // without bounds checks).
        LKind::Depthwise { window } if n.inputs[0] == j => Some(InPlace::DepthwisePlanes {
            plane: {
                let [h, w] = window.over([input[0], input[1]]).padded();
                (h * w) as usize
            },
        }),
        LKind::Conv { window, out }
            if window.kernel == [1, 1]
                && window.stride == [1, 1]
                && n.inputs[0] == j
                && input.len() == 3 =>
        {
            Some(InPlace::PointwisePixels {
                pixel: input[2] as usize,
                backwards: out > input[2],
            })
        }
        LKind::Conv { .. }
        | LKind::Depthwise { .. }
        | LKind::Input
        | LKind::Pool { .. }
        | LKind::Concat
        | LKind::Pad { .. }
        | LKind::Reshape
        | LKind::Softmax
        | LKind::Mean => None,
    }
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

/// Convs that can stream into the depthwise conv after them: the conv's only
/// reader is that depthwise conv, and neither is the network's output.
pub fn fusions(l: &Lowered) -> Vec<Option<usize>> {
    let last = last_uses(l);
    let mut readers = vec![0usize; l.nodes.len()];
    for n in &l.nodes {
        for &j in &n.inputs {
            readers[j] += 1;
        }
    }
    let mut fused = vec![None; l.nodes.len()];
    for (d, node) in l.nodes.iter().enumerate() {
        if let LKind::Depthwise { .. } = node.kind {
            let c = node.inputs[0];
            if matches!(l.nodes[c].kind, LKind::Conv { .. })
                && c != l.output
                && last[c] == d
                && readers[c] == 1
            {
                fused[c] = Some(d);
            }
        }
    }
    fused
}

/// Whether the depthwise conv `d`, with the conv `c` streamed into it, may
/// write its output over the conv's input from the same offset: `c` is a
/// 1x1 conv of stride 1 (conv row n reads input row n alone) and, by the
/// order the fused step runs in — conv rows up to the one the window of
/// output row `oy` needs, then output row `oy` — every output row lands
/// on input bytes no conv row still to come reads: `(oy + 1)` output rows
/// end at or before the first unread input row, for every `oy` after which
/// conv rows remain.
pub fn streams_over(l: &Lowered, c: usize, d: usize) -> bool {
    let (conv, depth) = (&l.nodes[c], &l.nodes[d]);
    let (LKind::Conv { window: cw, .. }, LKind::Depthwise { window: dw }) =
        (&conv.kind, &depth.kind)
    else {
        return false;
    };
    if cw.kernel != [1, 1] || cw.stride != [1, 1] || conv.inputs.len() != 1 {
        return false;
    }
    let x = &l.nodes[conv.inputs[0]].shape;
    if x.len() != 3 || conv.shape.len() != 3 || depth.shape.len() != 3 {
        return false;
    }
    let x_row = (x[1] * x[2]) as u64;
    let y_row = (depth.shape[1] * depth.shape[2]) as u64;
    let hc = conv.shape[0] as i64;
    let place = dw.over([conv.shape[0], conv.shape[1]]);
    let (pad, k, s) = (
        place.pad[0] as i64,
        dw.kernel[0] as i64,
        dw.stride[0] as i64,
    );
    (0..place.out[0] as i64).all(|oy| {
        let need = (oy * s - pad + k - 1).min(hc - 1);
        need >= hc - 1 || (oy as u64 + 1) * y_row <= (need as u64 + 1) * x_row
    })
}

/// Rows of a fused conv's output the ring holds: the depthwise kernel height
/// (at most the conv's output height).
pub fn ring_rows(l: &Lowered, c: usize, d: usize) -> usize {
    let LKind::Depthwise { window } = l.nodes[d].kind else {
        unreachable!("fused into a depthwise conv")
    };
    (window.kernel[0] as usize).min(l.nodes[c].shape[0] as usize)
}

/// Bytes each node's output occupies in memory: a fused conv's ring, else
/// the whole tensor.
fn footprints(l: &Lowered, fused: &[Option<usize>]) -> Vec<usize> {
    l.nodes
        .iter()
        .enumerate()
        .map(|(i, x)| match fused[i] {
            Some(d) => ring_rows(l, i, d) * (x.shape[1] * x.shape[2]) as usize,
            None => elems(&x.shape),
        })
        .collect()
}

/// Last step each tensor is read, with a fused conv's input read until its
/// depthwise conv finishes.
fn last_uses_fused(l: &Lowered, fused: &[Option<usize>]) -> Vec<usize> {
    let mut last = last_uses(l);
    for (c, f) in fused.iter().enumerate() {
        if let Some(d) = f {
            for &x in &l.nodes[c].inputs {
                last[x] = last[x].max(*d);
            }
        }
    }
    last
}

/// Buffers placed together: tensors sharing bytes, or a scratch buffer.
struct Group {
    /// (bytes, first step, last step) of each member.
    members: Vec<(usize, usize, usize)>,
    /// Its index in the offsets [`place`] returns.
    id: usize,
}

/// Place groups largest first, each at the lowest 16-aligned offset where
/// none of its members overlaps a placed tensor alive at the same time.
/// Returns the offset of each group id (of `ids` slots) and the arena size.
fn place(mut groups: Vec<Group>, ids: usize) -> (Vec<usize>, usize) {
    let biggest = |g: &Group| g.members.iter().map(|m| m.0).max().unwrap_or(0);
    groups.sort_by(|a, b| biggest(b).cmp(&biggest(a)).then(a.id.cmp(&b.id)));
    let mut placed: Vec<(usize, usize, usize, usize)> = Vec::new(); // (offset, size, first, last)
    let mut offsets = vec![0usize; ids];
    let mut arena_size = 0;
    for g in &groups {
        // Offsets o that would collide: o in (off - size + 1, off + psize - 1).
        let mut forbidden: Vec<(usize, usize)> = Vec::new(); // [lo, hi)
        for &(size, first, last_step) in &g.members {
            for &(off, psize, f, la) in &placed {
                if f <= last_step && first <= la {
                    forbidden.push(((off + 1).saturating_sub(size), off + psize));
                }
            }
        }
        forbidden.sort();
        let mut offset = 0;
        for (lo, hi) in forbidden {
            if offset < lo {
                break;
            }
            offset = offset.max(align16(hi));
        }
        for &(size, first, last_step) in &g.members {
            placed.push((offset, size, first, last_step));
            arena_size = arena_size.max(offset + size);
        }
        offsets[g.id] = offset;
    }
    (offsets, arena_size)
}

/// A plan TensorFlow Lite Micro's kernels can run, for the `.tflite`'s
/// `OfflineMemoryAllocation` metadata: TFLM's lifetimes (an operator's
/// inputs and outputs are alive together, so nothing runs in place and no
/// conv streams into a ring), every tensor in the arena (the input and
/// output too: TFLM keeps them there), a reshape on its input's bytes
/// (TFLM's RESHAPE skips its copy when the two coincide), and an
/// elementwise op (ADD, a lone activation, QUANTIZE) over an input of its
/// size that dies there (TFLM's kernels, reference and CMSIS-NN, read each
/// element, or block of four, before they write it). Not the depthwise and
/// 1x1 convs in place, nor the rings, of mnet's own plan: TFLM's kernels
/// would overwrite inputs they still read. Returns each node's arena offset
/// and the arena size.
pub fn tflm_offsets(l: &Lowered) -> (Vec<usize>, usize) {
    let n = l.nodes.len();
    let mut last: Vec<usize> = (0..n).collect();
    for (i, node) in l.nodes.iter().enumerate() {
        for &j in &node.inputs {
            last[j] = last[j].max(i);
        }
    }
    last[l.output] = n;
    let mut root: Vec<usize> = (0..n).collect();
    for (i, node) in l.nodes.iter().enumerate() {
        if node.kind == LKind::Reshape {
            root[i] = root[node.inputs[0]];
            continue;
        }
        if !matches!(in_place_kind(l, i, i), Some(InPlace::Elementwise)) {
            continue;
        }
        let size = elems(&node.shape);
        let over = node.inputs.iter().copied().find(|&j| {
            let r = root[j];
            last[j] == i
                && elems(&l.nodes[j].shape) == size
                && (0..n).all(|k| k == j || root[k] != r || last[k] <= i)
        });
        if let Some(j) = over {
            root[i] = root[j];
        }
    }
    let groups = (0..n)
        .filter(|&i| root[i] == i)
        .map(|r| Group {
            members: (0..n)
                .filter(|&k| root[k] == r)
                .map(|k| (align16(elems(&l.nodes[k].shape)), k, last[k]))
                .collect(),
            id: r,
        })
        .collect();
    let (offsets, arena) = place(groups, n);
    ((0..n).map(|i| offsets[root[i]]).collect(), arena)
}

/// Plan the memory of a lowered network.
pub fn plan(l: &Lowered) -> MemoryPlan {
    let n = l.nodes.len();
    let fused = fusions(l);
    let sizes: Vec<usize> = l.nodes.iter().map(|x| elems(&x.shape)).collect();
    let foot = footprints(l, &fused);
    let last = last_uses_fused(l, &fused);
    // Buffer sharing: a reshape aliases its input; add, depthwise and
    // pointwise convs write over an input that dies there (not the caller's
    // input, and not for the network output, which goes to the caller).
    let mut root: Vec<usize> = (0..n).collect();
    let mut scratch_size: Vec<usize> = vec![0; n];
    for (i, node) in l.nodes.iter().enumerate() {
        if node.kind == LKind::Reshape {
            root[i] = root[node.inputs[0]];
            continue;
        }
        if i == l.output || fused[i].is_some() {
            continue;
        }
        if let Some(&c) = node.inputs.iter().find(|&&j| fused[j].is_some()) {
            // A depthwise conv with a conv streamed into it: over the
            // conv's input where the rows allow ([`streams_over`]).
            let j = l.nodes[c].inputs[0];
            let r = root[j];
            let shared_later = (0..n).any(|k| k != j && root[k] == r && last[k] > i);
            if streams_over(l, c, i) && last[j] == i && r != 0 && !shared_later {
                root[i] = r;
            }
            continue;
        }
        for &j in &node.inputs {
            let r = root[j];
            let shared_later = (0..n).any(|k| k != j && root[k] == r && last[k] > i);
            let elementwise = matches!(in_place_kind(l, i, j), Some(InPlace::Elementwise));
            let fits = !elementwise || sizes[j] == sizes[i];
            if last[j] != i || r == 0 || shared_later || !fits {
                continue;
            }
            if let Some(kind) = in_place_kind(l, i, j) {
                root[i] = r;
                scratch_size[i] = match kind {
                    InPlace::Elementwise => 0,
                    InPlace::DepthwisePlanes { plane } => plane,
                    InPlace::PointwisePixels { pixel, .. } => pixel,
                };
                break;
            }
        }
    }
    // The output goes to the caller's buffer when nothing else shares it.
    let out_root = root[l.output];
    let out_exclusive = (0..n).all(|k| root[k] != out_root || k == l.output) && out_root != 0;
    let life: Vec<(usize, usize)> = (0..n).map(|i| (i, last[i])).collect();
    // Groups to place: the tensors sharing an arena root (each occupying
    // [offset, offset + its size) during its own life, so an in-place op
    // that shrinks a tensor frees the tail), and each scratch buffer (alive
    // during its node's step).
    let mut groups: Vec<Group> = (0..n)
        .filter(|&i| root[i] == i && i != 0 && !(i == out_root && out_exclusive))
        .map(|r| Group {
            members: (0..n)
                .filter(|&k| root[k] == r)
                .map(|k| (align16(foot[k]), k, last[k]))
                .collect(),
            id: r,
        })
        .collect();
    groups.extend((0..n).filter(|&i| scratch_size[i] > 0).map(|i| Group {
        members: vec![(align16(scratch_size[i]), i, i)],
        id: n + i,
    }));
    let (offsets, arena_size) = place(groups, 2 * n);
    let places = (0..n)
        .map(|i| {
            let r = root[i];
            if r == 0 {
                Place::Input
            } else if r == out_root && out_exclusive {
                Place::Output
            } else {
                Place::Arena { offset: offsets[r] }
            }
        })
        .collect();
    let scratch = (0..n)
        .map(|i| (scratch_size[i] > 0).then(|| (offsets[n + i], scratch_size[i])))
        .collect();
    MemoryPlan {
        places,
        sizes,
        life,
        root,
        scratch,
        fused,
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
pub fn check(l: &Lowered, p: MemoryPlan) -> Result<CheckedPlan, PlanError> {
    verify(l, &p).map_err(PlanError)?;
    Ok(CheckedPlan(p))
}

/// A plan the checker found an overlap or a misplaced tensor in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("memory plan: {0}")]
pub struct PlanError(pub String);

/// A memory plan that passed [`check`]: the only kind the C backend takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedPlan(MemoryPlan);

impl std::ops::Deref for CheckedPlan {
    type Target = MemoryPlan;
    fn deref(&self) -> &MemoryPlan {
        &self.0
    }
}

fn verify(l: &Lowered, p: &MemoryPlan) -> Result<(), String> {
    let n = l.nodes.len();
    let allowed = fusions(l);
    for (c, f) in p.fused.iter().enumerate() {
        if f.is_some() && *f != allowed[c] {
            return Err(format!(
                "{} is fused into a layer that is not its only depthwise reader",
                l.nodes[c].name
            ));
        }
    }
    let foot = footprints(l, &p.fused);
    let last = last_uses_fused(l, &p.fused);
    // Value identity: a reshape holds its input's bytes.
    let mut value: Vec<usize> = (0..n).collect();
    for (i, node) in l.nodes.iter().enumerate() {
        if node.kind == LKind::Reshape {
            value[i] = value[node.inputs[0]];
        }
    }
    // (memory, start, end) of a tensor; memory 0 arena, 1 input, 2 output.
    let span = |i: usize| -> (u8, usize, usize) {
        let size = foot[i];
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
        // Read during step i: the inputs, and for a depthwise conv fed by a
        // fused conv also that conv's inputs; a fused pair writes over none.
        let fused_reads: Vec<usize> = node
            .inputs
            .iter()
            .filter(|&&j| p.fused[j] == Some(i))
            .flat_map(|&c| l.nodes[c].inputs.iter().copied())
            .collect();
        for &j in node.inputs.iter().chain(&fused_reads) {
            // The one overlap a fused pair allows: its output from the
            // start of the conv's dying input, row by row behind the reads.
            let streamed = fused_reads.contains(&j)
                && node.inputs.iter().any(|&c| {
                    p.fused[c] == Some(i) && l.nodes[c].inputs == [j] && streams_over(l, c, i)
                })
                && out.0 == span(j).0
                && out.1 == span(j).1
                && last[j] == i;
            if (p.fused[i].is_some() || p.fused[j] == Some(i) || fused_reads.contains(&j))
                && overlap(out, span(j))
                && !streamed
            {
                return Err(format!(
                    "{} overwrites {}, which the fused pair reads",
                    node.name, l.nodes[j].name
                ));
            }
        }
        for &j in &node.inputs {
            if overlap(out, span(j)) {
                let same_bytes = out == span(j);
                let ok = match node.kind {
                    LKind::Reshape => same_bytes,
                    _ => {
                        let elementwise =
                            matches!(in_place_kind(l, i, j), Some(InPlace::Elementwise));
                        out.1 == span(j).1
                            && last[j] == i
                            && in_place_kind(l, i, j).is_some()
                            && (!elementwise || same_bytes)
                            && (elementwise || p.scratch[i].is_some())
                            && (out.2 <= span(j).2
                                || matches!(
                                    in_place_kind(l, i, j),
                                    Some(InPlace::PointwisePixels {
                                        backwards: true,
                                        ..
                                    })
                                ))
                    }
                };
                if !ok {
                    return Err(format!(
                        "{} overwrites its input {} while reading it",
                        node.name, l.nodes[j].name
                    ));
                }
            }
        }
        if let Some((offset, size)) = p.scratch[i] {
            let sc = (0u8, offset, offset + size);
            if offset % 16 != 0 || offset + size > p.arena_size {
                return Err(format!(
                    "the scratch of {} is misaligned or outside the arena",
                    node.name
                ));
            }
            match node.inputs.first().and_then(|&j| in_place_kind(l, i, j)) {
                Some(InPlace::DepthwisePlanes { plane })
                | Some(InPlace::PointwisePixels { pixel: plane, .. })
                    if plane <= size => {}
                _ => {
                    return Err(format!(
                        "{} has a scratch buffer it does not need or that is too small",
                        node.name
                    ))
                }
            }
            for (j, &last_j) in last.iter().enumerate().take(i + 1) {
                if (j == i || last_j >= i) && overlap(sc, span(j)) {
                    return Err(format!(
                        "the scratch of {} overlaps {}",
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
