//! Source backends: the int8 network as ahead-of-time C ([`c`]) or as
//! host code compiled by Cranelift ([`jit`]), and a
//! fixed network written back as `.mnet` ([`mnet`]). The TFLite flatbuffer
//! has its own module, [`crate::tflite`].

pub mod c;
pub mod dsp;
pub mod jit;
pub mod mnet;

use crate::lower::Lowered;

/// MACs of each lowered node (for comments and summaries): a weighted
/// node's weights, once per output pixel.
pub fn lowered_macs(l: &Lowered) -> Vec<u64> {
    l.nodes
        .iter()
        .map(|n| match &n.params {
            Some(p) => {
                let pixels: u64 = n.shape[..n.shape.len() - 1]
                    .iter()
                    .map(|&d| d as u64)
                    .product();
                pixels * (p.layout.channels * p.layout.per_channel) as u64
            }
            None => 0,
        })
        .collect()
}
