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
mod layer;
mod search;

use crate::ir::*;
use crate::ops::shape::{set_attr, MAX_ELEMENTS};
use crate::ops::{Inputs, OpDef};
use mnet_grammar::ast::{self, Dim, Expr, ExprKind, Ident, StmtKind};
use mnet_grammar::{Diagnostic, Span};
use petgraph::stable_graph::StableDiGraph;
use std::collections::BTreeMap;

/// Most nodes one network may elaborate to.
const MAX_NODES: usize = 100_000;
/// Deepest block-call nesting.
const MAX_CALL_DEPTH: usize = 32;
/// Most block calls one network may make: blocks that call blocks several
/// times, nested, grow exponentially even without recursion.
const MAX_BLOCK_CALLS: usize = 100_000;
/// Most options of one choice.
const MAX_OPTIONS: usize = 4096;
/// Most errors one network reports.
const MAX_ERRORS: usize = 50;
/// Most repetitions of a `repeat`.
const MAX_REPEAT: u64 = 1000;

#[derive(Clone, Debug, PartialEq)]
enum Value {
    Int(u64),
    Percent(u64),
    /// A decimal number (`0.2`).
    Real(f32),
    /// `"text"` (a layer's `name`).
    Str(String),
    /// In bytes, a count, microseconds or hertz.
    Quantity {
        value: u64,
        dim: Dim,
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
            Value::Str(_) => "a string",
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
        active: Vec::new(),
        calls: 0,
        module_stack: vec![module],
        scopes: vec![Scope::default()],
        diags: Vec::new(),
        halted: false,
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
    // A latency budget is measured with the target board's core model at
    // its clock.
    if let Some(b) = e.budgets.iter().find(|b| b.kind == BudgetKind::Latency) {
        let why = match &e.target {
            None => {
                Some("a latency budget needs a `target` board (its core and clock)".to_string())
            }
            Some((board, _)) => crate::analysis::latency::BoardModel::of(board).err(),
        };
        if let Some(why) = why {
            let mut d = Diagnostic::error(b.span, why);
            if let Some((_, span)) = &e.target {
                d = d.with_secondary(*span, "the target");
            }
            e.diags.push(d);
        }
    }
    // Layer names are what weights files and .tflite tensors are named
    // by: no two layers share one (`name:` can make them).
    let mut seen: BTreeMap<&str, SNodeId> = BTreeMap::new();
    for &id in &e.order {
        let node = &e.graph[id.0];
        if !matches!(node.op, SearchOp::Layer(_)) {
            continue;
        }
        if let Some(first) = seen.insert(node.name.as_str(), id) {
            e.diags.push(
                Diagnostic::error(
                    e.origins[id.0.index()].span,
                    format!("two layers are named `{}`", node.name),
                )
                .with_secondary(e.origins[first.0.index()].span, "the other one")
                .with_hint("weights are looked up by layer name: give each layer its own `name:`"),
            );
        }
    }
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
    /// The blocks being called, with their arguments (see [`alike`]).
    active: Vec<(BlockRef, Env)>,
    /// Block calls made so far.
    calls: usize,
    module_stack: Vec<usize>,
    scopes: Vec<Scope>,
    diags: Vec<Diagnostic>,
    /// Elaboration has stopped (too many layers, block calls or errors):
    /// every further layer or block call returns at once.
    halted: bool,
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
        // The same mistake reached again (a block called many times) is
        // reported once; past MAX_ERRORS, elaboration stops.
        if !self
            .diags
            .iter()
            .any(|e| e.span == d.span && e.message == d.message)
        {
            self.diags.push(d);
        }
        if self.diags.len() >= MAX_ERRORS {
            self.halted = true;
        }
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
        self.add_named_node(op, inputs, bindings, span, None)
    }

    /// [`Elab::add_node`] with the name the source gives (`name: "..."`),
    /// or a fresh one.
    fn add_named_node(
        &mut self,
        op: SearchOp,
        inputs: &[SNodeId],
        bindings: Vec<(Slot, ChoiceId)>,
        span: Span,
        given: Option<String>,
    ) -> SNodeId {
        if self.order.len() >= MAX_NODES && !self.halted {
            self.halted = true;
            self.error(Diagnostic::error(
                span,
                format!("the network has more than {MAX_NODES} layers"),
            ));
        }
        let base = match &op {
            SearchOp::Layer(op) => op.name(),
            SearchOp::Select { .. } => "select",
        };
        let name = match given {
            Some(n) => {
                // The counter moves as if the name were fresh, so the
                // layers after it are named as without it.
                self.fresh_name(base);
                n
            }
            None => self.fresh_name(base),
        };
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
            "latency" => BudgetKind::Latency,
            other => {
                let mut d = Diagnostic::error(kind.span, format!("unknown budget `{other}`"))
                    .with_label("expected `ops`, `sram`, `flash` or `latency`");
                if let Some(s) = suggest(other, ["ops", "sram", "flash", "latency"].into_iter()) {
                    d = d.with_hint(format!("did you mean `{s}`?"));
                }
                self.error(d);
                return;
            }
        };
        let mut env = Env::new();
        let v = self.expr(limit, &mut env);
        let (want, example) = match k {
            BudgetKind::Ops => (Dim::Count, "budget ops <= 40M"),
            BudgetKind::Sram | BudgetKind::Flash => (Dim::Bytes, "budget sram <= 256 KiB"),
            BudgetKind::Latency => (Dim::Time, "budget latency <= 100ms"),
        };
        let value = match v {
            Value::Poison => return,
            Value::Int(n) if k != BudgetKind::Latency => n,
            Value::Quantity { value, dim } if dim == want => value,
            Value::Int(_) | Value::Quantity { .. } => {
                let what = match want {
                    Dim::Count => "an ops budget is a count".to_string(),
                    Dim::Time => "a latency budget is a time".to_string(),
                    _ => format!("{} budgets are in bytes", kind.name),
                };
                let got = match v {
                    Value::Quantity { dim, .. } => dim.name(),
                    _ => "a plain number",
                };
                self.error(
                    Diagnostic::error(limit.span, format!("{what}, not {got}"))
                        .with_hint(format!("write `{}`", example.replace("sram", &kind.name))),
                );
                return;
            }
            other => {
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

    fn expr(&mut self, e: &Expr, env: &mut Env) -> Value {
        match &e.kind {
            ExprKind::Int(v) => Value::Int(*v),
            ExprKind::Percent(v) => Value::Percent(*v),
            ExprKind::Str(text) => Value::Str(text.clone()),
            ExprKind::Decimal(text) => match text.parse::<f32>() {
                Ok(v) if v.is_finite() => Value::Real(v),
                _ => self.error(Diagnostic::error(e.span, "this number is too large")),
            },
            ExprKind::Quantity { value, unit } => match value.checked_mul(unit.factor()) {
                Some(v) => Value::Quantity {
                    value: v,
                    dim: unit.dim(),
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
        // Once the network is too large, elaboration stops: every further
        // call returns at once.
        if self.halted {
            return Value::Poison;
        }
        self.calls += 1;
        if self.calls > MAX_BLOCK_CALLS {
            self.halted = true;
            return self.error(
                Diagnostic::error(
                    span,
                    format!("the network makes more than {MAX_BLOCK_CALLS} block calls"),
                )
                .with_hint("a block that calls blocks several times, nested, grows exponentially"),
            );
        }
        if self.call_stack.len() >= MAX_CALL_DEPTH {
            return self.error(
                Diagnostic::error(span, "block calls nest too deeply")
                    .with_label(format!("more than {MAX_CALL_DEPTH} calls deep")),
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
        // A block that calls itself with the same arguments (tensors aside)
        // would do so forever: there are no conditions in the language, so
        // only a parameter that changes (a block passed as an argument) can
        // end a recursion.
        if let Some(at) = self
            .active
            .iter()
            .position(|(a, e)| *a == b && alike_env(e, &env))
        {
            self.module_stack.pop();
            let d = Diagnostic::error(
                span,
                format!(
                    "`{}` calls itself with the same arguments: it would never end",
                    def.name.name
                ),
            )
            .with_label(if at + 1 == self.active.len() {
                "recursive call".to_string()
            } else {
                format!(
                    "recursive call, through `{}`",
                    self.program.block_def(self.active[at + 1].0).name.name
                )
            })
            .with_hint(
                "a block cannot call itself, except through a block passed to it that changes",
            );
            return self.error(d);
        }
        let prefix = self.fresh_name(&def.name.name);
        self.scopes.push(Scope {
            prefix,
            counters: BTreeMap::new(),
        });
        self.call_stack.push(span);
        self.active.push((b, env.clone()));
        let result = self.body(&def.body, &mut env, false);
        self.active.pop();
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
}

/// Two argument sets that make a block do the same thing: equal but for
/// which tensors they hold.
fn alike_env(a: &Env, b: &Env) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ka, va), (kb, vb))| ka == kb && alike(va, vb))
}

fn alike(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Tensor(_), Value::Tensor(_)) => true,
        (Value::Tuple(x), Value::Tuple(y)) | (Value::List(x), Value::List(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| alike(x, y))
        }
        _ => a == b,
    }
}
