//! Loading a program: the user's file, the standard-library modules it
//! imports, and the scope of each module.
//!
//! The standard library is `.mnet` source embedded in the binary and parsed by
//! the same front-end (`std::blocks`, `std::spaces`, `std::boards`). Every
//! module has its own scope: its own blocks and boards plus what it imports,
//! so a stdlib block body resolves names in the stdlib module, not in the
//! user's file. Boards of `std::boards` are always visible to `target`.

use crate::ir::Board;
use mnet_grammar::ast::{self, ExprKind, ItemKind, UseNames};
use mnet_grammar::{parse, Diagnostic, Diagnostics, FileId, Sources, Span};
use std::collections::BTreeMap;

/// The standard library: module path and source.
pub const STDLIB: &[(&str, &str)] = &[
    ("blocks", include_str!("../../../stdlib/blocks.mnet")),
    ("spaces", include_str!("../../../stdlib/spaces.mnet")),
    ("boards", include_str!("../../../stdlib/boards.mnet")),
];

/// A block definition: module index and item index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockRef {
    pub module: usize,
    pub item: usize,
}

#[derive(Debug)]
struct LoadedModule {
    ast: ast::Module,
    /// Blocks visible in this module (own and imported).
    blocks: BTreeMap<String, BlockRef>,
    /// Boards visible in this module (own and imported): (module, item).
    boards: BTreeMap<String, (usize, usize)>,
}

/// All modules of a compilation.
#[derive(Debug)]
pub struct Program {
    pub sources: Sources,
    modules: Vec<LoadedModule>,
    /// std module name -> module index.
    std_modules: BTreeMap<String, usize>,
}

impl Program {
    /// Parse `text` (shown as `name` in diagnostics) and everything it
    /// imports. Returns the program, the index of the user's module and the
    /// diagnostics (empty when all is well).
    pub fn load(name: &str, text: &str) -> (Program, usize, Diagnostics) {
        let mut p = Program {
            sources: Sources::new(),
            modules: Vec::new(),
            std_modules: BTreeMap::new(),
        };
        let mut diags = Vec::new();
        let user = p.load_module(name, text, &mut diags);
        // `target` may name any standard board.
        p.std_module("boards", &mut diags);
        (p, user, diags)
    }

    fn load_module(&mut self, name: &str, text: &str, diags: &mut Diagnostics) -> usize {
        let file = self.sources.add(name, text);
        let (module, parse_diags) = parse(file, text);
        diags.extend(parse_diags);
        let index = self.modules.len();
        self.modules.push(LoadedModule {
            ast: module,
            blocks: BTreeMap::new(),
            boards: BTreeMap::new(),
        });
        // Own definitions.
        let mut first_def: BTreeMap<String, Span> = BTreeMap::new();
        let mut first_network: BTreeMap<String, Span> = BTreeMap::new();
        let mut blocks = BTreeMap::new();
        let mut boards = BTreeMap::new();
        for (i, item) in self.modules[index].ast.items.iter().enumerate() {
            let (n, is_block) = match &item.kind {
                ItemKind::Block(b) => (&b.name, true),
                ItemKind::Board(b) => (&b.name, false),
                // Networks have their own names (`--network NAME`).
                ItemKind::Network(net) => {
                    let n = &net.name;
                    match first_network.get(&n.name) {
                        Some(prev) => diags.push(
                            Diagnostic::error(
                                n.span,
                                format!("network `{}` is defined twice", n.name),
                            )
                            .with_secondary(*prev, "first defined here")
                            .with_hint(
                                "`--network NAME` picks a network by its name: give each its own",
                            ),
                        ),
                        None => {
                            first_network.insert(n.name.clone(), n.span);
                        }
                    }
                    continue;
                }
                _ => continue,
            };
            if let Some(prev) = first_def.get(&n.name) {
                diags.push(
                    Diagnostic::error(n.span, format!("`{}` is defined twice", n.name))
                        .with_secondary(*prev, "first defined here"),
                );
                continue;
            }
            if is_block && crate::ops::lookup(&n.name).is_some() {
                diags.push(
                    Diagnostic::error(n.span, format!("`{}` is a built-in layer", n.name))
                        .with_hint("give the block another name"),
                );
                continue;
            }
            first_def.insert(n.name.clone(), n.span);
            if is_block {
                blocks.insert(
                    n.name.clone(),
                    BlockRef {
                        module: index,
                        item: i,
                    },
                );
            } else {
                boards.insert(n.name.clone(), (index, i));
            }
        }
        self.modules[index].blocks = blocks;
        self.modules[index].boards = boards;
        // Imports.
        let uses: Vec<ast::UseDecl> = self.modules[index]
            .ast
            .items
            .iter()
            .filter_map(|i| match &i.kind {
                ItemKind::Use(u) => Some(u.clone()),
                _ => None,
            })
            .collect();
        for u in uses {
            self.import(index, &u, &first_def, diags);
        }
        index
    }

    fn std_module(&mut self, name: &str, diags: &mut Diagnostics) -> Option<usize> {
        if let Some(&i) = self.std_modules.get(name) {
            return Some(i);
        }
        let (_, text) = STDLIB.iter().find(|(n, _)| *n == name)?;
        let i = self.load_module(&format!("std/{name}.mnet"), text, diags);
        self.std_modules.insert(name.to_string(), i);
        Some(i)
    }

    fn import(
        &mut self,
        into: usize,
        u: &ast::UseDecl,
        own: &BTreeMap<String, Span>,
        diags: &mut Diagnostics,
    ) {
        let path: Vec<&str> = u.module.iter().map(|i| i.name.as_str()).collect();
        let span = u
            .module
            .first()
            .expect("path")
            .span
            .join(u.module.last().expect("path").span);
        let from = match path.as_slice() {
            ["std", m] => match self.std_module(m, diags) {
                Some(i) => i,
                None => {
                    let names: Vec<String> =
                        STDLIB.iter().map(|(n, _)| format!("std::{n}")).collect();
                    diags.push(
                        Diagnostic::error(span, format!("unknown module `{}`", path.join("::")))
                            .with_note(format!("modules: {}", names.join(", "))),
                    );
                    return;
                }
            },
            _ => {
                diags.push(
                    Diagnostic::error(span, format!("unknown module `{}`", path.join("::")))
                        .with_hint("imports come from the standard library, e.g. `use std::blocks::{conv_bn}`; define your own blocks in this file"),
                );
                return;
            }
        };
        let names: Vec<(String, Span)> = match &u.names {
            UseNames::All => {
                let m = &self.modules[from];
                m.blocks
                    .keys()
                    .chain(m.boards.keys())
                    .map(|n| (n.clone(), span))
                    .collect()
            }
            UseNames::List(list) => list.iter().map(|i| (i.name.clone(), i.span)).collect(),
        };
        for (name, nspan) in names {
            if own.contains_key(&name) {
                diags.push(
                    Diagnostic::error(
                        nspan,
                        format!("`{name}` is imported and also defined in this file"),
                    )
                    .with_secondary(own[&name], "defined here"),
                );
                continue;
            }
            let block = self.modules[from].blocks.get(&name).copied();
            let board = self.modules[from].boards.get(&name).copied();
            match (block, board) {
                (Some(b), _) => {
                    self.modules[into].blocks.insert(name, b);
                }
                (None, Some(b)) => {
                    self.modules[into].boards.insert(name, b);
                }
                (None, None) => {
                    let known: Vec<String> = self.modules[from]
                        .blocks
                        .keys()
                        .chain(self.modules[from].boards.keys())
                        .cloned()
                        .collect();
                    diags.push(
                        Diagnostic::error(nspan, format!("`{}` has no `{name}`", path.join("::")))
                            .with_note(format!("it defines: {}", known.join(", "))),
                    );
                }
            }
        }
    }

    pub fn file(&self, module: usize) -> FileId {
        FileId(module as u32)
    }

    pub fn module_ast(&self, module: usize) -> &ast::Module {
        &self.modules[module].ast
    }

    pub fn block(&self, module: usize, name: &str) -> Option<BlockRef> {
        self.modules[module].blocks.get(name).copied()
    }

    pub fn block_names(&self, module: usize) -> Vec<String> {
        self.modules[module].blocks.keys().cloned().collect()
    }

    pub fn block_def(&self, b: BlockRef) -> &ast::BlockDef {
        match &self.modules[b.module].ast.items[b.item].kind {
            ItemKind::Block(def) => def,
            _ => unreachable!("block ref points at a block"),
        }
    }

    /// Whether a standard module defines a block of this name (for hints).
    pub fn is_std_block(&self, name: &str) -> bool {
        self.std_modules.values().any(|&m| {
            self.modules[m]
                .blocks
                .get(name)
                .map(|b| b.module == m)
                .unwrap_or(false)
        }) || STDLIB
            .iter()
            .any(|(_, text)| text.contains(&format!("block {name}(")))
    }

    fn board_ref(&self, module: usize, name: &str) -> Option<(usize, usize)> {
        self.modules[module]
            .boards
            .get(name)
            .or_else(|| {
                self.std_modules
                    .get("boards")
                    .and_then(|&m| self.modules[m].boards.get(name))
            })
            .copied()
    }

    pub fn board_names(&self, module: usize) -> Vec<String> {
        let mut names: Vec<String> = self.modules[module].boards.keys().cloned().collect();
        if let Some(&m) = self.std_modules.get("boards") {
            names.extend(self.modules[m].boards.keys().cloned());
        }
        names.sort();
        names.dedup();
        names
    }

    /// The board `name` as seen from `module`, checked.
    pub fn board(&self, module: usize, name: &str) -> Result<Option<Board>, Diagnostic> {
        let Some((m, i)) = self.board_ref(module, name) else {
            return Ok(None);
        };
        let ItemKind::Board(def) = &self.modules[m].ast.items[i].kind else {
            unreachable!("board ref points at a board")
        };
        let mut board = Board {
            name: name.to_string(),
            core: String::new(),
            sram_bytes: 0,
            flash_bytes: 0,
            clock_hz: None,
        };
        for f in &def.fields {
            match (f.name.name.as_str(), &f.value.kind) {
                ("core", ExprKind::Ident(s)) => board.core = s.clone(),
                ("sram", ExprKind::Quantity { value, unit }) if unit.is_bytes() => {
                    board.sram_bytes = value.saturating_mul(unit.factor())
                }
                ("flash", ExprKind::Quantity { value, unit }) if unit.is_bytes() => {
                    board.flash_bytes = value.saturating_mul(unit.factor())
                }
                ("clock", ExprKind::Quantity { value, unit })
                    if unit.dim() == mnet_grammar::ast::Dim::Frequency && *value > 0 =>
                {
                    board.clock_hz = Some(value.saturating_mul(unit.factor()))
                }
                ("core" | "sram" | "flash" | "clock", _) => return Err(Diagnostic::error(
                    f.value.span,
                    format!("invalid `{}` for a board", f.name.name),
                )
                .with_hint(
                    "boards look like `board b { core: cortex_m4, sram: 128 KiB, flash: 512 KiB, clock: 180 MHz }`",
                )),
                (other, _) => {
                    return Err(Diagnostic::error(
                        f.name.span,
                        format!("unknown board field `{other}`"),
                    )
                    .with_label("expected `core`, `sram`, `flash` or `clock`"))
                }
            }
        }
        if board.sram_bytes == 0 || board.flash_bytes == 0 {
            return Err(Diagnostic::error(
                def.name.span,
                format!("board `{name}` needs `sram` and `flash`"),
            ));
        }
        Ok(Some(board))
    }

    /// Networks defined in a module: (item index, definition, span).
    pub fn networks(&self, module: usize) -> Vec<(&ast::NetworkDef, Span)> {
        self.modules[module]
            .ast
            .items
            .iter()
            .filter_map(|i| match &i.kind {
                ItemKind::Network(n) => Some((n, i.span)),
                _ => None,
            })
            .collect()
    }

    /// Number of blocks a module defines itself.
    pub fn own_block_count(&self, module: usize) -> usize {
        self.modules[module]
            .blocks
            .values()
            .filter(|b| b.module == module)
            .count()
    }
}
