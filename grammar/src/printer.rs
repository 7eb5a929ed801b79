//! The canonical printer (`mnet fmt`).
//!
//! One way to write each construct: four-space indentation, one statement per
//! line, `name: value` arguments, a blank line between items (consecutive
//! `use` lines stay together), comments kept where the parser attached them.
//! The printer is the inverse of the parser up to spans:
//! `parse(print(ast)) == ast` after [`Module::erase_spans`](crate::ast::Module::erase_spans),
//! which the tests check on every example.

use crate::ast::*;
use crate::parser::BLANK;
use std::fmt::Write;

/// Print a module in canonical form.
pub fn print_module(m: &Module) -> String {
    let mut out = String::new();
    let mut prev_use = false;
    for (i, item) in m.items.iter().enumerate() {
        let is_use = matches!(item.kind, ItemKind::Use(_));
        if i > 0 && !(is_use && prev_use && item.trivia.leading.is_empty()) {
            out.push('\n');
        }
        prev_use = is_use;
        for c in &item.trivia.leading {
            comment_line(&mut out, c, 0);
        }
        print_item(&mut out, item);
    }
    if !m.dangling.is_empty() {
        if !m.items.is_empty() {
            out.push('\n');
        }
        for c in &m.dangling {
            comment_line(&mut out, c, 0);
        }
    }
    out
}

fn trailing(out: &mut String, t: &Trivia) {
    if let Some(c) = &t.trailing {
        let _ = write!(out, " //{c}");
    }
    out.push('\n');
}

fn print_item(out: &mut String, item: &Item) {
    match &item.kind {
        ItemKind::Use(u) => {
            let module: Vec<&str> = u.module.iter().map(|i| i.name.as_str()).collect();
            let _ = write!(out, "use {}::", module.join("::"));
            match &u.names {
                UseNames::All => out.push('*'),
                UseNames::List(names) if names.len() == 1 => out.push_str(&names[0].name),
                UseNames::List(names) => {
                    let n: Vec<&str> = names.iter().map(|i| i.name.as_str()).collect();
                    let _ = write!(out, "{{{}}}", n.join(", "));
                }
            }
            trailing(out, &item.trivia);
        }
        ItemKind::Board(b) => {
            let _ = write!(out, "board {} {{", b.name.name);
            let fields: Vec<String> = b
                .fields
                .iter()
                .map(|f| format!("{}: {}", f.name.name, expr(&f.value)))
                .collect();
            if !fields.is_empty() {
                let _ = write!(out, " {} ", fields.join(", "));
            }
            out.push('}');
            trailing(out, &item.trivia);
        }
        ItemKind::Block(b) => {
            let params: Vec<String> = b
                .params
                .iter()
                .map(|p| match &p.default {
                    Some(d) => format!("{} = {}", p.name.name, expr(d)),
                    None => p.name.name.clone(),
                })
                .collect();
            let _ = write!(out, "block {}({}) ", b.name.name, params.join(", "));
            print_body(out, &b.body, 0);
            trailing(out, &item.trivia);
        }
        ItemKind::Network(n) => {
            let dims: Vec<String> = n
                .input_type
                .dims
                .iter()
                .map(|d| d.value.to_string())
                .collect();
            let _ = write!(
                out,
                "network {}({}: {}[{}])",
                n.name.name,
                n.input.name,
                n.input_type.dtype.name,
                dims.join(", ")
            );
            if let Some(o) = &n.output {
                let dims: Vec<String> = o.iter().map(|d| d.value.to_string()).collect();
                let _ = write!(out, " -> [{}]", dims.join(", "));
            }
            out.push(' ');
            print_body(out, &n.body, 0);
            trailing(out, &item.trivia);
        }
    }
}

/// A comment line, or the blank line that [`BLANK`] marks.
fn comment_line(out: &mut String, c: &str, level: usize) {
    if c == BLANK {
        out.push('\n');
    } else {
        indent(out, level);
        let _ = writeln!(out, "//{c}");
    }
}

fn indent(out: &mut String, level: usize) {
    for _ in 0..level {
        out.push_str("    ");
    }
}

/// Prints `{ ... }` without the final newline (the caller adds trivia).
fn print_body(out: &mut String, b: &Body, level: usize) {
    out.push_str("{\n");
    for (i, s) in b.stmts.iter().enumerate() {
        if i > 0 && s.trivia.blank_before {
            out.push('\n');
        }
        for c in &s.trivia.leading {
            comment_line(out, c, level + 1);
        }
        indent(out, level + 1);
        match &s.kind {
            StmtKind::Assign { target, value } => {
                let _ = write!(out, "{} = {}", target.name, expr(value));
            }
            StmtKind::Return(e) => {
                let _ = write!(out, "return {}", expr(e));
            }
            StmtKind::Target(t) => {
                let _ = write!(out, "target {}", t.name);
            }
            StmtKind::Budget { kind, limit } => {
                let _ = write!(out, "budget {} <= {}", kind.name, expr(limit));
            }
            StmtKind::Repeat { count, body } => {
                let _ = write!(out, "repeat {} ", expr(count));
                print_body(out, body, level + 1);
            }
        }
        trailing(out, &s.trivia);
    }
    for c in &b.dangling {
        comment_line(out, c, level + 1);
    }
    indent(out, level);
    out.push('}');
}

/// Print one expression.
pub fn expr(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Int(v) => v.to_string(),
        ExprKind::Percent(v) => format!("{v}%"),
        ExprKind::Decimal(v) => v.clone(),
        ExprKind::Str(v) => format!("\"{v}\""),
        ExprKind::Quantity { value, unit } => match unit {
            Unit::K | Unit::M | Unit::G | Unit::Us | Unit::Ms | Unit::S => {
                format!("{value}{}", unit.as_str())
            }
            _ => format!("{value} {}", unit.as_str()),
        },
        ExprKind::Ident(s) => s.clone(),
        ExprKind::Tuple(xs) if xs.len() == 1 => format!("({},)", expr(&xs[0])),
        ExprKind::Tuple(xs) => format!("({})", list(xs)),
        ExprKind::List(xs) => format!("[{}]", list(xs)),
        ExprKind::Call { callee, args } => {
            let a: Vec<String> = args
                .iter()
                .map(|a| match &a.name {
                    Some(n) => format!("{}: {}", n.name, expr(&a.value)),
                    None => expr(&a.value),
                })
                .collect();
            format!("{}({})", callee.name, a.join(", "))
        }
        ExprKind::Pipe { input, stage } => format!("{} |> {}", expr(input), expr(stage)),
        ExprKind::Skippable(x) => match x.kind {
            ExprKind::Pipe { .. } | ExprKind::Range { .. } | ExprKind::Skippable(_) => {
                format!("skippable ({})", expr(x))
            }
            _ => format!("skippable {}", expr(x)),
        },
        ExprKind::Range { lo, hi, step } => match step {
            Some(s) => format!("{}..={} step {}", expr(lo), expr(hi), expr(s)),
            None => format!("{}..={}", expr(lo), expr(hi)),
        },
    }
}

fn list(xs: &[Expr]) -> String {
    xs.iter().map(expr).collect::<Vec<_>>().join(", ")
}
