//! The `.mnet` language front-end: a pest grammar (`mnet.pest`), the AST with
//! byte spans, diagnostics rendered as caret snippets, and the canonical
//! printer. Nothing here knows what a layer is; the compiler crate gives the
//! AST its meaning. No pest type is part of the public API.

pub mod ast;
pub mod diag;
mod parser;
pub mod printer;

pub use diag::{Diagnostic, Diagnostics, FileId, SourceFile, Sources, Span};
pub use parser::parse;
pub use printer::print_module;
