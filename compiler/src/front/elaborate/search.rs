//! The search constructs: `repeat` (fixed and searched depth),
//! `skippable` (with the avg-pool shortcut of a downsampling block),
//! `choice(...)` over constants or sub-blocks, and `width(...)`.

use super::*;

impl Elab<'_> {
    pub(super) fn repeat(
        &mut self,
        count: &Expr,
        body: &ast::Body,
        env: &mut Env,
    ) -> Option<Value> {
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
                    if self.halted {
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
    pub(super) fn body_in_loop(&mut self, body: &ast::Body, env: &mut Env) -> Option<Value> {
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

    pub(super) fn depth_repeat(
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

    pub(super) fn skippable(
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
    pub(super) fn downsampling(
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
                    | Op::Softmax
                    | Op::Dropout { .. } => {}
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
    pub(super) fn choice(&mut self, args: &[ast::Arg], span: Span, env: &mut Env) -> Value {
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
    pub(super) fn width(&mut self, args: Vec<ArgVal>, span: Span) -> Value {
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
                        if *hi > 1 << 20 {
                            return self.error(Diagnostic::error(
                                *rspan,
                                format!("a width of {hi} channels is too large"),
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
                        if base > 1 << 20 {
                            return self.error(Diagnostic::error(
                                span,
                                format!("a full width of {base} channels is too large"),
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
}
