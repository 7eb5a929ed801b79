//! The front end: a `.mnet` file and the standard-library modules it uses
//! ([`program`]), elaborated network by network into a
//! [`SearchGraph`](crate::ir::SearchGraph) ([`elaborate`]).

pub mod elaborate;
pub mod program;
