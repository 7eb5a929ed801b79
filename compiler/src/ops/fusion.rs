//! The one fusion and legality rule: which layers the int8 network folds
//! into the op before them.
//!
//! A batch norm folds into the conv, depthwise conv or dense before it; a
//! relu or relu6 becomes the output clamp (TFLite's
//! `fused_activation_function`) of the conv, depthwise conv, dense, pool or
//! add before it. Both only when they are the sole reader of that op's
//! output (another reader needs the unfolded values) and the op has nothing
//! of the kind fused yet. An activation that cannot fuse runs as its own op;
//! a batch norm that cannot fold is an error of the network, reported by
//! `mnet check` at the batch norm. The exact space analysis (costs of every
//! network), resolution (the `fused` flag of each fixed node, which `stats`
//! prints), lowering and quantization-aware training all decide with
//! [`fuse`], so they agree on what the network is.

use super::{FusionClass, Op};

/// What the op that produced a tensor can still take in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Producer {
    /// conv2d, depthwise_conv2d or dense with nothing folded in: a batch
    /// norm folds into it, a fusable activation fuses.
    Weighted,
    /// A weighted layer with its batch norm folded in: a fusable activation
    /// still fuses.
    Folded,
    /// A pool or add: a fusable activation fuses.
    TakesActivation,
    /// Nothing more fuses (any other op, or one with its activation).
    Closed,
}

/// Why a batch norm cannot fold: (message, hint).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoldError {
    pub message: String,
    pub hint: Option<String>,
}

/// How `op` combines with the op that produced its input (`producer`);
/// `sole_reader` says the op is the only reader of that input and the input
/// is not the network's output. Returns whether `op` is fused into the
/// producer, and what its own output can take in.
pub fn fuse(op: &Op, producer: Producer, sole_reader: bool) -> Result<(bool, Producer), FoldError> {
    Ok(match op.fusion_class() {
        FusionClass::Weighted => (false, Producer::Weighted),
        FusionClass::TakesActivation => (false, Producer::TakesActivation),
        FusionClass::FoldsIntoWeights => match (producer, sole_reader) {
            (Producer::Weighted, true) => (true, Producer::Folded),
            (Producer::Weighted, false) => {
                return Err(FoldError {
                    message: "`batch_norm` cannot fold into the layer before it: that layer's output has other readers".into(),
                    hint: Some("apply the batch norm before the output is shared, or give the other reader its own conv".into()),
                })
            }
            (Producer::Folded, _) => {
                return Err(FoldError {
                    message: "a second `batch_norm` cannot fold into a layer that already has one".into(),
                    hint: Some("remove one of the two batch norms".into()),
                })
            }
            (Producer::TakesActivation | Producer::Closed, _) => {
                return Err(FoldError {
                    message: "`batch_norm` must directly follow conv2d, depthwise_conv2d or dense, whose weights it is folded into".into(),
                    hint: None,
                })
            }
        },
        FusionClass::Activation(a) => {
            let fuses = a.fused().is_some()
                && sole_reader
                && matches!(
                    producer,
                    Producer::Weighted | Producer::Folded | Producer::TakesActivation
                );
            (fuses, Producer::Closed)
        }
        FusionClass::Identity => (true, producer),
        FusionClass::Plain => (false, Producer::Closed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{Activation, Padding, PoolKind, Window};

    #[test]
    fn the_rule() {
        let relu = Op::Act(Activation::Relu);
        let pool = Op::Pool {
            kind: PoolKind::Max,
            window: Window::tiling([2, 2]),
        };
        let conv = Op::Conv2d {
            out: 4,
            window: Window {
                kernel: [1, 1],
                stride: [1, 1],
                padding: Padding::Same,
            },
        };
        // conv -> batch norm -> relu: both fold.
        let (f, p) = fuse(&conv, Producer::Closed, true).unwrap();
        assert_eq!((f, p), (false, Producer::Weighted));
        assert_eq!(
            fuse(&Op::BatchNorm, p, true).unwrap(),
            (true, Producer::Folded)
        );
        assert_eq!(
            fuse(&relu, Producer::Folded, true).unwrap(),
            (true, Producer::Closed)
        );
        // relu after a pool fuses; after a concat or a shared conv it runs alone.
        let (_, p) = fuse(&pool, Producer::Weighted, true).unwrap();
        assert!(fuse(&relu, p, true).unwrap().0);
        assert!(!fuse(&relu, Producer::Closed, true).unwrap().0);
        assert!(!fuse(&relu, Producer::Weighted, false).unwrap().0);
        // A batch norm that cannot fold is an error.
        assert!(fuse(&Op::BatchNorm, Producer::Weighted, false).is_err());
        assert!(fuse(&Op::BatchNorm, Producer::Folded, true).is_err());
        assert!(fuse(&Op::BatchNorm, Producer::TakesActivation, true).is_err());
    }
}
