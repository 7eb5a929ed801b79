//! Elaboration: from the AST of a network to a [`SearchGraph`].
//!
//! Elaboration is an interpreter over the AST. Statements run in order with an
//! environment of values (integers, tensors, choices, ...); a block call
//! binds the block's parameters (named, positional, defaults) and runs its
//! body in its own module's scope, a layer call adds a node. The search
//! constructs create choice points: `width(...)` and `choice(consts...)` are
//! values that layer attributes bind to; `choice(subblocks...)`, `skippable`
//! and `repeat lo..=hi` elaborate every alternative under a guard and join
//! them with a `Select` node. Errors are collected (a failed expression
//! becomes a poison value that raises nothing further), so one run reports
//! every independent mistake.

use crate::front::program::{BlockRef, Program};
use crate::ir::*;
use crate::ops::shape::{set_attr, MAX_ELEMENTS};
use crate::ops::{Inputs, OpDef};
use mnet_grammar::ast::{self, Expr, ExprKind, Ident, StmtKind};
use mnet_grammar::{Diagnostic, Span};
use petgraph::stable_graph::StableDiGraph;
use std::collections::BTreeMap;

/// Most nodes one network may elaborate to.
const MAX_NODES: usize = 100_000;
/// Deepest block-call nesting (catches recursive blocks).
const MAX_CALL_DEPTH: usize = 32;
/// Most options of one choice.
const MAX_OPTIONS: usize = 4096;
/// Most repetitions of a `repeat`.
const MAX_REPEAT: u64 = 1000;

#[derive(Clone, Debug, PartialEq)]
enum Value {
    Int(u64),
    Percent(u64),
    /// A decimal number (`0.2`).
    Real(f32),
    Quantity {
        value: u64,
        bytes: bool,
    },
    Sym(String),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Range {
        lo: Box<Value>,
        hi: Box<Value>,
        step: Option<Box<Value>>,
    },
    Tensor(SNodeId),
    /// A layer or block named as a value (`act = relu`).
    Func(String),
    /// A width or value choice.
    Choice(ChoiceId),
    /// The result of an expression that already failed with a diagnostic.
    Poison,
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Int(_) => "an integer",
            Value::Percent(_) => "a percentage",
            Value::Real(_) => "a decimal number",
            Value::Quantity { .. } => "a quantity",
            Value::Sym(_) => "a name",
            Value::Tuple(_) => "a tuple",
            Value::List(_) => "a list",
            Value::Range { .. } => "a range",
            Value::Tensor(_) => "a tensor",
            Value::Func(_) => "a layer or block",
            Value::Choice(_) => "a choice",
            Value::Poison => "an error",
        }
    }

    fn to_const(&self) -> Option<Const> {
        Some(match self {
            Value::Int(v) => Const::Int(*v),
            Value::Real(v) => Const::Real(crate::ops::Real(*v)),
            Value::Sym(s) => Const::Sym(s.clone()),
            Value::Tuple(xs) => {
                Const::Tuple(xs.iter().map(|x| x.to_const()).collect::<Option<_>>()?)
            }
            _ => return None,
        })
    }
}

#[derive(Clone)]
struct ArgVal {
    name: Option<Ident>,
    value: Value,
    span: Span,
}

type Env = BTreeMap<String, Value>;

/// Whether a name is a layer built into the language.
pub fn is_layer(name: &str) -> bool {
    crate::ops::lookup(name).is_some()
}

/// Levenshtein distance, for "did you mean" hints.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn suggest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<String> {
    candidates
        .map(|c| (distance(name, c), c))
        .filter(|(d, c)| *d <= 2.max(name.len() / 3) && *d < c.len())
        .min()
        .map(|(_, c)| c.to_string())
}

/// Elaborate one network of the program.
pub fn elaborate_network(
    program: &Program,
    module: usize,
    net: &ast::NetworkDef,
    span: Span,
) -> Result<SearchGraph, Vec<Diagnostic>> {
    let mut e = Elab {
        program,
        graph: StableDiGraph::new(),
        order: Vec::new(),
        origins: Vec::new(),
        choices: Vec::new(),
        guard: Vec::new(),
        call_stack: Vec::new(),
        module_stack: vec![module],
        scopes: vec![Scope::default()],
        diags: Vec::new(),
        too_many_nodes: false,
        target: None,
        budgets: Vec::new(),
    };
    let info_input = e.input_shape(net);
    let input = match &info_input {
        Some(shape) => e.add_node(
            SearchOp::Layer(Op::Input {
                shape: shape.clone(),
            }),
            &[],
            vec![],
            net.input.span,
        ),
        None => return Err(e.diags),
    };
    let mut env = Env::new();
    env.insert(net.input.name.clone(), Value::Tensor(input));
    let result = e.body(&net.body, &mut env, true);
    let output = match result {
        Some(Value::Tensor(t)) => Some(t),
        Some(Value::Poison) => None,
        Some(v) => {
            e.diags.push(
                Diagnostic::error(net.body.span, "the network does not end in a tensor")
                    .with_label(format!("its result is {}", v.kind())),
            );
            None
        }
        None => {
            e.diags.push(
                Diagnostic::error(net.name.span, "the network has no layers")
                    .with_hint("assign layers to a variable: `x = conv2d(x, out: 8, kernel: 3)`"),
            );
            None
        }
    };
    if !e.diags.is_empty() {
        return Err(e.diags);
    }
    let output_shape = net.output.as_ref().map(|dims| {
        dims.iter()
            .map(|d| d.value.min(u32::MAX as u64) as u32)
            .collect()
    });
    let output_span = net
        .output
        .as_ref()
        .and_then(|d| Some(d.first()?.span.join(d.last()?.span)))
        .unwrap_or(net.name.span);
    Ok(SearchGraph {
        info: NetworkInfo {
            name: net.name.name.clone(),
            span,
            input_name: net.input.name.clone(),
            input_shape: info_input.expect("checked"),
            output_shape,
            output_span,
            target: e.target,
            budgets: e.budgets,
        },
        graph: e.graph,
        order: e.order,
        origins: e.origins,
        choices: e.choices,
        output: output.expect("no diagnostics means an output"),
    })
}

#[derive(Default)]
struct Scope {
    prefix: String,
    counters: BTreeMap<String, usize>,
}

struct Elab<'p> {
    program: &'p Program,
    graph: StableDiGraph<SearchNode, u32>,
    order: Vec<SNodeId>,
    origins: Vec<Origin>,
    choices: Vec<Choice>,
    guard: Vec<Cond>,
    call_stack: Vec<Span>,
    module_stack: Vec<usize>,
    scopes: Vec<Scope>,
    diags: Vec<Diagnostic>,
    too_many_nodes: bool,
    target: Option<(Board, Span)>,
    budgets: Vec<Budget>,
}

impl<'p> Elab<'p> {
    /// Report an error, with the block call sites that led here.
    fn error(&mut self, d: Diagnostic) -> Value {
        let mut d = d;
        let mut sites: Vec<Span> = Vec::new();
        for site in self.call_stack.iter().rev() {
            if !sites.contains(site) && *site != d.span {
                sites.push(*site);
            }
        }
        for site in sites.into_iter().take(4) {
            d = d.with_secondary(site, "in this call");
        }
        self.diags.push(d);
        Value::Poison
    }

    fn input_shape(&mut self, net: &ast::NetworkDef) -> Option<Vec<u32>> {
        let tt = &net.input_type;
        if tt.dtype.name != "i8" {
            self.error(
                Diagnostic::error(
                    tt.dtype.span,
                    format!("unsupported input type `{}`", tt.dtype.name),
                )
                .with_label("expected `i8`")
                .with_hint("mnet networks take int8 input: `x: i8[49, 10, 1]`"),
            );
            return None;
        }
        if !(tt.dims.len() == 3 || tt.dims.len() == 1) {
            let span = tt.dims.first().map(|d| d.span).unwrap_or(tt.dtype.span);
            self.error(
                Diagnostic::error(
                    span,
                    format!("an input of rank {} is not supported", tt.dims.len()),
                )
                .with_hint("use [H, W, C] for images and spectrograms or [N] for vectors"),
            );
            return None;
        }
        let mut total: u64 = 1;
        for d in &tt.dims {
            if d.value == 0 || d.value > 1 << 20 {
                self.error(
                    Diagnostic::error(d.span, "input dimension out of range")
                        .with_label("must be 1..=1048576"),
                );
                return None;
            }
            total = total.saturating_mul(d.value);
        }
        if total > MAX_ELEMENTS {
            self.error(Diagnostic::error(tt.dtype.span, "the input is too large"));
            return None;
        }
        Some(tt.dims.iter().map(|d| d.value as u32).collect())
    }

    fn fresh_name(&mut self, base: &str) -> String {
        let scope = self.scopes.last_mut().expect("root scope");
        let n = scope.counters.entry(base.to_string()).or_insert(0);
        let name = if scope.prefix.is_empty() {
            format!("{base}_{n}")
        } else {
            format!("{}/{base}_{n}", scope.prefix)
        };
        *n += 1;
        name
    }

    fn add_node(
        &mut self,
        op: SearchOp,
        inputs: &[SNodeId],
        bindings: Vec<(Slot, ChoiceId)>,
        span: Span,
    ) -> SNodeId {
        if self.order.len() >= MAX_NODES && !self.too_many_nodes {
            self.too_many_nodes = true;
            self.error(Diagnostic::error(
                span,
                format!("the network has more than {MAX_NODES} layers"),
            ));
        }
        let base = match &op {
            SearchOp::Layer(op) => op.name(),
            SearchOp::Select { .. } => "select",
        };
        let name = self.fresh_name(base);
        let node = SearchNode {
            op,
            bindings,
            guard: self.guard.clone(),
            name,
        };
        let id = SNodeId(self.graph.add_node(node));
        for (slot, input) in inputs.iter().enumerate() {
            self.graph.add_edge(input.0, id.0, slot as u32);
        }
        self.order.push(id);
        debug_assert_eq!(id.0.index(), self.origins.len());
        self.origins.push(Origin {
            span,
            call_sites: self.call_stack.iter().rev().copied().collect(),
        });
        id
    }

    fn add_choice(&mut self, kind: ChoiceKind, span: Span) -> ChoiceId {
        self.choices.push(Choice { kind, span });
        ChoiceId(self.choices.len() as u32 - 1)
    }

    /// Run a body. Returns the value of `return`, or of the last assignment.
    fn body(&mut self, body: &ast::Body, env: &mut Env, network_level: bool) -> Option<Value> {
        let mut result: Option<Value> = None;
        let mut returned = false;
        for stmt in &body.stmts {
            if returned {
                self.error(
                    Diagnostic::error(stmt.span, "statement after `return`")
                        .with_label("never runs")
                        .with_hint("`return` must be the last statement of a block"),
                );
                break;
            }
            match &stmt.kind {
                StmtKind::Assign { target, value } => {
                    let v = self.expr(value, env);
                    env.insert(target.name.clone(), v.clone());
                    result = Some(v);
                }
                StmtKind::Return(e) => {
                    result = Some(self.expr(e, env));
                    returned = true;
                }
                StmtKind::Target(board) => {
                    if !network_level {
                        self.error(Diagnostic::error(
                            stmt.span,
                            "`target` belongs in a network, not a block",
                        ));
                    } else {
                        self.target_stmt(board, stmt.span);
                    }
                }
                StmtKind::Budget { kind, limit } => {
                    if !network_level {
                        self.error(Diagnostic::error(
                            stmt.span,
                            "`budget` belongs in a network, not a block",
                        ));
                    } else {
                        self.budget_stmt(kind, limit);
                    }
                }
                StmtKind::Repeat { count, body } => {
                    if let Some(v) = self.repeat(count, body, env) {
                        result = Some(v);
                    }
                }
            }
        }
        result
    }

    fn target_stmt(&mut self, board: &Ident, span: Span) {
        if let Some((_, prev)) = &self.target {
            let prev = *prev;
            self.error(
                Diagnostic::error(span, "a network has one target")
                    .with_secondary(prev, "first target here"),
            );
            return;
        }
        match self.program.board(self.module_stack[0], &board.name) {
            Ok(Some(b)) => self.target = Some((b, board.span)),
            Ok(None) => {
                let names = self.program.board_names(self.module_stack[0]);
                let mut d =
                    Diagnostic::error(board.span, format!("unknown board `{}`", board.name))
                        .with_label("not a board");
                if let Some(s) = suggest(&board.name, names.iter().map(|s| s.as_str())) {
                    d = d.with_hint(format!("did you mean `{s}`?"));
                }
                d = d.with_note(format!("known boards: {}", names.join(", ")));
                self.error(d);
            }
            Err(d) => {
                self.error(d);
            }
        }
    }

    fn budget_stmt(&mut self, kind: &Ident, limit: &Expr) {
        let k = match kind.name.as_str() {
            "ops" => BudgetKind::Ops,
            "sram" => BudgetKind::Sram,
            "flash" => BudgetKind::Flash,
            other => {
                let mut d = Diagnostic::error(kind.span, format!("unknown budget `{other}`"))
                    .with_label("expected `ops`, `sram` or `flash`");
                if let Some(s) = suggest(other, ["ops", "sram", "flash"].into_iter()) {
                    d = d.with_hint(format!("did you mean `{s}`?"));
                }
                self.error(d);
                return;
            }
        };
        let mut env = Env::new();
        let v = self.expr(limit, &mut env);
        let value = match (k, v) {
            (_, Value::Poison) => return,
            (BudgetKind::Ops, Value::Int(n)) => n,
            (
                BudgetKind::Ops,
                Value::Quantity {
                    value,
                    bytes: false,
                },
            ) => value,
            (BudgetKind::Ops, Value::Quantity { bytes: true, .. }) => {
                self.error(
                    Diagnostic::error(limit.span, "an ops budget is a count, not bytes")
                        .with_hint("write `budget ops <= 40M`"),
                );
                return;
            }
            (_, Value::Quantity { value, bytes: true }) => value,
            (_, Value::Int(n)) => n,
            (_, Value::Quantity { bytes: false, .. }) => {
                self.error(
                    Diagnostic::error(limit.span, format!("a {} budget is in bytes", kind.name))
                        .with_hint(format!("write `budget {} <= 256 KiB`", kind.name)),
                );
                return;
            }
            (_, other) => {
                self.error(
                    Diagnostic::error(limit.span, "a budget limit must be a number")
                        .with_label(format!("this is {}", other.kind())),
                );
                return;
            }
        };
        if let Some(prev) = self.budgets.iter().find(|b| b.kind == k) {
            let prev = prev.span;
            self.error(
                Diagnostic::error(limit.span, format!("`{}` budget given twice", kind.name))
                    .with_secondary(prev, "first here"),
            );
            return;
        }
        self.budgets.push(Budget {
            kind: k,
            limit: value,
            span: kind.span.join(limit.span),
        });
    }

    fn repeat(&mut self, count: &Expr, body: &ast::Body, env: &mut Env) -> Option<Value> {
        let mut scratch = Env::new();
        let c = self.expr(count, &mut scratch);
        match c {
            Value::Poison => None,
            Value::Int(n) => {
                if n == 0 || n > MAX_REPEAT {
                    self.error(
                        Diagnostic::error(count.span, "repeat count out of range")
                            .with_label(format!("must be 1..={MAX_REPEAT}")),
                    );
                    return None;
                }
                let mut result = None;
                for _ in 0..n {
                    result = self.body_in_loop(body, env);
                    if self.diags.len() > 50 || self.too_many_nodes {
                        break;
                    }
                }
                result
            }
            Value::Range { lo, hi, step } => {
                let (lo, hi) = match (*lo, *hi, step) {
                    (Value::Int(lo), Value::Int(hi), None) if lo < hi && hi <= 64 => {
                        (lo as u32, hi as u32)
                    }
                    _ => {
                        self.error(
                            Diagnostic::error(
                                count.span,
                                "a depth range is `lo..=hi` with lo < hi <= 64",
                            )
                            .with_hint("for example `repeat 1..=4 { ... }`"),
                        );
                        return None;
                    }
                };
                self.depth_repeat(lo, hi, count.span, body, env)
            }
            other => {
                self.error(
                    Diagnostic::error(count.span, "`repeat` needs a count or a depth range")
                        .with_label(format!("this is {}", other.kind()))
                        .with_hint("write `repeat 4 { ... }` or `repeat 1..=4 { ... }`"),
                );
                None
            }
        }
    }

    /// One iteration: variables assigned in the body stay visible only if
    /// they existed before it.
    fn body_in_loop(&mut self, body: &ast::Body, env: &mut Env) -> Option<Value> {
        let mut inner = env.clone();
        let result = self.body(body, &mut inner, false);
        if let Some(stmt) = body
            .stmts
            .iter()
            .find(|s| matches!(s.kind, StmtKind::Return(_)))
        {
            self.error(Diagnostic::error(stmt.span, "`return` inside `repeat`"));
        }
        for (k, v) in env.iter_mut() {
            if let Some(nv) = inner.get(k) {
                *v = nv.clone();
            }
        }
        result
    }

    fn depth_repeat(
        &mut self,
        lo: u32,
        hi: u32,
        span: Span,
        body: &ast::Body,
        env: &mut Env,
    ) -> Option<Value> {
        let c = self.add_choice(ChoiceKind::Depth { lo, hi }, span);
        let before = env.clone();
        // Values of every pre-existing variable after each iteration count.
        let mut snapshots: Vec<Env> = Vec::new();
        if lo == 0 {
            snapshots.push(env.clone());
        }
        for j in 1..=hi {
            let guarded = j > lo;
            if guarded {
                // Option k means lo + k iterations; iteration j runs when lo + k >= j.
                let mut mask = 0u64;
                for k in 0..=(hi - lo) {
                    if lo + k >= j {
                        mask |= 1 << k;
                    }
                }
                self.guard.push(Cond { choice: c, mask });
            }
            self.body_in_loop(body, env);
            if guarded {
                self.guard.pop();
            }
            if j >= lo {
                snapshots.push(env.clone());
            }
        }
        let mut last = None;
        for (name, old) in &before {
            let values: Vec<&Value> = snapshots.iter().map(|s| &s[name]).collect();
            if values.iter().all(|v| *v == values[0]) {
                env.insert(name.clone(), values[0].clone());
                continue;
            }
            let tensors: Option<Vec<SNodeId>> = values
                .iter()
                .map(|v| match v {
                    Value::Tensor(t) => Some(*t),
                    _ => None,
                })
                .collect();
            match tensors {
                Some(ts) => {
                    let sel = self.add_node(
                        SearchOp::Select {
                            choice: c,
                            kind: SelectKind::Depth,
                        },
                        &ts,
                        vec![],
                        span,
                    );
                    env.insert(name.clone(), Value::Tensor(sel));
                    last = Some(Value::Tensor(sel));
                }
                None => {
                    if values.iter().any(|v| **v == Value::Poison) {
                        env.insert(name.clone(), Value::Poison);
                        continue;
                    }
                    let _ = old;
                    self.error(
                        Diagnostic::error(
                            span,
                            format!("`{name}` changes inside `repeat lo..=hi` but is not a tensor"),
                        )
                        .with_hint("only tensors can depend on a searched depth"),
                    );
                    env.insert(name.clone(), Value::Poison);
                }
            }
        }
        last
    }

    fn expr(&mut self, e: &Expr, env: &mut Env) -> Value {
        match &e.kind {
            ExprKind::Int(v) => Value::Int(*v),
            ExprKind::Percent(v) => Value::Percent(*v),
            ExprKind::Decimal(text) => match text.parse::<f32>() {
                Ok(v) if v.is_finite() => Value::Real(v),
                _ => self.error(Diagnostic::error(e.span, "this number is too large")),
            },
            ExprKind::Quantity { value, unit } => match value.checked_mul(unit.factor()) {
                Some(v) => Value::Quantity {
                    value: v,
                    bytes: unit.is_bytes(),
                },
                None => self.error(Diagnostic::error(e.span, "quantity is too large")),
            },
            ExprKind::Ident(name) => self.ident(name, e.span, env),
            ExprKind::Tuple(xs) => Value::Tuple(xs.iter().map(|x| self.expr(x, env)).collect()),
            ExprKind::List(xs) => Value::List(xs.iter().map(|x| self.expr(x, env)).collect()),
            ExprKind::Range { lo, hi, step } => Value::Range {
                lo: Box::new(self.expr(lo, env)),
                hi: Box::new(self.expr(hi, env)),
                step: step.as_ref().map(|s| Box::new(self.expr(s, env))),
            },
            ExprKind::Call { callee, args } => {
                if !env.contains_key(&callee.name) {
                    if callee.name == "choice" {
                        return self.choice(args, e.span, env);
                    }
                    if callee.name == "width" {
                        let args = self.args(args, env);
                        return self.width(args, e.span);
                    }
                }
                let args = self.args(args, env);
                self.call(callee, args, e.span, env)
            }
            ExprKind::Pipe { input, stage } => {
                let v = self.expr(input, env);
                let piped = ArgVal {
                    name: None,
                    value: v,
                    span: input.span,
                };
                self.stage(stage, piped, env)
            }
            ExprKind::Skippable(inner) => self.skippable(inner, None, e.span, env),
        }
    }

    fn args(&mut self, args: &[ast::Arg], env: &mut Env) -> Vec<ArgVal> {
        args.iter()
            .map(|a| ArgVal {
                name: a.name.clone(),
                value: self.expr(&a.value, env),
                span: a.value.span,
            })
            .collect()
    }

    fn ident(&mut self, name: &str, span: Span, env: &Env) -> Value {
        if let Some(v) = env.get(name) {
            return v.clone();
        }
        if self.callable(name) {
            return Value::Func(name.to_string());
        }
        if name == "same" || name == "valid" || name.starts_with("cortex_") {
            return Value::Sym(name.to_string());
        }
        let mut candidates: Vec<String> = env.keys().cloned().collect();
        candidates.extend(crate::ops::OPS.iter().map(|d| d.name.to_string()));
        candidates.extend(
            self.program
                .block_names(*self.module_stack.last().expect("module")),
        );
        let mut d = Diagnostic::error(span, format!("unknown name `{name}`"))
            .with_label("not defined here");
        if let Some(s) = suggest(name, candidates.iter().map(|s| s.as_str())) {
            d = d.with_hint(format!("did you mean `{s}`?"));
        }
        self.error(d)
    }

    fn callable(&self, name: &str) -> bool {
        is_layer(name)
            || self
                .program
                .block(*self.module_stack.last().expect("module"), name)
                .is_some()
    }

    /// `input |> stage`
    fn stage(&mut self, stage: &Expr, piped: ArgVal, env: &mut Env) -> Value {
        match &stage.kind {
            ExprKind::Ident(name) => {
                let callee = Ident {
                    name: name.clone(),
                    span: stage.span,
                };
                self.call(&callee, vec![piped], stage.span, env)
            }
            ExprKind::Call { callee, args }
                if callee.name != "choice" && callee.name != "width" =>
            {
                let mut all = vec![piped];
                all.extend(self.args(args, env));
                self.call(callee, all, stage.span, env)
            }
            ExprKind::Skippable(inner) => self.skippable(inner, Some(piped), stage.span, env),
            _ => self.error(
                Diagnostic::error(stage.span, "can only pipe into a layer or a block")
                    .with_hint("write `x |> relu` or `x |> conv2d(out: 8, kernel: 3)`"),
            ),
        }
    }

    fn skippable(
        &mut self,
        inner: &Expr,
        piped: Option<ArgVal>,
        span: Span,
        env: &mut Env,
    ) -> Value {
        let (callee, args) = match &inner.kind {
            ExprKind::Call { callee, args }
                if callee.name != "choice" && callee.name != "width" =>
            {
                (callee.clone(), Some(args))
            }
            ExprKind::Ident(name) if piped.is_some() => (
                Ident {
                    name: name.clone(),
                    span: inner.span,
                },
                None,
            ),
            _ => {
                return self.error(
                    Diagnostic::error(span, "`skippable` applies to a layer or block call")
                        .with_hint("write `x = skippable ds_block(x, out: 64)`"),
                )
            }
        };
        let c = self.add_choice(ChoiceKind::Skip, span);
        self.guard.push(Cond {
            choice: c,
            mask: 0b10,
        });
        let mut all: Vec<ArgVal> = piped.into_iter().collect();
        if let Some(args) = args {
            all.extend(self.args(args, env));
        }
        let first_node = self.order.len();
        let identity = all.iter().find_map(|a| match a.value {
            Value::Tensor(t) if a.name.is_none() => Some(t),
            _ => None,
        });
        let out = self.call(&callee, all, inner.span, env);
        self.guard.pop();
        let (identity, out) = match (identity, out) {
            (_, Value::Poison) => return Value::Poison,
            (Some(i), Value::Tensor(o)) => (i, o),
            (None, _) => {
                return self.error(
                    Diagnostic::error(span, "nothing to skip to")
                        .with_label("this call takes no tensor as its first argument"),
                )
            }
            (_, other) => {
                return self.error(
                    Diagnostic::error(
                        span,
                        "only a layer or block that returns a tensor can be skipped",
                    )
                    .with_label(format!("this returns {}", other.kind())),
                )
            }
        };
        match self.downsampling(identity, out, first_node) {
            Ok(pool) => {
                let kind = SelectKind::Skip { pool: if pool == [1, 1] { None } else { Some(pool) } };
                let sel = self.add_node(SearchOp::Select { choice: c, kind }, &[identity, out], vec![], span);
                Value::Tensor(sel)
            }
            Err(why) => self.error(
                Diagnostic::error(span, "this block cannot be skipped")
                    .with_label(why)
                    .with_hint("a skippable block must keep the tensor's rank; one that downsamples gets an avg-pool shortcut"),
            ),
        }
    }

    /// The stride product along the block's main path from `identity` to
    /// `out` (first inputs), for the avg-pool shortcut of a skipped block.
    fn downsampling(
        &self,
        identity: SNodeId,
        out: SNodeId,
        first_node: usize,
    ) -> Result<[u32; 2], String> {
        let mut factor = [1u32, 1];
        let mut cur = out;
        loop {
            if cur == identity {
                return Ok(factor);
            }
            if cur.0.index() < first_node {
                return Err("the block's result does not come from its input".into());
            }
            let node = &self.graph[cur.0];
            if let SearchOp::Layer(op) = &node.op {
                if node
                    .bindings
                    .iter()
                    .any(|(s, _)| *s == Slot::Stride || *s == Slot::Size)
                {
                    return Err("its stride is searched, so the shortcut's shape is unknown".into());
                }
                match op {
                    Op::Conv2d { window, .. }
                    | Op::DepthwiseConv2d { window }
                    | Op::Pool { window, .. } => {
                        factor[0] = factor[0].saturating_mul(window.stride[0]);
                        factor[1] = factor[1].saturating_mul(window.stride[1]);
                    }
                    Op::Dense { .. } | Op::Flatten | Op::Reshape { .. } | Op::GlobalAvgPool => {
                        return Err(format!(
                            "it changes the tensor's shape with `{}`",
                            op.name()
                        ));
                    }
                    Op::Input { .. }
                    | Op::Add
                    | Op::Concat
                    | Op::Pad { .. }
                    | Op::BatchNorm
                    | Op::Act(_)
                    | Op::Softmax => {}
                }
            }
            match self
                .graph
                .neighbors_directed(cur.0, petgraph::Direction::Incoming)
                .min_by_key(|n| {
                    self.graph
                        .find_edge(*n, cur.0)
                        .map(|e| self.graph[e])
                        .unwrap_or(u32::MAX)
                }) {
                Some(prev) => cur = SNodeId(prev),
                None => return Err("the block's result does not come from its input".into()),
            }
        }
    }

    /// `choice(a, b, ...)`: over constants (a value choice) or over tensors
    /// (alternative sub-blocks).
    fn choice(&mut self, args: &[ast::Arg], span: Span, env: &mut Env) -> Value {
        if let Some(named) = args.iter().find_map(|a| a.name.as_ref()) {
            return self.error(
                Diagnostic::error(named.span, "`choice` takes its options without names")
                    .with_hint("write `choice(3, 5, 7)`"),
            );
        }
        if args.len() < 2 || args.len() > 64 {
            return self.error(
                Diagnostic::error(span, "a choice needs 2 to 64 options")
                    .with_label(format!("{} given", args.len())),
            );
        }
        let c = self.add_choice(ChoiceKind::Branch(args.len() as u32), span);
        let nodes_before = self.order.len();
        let mut values = Vec::new();
        for (i, a) in args.iter().enumerate() {
            self.guard.push(Cond {
                choice: c,
                mask: 1 << i,
            });
            values.push(self.expr(&a.value, env));
            self.guard.pop();
        }
        if values.contains(&Value::Poison) {
            return Value::Poison;
        }
        if let Some(tensors) = values
            .iter()
            .map(|v| match v {
                Value::Tensor(t) => Some(*t),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
        {
            let sel = self.add_node(
                SearchOp::Select {
                    choice: c,
                    kind: SelectKind::Branch,
                },
                &tensors,
                vec![],
                span,
            );
            return Value::Tensor(sel);
        }
        if self.order.len() == nodes_before {
            if let Some(consts) = values
                .iter()
                .map(|v| v.to_const())
                .collect::<Option<Vec<_>>>()
            {
                self.choices[c.0 as usize].kind = ChoiceKind::Values(consts);
                return Value::Choice(c);
            }
        }
        let tensor = values
            .iter()
            .zip(args)
            .find(|(v, _)| matches!(v, Value::Tensor(_)));
        let other = values
            .iter()
            .zip(args)
            .find(|(v, _)| !matches!(v, Value::Tensor(_)) && v.to_const().is_none());
        let constant = values
            .iter()
            .zip(args)
            .find(|(v, _)| v.to_const().is_some());
        let (bad_v, bad_a) = other.or(constant).expect("a non-tensor option exists");
        let mut d = Diagnostic::error(
            bad_a.value.span,
            "the options of a choice must all be tensors or all be constants",
        )
        .with_label(format!("this option is {}", bad_v.kind()));
        if let Some((_, a)) = tensor {
            d = d.with_secondary(a.value.span, "this option is a tensor");
        }
        if values.iter().any(|v| matches!(v, Value::Choice(_))) {
            d = d.with_hint("list all options in one choice instead of nesting choices");
        }
        self.error(d)
    }

    /// `width(4..=64 step 4)`, `width(8, 16, 32)`, `width([8, 16])`,
    /// `width(10%..=100% step 10%, of: 96)`.
    fn width(&mut self, args: Vec<ArgVal>, span: Span) -> Value {
        if args.iter().any(|a| a.value == Value::Poison) {
            return Value::Poison;
        }
        let mut of: Option<(u64, Span)> = None;
        let mut positional = Vec::new();
        for a in args {
            match &a.name {
                Some(n) if n.name == "of" => match a.value {
                    Value::Int(v) if v > 0 => of = Some((v, a.span)),
                    _ => {
                        return self.error(Diagnostic::error(
                            a.span,
                            "`of:` takes a positive channel count",
                        ))
                    }
                },
                Some(n) => {
                    return self.error(
                        Diagnostic::error(n.span, format!("`width` has no parameter `{}`", n.name))
                            .with_hint("the only named parameter is `of:` (the 100% width)"),
                    )
                }
                None => positional.push(a),
            }
        }
        let usage = "write `width(4..=64 step 4)`, `width(8, 16, 32)` or `width(10%..=100% step 10%, of: 96)`";
        let mut options: Vec<u64> = Vec::new();
        let flat: Vec<ArgVal> = match positional.as_slice() {
            [ArgVal {
                value: Value::List(xs),
                span,
                ..
            }] => xs
                .iter()
                .map(|v| ArgVal {
                    name: None,
                    value: v.clone(),
                    span: *span,
                })
                .collect(),
            _ => positional.clone(),
        };
        match flat.as_slice() {
            [ArgVal {
                value: Value::Range { lo, hi, step },
                span: rspan,
                ..
            }] => {
                let step_v = step.as_deref().cloned();
                match (&**lo, &**hi, step_v) {
                    (Value::Int(lo), Value::Int(hi), s) => {
                        let step = match s {
                            None => 1,
                            Some(Value::Int(s)) if s > 0 => s,
                            _ => {
                                return self.error(Diagnostic::error(
                                    *rspan,
                                    "the step must be a positive integer",
                                ))
                            }
                        };
                        if lo > hi || *lo == 0 {
                            return self.error(Diagnostic::error(
                                *rspan,
                                "a width range needs 1 <= lo <= hi",
                            ));
                        }
                        if (hi - lo) / step >= MAX_OPTIONS as u64 {
                            return self.error(Diagnostic::error(
                                *rspan,
                                format!("too many options (at most {MAX_OPTIONS})"),
                            ));
                        }
                        let mut v = *lo;
                        while v <= *hi {
                            options.push(v);
                            v += step;
                        }
                    }
                    (Value::Percent(lo), Value::Percent(hi), s) => {
                        let step =
                            match s {
                                None => 1,
                                Some(Value::Percent(s)) if s > 0 => s,
                                _ => return self.error(Diagnostic::error(
                                    *rspan,
                                    "the step of a percentage range is a percentage, like `10%`",
                                )),
                            };
                        let Some((base, _)) = of else {
                            return self.error(
                                Diagnostic::error(span, "a percentage width needs the full width")
                                    .with_hint(
                                        "add `of: N`, e.g. `width(10%..=100% step 10%, of: 96)`",
                                    ),
                            );
                        };
                        if lo > hi || *lo == 0 || *hi > 1000 {
                            return self.error(Diagnostic::error(
                                *rspan,
                                "a percentage range needs 1% <= lo <= hi <= 1000%",
                            ));
                        }
                        let mut p = *lo;
                        while p <= *hi {
                            // round(base * p / 100), at least one channel
                            let ch = ((base * p * 2 + 100) / 200).max(1);
                            options.push(ch);
                            p += step;
                        }
                    }
                    _ => {
                        return self.error(
                            Diagnostic::error(
                                *rspan,
                                "a width range is of integers or of percentages",
                            )
                            .with_hint(usage),
                        )
                    }
                }
                if of.is_some() && matches!(**lo, Value::Int(_)) {
                    return self.error(Diagnostic::error(
                        span,
                        "`of:` only goes with a percentage range",
                    ));
                }
            }
            list if !list.is_empty() => {
                for a in list {
                    match a.value {
                        Value::Int(v) if v > 0 => options.push(v),
                        _ => {
                            return self.error(
                                Diagnostic::error(
                                    a.span,
                                    "a width option must be a positive integer",
                                )
                                .with_label(format!("this is {}", a.value.kind()))
                                .with_hint(usage),
                            )
                        }
                    }
                }
                if list.len() > MAX_OPTIONS {
                    return self.error(Diagnostic::error(
                        span,
                        format!("too many options (at most {MAX_OPTIONS})"),
                    ));
                }
            }
            _ => {
                return self
                    .error(Diagnostic::error(span, "`width` needs its options").with_hint(usage))
            }
        }
        if let Some(big) = options.iter().find(|&&v| v > 1 << 20) {
            return self.error(Diagnostic::error(
                span,
                format!("a width of {big} channels is too large"),
            ));
        }
        options.sort_unstable();
        options.dedup();
        if options.len() == 1 {
            return Value::Int(options[0]);
        }
        let c = self.add_choice(
            ChoiceKind::Width(options.iter().map(|&v| v as u32).collect()),
            span,
        );
        Value::Choice(c)
    }

    /// Bind call arguments to parameter names: positional in order, then
    /// named. Returns `None` after reporting an error.
    fn bind(
        &mut self,
        what: &str,
        params: &[&str],
        args: Vec<ArgVal>,
        call_span: Span,
    ) -> Option<Vec<Option<ArgVal>>> {
        let mut bound: Vec<Option<ArgVal>> = vec![None; params.len()];
        let mut next_positional = 0;
        let mut ok = true;
        for a in args {
            match &a.name {
                None => {
                    if next_positional >= params.len() {
                        self.error(
                            Diagnostic::error(a.span, format!("too many arguments to `{what}`"))
                                .with_label(format!("`{what}` takes {}", params.join(", "))),
                        );
                        ok = false;
                        continue;
                    }
                    bound[next_positional] = Some(a);
                    next_positional += 1;
                }
                Some(n) => match params.iter().position(|p| *p == n.name) {
                    Some(i) if bound[i].is_some() => {
                        self.error(Diagnostic::error(
                            n.span,
                            format!("`{}` is given twice", n.name),
                        ));
                        ok = false;
                    }
                    Some(i) => bound[i] = Some(a),
                    None => {
                        let mut d = Diagnostic::error(
                            n.span,
                            format!("`{what}` has no parameter `{}`", n.name),
                        )
                        .with_label("unknown parameter")
                        .with_note(format!("parameters: {}", params.join(", ")));
                        if let Some(s) = suggest(&n.name, params.iter().copied()) {
                            d = d.with_hint(format!("did you mean `{s}`?"));
                        }
                        self.error(d);
                        ok = false;
                    }
                },
            }
        }
        let _ = call_span;
        ok.then_some(bound)
    }

    fn call(&mut self, callee: &Ident, args: Vec<ArgVal>, span: Span, env: &mut Env) -> Value {
        if args.iter().any(|a| a.value == Value::Poison) {
            return Value::Poison;
        }
        let name = match env.get(&callee.name) {
            Some(Value::Func(f)) => f.clone(),
            Some(Value::Poison) => return Value::Poison,
            Some(other) => {
                return self.error(
                    Diagnostic::error(
                        callee.span,
                        format!("`{}` is not a layer or block", callee.name),
                    )
                    .with_label(format!("it is {}", other.kind())),
                )
            }
            None => callee.name.clone(),
        };
        if name == "choice" || name == "width" {
            return self.error(Diagnostic::error(
                callee.span,
                format!("`{name}` cannot be passed around or piped into"),
            ));
        }
        if let Some(def) = crate::ops::lookup(&name) {
            return self.layer(def, args, span);
        }
        let module = *self.module_stack.last().expect("module");
        match self.program.block(module, &name) {
            Some(b) => self.block_call(b, args, span),
            None => {
                let mut candidates: Vec<String> =
                    crate::ops::OPS.iter().map(|d| d.name.to_string()).collect();
                candidates.extend(self.program.block_names(module));
                let mut d =
                    Diagnostic::error(callee.span, format!("unknown layer or block `{name}`"))
                        .with_label("not defined");
                if let Some(s) = suggest(&name, candidates.iter().map(|s| s.as_str())) {
                    d = d.with_hint(format!("did you mean `{s}`?"));
                } else if self.program.is_std_block(&name) {
                    d = d.with_hint(format!("import it: `use std::blocks::{name}`"));
                }
                self.error(d)
            }
        }
    }

    fn block_call(&mut self, b: BlockRef, args: Vec<ArgVal>, span: Span) -> Value {
        let def = self.program.block_def(b);
        if self.call_stack.len() >= MAX_CALL_DEPTH {
            return self.error(
                Diagnostic::error(span, "block calls nest too deeply").with_hint(format!(
                    "is `{}` recursive? blocks cannot call themselves",
                    def.name.name
                )),
            );
        }
        let params: Vec<&str> = def.params.iter().map(|p| p.name.name.as_str()).collect();
        let Some(bound) = self.bind(&def.name.name, &params, args, span) else {
            return Value::Poison;
        };
        // Defaults are evaluated in the block's module, with earlier params.
        self.module_stack.push(b.module);
        let mut env = Env::new();
        let mut missing = Vec::new();
        for (p, a) in def.params.iter().zip(bound) {
            let v = match (a, &p.default) {
                (Some(a), _) => a.value,
                (None, Some(d)) => {
                    let mut denv = env.clone();
                    self.expr(d, &mut denv)
                }
                (None, None) => {
                    missing.push(p.name.name.clone());
                    Value::Poison
                }
            };
            env.insert(p.name.name.clone(), v);
        }
        if !missing.is_empty() {
            self.module_stack.pop();
            return self.error(
                Diagnostic::error(
                    span,
                    format!(
                        "missing argument `{}` of `{}`",
                        missing.join("`, `"),
                        def.name.name
                    ),
                )
                .with_secondary(def.name.span, "defined here"),
            );
        }
        let prefix = self.fresh_name(&def.name.name);
        self.scopes.push(Scope {
            prefix,
            counters: BTreeMap::new(),
        });
        self.call_stack.push(span);
        let result = self.body(&def.body, &mut env, false);
        self.call_stack.pop();
        self.scopes.pop();
        self.module_stack.pop();
        match result {
            Some(v) => v,
            None => self.error(
                Diagnostic::error(
                    def.name.span,
                    format!("block `{}` has no result", def.name.name),
                )
                .with_hint("end it with `return x`"),
            ),
        }
    }

    fn tensor_arg(
        &mut self,
        what: &str,
        param: &str,
        a: &Option<ArgVal>,
        span: Span,
    ) -> Option<SNodeId> {
        match a {
            Some(ArgVal {
                value: Value::Tensor(t),
                ..
            }) => Some(*t),
            Some(ArgVal {
                value: Value::Poison,
                ..
            }) => None,
            Some(a) => {
                self.error(
                    Diagnostic::error(a.span, format!("`{what}` needs a tensor for `{param}`"))
                        .with_label(format!("this is {}", a.value.kind())),
                );
                None
            }
            None => {
                self.error(Diagnostic::error(
                    span,
                    format!("`{what}` is missing its input `{param}`"),
                ));
                None
            }
        }
    }

    fn layer(&mut self, def: &'static OpDef, args: Vec<ArgVal>, span: Span) -> Value {
        let name = def.name;
        let tensor_params = match def.inputs {
            Inputs::Many => return self.variadic(def, args, span),
            Inputs::Fixed(n) => n,
        };
        let params: Vec<&str> = def.params.iter().map(|p| p.name).collect();
        let Some(bound) = self.bind(name, &params, args, span) else {
            return Value::Poison;
        };
        let mut inputs = Vec::new();
        for i in 0..tensor_params {
            match self.tensor_arg(name, params[i], &bound[i], span) {
                Some(t) => inputs.push(t),
                None => return Value::Poison,
            }
        }
        let mut op = (def.template)();
        let mut bindings = Vec::new();
        let mut size_value: Option<ArgVal> = None;
        for (i, param) in def.params.iter().enumerate().skip(tensor_params) {
            let pname = param.name;
            let arg = match (&bound[i], param.default) {
                (Some(a), _) => a.clone(),
                (None, Some("size")) => match &size_value {
                    Some(v) => v.clone(),
                    None => continue,
                },
                (None, Some(_)) => ArgVal {
                    name: None,
                    value: match param.default_const().expect("a constant default") {
                        Const::Int(n) => Value::Int(n),
                        Const::Real(r) => Value::Real(r.0),
                        Const::Sym(s) => Value::Sym(s),
                        Const::Tuple(_) => unreachable!("defaults are single values"),
                    },
                    span,
                },
                (None, None) => {
                    return self.error(
                        Diagnostic::error(span, format!("`{name}` needs `{pname}`"))
                            .with_hint(format!("add `{pname}: ...` to the call")),
                    )
                }
            };
            if pname == "size" {
                size_value = Some(arg.clone());
            }
            let slot = param.slot.expect("attribute parameters set a slot");
            if slot == Slot::Shape {
                // A list of sizes (not a choice): `reshape(x, shape: [1, 1, 64])`.
                let dims = match &arg.value {
                    Value::Tuple(xs) | Value::List(xs) => {
                        xs.iter().map(|x| x.to_const()).collect::<Option<Vec<_>>>()
                    }
                    _ => None,
                };
                if dims.is_none_or(|d| set_attr(&mut op, slot, &Const::Tuple(d)).is_err()) {
                    return self.error(
                        Diagnostic::error(arg.span, "`shape` is a list of 1 to 3 positive sizes")
                            .with_hint("write `reshape(x, shape: [1, 1, 64])`"),
                    );
                }
                continue;
            }
            if !self.set(&mut op, slot, &arg, &mut bindings, name, pname) {
                return Value::Poison;
            }
        }
        Value::Tensor(self.add_node(SearchOp::Layer(op), &inputs, bindings, span))
    }

    /// A layer of two or more positional tensors (`concat`).
    fn variadic(&mut self, def: &'static OpDef, args: Vec<ArgVal>, span: Span) -> Value {
        let name = def.name;
        if let Some(n) = args.iter().find_map(|a| a.name.as_ref()) {
            return self.error(Diagnostic::error(
                n.span,
                format!("`{name}` takes only tensors, without names"),
            ));
        }
        let mut inputs = Vec::new();
        for a in &args {
            match a.value {
                Value::Tensor(t) => inputs.push(t),
                _ => {
                    return self.error(
                        Diagnostic::error(a.span, format!("`{name}` joins tensors"))
                            .with_label(format!("this is {}", a.value.kind())),
                    )
                }
            }
        }
        if inputs.len() < 2 {
            return self.error(Diagnostic::error(
                span,
                format!("`{name}` needs at least two tensors"),
            ));
        }
        Value::Tensor(self.add_node(SearchOp::Layer((def.template)()), &inputs, vec![], span))
    }

    /// Set an attribute from an argument, binding it to a choice if the
    /// argument is one (every option is checked now, once).
    fn set(
        &mut self,
        op: &mut Op,
        slot: Slot,
        arg: &ArgVal,
        bindings: &mut Vec<(Slot, ChoiceId)>,
        layer: &str,
        param: &str,
    ) -> bool {
        match &arg.value {
            Value::Choice(c) => {
                let choice = self.choices[c.0 as usize].clone();
                let options: Vec<Const> = match &choice.kind {
                    ChoiceKind::Width(w) => w.iter().map(|&v| Const::Int(v as u64)).collect(),
                    ChoiceKind::Values(v) => v.clone(),
                    _ => unreachable!("only width and value choices are values"),
                };
                for (i, o) in options.iter().enumerate() {
                    let mut scratch = op.clone();
                    if let Err(why) = set_attr(&mut scratch, slot, o) {
                        let mut d = Diagnostic::error(
                            arg.span,
                            format!(
                                "option {} of this choice is not a valid `{param}` of `{layer}`",
                                i + 1
                            ),
                        )
                        .with_label(why);
                        if choice.span != arg.span {
                            d = d.with_secondary(choice.span, "choice defined here");
                        }
                        self.error(d);
                        return false;
                    }
                }
                set_attr(op, slot, &options[0]).expect("checked");
                bindings.push((slot, *c));
                true
            }
            v => {
                let Some(k) = v.to_const() else {
                    let mut d = Diagnostic::error(
                        arg.span,
                        format!("`{param}` of `{layer}` cannot be {}", v.kind()),
                    );
                    if matches!(v, Value::Range { .. }) {
                        d = d.with_hint("to search it, wrap the range: `width(4..=64 step 4)`");
                    }
                    self.error(d);
                    return false;
                };
                if let Err(why) = set_attr(op, slot, &k) {
                    self.error(
                        Diagnostic::error(arg.span, format!("invalid `{param}` for `{layer}`"))
                            .with_label(why),
                    );
                    return false;
                }
                true
            }
        }
    }
}
