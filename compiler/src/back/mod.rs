//! Source backends: the int8 network as ahead-of-time C ([`c`]), and a
//! fixed network written back as `.mnet` ([`mnet`]). The TFLite flatbuffer
//! has its own module, [`crate::tflite`].

pub mod c;
pub mod mnet;

use crate::lower::{LKind, Lowered};

/// MACs of each lowered node (for comments and summaries).
pub fn lowered_macs(l: &Lowered) -> Vec<u64> {
    l.nodes
        .iter()
        .map(|n| {
            let out: u64 = n.shape.iter().map(|&d| d as u64).product();
            match n.kind {
                LKind::Conv { kernel, .. } => {
                    let cin = *l.nodes[n.inputs[0]].shape.last().unwrap() as u64;
                    out * kernel[0] as u64 * kernel[1] as u64 * cin
                }
                LKind::Depthwise { kernel, .. } => out * kernel[0] as u64 * kernel[1] as u64,
                _ => 0,
            }
        })
        .collect()
}
