//! The mnet compiler: from `.mnet` source to a checked search space, exact
//! costs, and fixed networks.
//!
//! The pipeline is [`check_source`]: load the file and the standard-library
//! modules it uses ([`front::program`]), elaborate each network to a
//! [`SearchGraph`](ir::SearchGraph) ([`front::elaborate`]), analyse the space
//! exactly ([`analysis::space`]: shapes of every network, min/max of every
//! total, the number of networks) and check budgets. A
//! [`Pick`](analysis::resolve::Pick) then [`resolve`](analysis::resolve::resolve)s
//! a space to a [`FixedGraph`](ir::FixedGraph), which [`analysis::stats`]
//! tabulates and [`back::mnet`] writes back as source. [`lower`] legalises and
//! quantizes it, [`plan`] lays out its memory, and [`tflite`] and [`back::c`]
//! emit it; [`exec`] runs it.

pub mod analysis;
pub mod back;
pub mod exec;
pub mod front;
pub mod ir;
pub mod lower;
pub mod mcu;
pub mod npy;
pub mod ops;
pub mod pipeline;
pub mod plan;
pub mod tflite;

use analysis::{space, stats};
use front::elaborate;
use front::program::Program;
use ir::{BudgetKind, SearchGraph, SearchOp};
use mnet_grammar::{Diagnostic, Diagnostics, Sources};
use petgraph::visit::Walker;
use space::SpaceSummary;

/// A file that failed: its sources (to render) and the diagnostics.
#[derive(Debug)]
pub struct Failure {
    pub sources: Sources,
    pub diagnostics: Diagnostics,
}

impl Failure {
    pub fn render(&self) -> String {
        self.sources.render(&self.diagnostics)
    }
}

/// A checked network: its search graph and the exact analysis.
#[derive(Debug, Clone)]
pub struct CheckedNetwork {
    pub graph: SearchGraph,
    pub summary: SpaceSummary,
}

/// A file that passed `check`.
#[derive(Debug)]
pub struct Checked {
    pub sources: Sources,
    pub networks: Vec<CheckedNetwork>,
    /// Blocks the file defines itself.
    pub blocks: usize,
}

/// The 64-bit FNV-1a hash: the short fingerprint of weights and files
/// that the C comments, `mnet inspect` and `mnet search` print.
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The board `board` as the source `text` sees it: its own boards and
/// `std::boards`. An unknown name is an error listing the known ones.
pub fn find_board(name: &str, text: &str, board: &str) -> Result<ir::Board, String> {
    let (program, module, _) = Program::load(name, text);
    match program.board(module, board) {
        Ok(Some(b)) => Ok(b),
        Ok(None) => Err(format!(
            "unknown board `{board}` (known: {})",
            program.board_names(module).join(", ")
        )),
        Err(d) => Err(d.message.clone()),
    }
}

/// Parse, elaborate and analyse a `.mnet` source. `name` is how diagnostics
/// name the file.
pub fn check_source(name: &str, text: &str) -> Result<Checked, Failure> {
    let (program, module, mut diags) = Program::load(name, text);
    if !diags.is_empty() {
        return Err(Failure {
            sources: program.sources,
            diagnostics: diags,
        });
    }
    let mut networks = Vec::new();
    for (net, span) in program.networks(module) {
        match elaborate::elaborate_network(&program, module, net, span) {
            Ok(g) => {
                let dead = unused_layers(&g);
                if !dead.is_empty() {
                    diags.extend(dead);
                    continue;
                }
                match space::analyze(&g, &program.sources) {
                    Ok(summary) => {
                        diags.extend(budget_errors(&g, &summary));
                        diags.extend(size_errors(&g, &summary));
                        networks.push(CheckedNetwork { graph: g, summary });
                    }
                    Err(d) => diags.extend(d),
                }
            }
            Err(d) => diags.extend(d),
        }
    }
    if !diags.is_empty() {
        return Err(Failure {
            sources: program.sources,
            diagnostics: diags,
        });
    }
    let blocks = program.own_block_count(module);
    Ok(Checked {
        sources: program.sources,
        networks,
        blocks,
    })
}

/// Layers whose result never reaches the output are almost always a slip
/// (a forgotten assignment); they would also inflate every cost.
fn unused_layers(g: &SearchGraph) -> Diagnostics {
    let reversed = petgraph::visit::Reversed(&g.graph);
    let reachable: std::collections::HashSet<_> = petgraph::visit::Dfs::new(reversed, g.output.0)
        .iter(reversed)
        .collect();
    g.order
        .iter()
        .filter(|id| !reachable.contains(&id.0))
        .filter(|id| matches!(g.node(**id).op, SearchOp::Layer(_)))
        .map(|id| {
            let origin = g.origin(*id);
            let mut d = Diagnostic::error(origin.span, "this layer's result is never used")
                .with_label("does not reach the network's output")
                .with_hint("assign it (`x = ...`) or remove it");
            for site in origin.call_sites.iter().take(4) {
                d = d.with_secondary(*site, "in this call");
            }
            d
        })
        .collect()
}

/// A network whose weights exceed what mnet supports is an error (its
/// figures would not be trustworthy, and it fits no microcontroller).
fn size_errors(g: &SearchGraph, s: &SpaceSummary) -> Diagnostics {
    let limit = ops::shape::MAX_WEIGHT_BYTES;
    if s.max.flash_bytes <= limit {
        return Vec::new();
    }
    let who = if s.count == 1u32.into() {
        "the network needs"
    } else {
        "the largest network needs"
    };
    vec![Diagnostic::error(
        g.info.span,
        format!("more weights than mnet supports ({} GiB)", limit >> 30),
    )
    .with_label(format!("{who} {} bytes", s.max.flash_bytes))
    .with_hint("fewer channels or layers, or narrower width choices")]
}

/// A budget that no network of the space meets is an error.
fn budget_errors(g: &SearchGraph, s: &SpaceSummary) -> Diagnostics {
    stats::budgets(&g.info)
        .into_iter()
        .filter(|b| b.needed(&s.min) > b.limit)
        .map(|b| {
            let what = match b.kind {
                BudgetKind::Ops => "ops",
                BudgetKind::Sram => "peak working memory",
                BudgetKind::Flash => "flash",
                BudgetKind::Latency => "predicted latency",
            };
            let fmt = |v: u64| stats::fmt_budget_value(b.kind, v);
            let who = if s.count == 1u32.into() {
                "the network needs"
            } else {
                "the smallest network needs"
            };
            Diagnostic::error(
                b.span,
                format!(
                    "no network meets the {} budget of {}",
                    b.kind.name(),
                    fmt(b.limit)
                ),
            )
            .with_label(format!("{who} {} of {what}", fmt(b.needed(&s.min))))
            .with_note(format!("from {}", b.source))
            .with_hint("raise the budget, choose a larger board, or allow smaller widths")
        })
        .collect()
}
