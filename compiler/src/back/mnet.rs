//! Writing a fixed network back as `.mnet` source (`mnet resolve`).
//!
//! The network is flattened to built-in layers (blocks are inlined: a block
//! called twice may have been resolved two ways). Runs of single-consumer
//! layers become one pipe chain, `x = conv2d(x, ...) |> batch_norm |> relu6`;
//! a tensor used later than the next statement gets its own name. The AST is
//! printed by the canonical printer, so the output is already `mnet fmt`
//! clean, and `mnet check`/`stats` on it give the picked network's figures.

use crate::ir::*;
use crate::ops::shape::{get_attr, set_attr};
use mnet_grammar::ast::*;
use mnet_grammar::Span;
use std::collections::HashMap;

fn ident(s: &str) -> Ident {
    Ident::new(s)
}

fn e(kind: ExprKind) -> Expr {
    Expr {
        kind,
        span: Span::default(),
    }
}

fn named(name: &str, value: Expr) -> Arg {
    Arg {
        name: Some(ident(name)),
        value,
    }
}

fn sym(s: &str) -> Expr {
    e(ExprKind::Ident(s.to_string()))
}

/// `name: "..."` when the layer's name is not the one the written file
/// would give it (blocks are inlined, so `conv_bn_0/conv2d_0` would become
/// `conv2d_3`): weights saved for the space load into the resolved file.
fn name_arg(g: &FixedGraph, id: FNodeId, auto: &mut HashMap<&'static str, usize>) -> Option<Arg> {
    let node = g.node(id);
    let n = auto.entry(node.op.name()).or_insert(0);
    let fresh = format!("{}_{n}", node.op.name());
    *n += 1;
    (node.name != fresh).then(|| named("name", e(ExprKind::Str(node.name.clone()))))
}

/// A constant as source: a pair of equal sizes as one (`3`, not `(3, 3)`),
/// a shape as a list.
fn constant(slot: Slot, v: &Const) -> Expr {
    match v {
        Const::Int(n) => e(ExprKind::Int(*n)),
        Const::Real(r) => e(ExprKind::Decimal(r.to_string())),
        Const::Sym(s) => sym(s),
        Const::Tuple(xs) if slot == Slot::Shape => e(ExprKind::List(
            xs.iter().map(|x| constant(slot, x)).collect(),
        )),
        Const::Tuple(xs) if xs.len() == 2 && xs[0] == xs[1] => constant(slot, &xs[0]),
        Const::Tuple(xs) => e(ExprKind::Tuple(
            xs.iter().map(|x| constant(slot, x)).collect(),
        )),
    }
}

/// Attribute arguments of an op, in the op table's order, those equal to
/// their default left out.
fn attr_args(op: &Op) -> Vec<Arg> {
    let Some(def) = crate::ops::lookup(op.name()) else {
        return Vec::new();
    };
    let mut args = Vec::new();
    let mut size = None;
    for p in def.params {
        let Some(slot) = p.slot else { continue };
        let value = get_attr(op, slot).expect("the op has the attributes of its table entry");
        let default = match p.default_const() {
            Some(d) => {
                let mut t = (def.template)();
                set_attr(&mut t, slot, &d).expect("defaults are valid");
                get_attr(&t, slot)
            }
            None if p.default.is_some() => size.clone(),
            None => None,
        };
        if slot == Slot::Size {
            size = Some(value.clone());
        }
        if default.as_ref() != Some(&value) {
            args.push(named(p.name, constant(slot, &value)));
        }
    }
    args
}

fn quantity(kind: BudgetKind, v: u64) -> Expr {
    let dim = match kind {
        BudgetKind::Ops => Dim::Count,
        BudgetKind::Sram | BudgetKind::Flash => Dim::Bytes,
        BudgetKind::Latency => Dim::Time,
    };
    of_dim(dim, v)
}

fn of_dim(dim: Dim, v: u64) -> Expr {
    match Unit::largest_dividing(dim, v) {
        (value, Some(unit)) => e(ExprKind::Quantity { value, unit }),
        (value, None) => e(ExprKind::Int(value)),
    }
}

fn stmt(kind: StmtKind) -> Stmt {
    Stmt {
        kind,
        span: Span::default(),
        trivia: Trivia::default(),
    }
}

/// Budgets (explicit or from the target) that the network exceeds.
pub fn exceeded_budgets(g: &FixedGraph) -> Vec<String> {
    let totals = crate::analysis::stats::fixed_stats(g).budget_totals();
    crate::analysis::stats::budgets(&g.info)
        .into_iter()
        .filter(|b| b.needed(&totals) > b.limit)
        .map(|b| {
            let fmt = |v| crate::analysis::stats::fmt_budget_value(b.kind, v);
            format!(
                "{} {} > {} ({})",
                b.kind.name(),
                fmt(b.needed(&totals)),
                fmt(b.limit),
                b.source
            )
        })
        .collect()
}

/// The fixed network as a `.mnet` module. `note` becomes a leading comment.
/// A network that exceeds its budgets (`--pick max` usually does) keeps
/// them only as comments, so the file still checks.
pub fn to_module(g: &FixedGraph, note: &str) -> Module {
    let exceeded = exceeded_budgets(g);
    let mut note: Vec<String> = note.lines().map(|l| l.to_string()).collect();
    let mut limits: Vec<(String, StmtKind)> = Vec::new();
    if let Some((board, _)) = &g.info.target {
        limits.push((
            format!("target {}", board.name),
            StmtKind::Target(ident(&board.name)),
        ));
    }
    for b in &g.info.budgets {
        let limit = quantity(b.kind, b.limit);
        let text = format!(
            "budget {} <= {}",
            b.kind.name(),
            mnet_grammar::printer::expr(&limit)
        );
        limits.push((
            text,
            StmtKind::Budget {
                kind: ident(b.kind.name()),
                limit,
            },
        ));
    }
    let mut stmts = Vec::new();
    if exceeded.is_empty() {
        stmts.extend(limits.into_iter().map(|(_, k)| stmt(k)));
    } else {
        note.push(format!("This network exceeds {}.", exceeded.join(", ")));
        note.push("Its limits are kept as comments so that the file checks:".to_string());
        note.extend(limits.into_iter().map(|(t, _)| format!("    {t}")));
    }
    // Group the execution order into chains.
    let layers: Vec<FNodeId> = g
        .order
        .iter()
        .copied()
        .filter(|id| !matches!(g.node(*id).op, Op::Input { .. }))
        .collect();
    let input = g
        .order
        .iter()
        .copied()
        .find(|id| matches!(g.node(*id).op, Op::Input { .. }))
        .expect("input");
    let mut chains: Vec<Vec<FNodeId>> = Vec::new();
    for &id in &layers {
        let extend = match chains.last() {
            Some(chain) => {
                let tail = *chain.last().expect("non-empty");
                let ins = g.inputs(id);
                ins.len() == 1 && ins[0] == tail && g.consumers(tail).len() == 1 && tail != g.output
            }
            None => false,
        };
        if extend {
            chains.last_mut().expect("chain").push(id);
        } else {
            chains.push(vec![id]);
        }
    }
    // Name each chain's result.
    // The names elaboration gives the layers of the written file, in the
    // order it creates them (the statements' order).
    let mut auto: HashMap<&'static str, usize> = HashMap::new();
    let mut names: HashMap<FNodeId, String> = HashMap::new();
    names.insert(input, "input".to_string());
    for (i, chain) in chains.iter().enumerate() {
        let tail = *chain.last().expect("non-empty");
        let consumers = g.consumers(tail);
        let only_next = consumers
            .iter()
            .all(|c| i + 1 < chains.len() && chains[i + 1][0] == *c)
            && !consumers.is_empty();
        let name = if only_next || tail == g.output {
            "x".to_string()
        } else {
            format!("t{i}")
        };
        names.insert(tail, name);
    }
    for chain in &chains {
        let head = chain[0];
        let mut args: Vec<Arg> = g
            .inputs(head)
            .iter()
            .map(|i| Arg {
                name: None,
                value: sym(&names[i]),
            })
            .collect();
        args.extend(attr_args(&g.node(head).op));
        args.extend(name_arg(g, head, &mut auto));
        let mut value = e(ExprKind::Call {
            callee: ident(g.node(head).op.name()),
            args,
        });
        for &id in &chain[1..] {
            let op = &g.node(id).op;
            let mut extra = attr_args(op);
            extra.extend(name_arg(g, id, &mut auto));
            let stage = if extra.is_empty() {
                sym(op.name())
            } else {
                e(ExprKind::Call {
                    callee: ident(op.name()),
                    args: extra,
                })
            };
            value = e(ExprKind::Pipe {
                input: Box::new(value),
                stage: Box::new(stage),
            });
        }
        let target = names[chain.last().expect("non-empty")].clone();
        stmts.push(stmt(StmtKind::Assign {
            target: ident(&target),
            value,
        }));
    }
    let net = NetworkDef {
        name: ident(&g.info.name),
        input: ident("input"),
        input_type: TensorType {
            dtype: ident("i8"),
            dims: g
                .info
                .input_shape
                .iter()
                .map(|d| Int {
                    value: *d as u64,
                    span: Span::default(),
                })
                .collect(),
        },
        output: Some(
            g.info
                .output_shape
                .clone()
                .unwrap_or_else(|| g.node(g.output).shape.clone())
                .iter()
                .map(|d| Int {
                    value: *d as u64,
                    span: Span::default(),
                })
                .collect(),
        ),
        body: Body {
            stmts,
            dangling: vec![],
            span: Span::default(),
        },
    };
    let mut items = Vec::new();
    // A board of the user's own (or one that differs from the standard
    // board of its name) goes into the file, so that it checks alone.
    if let Some((board, _)) = &g.info.target {
        if std_board(&board.name).as_ref() != Some(board) {
            items.push(Item {
                kind: ItemKind::Board(board_def(board)),
                span: Span::default(),
                trivia: Trivia {
                    leading: note.iter().map(|l| format!(" {l}")).collect(),
                    trailing: None,
                    blank_before: false,
                },
            });
            note.clear();
        }
    }
    items.push(Item {
        kind: ItemKind::Network(net),
        span: Span::default(),
        trivia: Trivia {
            leading: note.iter().map(|l| format!(" {l}")).collect(),
            trailing: None,
            blank_before: !items.is_empty(),
        },
    });
    Module {
        items,
        dangling: vec![],
    }
}

/// The standard library's board of that name, if it has one.
fn std_board(name: &str) -> Option<Board> {
    let (program, module, _) = crate::front::program::Program::load("std", "");
    program.board(module, name).ok().flatten()
}

/// A board as source.
fn board_def(b: &Board) -> BoardDef {
    let field = |name: &str, value: Expr| Field {
        name: ident(name),
        value,
    };
    BoardDef {
        name: ident(&b.name),
        fields: vec![
            field("core", sym(&b.core)),
            field("sram", quantity(BudgetKind::Sram, b.sram_bytes)),
            field("flash", quantity(BudgetKind::Flash, b.flash_bytes)),
        ]
        .into_iter()
        .chain(
            b.clock_hz
                .map(|c| field("clock", of_dim(Dim::Frequency, c))),
        )
        .collect(),
    }
}
