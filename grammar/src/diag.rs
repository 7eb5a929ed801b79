//! Source files, byte spans and diagnostics.
//!
//! Every user-facing error in mnet is a [`Diagnostic`]: a message, a primary
//! span (the caret), optional secondary spans (for example the call site of a
//! block whose body failed) and hints. [`Sources`] owns the text of every file
//! a compilation read, the user's and the embedded standard library's, so a
//! diagnostic can point into either; [`Sources::render`] turns diagnostics into
//! the `path:line:col` + source line + caret text that the CLI prints and the
//! tests snapshot.

use codespan_reporting::diagnostic::{Diagnostic as CsDiagnostic, Label};
use codespan_reporting::files::SimpleFiles;
use codespan_reporting::term::{self, Chars, Config};

/// Index of a file in [`Sources`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub u32);

/// A byte range in one source file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Span {
    pub file: FileId,
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(file: FileId, start: usize, end: usize) -> Span {
        Span {
            file,
            start: start as u32,
            end: end as u32,
        }
    }

    /// The smallest span covering both (same file assumed).
    pub fn join(self, other: Span) -> Span {
        Span {
            file: self.file,
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

/// One source file: its display name and text.
#[derive(Clone, Debug)]
pub struct SourceFile {
    pub name: String,
    pub text: String,
}

/// All files of a compilation.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    files: Vec<SourceFile>,
}

impl Sources {
    pub fn new() -> Sources {
        Sources::default()
    }

    pub fn add(&mut self, name: impl Into<String>, text: impl Into<String>) -> FileId {
        self.files.push(SourceFile {
            name: name.into(),
            text: text.into(),
        });
        FileId(self.files.len() as u32 - 1)
    }

    pub fn get(&self, id: FileId) -> &SourceFile {
        &self.files[id.0 as usize]
    }

    /// Find a file by display name.
    pub fn find(&self, name: &str) -> Option<FileId> {
        self.files
            .iter()
            .position(|f| f.name == name)
            .map(|i| FileId(i as u32))
    }

    /// The text a span covers.
    pub fn slice(&self, span: Span) -> &str {
        let text = &self.get(span.file).text;
        text.get(span.start as usize..span.end as usize)
            .unwrap_or("")
    }

    /// `path:line:col` of the start of a span (1-based, columns in chars).
    pub fn location(&self, span: Span) -> String {
        let file = self.get(span.file);
        let (line, col) = line_col(&file.text, span.start as usize);
        format!("{}:{}:{}", file.name, line, col)
    }

    /// Render diagnostics as plain text (no colour): deterministic, so tests
    /// can snapshot exactly what a user sees.
    pub fn render(&self, diagnostics: &[Diagnostic]) -> String {
        let mut files = SimpleFiles::new();
        for f in &self.files {
            files.add(f.name.clone(), f.text.clone());
        }
        let config = Config {
            chars: Chars::ascii(),
            ..Config::default()
        };
        let mut out = String::new();
        for d in diagnostics {
            let mut labels = Vec::new();
            labels.push(
                Label::primary(d.span.file.0 as usize, clamp(self, d.span))
                    .with_message(d.label.clone()),
            );
            for (span, msg) in &d.secondary {
                labels.push(
                    Label::secondary(span.file.0 as usize, clamp(self, *span))
                        .with_message(msg.clone()),
                );
            }
            let cs = CsDiagnostic::error()
                .with_message(d.message.clone())
                .with_labels(labels)
                .with_notes(d.notes.clone());
            match term::emit_into_string(&config, &files, &cs) {
                Ok(s) => out.push_str(&s),
                Err(e) => out.push_str(&format!("error: {} ({e})\n", d.message)),
            }
        }
        out
    }
}

/// Keep a span inside its file and on char boundaries (a span from a mutated
/// input must never make rendering panic).
fn clamp(sources: &Sources, span: Span) -> std::ops::Range<usize> {
    let text = &sources.get(span.file).text;
    let mut start = (span.start as usize).min(text.len());
    let mut end = (span.end as usize).clamp(start, text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    while !text.is_char_boundary(end) {
        end += 1;
    }
    start..end
}

/// 1-based line and column (in chars) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = text[line_start..offset].chars().count() + 1;
    (line, col)
}

/// A user error: message, the span it is about, and help.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub message: String,
    pub span: Span,
    /// Text under the caret.
    pub label: String,
    pub secondary: Vec<(Span, String)>,
    /// Lines printed after the snippet; hints start with `hint:`.
    pub notes: Vec<String>,
}

impl Diagnostic {
    pub fn error(span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            message: message.into(),
            span,
            label: String::new(),
            secondary: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn with_label(mut self, label: impl Into<String>) -> Diagnostic {
        self.label = label.into();
        self
    }

    pub fn with_secondary(mut self, span: Span, msg: impl Into<String>) -> Diagnostic {
        self.secondary.push((span, msg.into()));
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.notes.push(format!("hint: {}", hint.into()));
        self
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Diagnostic {
        self.notes.push(note.into());
        self
    }
}

/// Diagnostics collected by a pass (one error does not stop the pass).
pub type Diagnostics = Vec<Diagnostic>;
