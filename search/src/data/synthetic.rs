//! The built-in synthetic tasks: an easy template task (`synthetic`) and
//! the harder motif-order task (`synthetic-NAME`), deterministic and
//! learnable, for trying a space without data.
//!
//! Synthetic samples of class `c` are a class template (a smooth random
//! field from a few plane waves, fixed per class and seed) plus a random
//! shift of amplitude and independent noise, so a small convnet learns them
//! in a few epochs but cannot memorise noise.

use super::Dataset;
use rand::{RngExt, SeedableRng};

impl Dataset {
    /// `count` synthetic samples of the task `task` (which fixes the class
    /// templates); `draw` seeds the samples' gains and noise, so two draws
    /// of one task are a training and a held-out set.
    pub fn synthetic(
        shape: &[usize],
        classes: usize,
        count: usize,
        task: u64,
        draw: u64,
    ) -> Dataset {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(task);
        let len: usize = shape.iter().product();
        let c = *shape.last().unwrap();
        let coords = |i: usize| -> (f32, f32, f32) {
            let ch = i % c;
            let pos = i / c;
            if shape.len() == 3 {
                ((pos / shape[1]) as f32, (pos % shape[1]) as f32, ch as f32)
            } else {
                (pos as f32, 0.0, ch as f32)
            }
        };
        let templates: Vec<Vec<f32>> = (0..classes)
            .map(|_| {
                let waves: Vec<[f32; 4]> = (0..3)
                    .map(|_| {
                        [
                            rng.random_range(0.1f32..0.9),
                            rng.random_range(0.1f32..0.9),
                            rng.random_range(0.0f32..6.3),
                            rng.random_range(0.3f32..0.6),
                        ]
                    })
                    .collect();
                (0..len)
                    .map(|i| {
                        let (y, x, ch) = coords(i);
                        waves
                            .iter()
                            .map(|w| w[3] * (w[0] * y + w[1] * x + w[2] + ch).sin())
                            .sum()
                    })
                    .collect()
            })
            .collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(draw ^ 0x5eed_0000_0000_0001);
        let mut inputs = Vec::with_capacity(count * len);
        let mut labels = Vec::with_capacity(count);
        for k in 0..count {
            let label = k % classes;
            let gain = rng.random_range(0.7f32..1.3);
            for v in &templates[label] {
                inputs.push((gain * v + rng.random_range(-0.3f32..0.3)).clamp(-1.0, 1.0));
            }
            labels.push(label);
        }
        Dataset {
            shape: shape.to_vec(),
            classes,
            inputs,
            labels,
            sources: Vec::new(),
            groups: None,
        }
    }
}

impl Dataset {
    /// `count` samples of the motif-order task named `task` (a built-in
    /// task hard enough that a network's width and depth show in its
    /// accuracy): each class is an ordered pair of two distinct motifs
    /// (small smooth random patterns, fixed per task) out of the fewest
    /// that give every class its own pair, so every motif belongs to many
    /// classes and only *which two* and *which first* tell them apart; the
    /// motifs share half of one base pattern. A
    /// sample holds its class's first motif somewhere in the upper half of
    /// the map and the second in the lower half (at random positions and
    /// gains), at times a weaker third motif as a distractor, in noise.
    /// `draw` seeds the samples, as in [`Dataset::synthetic`].
    pub fn motif_order(
        shape: &[usize],
        classes: usize,
        count: usize,
        task: u64,
        draw: u64,
    ) -> Dataset {
        let (h, w, c) = match shape {
            [h, w, c] => (*h, *w, *c),
            [h, w] => (*h, *w, 1),
            _ => (shape.iter().product(), 1, 1),
        };
        let (mh, mw) = ((h / 5).max(2).min(h), (w / 2).max(2).min(w));
        let mut m = 2;
        while m * (m - 1) < classes {
            m += 1;
        }
        let pairs: Vec<(usize, usize)> = (0..m)
            .flat_map(|a| (0..m).filter(move |&b| b != a).map(move |b| (a, b)))
            .collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(task ^ 0x6d07_1f00);
        // Motifs share most of one base pattern: telling them apart in
        // the noise takes fine features.
        let base: Vec<f32> = (0..mh * mw * c)
            .map(|_| if rng.random::<bool>() { 1.0 } else { -1.0 })
            .collect();
        let motifs: Vec<Vec<f32>> = (0..m)
            .map(|_| {
                let raw: Vec<f32> = base
                    .iter()
                    .map(|&v| {
                        let own = if rng.random::<bool>() { 1.0 } else { -1.0 };
                        0.5 * v + 0.5 * own
                    })
                    .collect();
                // A 3x3 box blur within the motif: smooth, so a small
                // kernel sees only part of it.
                let mut out = vec![0.0f32; raw.len()];
                for y in 0..mh {
                    for x in 0..mw {
                        for ch in 0..c {
                            let mut sum = 0.0;
                            let mut n = 0.0;
                            for dy in -1i64..=1 {
                                for dx in -1i64..=1 {
                                    let (yy, xx) = (y as i64 + dy, x as i64 + dx);
                                    if yy >= 0
                                        && xx >= 0
                                        && (yy as usize) < mh
                                        && (xx as usize) < mw
                                    {
                                        sum += raw[((yy as usize) * mw + xx as usize) * c + ch];
                                        n += 1.0;
                                    }
                                }
                            }
                            out[(y * mw + x) * c + ch] = sum / n;
                        }
                    }
                }
                let peak = out.iter().fold(1e-6f32, |a, v| a.max(v.abs()));
                out.iter().map(|v| v / peak).collect()
            })
            .collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(draw ^ 0x5eed_0000_0000_0002);
        let len = h * w * c;
        let mut inputs = Vec::with_capacity(count * len);
        let mut labels = Vec::with_capacity(count);
        let half = h / 2;
        for k in 0..count {
            let label = k % classes;
            let (a, b) = pairs[label];
            let mut x: Vec<f32> = (0..len).map(|_| rng.random_range(-0.5f32..0.5)).collect();
            let put = |x: &mut Vec<f32>,
                       motif: usize,
                       rows: (usize, usize),
                       gain: f32,
                       rng: &mut rand_chacha::ChaCha8Rng| {
                let top = rng.random_range(rows.0..=rows.1.max(rows.0));
                let left = rng.random_range(0..=w - mw);
                for y in 0..mh {
                    for xx in 0..mw {
                        for ch in 0..c {
                            x[((top + y) * w + left + xx) * c + ch] +=
                                gain * motifs[motif][(y * mw + xx) * c + ch];
                        }
                    }
                }
            };
            let upper = (0, half.saturating_sub(mh));
            let lower = (half.min(h - mh), h - mh);
            let g1 = rng.random_range(0.6f32..1.0);
            put(&mut x, a, upper, g1, &mut rng);
            let g2 = rng.random_range(0.6f32..1.0);
            put(&mut x, b, lower, g2, &mut rng);
            if rng.random::<bool>() {
                let d = rng.random_range(0..m);
                put(&mut x, d, (0, h - mh), 0.5, &mut rng);
            }
            inputs.extend(x.iter().map(|v| v.clamp(-1.0, 1.0)));
            labels.push(label);
        }
        Dataset {
            shape: shape.to_vec(),
            classes,
            inputs,
            labels,
            sources: Vec::new(),
            groups: None,
        }
    }
}
