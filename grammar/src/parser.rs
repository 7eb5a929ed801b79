//! The parser: pest pairs to [`ast`](crate::ast), with error recovery.
//!
//! The file is parsed one top-level item at a time. When an item fails, its
//! error is recorded and parsing resumes at the next line that starts with an
//! item keyword (`use`, `block`, `network`, `board`), so one typo does not hide
//! the others. Rules named `mistake_*` in the grammar match common slips
//! (`let x = ...`, `out=8`, `4..276`) and become diagnostics with a hint.
//! Comments are not seen by pest; they are collected from the text afterwards
//! and attached as [`Trivia`] (see [`attach_comments`]). No pest type leaves
//! this module.

use crate::ast::*;
use crate::diag::{Diagnostic, Diagnostics, FileId, Span};
use pest::error::{ErrorVariant, InputLocation};
use pest::iterators::Pair;
use pest::Parser as _;

#[derive(pest_derive::Parser)]
#[grammar = "mnet.pest"]
struct MnetParser;

/// Deepest nesting pest may explore before giving up (protects the stack on
/// hostile inputs such as ten thousand `(`).
const CALL_LIMIT: usize = 2_000_000;
/// Deepest expression nesting accepted.
const MAX_DEPTH: usize = 64;

/// Parse a whole file. Returns the module (with the items that parsed) and
/// every syntax error found.
pub fn parse(file: FileId, src: &str) -> (Module, Diagnostics) {
    pest::set_call_limit(std::num::NonZeroUsize::new(CALL_LIMIT));
    let mut diags = Vec::new();
    let mut items = Vec::new();
    if let Some(d) = nesting_too_deep(file, src) {
        return (Module::default(), vec![d]);
    }
    let mut pos = 0usize;
    while pos < src.len() {
        let rest = &src[pos..];
        if MnetParser::parse(Rule::only_trivia, rest).is_ok() {
            break;
        }
        match MnetParser::parse(Rule::single_item, rest) {
            Ok(mut pairs) => {
                let single = pairs.next().expect("single_item");
                let item_pair = single.into_inner().next().expect("item");
                let end = item_pair.as_span().end();
                let start = item_pair.as_span().start();
                let b = Builder { file, base: pos };
                match b.item(item_pair) {
                    Ok(item) => {
                        items.push(item);
                        pos += end.max(1);
                    }
                    Err(d) => {
                        diags.push(d);
                        match next_item_start(src, pos + start) {
                            Some(next) => pos = next,
                            None => break,
                        }
                    }
                }
            }
            Err(e) => {
                let at = match e.location {
                    InputLocation::Pos(p) => p,
                    InputLocation::Span((s, _)) => s,
                };
                diags.push(syntax_error(file, src, pos + at, &e.variant));
                match next_item_start(src, pos + at) {
                    Some(next) => pos = next,
                    None => break,
                }
            }
        }
    }
    let mut module = Module {
        items,
        dangling: Vec::new(),
    };
    attach_comments(&mut module, src, file);
    (module, diags)
}

/// A cheap pre-check so pathological nesting is an error, not a stack overflow.
fn nesting_too_deep(file: FileId, src: &str) -> Option<Diagnostic> {
    let mut depth = 0usize;
    for (i, b) in src.bytes().enumerate() {
        match b {
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Some(
                        Diagnostic::error(Span::new(file, i, i + 1), "nesting is too deep")
                            .with_label(format!("more than {MAX_DEPTH} open brackets here")),
                    );
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// The byte offset of the first line after `from` that starts an item.
fn next_item_start(src: &str, from: usize) -> Option<usize> {
    let mut offset = src[..from.min(src.len())]
        .rfind('\n')
        .map(|i| i + 1)
        .unwrap_or(0);
    // Skip the line holding the error.
    let mut first = true;
    for line in src[offset..].split_inclusive('\n') {
        if !first {
            let word: String = line
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if matches!(
                word.as_str(),
                "use" | "block" | "network" | "board" | "fn" | "def" | "function" | "func"
            ) {
                return Some(offset);
            }
        }
        first = false;
        offset += line.len();
    }
    None
}

fn describe(rule: &Rule) -> &'static str {
    match rule {
        Rule::EOI => "end of file",
        Rule::ident => "a name",
        Rule::int => "an integer",
        Rule::decimal => "a decimal number",
        Rule::string => "a string",
        Rule::expr | Rule::primary | Rule::prefix => "an expression",
        Rule::call => "a call",
        Rule::comma => "`,`",
        Rule::rparen => "`)`",
        Rule::arg => "an argument",
        Rule::body => "`{`",
        Rule::stmt
        | Rule::assign_stmt
        | Rule::target_stmt
        | Rule::budget_stmt
        | Rule::repeat_stmt
        | Rule::return_stmt => "a statement",
        Rule::item
        | Rule::use_decl
        | Rule::block_def
        | Rule::network_def
        | Rule::board_def
        | Rule::single_item => "`use`, `block`, `network` or `board`",
        Rule::shape => "a shape like `[49, 10, 1]`",
        Rule::tensor_type => "a tensor type like `i8[49, 10, 1]`",
        Rule::param => "a parameter",
        Rule::field => "a field",
        Rule::stage => "a layer or block to pipe into",
        Rule::range => "a range like `4..=64 step 4`",
        Rule::unit => "a unit (KiB, MiB, K, M)",
        Rule::use_list => "`{`",
        Rule::use_all => "`*`",
        Rule::skippable => "`skippable`",
        _ => "something else",
    }
}

fn syntax_error(file: FileId, src: &str, at: usize, variant: &ErrorVariant<Rule>) -> Diagnostic {
    let at = at.min(src.len());
    let found = src[at..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .take(20)
        .collect::<String>();
    let found_desc = if at >= src.len() {
        "end of file".to_string()
    } else if found.is_empty() {
        "whitespace".to_string()
    } else {
        format!("`{found}`")
    };
    let len = found.len();
    let span = Span::new(file, at, (at + len).min(src.len().max(at)));
    let expected = match variant {
        ErrorVariant::ParsingError { positives, .. } => {
            let mut names: Vec<&str> = positives.iter().map(describe).collect();
            names.sort();
            names.dedup();
            names.retain(|n| *n != "something else");
            names
        }
        ErrorVariant::CustomError { .. } => Vec::new(),
    };
    // After a number pest only lists the unit it could not find; the real
    // question is what should have followed the expression.
    let expected = if expected == ["a unit (KiB, MiB, K, M)"] {
        Vec::new()
    } else {
        expected
    };
    let message = if expected.is_empty() {
        format!("unexpected {found_desc}")
    } else {
        format!("expected {}, found {found_desc}", join_or(&expected))
    };
    let mut d = Diagnostic::error(span, message).with_label("here");
    // Hints for frequent slips that pest reports at a distance.
    let before = src[..at].trim_end();
    if found.starts_with('=') && before.ends_with(|c: char| c.is_alphanumeric()) {
        d = d.with_hint("named arguments use `:`, as in `out: 64`");
    } else if before.ends_with(';') || found.starts_with(';') {
        d = d.with_hint("statements end at the end of the line; there is no `;`");
    } else if found.starts_with("..") && !found.starts_with("..=") {
        d = d.with_hint("ranges are inclusive: write `4..=64`");
    } else {
        let line_start = src[..at].rfind('\n').map(|i| i + 1).unwrap_or(0);
        let line = &src[line_start..at];
        let open = line.matches('(').count() + line.matches('[').count();
        let close = line.matches(')').count() + line.matches(']').count();
        if open > close {
            d = d.with_hint("a bracket opened on this line is not closed");
        }
    }
    d
}

fn join_or(items: &[&str]) -> String {
    match items.len() {
        0 => String::new(),
        1 => items[0].to_string(),
        n => format!("{} or {}", items[..n - 1].join(", "), items[n - 1]),
    }
}

struct Builder {
    file: FileId,
    /// Offset of the parsed slice in the file.
    base: usize,
}

type R<T> = Result<T, Diagnostic>;

impl Builder {
    /// The span of a pair without trailing whitespace and comments (pest
    /// includes the implicit whitespace skipped before a failed `*` or `?`).
    fn span(&self, p: &Pair<Rule>) -> Span {
        let s = p.as_span();
        let len = trim_trivia_end(p.as_str()).len();
        Span::new(
            self.file,
            self.base + s.start(),
            self.base + s.start() + len,
        )
    }

    fn ident(&self, p: Pair<Rule>) -> Ident {
        debug_assert_eq!(p.as_rule(), Rule::ident);
        Ident {
            name: p.as_str().to_string(),
            span: self.span(&p),
        }
    }

    fn int(&self, p: Pair<Rule>) -> R<Int> {
        let span = self.span(&p);
        let value = p.as_str().parse::<u64>().map_err(|_| {
            Diagnostic::error(span, "integer is too large").with_label("does not fit in 64 bits")
        })?;
        Ok(Int { value, span })
    }

    fn item(&self, p: Pair<Rule>) -> R<Item> {
        let span = self.span(&p);
        let kind = match p.as_rule() {
            Rule::use_decl => ItemKind::Use(self.use_decl(p)?),
            Rule::block_def => ItemKind::Block(self.block_def(p)?),
            Rule::network_def => ItemKind::Network(self.network_def(p)?),
            Rule::board_def => ItemKind::Board(self.board_def(p)?),
            Rule::mistake_fn => {
                return Err(Diagnostic::error(span, "unknown item")
                    .with_label("not an mnet keyword")
                    .with_hint(
                        "blocks are declared with `block NAME(x, param = default) { ... }`",
                    ))
            }
            r => unreachable!("item rule {r:?}"),
        };
        Ok(Item {
            kind,
            span,
            trivia: Trivia::default(),
        })
    }

    fn use_decl(&self, p: Pair<Rule>) -> R<UseDecl> {
        let mut path = Vec::new();
        let mut names = None;
        for c in p.into_inner() {
            match c.as_rule() {
                Rule::ident => path.push(self.ident(c)),
                Rule::use_all => names = Some(UseNames::All),
                Rule::use_list => {
                    names = Some(UseNames::List(
                        c.into_inner().map(|i| self.ident(i)).collect(),
                    ))
                }
                r => unreachable!("use rule {r:?}"),
            }
        }
        let names = match names {
            Some(n) => n,
            None => {
                if path.len() < 2 {
                    let last = path.last().expect("use has a name");
                    return Err(Diagnostic::error(last.span, "incomplete `use`")
                        .with_label("a module needs a name after it")
                        .with_hint(
                            "write `use std::blocks::{conv_bn, ds_block}` or `use std::blocks::*`",
                        ));
                }
                let last = path.pop().expect("checked");
                UseNames::List(vec![last])
            }
        };
        Ok(UseDecl {
            module: path,
            names,
        })
    }

    fn board_def(&self, p: Pair<Rule>) -> R<BoardDef> {
        let mut inner = p.into_inner();
        let name = self.ident(inner.next().expect("name"));
        let mut fields = Vec::new();
        for f in inner {
            let mut fi = f.into_inner();
            let fname = self.ident(fi.next().expect("field name"));
            let value = self.expr(fi.next().expect("field value"), 0)?;
            fields.push(Field { name: fname, value });
        }
        Ok(BoardDef { name, fields })
    }

    fn block_def(&self, p: Pair<Rule>) -> R<BlockDef> {
        let mut inner = p.into_inner();
        let name = self.ident(inner.next().expect("name"));
        let mut params = Vec::new();
        let mut body = None;
        for c in inner {
            match c.as_rule() {
                Rule::param => {
                    let mut pi = c.into_inner();
                    let pname = self.ident(pi.next().expect("param name"));
                    let default = match pi.next() {
                        Some(e) => Some(self.expr(e, 0)?),
                        None => None,
                    };
                    params.push(Param {
                        name: pname,
                        default,
                    });
                }
                Rule::body => body = Some(self.body(c)?),
                r => unreachable!("block rule {r:?}"),
            }
        }
        Ok(BlockDef {
            name,
            params,
            body: body.expect("block body"),
        })
    }

    fn network_def(&self, p: Pair<Rule>) -> R<NetworkDef> {
        let mut inner = p.into_inner();
        let name = self.ident(inner.next().expect("name"));
        let input = self.ident(inner.next().expect("input"));
        let tt = inner.next().expect("tensor type");
        let mut ti = tt.into_inner();
        let dtype = self.ident(ti.next().expect("dtype"));
        let dims = self.shape(ti.next().expect("shape"))?;
        let mut output = None;
        let mut body = None;
        for c in inner {
            match c.as_rule() {
                Rule::shape => output = Some(self.shape(c)?),
                Rule::body => body = Some(self.body(c)?),
                r => unreachable!("network rule {r:?}"),
            }
        }
        Ok(NetworkDef {
            name,
            input,
            input_type: TensorType { dtype, dims },
            output,
            body: body.expect("network body"),
        })
    }

    fn shape(&self, p: Pair<Rule>) -> R<Vec<Int>> {
        p.into_inner().map(|i| self.int(i)).collect()
    }

    fn body(&self, p: Pair<Rule>) -> R<Body> {
        let span = self.span(&p);
        let mut stmts = Vec::new();
        for s in p.into_inner() {
            stmts.push(self.stmt(s)?);
        }
        Ok(Body {
            stmts,
            dangling: Vec::new(),
            span,
        })
    }

    fn stmt(&self, p: Pair<Rule>) -> R<Stmt> {
        let span = self.span(&p);
        let rule = p.as_rule();
        let mut inner = p.into_inner();
        let kind = match rule {
            Rule::assign_stmt => {
                let target = self.ident(inner.next().expect("target"));
                let value = self.expr(inner.next().expect("value"), 0)?;
                StmtKind::Assign { target, value }
            }
            Rule::return_stmt => StmtKind::Return(self.expr(inner.next().expect("expr"), 0)?),
            Rule::target_stmt => StmtKind::Target(self.ident(inner.next().expect("board"))),
            Rule::budget_stmt => {
                let kind = self.ident(inner.next().expect("kind"));
                let limit = self.expr(inner.next().expect("limit"), 0)?;
                StmtKind::Budget { kind, limit }
            }
            Rule::repeat_stmt => {
                let count = self.expr(inner.next().expect("count"), 0)?;
                let body = self.body(inner.next().expect("body"))?;
                StmtKind::Repeat { count, body }
            }
            Rule::mistake_let => {
                let name = inner
                    .nth(1)
                    .map(|i| i.as_str().to_string())
                    .unwrap_or_default();
                return Err(Diagnostic::error(span, "mnet has no `let`")
                    .with_label("declaration keyword here")
                    .with_hint(format!("assign directly: `{name} = ...`")));
            }
            Rule::mistake_assign_colon => {
                let name = inner
                    .next()
                    .map(|i| i.as_str().to_string())
                    .unwrap_or_default();
                return Err(
                    Diagnostic::error(span, "a statement cannot start with `name:`")
                        .with_label("`:` is for named arguments")
                        .with_hint(format!("to assign, write `{name} = ...`")),
                );
            }
            r => unreachable!("stmt rule {r:?}"),
        };
        Ok(Stmt {
            kind,
            span,
            trivia: Trivia::default(),
        })
    }

    fn expr(&self, p: Pair<Rule>, depth: usize) -> R<Expr> {
        let span = self.span(&p);
        if depth > MAX_DEPTH {
            return Err(Diagnostic::error(span, "expression is nested too deeply"));
        }
        let d = depth + 1;
        match p.as_rule() {
            Rule::expr => {
                let mut inner = p.into_inner();
                let mut acc = self.expr(inner.next().expect("prefix"), d)?;
                for stage in inner {
                    let sspan = self.span(&stage);
                    let mut si = stage.into_inner().peekable();
                    let skippable = si
                        .peek()
                        .map(|c| c.as_rule() == Rule::skippable_kw)
                        .unwrap_or(false);
                    if skippable {
                        si.next();
                    }
                    let target = si.next().expect("stage target");
                    let mut st = self.expr(target, d)?;
                    if skippable {
                        st = Expr {
                            kind: ExprKind::Skippable(Box::new(st)),
                            span: sspan,
                        };
                    }
                    let whole = acc.span.join(sspan);
                    acc = Expr {
                        kind: ExprKind::Pipe {
                            input: Box::new(acc),
                            stage: Box::new(st),
                        },
                        span: whole,
                    };
                }
                Ok(acc)
            }
            Rule::skippable => {
                let inner = self.expr(p.into_inner().next().expect("operand"), d)?;
                Ok(Expr {
                    kind: ExprKind::Skippable(Box::new(inner)),
                    span,
                })
            }
            Rule::range => {
                let mut inner = p.into_inner();
                let lo = self.expr(inner.next().expect("lo"), d)?;
                let hi = self.expr(inner.next().expect("hi"), d)?;
                let step = match inner.next() {
                    Some(s) => Some(Box::new(self.expr(s, d)?)),
                    None => None,
                };
                Ok(Expr {
                    kind: ExprKind::Range {
                        lo: Box::new(lo),
                        hi: Box::new(hi),
                        step,
                    },
                    span,
                })
            }
            Rule::mistake_range => Err(Diagnostic::error(span, "ranges are inclusive in mnet")
                .with_label("`..` is not a range operator")
                .with_hint(format!("write `{}`", p.as_str().replacen("..", "..=", 1)))),
            Rule::call => {
                let mut inner = p.into_inner();
                let callee = self.ident(inner.next().expect("callee"));
                let mut args = Vec::new();
                for a in inner.filter(|p| p.as_rule() == Rule::arg) {
                    args.push(self.arg(a, d)?);
                }
                Ok(Expr {
                    kind: ExprKind::Call { callee, args },
                    span,
                })
            }
            Rule::paren => {
                let mut elems = Vec::new();
                let mut trailing = false;
                for c in p.into_inner() {
                    if c.as_rule() == Rule::trailing_comma {
                        trailing = true;
                    } else {
                        elems.push(self.expr(c, d)?);
                    }
                }
                if elems.len() == 1 && !trailing {
                    Ok(elems.pop().expect("one"))
                } else {
                    Ok(Expr {
                        kind: ExprKind::Tuple(elems),
                        span,
                    })
                }
            }
            Rule::list => {
                let elems = p
                    .into_inner()
                    .map(|c| self.expr(c, d))
                    .collect::<R<Vec<_>>>()?;
                Ok(Expr {
                    kind: ExprKind::List(elems),
                    span,
                })
            }
            Rule::quantity => {
                let mut inner = p.into_inner();
                let value = self.int(inner.next().expect("int"))?.value;
                let unit = Unit::parse(inner.next().expect("unit").as_str()).expect("grammar unit");
                Ok(Expr {
                    kind: ExprKind::Quantity { value, unit },
                    span,
                })
            }
            Rule::percent => {
                let digits = p.as_str().trim_end_matches('%');
                let value = digits
                    .parse::<u64>()
                    .map_err(|_| Diagnostic::error(span, "percentage is too large"))?;
                Ok(Expr {
                    kind: ExprKind::Percent(value),
                    span,
                })
            }
            Rule::decimal => Ok(Expr {
                kind: ExprKind::Decimal(p.as_str().to_string()),
                span,
            }),
            Rule::string => Ok(Expr {
                kind: ExprKind::Str(p.as_str().trim_matches('"').to_string()),
                span,
            }),
            Rule::int => {
                let v = self.int(p)?.value;
                Ok(Expr {
                    kind: ExprKind::Int(v),
                    span,
                })
            }
            Rule::ident => Ok(Expr {
                kind: ExprKind::Ident(p.as_str().to_string()),
                span,
            }),
            r => unreachable!("expr rule {r:?}"),
        }
    }

    fn arg(&self, p: Pair<Rule>, depth: usize) -> R<Arg> {
        let mut inner = p.into_inner().peekable();
        let first = inner.peek().expect("arg content");
        if first.as_rule() == Rule::mistake_named_eq {
            let m = inner.next().expect("mistake");
            let span = self.span(&m);
            let name = m
                .into_inner()
                .next()
                .map(|i| i.as_str().to_string())
                .unwrap_or_default();
            return Err(Diagnostic::error(span, "named arguments use `:`, not `=`")
                .with_label("written with `=`")
                .with_hint(format!("write `{name}: ...`")));
        }
        let mut name = None;
        if first.as_rule() == Rule::ident {
            name = Some(self.ident(inner.next().expect("name")));
        }
        let value = self.expr(inner.next().expect("value"), depth)?;
        Ok(Arg { name, value })
    }
}

/// `text` without trailing whitespace and `//` comments.
fn trim_trivia_end(text: &str) -> &str {
    let mut t = text.trim_end();
    loop {
        let line_start = t.rfind('\n').map(|i| i + 1).unwrap_or(0);
        match t[line_start..].find("//") {
            Some(i) => t = t[..line_start + i].trim_end(),
            None => return t,
        }
    }
}

/// A comment found in the text.
struct Comment {
    start: usize,
    text: String,
    /// Nothing but whitespace before it on its line.
    own_line: bool,
    /// A blank line follows it before the next code or comment.
    blank_after: bool,
}

/// Marks a blank line inside [`Trivia::leading`] (a comment text never
/// contains a newline).
pub const BLANK: &str = "\n";

fn scan_comments(src: &str) -> Vec<Comment> {
    let mut out = Vec::new();
    let mut line_start = 0;
    for line in src.split_inclusive('\n') {
        if let Some(i) = line.find("//") {
            let text = line[i + 2..].trim_end().to_string();
            let end = line_start + line.len();
            let rest = &src[end.min(src.len())..];
            let next = rest.trim_start();
            let gap = &rest[..rest.len() - next.len()];
            out.push(Comment {
                start: line_start + i,
                text,
                own_line: line[..i].trim().is_empty(),
                blank_after: gap.contains('\n') && !next.is_empty() && !next.starts_with('}'),
            });
        }
        line_start += line.len();
    }
    out
}

fn line_of(src: &str, offset: usize) -> usize {
    src.as_bytes()[..offset.min(src.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
}

fn has_blank_line(src: &str, from: usize, to: usize) -> bool {
    if from >= to || to > src.len() {
        return false;
    }
    src[from..to]
        .split('\n')
        .skip(1)
        .collect::<Vec<_>>()
        .split_last()
        .map(|(_, middle)| middle.iter().any(|l| l.trim().is_empty()))
        .unwrap_or(false)
}

/// Attach comments to the items and statements they belong to: a comment on
/// its own line leads the next item/statement of the innermost enclosing
/// body; a comment after code on the same line trails the statement that
/// ends there; comments with nothing after them dangle at the end of a body.
pub fn attach_comments(module: &mut Module, src: &str, _file: FileId) {
    let comments = scan_comments(src);
    for c in comments {
        place_in_module(module, src, c);
    }
    set_blank_lines(module, src);
}

fn place_in_module(module: &mut Module, src: &str, c: Comment) {
    let pos = c.start as u32;
    // Inside an item?
    for item in module.items.iter_mut() {
        if pos >= item.span.start && pos < item.span.end {
            if let Some(body) = item_body(item) {
                if pos > body.span.start && pos < body.span.end {
                    place_in_body(body, src, c);
                    return;
                }
            }
            if !c.own_line && line_of(src, c.start) == line_of(src, item.span.end as usize) {
                item.trivia.trailing = Some(c.text);
            } else {
                push_leading(&mut item.trivia.leading, c);
            }
            return;
        }
    }
    // Trailing on the line an item ends?
    for item in module.items.iter_mut() {
        if !c.own_line
            && pos >= item.span.end
            && line_of(src, c.start) == line_of(src, item.span.end as usize)
        {
            item.trivia.trailing = Some(c.text);
            return;
        }
    }
    match module.items.iter_mut().find(|i| i.span.start > pos) {
        Some(next) => push_leading(&mut next.trivia.leading, c),
        None => push_leading(&mut module.dangling, c),
    }
}

fn push_leading(list: &mut Vec<String>, c: Comment) {
    list.push(c.text);
    if c.blank_after && c.own_line {
        list.push(BLANK.to_string());
    }
}

fn item_body(item: &mut Item) -> Option<&mut Body> {
    match &mut item.kind {
        ItemKind::Block(b) => Some(&mut b.body),
        ItemKind::Network(n) => Some(&mut n.body),
        _ => None,
    }
}

fn place_in_body(body: &mut Body, src: &str, c: Comment) {
    let pos = c.start as u32;
    for stmt in body.stmts.iter_mut() {
        if pos >= stmt.span.start && pos < stmt.span.end {
            if let StmtKind::Repeat { body: inner, .. } = &mut stmt.kind {
                if pos > inner.span.start && pos < inner.span.end {
                    place_in_body(inner, src, c);
                    return;
                }
            }
            push_leading(&mut stmt.trivia.leading, c);
            return;
        }
    }
    for stmt in body.stmts.iter_mut() {
        if !c.own_line
            && pos >= stmt.span.end
            && line_of(src, c.start) == line_of(src, stmt.span.end as usize)
        {
            stmt.trivia.trailing = Some(c.text);
            return;
        }
    }
    match body.stmts.iter_mut().find(|s| s.span.start > pos) {
        Some(next) => push_leading(&mut next.trivia.leading, c),
        None => push_leading(&mut body.dangling, c),
    }
}

fn set_blank_lines(module: &mut Module, src: &str) {
    for item in module.items.iter_mut() {
        if let Some(body) = item_body(item) {
            set_blank_lines_body(body, src);
        }
    }
}

fn set_blank_lines_body(body: &mut Body, src: &str) {
    let comments = scan_comments(src);
    let mut prev_end: Option<usize> = None;
    for stmt in body.stmts.iter_mut() {
        // Where this statement's leading region starts: its first own-line
        // comment after the previous statement, or itself.
        let start = stmt.span.start as usize;
        if let Some(pe) = prev_end {
            let first_comment = comments
                .iter()
                .filter(|c| c.own_line && c.start > pe && c.start < start)
                .map(|c| c.start)
                .next();
            let region_start = first_comment.unwrap_or(start);
            // Step back to the line start so the blank-line test sees whole lines.
            stmt.trivia.blank_before = has_blank_line(src, pe, region_start);
        }
        if let StmtKind::Repeat { body: inner, .. } = &mut stmt.kind {
            set_blank_lines_body(inner, src);
        }
        prev_end = Some(stmt.span.end as usize);
    }
}
