//! The abstract syntax tree of a `.mnet` file.
//!
//! The AST is a faithful, span-carrying picture of the source: it keeps
//! comments (as trivia on items and statements) and the pipe/skippable sugar,
//! so the canonical printer can reproduce a file and `parse(print(ast)) == ast`
//! holds once spans are erased ([`Module::erase_spans`]). Meaning (what a call
//! names, what a choice is) is decided later, by the compiler's elaboration.

use crate::diag::Span;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

impl Ident {
    pub fn new(name: impl Into<String>) -> Ident {
        Ident {
            name: name.into(),
            span: Span::default(),
        }
    }
}

/// Comments and blank lines attached to an item or a statement.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trivia {
    /// Whole-line comments before it (text after `//`).
    pub leading: Vec<String>,
    /// A comment at the end of its last line.
    pub trailing: Option<String>,
    /// A blank line separates it from what came before (statements only).
    pub blank_before: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Module {
    pub items: Vec<Item>,
    /// Comments after the last item.
    pub dangling: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub kind: ItemKind,
    pub span: Span,
    pub trivia: Trivia,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ItemKind {
    Use(UseDecl),
    Block(BlockDef),
    Network(NetworkDef),
    Board(BoardDef),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UseDecl {
    /// Module path, e.g. `std::blocks`.
    pub module: Vec<Ident>,
    pub names: UseNames,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UseNames {
    /// `use std::blocks::*`
    All,
    /// `use std::blocks::{a, b}` or `use std::blocks::a`
    List(Vec<Ident>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoardDef {
    pub name: Ident,
    pub fields: Vec<Field>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: Ident,
    pub value: Expr,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockDef {
    pub name: Ident,
    pub params: Vec<Param>,
    pub body: Body,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    pub name: Ident,
    pub default: Option<Expr>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkDef {
    pub name: Ident,
    pub input: Ident,
    pub input_type: TensorType,
    pub output: Option<Vec<Int>>,
    pub body: Body,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorType {
    pub dtype: Ident,
    pub dims: Vec<Int>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Int {
    pub value: u64,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Body {
    pub stmts: Vec<Stmt>,
    /// Comments before the closing `}`.
    pub dangling: Vec<String>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stmt {
    pub kind: StmtKind,
    pub span: Span,
    pub trivia: Trivia,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StmtKind {
    /// `name = expr`
    Assign { target: Ident, value: Expr },
    /// `return expr`
    Return(Expr),
    /// `target stm32f446re`
    Target(Ident),
    /// `budget ops <= 40M`
    Budget { kind: Ident, limit: Expr },
    /// `repeat 8 { ... }` or `repeat 2..=4 { ... }`
    Repeat { count: Expr, body: Body },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Unit {
    B,
    KiB,
    MiB,
    GiB,
    KB,
    MB,
    GB,
    K,
    M,
    G,
    Hz,
    KHz,
    MHz,
    GHz,
    Us,
    Ms,
    S,
}

/// What a quantity measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    /// A plain count (`40M` ops).
    Count,
    Bytes,
    /// In microseconds.
    Time,
    /// In hertz.
    Frequency,
}

impl Dim {
    pub fn name(self) -> &'static str {
        match self {
            Dim::Count => "a count",
            Dim::Bytes => "bytes",
            Dim::Time => "a time",
            Dim::Frequency => "a frequency",
        }
    }
}

const UNITS: [(Unit, &str, u64, Dim); 17] = [
    (Unit::B, "B", 1, Dim::Bytes),
    (Unit::KiB, "KiB", 1 << 10, Dim::Bytes),
    (Unit::MiB, "MiB", 1 << 20, Dim::Bytes),
    (Unit::GiB, "GiB", 1 << 30, Dim::Bytes),
    (Unit::KB, "KB", 1_000, Dim::Bytes),
    (Unit::MB, "MB", 1_000_000, Dim::Bytes),
    (Unit::GB, "GB", 1_000_000_000, Dim::Bytes),
    (Unit::K, "K", 1_000, Dim::Count),
    (Unit::M, "M", 1_000_000, Dim::Count),
    (Unit::G, "G", 1_000_000_000, Dim::Count),
    (Unit::Hz, "Hz", 1, Dim::Frequency),
    (Unit::KHz, "kHz", 1_000, Dim::Frequency),
    (Unit::MHz, "MHz", 1_000_000, Dim::Frequency),
    (Unit::GHz, "GHz", 1_000_000_000, Dim::Frequency),
    (Unit::Us, "us", 1, Dim::Time),
    (Unit::Ms, "ms", 1_000, Dim::Time),
    (Unit::S, "s", 1_000_000, Dim::Time),
];

impl Unit {
    fn row(self) -> &'static (Unit, &'static str, u64, Dim) {
        UNITS
            .iter()
            .find(|r| r.0 == self)
            .expect("every unit is in UNITS")
    }

    pub fn as_str(self) -> &'static str {
        self.row().1
    }

    pub fn parse(s: &str) -> Option<Unit> {
        UNITS.iter().find(|r| r.1 == s).map(|r| r.0)
    }

    /// Multiplier of the unit (to bytes, counts, microseconds or hertz).
    pub fn factor(self) -> u64 {
        self.row().2
    }

    pub fn dim(self) -> Dim {
        self.row().3
    }

    /// Byte units (as opposed to plain counts like `M` ops).
    pub fn is_bytes(self) -> bool {
        self.dim() == Dim::Bytes
    }

    /// The largest unit of dimension `dim` that divides `v` (a nonzero
    /// value), for printing: `(v / factor, unit)`; the base unit for 0.
    /// Counts under a thousand have no unit (None).
    pub fn largest_dividing(dim: Dim, v: u64) -> (u64, Option<Unit>) {
        let best = UNITS
            .iter()
            .filter(|r| r.3 == dim && v > 0 && v.is_multiple_of(r.2))
            // Binary byte units first, as budgets and boards are written.
            .filter(|r| dim != Dim::Bytes || r.2.is_power_of_two())
            .max_by_key(|r| r.2);
        match best {
            Some(r) => (v / r.2, Some(r.0)),
            None if dim == Dim::Count => (v, None),
            None => (
                v,
                UNITS.iter().find(|r| r.3 == dim && r.2 == 1).map(|r| r.0),
            ),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExprKind {
    Int(u64),
    /// `10%`
    Percent(u64),
    /// `0.2`, as written.
    Decimal(String),
    /// `"conv_bn_0/conv2d_0"` (without the quotes; no escapes).
    Str(String),
    /// `128 KiB`, `40M`
    Quantity {
        value: u64,
        unit: Unit,
    },
    Ident(String),
    /// `(10, 4)`; a one-element tuple is written `(3,)`.
    Tuple(Vec<Expr>),
    /// `[8, 16, 32]`
    List(Vec<Expr>),
    /// `f(a, name: b)`
    Call {
        callee: Ident,
        args: Vec<Arg>,
    },
    /// `input |> stage`: the stage is an `Ident`, a `Call` or a `Skippable`
    /// of one of them, and receives `input` as its first argument.
    Pipe {
        input: Box<Expr>,
        stage: Box<Expr>,
    },
    /// `skippable expr`
    Skippable(Box<Expr>),
    /// `lo..=hi step s`
    Range {
        lo: Box<Expr>,
        hi: Box<Expr>,
        step: Option<Box<Expr>>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
}

impl Module {
    /// Reset every span to the default, so two ASTs can be compared for
    /// structure alone (the round-trip property of the printer).
    pub fn erase_spans(&mut self) {
        for item in &mut self.items {
            item.span = Span::default();
            match &mut item.kind {
                ItemKind::Use(u) => {
                    u.module.iter_mut().for_each(erase_ident);
                    if let UseNames::List(names) = &mut u.names {
                        names.iter_mut().for_each(erase_ident);
                    }
                }
                ItemKind::Block(b) => {
                    erase_ident(&mut b.name);
                    for p in &mut b.params {
                        erase_ident(&mut p.name);
                        if let Some(d) = &mut p.default {
                            erase_expr(d);
                        }
                    }
                    erase_body(&mut b.body);
                }
                ItemKind::Network(n) => {
                    erase_ident(&mut n.name);
                    erase_ident(&mut n.input);
                    erase_ident(&mut n.input_type.dtype);
                    n.input_type
                        .dims
                        .iter_mut()
                        .for_each(|d| d.span = Span::default());
                    if let Some(out) = &mut n.output {
                        out.iter_mut().for_each(|d| d.span = Span::default());
                    }
                    erase_body(&mut n.body);
                }
                ItemKind::Board(b) => {
                    erase_ident(&mut b.name);
                    for f in &mut b.fields {
                        erase_ident(&mut f.name);
                        erase_expr(&mut f.value);
                    }
                }
            }
        }
    }
}

fn erase_ident(i: &mut Ident) {
    i.span = Span::default();
}

fn erase_body(b: &mut Body) {
    b.span = Span::default();
    for s in &mut b.stmts {
        s.span = Span::default();
        match &mut s.kind {
            StmtKind::Assign { target, value } => {
                erase_ident(target);
                erase_expr(value);
            }
            StmtKind::Return(e) => erase_expr(e),
            StmtKind::Target(i) => erase_ident(i),
            StmtKind::Budget { kind, limit } => {
                erase_ident(kind);
                erase_expr(limit);
            }
            StmtKind::Repeat { count, body } => {
                erase_expr(count);
                erase_body(body);
            }
        }
    }
}

fn erase_expr(e: &mut Expr) {
    e.span = Span::default();
    match &mut e.kind {
        ExprKind::Int(_)
        | ExprKind::Percent(_)
        | ExprKind::Decimal(_)
        | ExprKind::Str(_)
        | ExprKind::Quantity { .. }
        | ExprKind::Ident(_) => {}
        ExprKind::Tuple(xs) | ExprKind::List(xs) => xs.iter_mut().for_each(erase_expr),
        ExprKind::Call { callee, args } => {
            erase_ident(callee);
            for a in args {
                if let Some(n) = &mut a.name {
                    erase_ident(n);
                }
                erase_expr(&mut a.value);
            }
        }
        ExprKind::Pipe { input, stage } => {
            erase_expr(input);
            erase_expr(stage);
        }
        ExprKind::Skippable(x) => erase_expr(x),
        ExprKind::Range { lo, hi, step } => {
            erase_expr(lo);
            erase_expr(hi);
            if let Some(s) = step {
                erase_expr(s);
            }
        }
    }
}
