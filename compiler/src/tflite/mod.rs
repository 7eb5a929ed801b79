//! The TFLite flatbuffer format: the writer ([`write`]) and the
//! bounds-checked reader behind `mnet inspect` ([`inspect`]).

pub mod inspect;
pub mod write;
