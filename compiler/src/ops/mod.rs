//! The ops of the language: shape inference, costs and attributes
//! ([`shape`]).

pub mod shape;
