//! The training engine mnet's search is built on: a static-graph trainer
//! for small NHWC convnets ([`engine`]), SGD with momentum and weight decay
//! ([`optim`]), deterministic learnable synthetic data ([`data`]), the
//! training loop behind `mnet train` ([`train`]), and the supernet of a
//! search space ([`supernet`]) and the differentiable search over it
//! ([`dnas`]), with its checkpoints ([`checkpoint`]).

pub mod checkpoint;
pub mod data;
pub mod dnas;
pub mod engine;
pub mod optim;
pub mod simd;
pub mod supernet;
pub mod train;
