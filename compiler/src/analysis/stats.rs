//! `mnet stats`: per-layer tables and totals, as text and as JSON.
//!
//! For a fixed network (or a search space with `--pick`) every layer gets a
//! row: op, attributes, output shape, MACs, params, weight bytes, working
//! bytes. For a search space the rows show each node's range over the space,
//! and the totals show the exact min and max from [`crate::analysis::space`] and the
//! number of distinct networks. Budgets (explicit `budget` lines and the
//! target board's SRAM and flash) are checked against the totals.

use crate::analysis::latency::{layer_cost, BoardModel};
use crate::analysis::space::{SpaceSummary, Totals};
use crate::ir::*;
use crate::ops::shape::LayerCost;
use serde_json::{json, Value};
use std::fmt::Write;

/// One row of the per-layer table of a fixed network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerRow {
    pub name: String,
    pub op: &'static str,
    pub attrs: String,
    pub shape: Vec<u32>,
    pub cost: LayerCost,
    pub fused: bool,
}

/// Stats of a fixed network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FixedStats {
    pub rows: Vec<LayerRow>,
    /// The sums (instructions: the per-layer estimate a space is costed
    /// with).
    pub totals: Totals,
    /// Instructions predicted per step of the generated C with the memory
    /// plan ([`crate::analysis::latency::network_instructions`]), for a
    /// target whose core has a model.
    pub predicted: Option<u64>,
}

impl FixedStats {
    /// The totals budgets are checked against: instructions as predicted
    /// with the memory plan where there is a prediction.
    pub fn budget_totals(&self) -> Totals {
        Totals {
            instructions: self.predicted.unwrap_or(self.totals.instructions),
            ..self.totals
        }
    }
}

/// Compute the per-layer costs and totals of a fixed network.
pub fn fixed_stats(g: &FixedGraph) -> FixedStats {
    let mut rows = Vec::new();
    let mut totals = Totals::default();
    let model = BoardModel::of_network(&g.info);
    for &id in &g.order {
        let node = g.node(id);
        if matches!(node.op, Op::Input { .. }) {
            continue;
        }
        let ins: Vec<Vec<u32>> = g
            .inputs(id)
            .iter()
            .map(|i| g.node(*i).shape.clone())
            .collect();
        let refs: Vec<&[u32]> = ins.iter().map(|s| s.as_slice()).collect();
        let c = layer_cost(model.as_ref(), &node.op, &refs, &node.shape, node.fused);
        totals.macs = totals.macs.saturating_add(c.macs);
        totals.params = totals.params.saturating_add(c.params);
        totals.flash_bytes = totals.flash_bytes.saturating_add(c.weight_bytes);
        totals.peak_working_bytes = totals.peak_working_bytes.max(c.working_bytes);
        totals.instructions = totals.instructions.saturating_add(c.instructions);
        rows.push(LayerRow {
            name: node.name.clone(),
            op: node.op.name(),
            attrs: node.op.attrs_short(),
            shape: node.shape.clone(),
            cost: c,
            fused: node.fused,
        });
    }
    let predicted = model
        .is_some()
        .then(|| crate::analysis::latency::network_instructions(g))
        .flatten();
    FixedStats {
        rows,
        totals,
        predicted,
    }
}

/// `16.65 M`, `102.4 KiB`: a short human figure beside the exact one.
pub fn human_count(n: u64) -> String {
    if n >= 1_000_000 {
        format!("{:.2} M", n as f64 / 1e6)
    } else if n >= 1_000 {
        format!("{:.1} K", n as f64 / 1e3)
    } else {
        n.to_string()
    }
}

pub fn human_bytes(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.2} MiB", n as f64 / (1u64 << 20) as f64)
    } else if n >= 1 << 10 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{n} B")
    }
}

fn shape_str(s: &[u32]) -> String {
    let parts: Vec<String> = s.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

fn header(info: &NetworkInfo) -> String {
    let out = match &info.output_shape {
        Some(s) => format!(" -> {}", shape_str(s)),
        None => String::new(),
    };
    format!(
        "network {} ({}: i8{}){}\n",
        info.name,
        info.input_name,
        shape_str(&info.input_shape),
        out
    )
}

/// A budget line: a limit, its source and whether the network meets it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetCheck {
    pub kind: BudgetKind,
    /// In the budget's unit: ops, bytes, or microseconds.
    pub limit: u64,
    pub source: String,
    pub span: mnet_grammar::Span,
    /// The target board's clock (what a latency is measured at).
    pub clock_hz: Option<u64>,
}

impl BudgetCheck {
    /// What a network with totals `t` needs of this budget, in its unit
    /// (microseconds, rounded up, for latency).
    pub fn needed(&self, t: &Totals) -> u64 {
        match (self.kind, self.clock_hz) {
            (BudgetKind::Latency, Some(hz)) => crate::analysis::latency::micros(t.instructions, hz),
            (BudgetKind::Latency, None) => u64::MAX,
            (k, _) => t.get(k),
        }
    }
}

/// The budgets of a network: explicit ones, then the target's SRAM and
/// flash where no explicit budget replaces them.
pub fn budgets(info: &NetworkInfo) -> Vec<BudgetCheck> {
    let clock_hz = info.target.as_ref().and_then(|(b, _)| b.clock_hz);
    let mut out: Vec<BudgetCheck> = info
        .budgets
        .iter()
        .map(|b| BudgetCheck {
            kind: b.kind,
            limit: b.limit,
            source: "budget".into(),
            span: b.span,
            clock_hz,
        })
        .collect();
    if let Some((board, span)) = &info.target {
        for (kind, limit) in [
            (BudgetKind::Sram, board.sram_bytes),
            (BudgetKind::Flash, board.flash_bytes),
        ] {
            if !out.iter().any(|b| b.kind == kind) {
                out.push(BudgetCheck {
                    kind,
                    limit,
                    source: format!("target {}", board.name),
                    span: *span,
                    clock_hz,
                });
            }
        }
    }
    out.sort_by_key(|b| b.kind);
    out
}

/// A time in microseconds for people.
pub fn human_micros(us: u64) -> String {
    if us >= 1_000_000 {
        format!("{:.2} s", us as f64 / 1e6)
    } else if us >= 1_000 {
        format!("{:.2} ms", us as f64 / 1e3)
    } else {
        format!("{us} us")
    }
}

/// A budget's value for people, in its unit.
pub fn fmt_budget_value(kind: BudgetKind, v: u64) -> String {
    match kind {
        BudgetKind::Ops => human_count(v),
        BudgetKind::Latency => human_micros(v),
        BudgetKind::Sram | BudgetKind::Flash => human_bytes(v),
    }
}

fn budget_lines(info: &NetworkInfo, min: &Totals, max: &Totals, out: &mut String) {
    let checks = budgets(info);
    if let Some((b, _)) = &info.target {
        let clock = b
            .clock_hz
            .map(|c| format!(", {} MHz", c as f64 / 1e6))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "target {} ({}{clock}): {} SRAM, {} flash",
            b.name,
            b.core,
            human_bytes(b.sram_bytes),
            human_bytes(b.flash_bytes)
        );
    }
    if checks.is_empty() {
        return;
    }
    let _ = writeln!(out, "budgets");
    for c in checks {
        let (lo, hi) = (c.needed(min), c.needed(max));
        let what = match c.kind {
            BudgetKind::Ops => "ops",
            BudgetKind::Sram => "sram (peak working memory)",
            BudgetKind::Flash => "flash",
            BudgetKind::Latency => "latency (predicted)",
        };
        let status = if hi <= c.limit {
            "ok".to_string()
        } else if lo <= c.limit {
            "some networks exceed it".to_string()
        } else {
            "EXCEEDED".to_string()
        };
        let value = if lo == hi {
            fmt_budget_value(c.kind, lo)
        } else {
            format!(
                "{}..{}",
                fmt_budget_value(c.kind, lo),
                fmt_budget_value(c.kind, hi)
            )
        };
        let _ = writeln!(
            out,
            "  {:<28} {:>22} <= {:<10} ({})  {}",
            what,
            value,
            fmt_budget_value(c.kind, c.limit),
            c.source,
            status
        );
    }
}

/// The text table of a fixed network.
pub fn render_fixed(info: &NetworkInfo, stats: &FixedStats) -> String {
    let mut out = header(info);
    let name_w = stats
        .rows
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let _ = writeln!(
        out,
        "{:>3}  {:<name_w$}  {:<16}  {:<14}  {:<15}  {:>11}  {:>9}  {:>9}  {:>9}",
        "#", "layer", "op", "attrs", "output", "MACs", "params", "weight_B", "working_B"
    );
    for (i, r) in stats.rows.iter().enumerate() {
        let working = if r.fused {
            "fused".to_string()
        } else {
            r.cost.working_bytes.to_string()
        };
        let _ = writeln!(
            out,
            "{:>3}  {:<name_w$}  {:<16}  {:<14}  {:<15}  {:>11}  {:>9}  {:>9}  {:>9}",
            i + 1,
            r.name,
            r.op,
            r.attrs,
            shape_str(&r.shape),
            r.cost.macs,
            r.cost.params,
            r.cost.weight_bytes,
            working
        );
    }
    let t = &stats.totals;
    let _ = writeln!(out, "totals");
    let _ = writeln!(out, "  layers              {:>14}", stats.rows.len());
    let _ = writeln!(
        out,
        "  macs                {:>14}  ({})",
        t.macs,
        human_count(t.macs)
    );
    let _ = writeln!(
        out,
        "  ops                 {:>14}  ({})",
        t.ops(),
        human_count(t.ops())
    );
    let _ = writeln!(
        out,
        "  params              {:>14}  ({})",
        t.params,
        human_count(t.params)
    );
    let _ = writeln!(
        out,
        "  flash_bytes         {:>14}  ({})",
        t.flash_bytes,
        human_bytes(t.flash_bytes)
    );
    let _ = writeln!(
        out,
        "  peak_working_bytes  {:>14}  ({})",
        t.peak_working_bytes,
        human_bytes(t.peak_working_bytes)
    );
    if t.instructions > 0 {
        let _ = writeln!(
            out,
            "  instructions (est.) {:>14}  ({}; per layer, as a space is costed)",
            t.instructions,
            human_count(t.instructions)
        );
    }
    if let Some(p) = stats.predicted {
        let _ = writeln!(
            out,
            "  instructions        {:>14}  ({}; per step with the memory plan)",
            p,
            human_count(p)
        );
    }
    let b = stats.budget_totals();
    budget_lines(info, &b, &b, &mut out);
    out
}

fn cost_json(c: &LayerCost) -> Value {
    json!({"macs": c.macs, "params": c.params, "weight_bytes": c.weight_bytes, "working_bytes": c.working_bytes, "instructions": c.instructions})
}

fn budgets_json(info: &NetworkInfo) -> Value {
    Value::Array(
        budgets(info)
            .into_iter()
            .map(|b| json!({"kind": b.kind.name(), "limit": b.limit, "source": b.source}))
            .collect(),
    )
}

/// The JSON object of a fixed network.
pub fn fixed_json(info: &NetworkInfo, stats: &FixedStats) -> Value {
    let t = &stats.totals;
    json!({
        "network": info.name,
        "search_space": false,
        "input_shape": info.input_shape,
        "macs": t.macs,
        "ops": t.ops(),
        "params": t.params,
        "flash_bytes": t.flash_bytes,
        "peak_working_bytes": t.peak_working_bytes,
        "instructions": stats.budget_totals().instructions,
        "instructions_estimate": t.instructions,
        "target": info.target.as_ref().map(|(b, _)| b.name.clone()),
        "budgets": budgets_json(info),
        "layers": stats.rows.iter().map(|r| json!({
            "name": r.name,
            "op": r.op,
            "attrs": r.attrs,
            "output_shape": r.shape,
            "fused": r.fused,
            "macs": r.cost.macs,
            "params": r.cost.params,
            "weight_bytes": r.cost.weight_bytes,
            "working_bytes": r.cost.working_bytes,
            "instructions": r.cost.instructions,
        })).collect::<Vec<_>>(),
    })
}

fn range_str(lo: u64, hi: u64) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}..{hi}")
    }
}

fn shape_range(lo: &[u32], hi: &[u32]) -> String {
    let parts: Vec<String> = lo
        .iter()
        .zip(hi)
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}..{b}")
            }
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

/// Attributes of a search node, with `cN` where a choice sets one.
fn search_attrs(node: &SearchNode) -> String {
    match &node.op {
        SearchOp::Layer(op) => {
            let bound = |slot: Slot| {
                node.bindings
                    .iter()
                    .find(|(s, _)| *s == slot)
                    .map(|(_, c)| c.to_string())
            };
            let mut a = op.attrs_short_with(bound);
            if let Some(c) = bound(Slot::Out) {
                if !a.is_empty() {
                    a.push(' ');
                }
                a.push_str(&format!("out={c}"));
            }
            a
        }
        SearchOp::Select { choice, .. } => choice.to_string(),
    }
}

fn search_op_name(node: &SearchNode) -> &'static str {
    match &node.op {
        SearchOp::Layer(op) => op.name(),
        SearchOp::Select {
            kind: SelectKind::Skip { pool: Some(_) },
            ..
        } => "skip(avg_pool)",
        SearchOp::Select {
            kind: SelectKind::Skip { .. },
            ..
        } => "skip",
        SearchOp::Select {
            kind: SelectKind::Branch,
            ..
        } => "select",
        SearchOp::Select {
            kind: SelectKind::Depth,
            ..
        } => "depth",
    }
}

/// The text table of a search space.
pub fn render_space(g: &SearchGraph, s: &SpaceSummary) -> String {
    let mut out = header(&g.info);
    let _ = writeln!(
        out,
        "search space: {} choices, {} distinct networks",
        g.choices.len(),
        s.count
    );
    let rows: Vec<(SNodeId, &crate::analysis::space::NodeRange)> = g
        .order
        .iter()
        .filter_map(|id| s.node_ranges[id.0.index()].as_ref().map(|r| (*id, r)))
        .filter(|(id, _)| !matches!(g.node(*id).op, SearchOp::Layer(Op::Input { .. })))
        .collect();
    let name_w = rows
        .iter()
        .map(|(id, _)| g.node(*id).name.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let _ = writeln!(
        out,
        "{:>3}  {:<name_w$}  {:<16}  {:<22}  {:<22}  {:>20}  {:>16}  {:>16}",
        "#", "layer", "op", "attrs", "output", "MACs", "params", "working_B"
    );
    for (i, (id, r)) in rows.iter().enumerate() {
        let node = g.node(*id);
        let working = if r.fused {
            "fused".to_string()
        } else {
            range_str(r.min.working_bytes, r.max.working_bytes)
        };
        let _ = writeln!(
            out,
            "{:>3}  {:<name_w$}  {:<16}  {:<22}  {:<22}  {:>20}  {:>16}  {:>16}",
            i + 1,
            node.name,
            search_op_name(node),
            search_attrs(node),
            shape_range(&r.shape_min, &r.shape_max),
            range_str(r.min.macs, r.max.macs),
            range_str(r.min.params, r.max.params),
            working
        );
    }
    let _ = writeln!(out, "totals                          min             max");
    let line = |out: &mut String, name: &str, lo: u64, hi: u64| {
        let _ = writeln!(out, "  {:<20} {:>14}  {:>14}", name, lo, hi);
    };
    line(&mut out, "macs", s.min.macs, s.max.macs);
    line(&mut out, "ops", s.min.ops(), s.max.ops());
    line(&mut out, "params", s.min.params, s.max.params);
    line(
        &mut out,
        "flash_bytes",
        s.min.flash_bytes,
        s.max.flash_bytes,
    );
    line(
        &mut out,
        "peak_working_bytes",
        s.min.peak_working_bytes,
        s.max.peak_working_bytes,
    );
    if s.max.instructions > 0 {
        line(
            &mut out,
            "instructions (est.)",
            s.min.instructions,
            s.max.instructions,
        );
    }
    if !g.choices.is_empty() {
        let _ = writeln!(out, "choices");
        for (i, c) in g.choices.iter().enumerate() {
            let _ = writeln!(out, "  c{i:<3} {}", c.describe());
        }
    }
    budget_lines(&g.info, &s.min, &s.max, &mut out);
    out
}

/// The JSON object of a search space.
pub fn space_json(g: &SearchGraph, s: &SpaceSummary) -> Value {
    let mm = |lo: u64, hi: u64| json!({"min": lo, "max": hi});
    json!({
        "network": g.info.name,
        "search_space": true,
        "input_shape": g.info.input_shape,
        "choices": g.choices.len(),
        "distinct_networks": s.count.to_string(),
        "macs": mm(s.min.macs, s.max.macs),
        "ops": mm(s.min.ops(), s.max.ops()),
        "params": mm(s.min.params, s.max.params),
        "flash_bytes": mm(s.min.flash_bytes, s.max.flash_bytes),
        "peak_working_bytes": mm(s.min.peak_working_bytes, s.max.peak_working_bytes),
        "instructions": mm(s.min.instructions, s.max.instructions),
        "target": g.info.target.as_ref().map(|(b, _)| b.name.clone()),
        "budgets": budgets_json(&g.info),
        "layers": g.order.iter().filter_map(|id| {
            let r = s.node_ranges[id.0.index()].as_ref()?;
            let node = g.node(*id);
            if matches!(node.op, SearchOp::Layer(Op::Input { .. })) {
                return None;
            }
            Some(json!({
                "name": node.name,
                "op": search_op_name(node),
                "attrs": search_attrs(node),
                "output_shape": {"min": r.shape_min, "max": r.shape_max},
                "fused": r.fused,
                "min": cost_json(&r.min),
                "max": cost_json(&r.max),
            }))
        }).collect::<Vec<_>>(),
    })
}
