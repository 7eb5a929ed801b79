//! Activation ranges for quantization: the float forward pass over
//! calibration inputs (a `.npy` file's samples, or deterministic synthetic
//! ones), each node's min and max.

use super::weights::FloatWeights;
use super::Lowered;
use rand::{RngExt, SeedableRng};

/// The float range the network input is assumed to have: `[-1, 1]`
/// (what `--random-weights` calibration draws from).
pub const INPUT_RANGE: (f32, f32) = (-1.0, 1.0);

/// Deterministic synthetic calibration inputs: smooth random fields in
/// `[-1, 1]` (a sum of a few random plane waves), so that convolutions see
/// correlated neighbours as they do on spectrograms and images.
pub fn synthetic_inputs(shape: &[u32], count: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x6d6e6574);
    let len: usize = shape.iter().map(|&d| d as usize).product();
    (0..count)
        .map(|_| {
            let waves: Vec<[f32; 4]> = (0..4)
                .map(|_| {
                    [
                        rng.random_range(0.0f32..0.8),
                        rng.random_range(0.0f32..0.8),
                        rng.random_range(0.0f32..6.3),
                        rng.random_range(0.2f32..0.5),
                    ]
                })
                .collect();
            (0..len)
                .map(|i| {
                    let c = *shape.last().unwrap() as usize;
                    let pos = i / c.max(1);
                    let (y, x) = if shape.len() == 3 {
                        (pos / shape[1] as usize, pos % shape[1] as usize)
                    } else {
                        (pos, 0)
                    };
                    let v: f32 = waves
                        .iter()
                        .map(|w| w[3] * (w[0] * y as f32 + w[1] * x as f32 + w[2]).sin())
                        .sum();
                    (v + rng.random_range(-0.1f32..0.1)).clamp(-1.0, 1.0)
                })
                .collect()
        })
        .collect()
}

/// Per-node float ranges over calibration inputs.
/// `input_range` fixes the input's range (synthetic calibration); `None`
/// takes it from the data.
pub fn calibrate(
    l: &Lowered,
    w: &FloatWeights,
    inputs: &[Vec<f32>],
    input_range: Option<(f32, f32)>,
) -> Vec<(f32, f32)> {
    let mut ranges = vec![(f32::MAX, f32::MIN); l.nodes.len()];
    for x in inputs {
        for (i, v) in crate::exec::f32::forward(l, w, x).iter().enumerate() {
            for &f in v {
                ranges[i].0 = ranges[i].0.min(f);
                ranges[i].1 = ranges[i].1.max(f);
            }
        }
    }
    if let Some(r) = input_range {
        ranges[0] = r;
    }
    ranges
}
