//! Calls of the built-in layers: arguments bound to the op table's
//! parameters, defaults filled in, attributes set (or bound to a choice,
//! every option checked once), and the node added.

use super::*;

impl Elab<'_> {
    pub(super) fn tensor_arg(
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

    /// Take the `name: "..."` argument every layer accepts (the name its
    /// weights and tensors go by) out of `args`; `Err` after reporting a
    /// bad one.
    fn layer_name(&mut self, args: &mut Vec<ArgVal>) -> Result<Option<String>, ()> {
        let Some(at) = args
            .iter()
            .position(|a| a.name.as_ref().is_some_and(|n| n.name == "name"))
        else {
            return Ok(None);
        };
        let a = args.remove(at);
        let ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 200
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_/-".contains(c))
        };
        match a.value {
            Value::Str(s) if ok(&s) => Ok(Some(s)),
            Value::Poison => Err(()),
            v => {
                let label = match v {
                    Value::Str(_) => "not a name".to_string(),
                    other => format!("this is {}", other.kind()),
                };
                self.error(
                    Diagnostic::error(
                        a.span,
                        "a layer's `name` is a string of letters, digits, `_`, `/` and `-`",
                    )
                    .with_label(label)
                    .with_hint("write `name: \"conv_0\"`"),
                );
                Err(())
            }
        }
    }

    pub(super) fn layer(
        &mut self,
        def: &'static OpDef,
        mut args: Vec<ArgVal>,
        span: Span,
    ) -> Value {
        if self.halted {
            return Value::Poison;
        }
        let name = def.name;
        let Ok(given) = self.layer_name(&mut args) else {
            return Value::Poison;
        };
        let tensor_params = match def.inputs {
            Inputs::Many => return self.variadic(def, args, span, given),
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
        Value::Tensor(self.add_named_node(SearchOp::Layer(op), &inputs, bindings, span, given))
    }

    /// A layer of two or more positional tensors (`concat`).
    pub(super) fn variadic(
        &mut self,
        def: &'static OpDef,
        args: Vec<ArgVal>,
        span: Span,
        given: Option<String>,
    ) -> Value {
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
        Value::Tensor(self.add_named_node(
            SearchOp::Layer((def.template)()),
            &inputs,
            vec![],
            span,
            given,
        ))
    }

    /// Set an attribute from an argument, binding it to a choice if the
    /// argument is one (every option is checked now, once).
    pub(super) fn set(
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
