//! What mnet knows about a network before it compiles it: the exact
//! analysis of a whole search space ([`space`]), resolution of a space to
//! one fixed network ([`resolve`]), the relaxed cost model of differentiable
//! search ([`relax`]), and the per-layer tables of `mnet stats`
//! ([`stats`]).

pub mod latency;
pub mod relax;
pub mod resolve;
pub mod space;
pub mod stats;
