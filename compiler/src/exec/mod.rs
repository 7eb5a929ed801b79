//! Executing int8 networks on the host: TFLM's fixed-point arithmetic
//! ([`arith`]) and the reference interpreter built on it ([`interp`]), the
//! golden model every backend is compared with.

pub mod arith;
pub mod interp;
