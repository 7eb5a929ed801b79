//! Small data sets in the standard layouts, written by the tests: a Speech
//! Commands tree of synthetic voiced clips (per word its formants, per
//! speaker its pitch, in noise), IDX files, and image class folders.

use rand::{RngExt, SeedableRng};
use std::path::Path;

pub fn write_wav(path: &Path, rate: u32, channels: u16, samples: &[i16]) {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for &s in samples {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
}

/// A Speech Commands tree.
pub struct SpeechTree<'a> {
    pub words: &'a [&'a str],
    /// Speakers `s0`, `s1`, ...; the last but one's clips are listed for
    /// validation, the last one's for test.
    pub speakers: usize,
    pub clips_per_speaker: usize,
    pub seed: u64,
}

/// One clip: a voiced "word" (two formant bands on harmonics of the
/// speaker's pitch, word-specific, under a syllable envelope at a random
/// onset) in faint noise, 1 s at 16 kHz, at times a little shorter (the
/// reader pads).
fn word_clip(word: usize, speaker: usize, rng: &mut rand_chacha::ChaCha8Rng) -> Vec<i16> {
    let n = if rng.random::<f32>() < 0.2 {
        15_000
    } else {
        16_000
    };
    let f0 = 90.0 + 25.0 * speaker as f32 + rng.random_range(-5.0f32..5.0);
    let f1 = 300.0 + 70.0 * (word % 7) as f32;
    let f2 = 900.0 + 180.0 * (word % 11) as f32;
    let onset = rng.random_range(1000..5000) as f32;
    let dur = rng.random_range(4000.0f32..8000.0);
    let gain = rng.random_range(0.2f32..0.6);
    let mut out = Vec::with_capacity(n);
    for t in 0..n {
        let tt = t as f32;
        let env = if tt < onset || tt > onset + dur {
            0.0
        } else {
            (std::f32::consts::PI * (tt - onset) / dur).sin()
        };
        let mut v = 0.0;
        for h in 1..=30 {
            let f = f0 * h as f32;
            if f > 7000.0 {
                break;
            }
            let w = (-((f - f1) / 150.0).powi(2)).exp() + 0.6 * (-((f - f2) / 250.0).powi(2)).exp();
            v += w * (2.0 * std::f32::consts::PI * f * tt / 16_000.0).sin();
        }
        let noise = rng.random_range(-0.01f32..0.01);
        out.push(((gain * env * v * 0.3 + noise).clamp(-1.0, 1.0) * 32767.0) as i16);
    }
    out
}

/// Write the tree under `dir`: `WORD/sK_nohash_J.wav`, the two list files,
/// and `_background_noise_/` with two 3-second noises.
pub fn speech_tree(dir: &Path, t: &SpeechTree) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(t.seed);
    let (mut val, mut test) = (String::new(), String::new());
    for (w, word) in t.words.iter().enumerate() {
        std::fs::create_dir_all(dir.join(word)).unwrap();
        for s in 0..t.speakers {
            for j in 0..t.clips_per_speaker {
                let name = format!("{word}/s{s}_nohash_{j}.wav");
                write_wav(&dir.join(&name), 16_000, 1, &word_clip(w, s, &mut rng));
                if s + 2 == t.speakers {
                    val.push_str(&format!("{name}\n"));
                } else if s + 1 == t.speakers {
                    test.push_str(&format!("{name}\n"));
                }
            }
        }
    }
    std::fs::write(dir.join("validation_list.txt"), val).unwrap();
    std::fs::write(dir.join("testing_list.txt"), test).unwrap();
    let noise = dir.join("_background_noise_");
    std::fs::create_dir_all(&noise).unwrap();
    for (k, name) in ["white_noise.wav", "hum.wav"].iter().enumerate() {
        let s: Vec<i16> = (0..48_000)
            .map(|i| {
                let v = if k == 0 {
                    rng.random_range(-0.5f32..0.5)
                } else {
                    0.4 * (2.0 * std::f32::consts::PI * 50.0 * i as f32 / 16_000.0).sin()
                        + rng.random_range(-0.05f32..0.05)
                };
                (v * 32767.0) as i16
            })
            .collect();
        write_wav(&noise.join(name), 16_000, 1, &s);
    }
}

/// IDX files (`PREFIX-images-idx3-ubyte`, `PREFIX-labels-idx1-ubyte`,
/// gzipped when `gz`) of `n` `h x w` images whose pixels depend on the
/// label (a bright band at a label-dependent row) plus noise.
pub fn idx_files(
    dir: &Path,
    prefix: &str,
    n: usize,
    (h, w): (usize, usize),
    classes: usize,
    gz: bool,
    seed: u64,
) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let labels: Vec<u8> = (0..n).map(|i| (i % classes) as u8).collect();
    let mut images = vec![0, 0, 8, 3];
    for d in [n, h, w] {
        images.extend((d as u32).to_be_bytes());
    }
    for &l in &labels {
        for y in 0..h {
            for _ in 0..w {
                let band = y * classes / h == l as usize;
                images.push(if band { 200 } else { 0 } + rng.random_range(0..50u8));
            }
        }
    }
    let mut label_file = vec![0, 0, 8, 1];
    label_file.extend((n as u32).to_be_bytes());
    label_file.extend(&labels);
    for (name, bytes) in [
        ("images-idx3-ubyte", images),
        ("labels-idx1-ubyte", label_file),
    ] {
        let path = dir.join(format!("{prefix}-{name}"));
        if gz {
            use std::io::Write;
            let f =
                std::fs::File::create(path.with_file_name(format!("{prefix}-{name}.gz"))).unwrap();
            let mut e = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
            e.write_all(&bytes).unwrap();
            e.finish().unwrap();
        } else {
            std::fs::write(path, bytes).unwrap();
        }
    }
}

/// `per_class` images per class folder under `dir` (PNG, every third
/// JPEG) of random sizes; class `c` is brighter on its own side.
pub fn image_tree(dir: &Path, classes: &[&str], per_class: usize, seed: u64) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for (c, class) in classes.iter().enumerate() {
        let d = dir.join(class);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..per_class {
            let (w, h) = (rng.random_range(20..60u32), rng.random_range(20..60u32));
            let img = image::RgbImage::from_fn(w, h, |x, y| {
                let side = if c % 2 == 0 { x < w / 2 } else { y < h / 2 };
                let v = if side { 180 } else { 40 } + (x * 7 + y * 3 + i as u32) as u8 % 30;
                image::Rgb([v, v / 2, 255 - v])
            });
            let name = if i % 3 == 2 {
                format!("{i}.jpg")
            } else {
                format!("{i}.png")
            };
            img.save(d.join(name)).unwrap();
        }
    }
}

/// A machine-sounds tree (MIMII / DCASE 2020 Task 2 layout) of one machine
/// type under `dir/TYPE`: per id a hum (a fundamental of its own with
/// harmonics, a slow flutter) in noise; the anomalies are the same hum
/// shifted up 15% in pitch and chopped by a 6 Hz tremolo. Clips of `secs`
/// seconds.
pub fn machine_tree(
    dir: &Path,
    machine: &str,
    ids: &[&str],
    per_id: (usize, usize, usize),
    secs: f32,
    seed: u64,
) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (train, normal, anomalous) = per_id;
    let n = (secs * 16_000.0) as usize;
    for (k, id) in ids.iter().enumerate() {
        let base = 180.0 + 140.0 * k as f32;
        let clip = |anomaly: bool, rng: &mut rand_chacha::ChaCha8Rng| -> Vec<i16> {
            let f0 = base * if anomaly { 1.15 } else { 1.0 } * rng.random_range(0.99f32..1.01);
            let phase = rng.random_range(0.0f32..std::f32::consts::TAU);
            (0..n)
                .map(|t| {
                    let tt = t as f32 / 16_000.0;
                    let flutter = 1.0 + 0.1 * (2.0 * std::f32::consts::PI * 0.5 * tt + phase).sin();
                    let tremolo = if anomaly {
                        0.5 + 0.5 * (2.0 * std::f32::consts::PI * 6.0 * tt).sin().signum()
                    } else {
                        1.0
                    };
                    let hum: f32 = (1..6)
                        .map(|h| (2.0 * std::f32::consts::PI * f0 * h as f32 * tt).sin() / h as f32)
                        .sum();
                    let v = 0.2 * flutter * tremolo * hum + rng.random_range(-0.05f32..0.05);
                    (v.clamp(-1.0, 1.0) * 32767.0) as i16
                })
                .collect()
        };
        for (split, kind, count) in [
            ("train", "normal", train),
            ("test", "normal", normal),
            ("test", "anomaly", anomalous),
        ] {
            let d = dir.join(machine).join(split);
            std::fs::create_dir_all(&d).unwrap();
            for j in 0..count {
                let samples = clip(kind == "anomaly", &mut rng);
                write_wav(
                    &d.join(format!("{kind}_id_{id}_{j:08}.wav")),
                    16_000,
                    1,
                    &samples,
                );
            }
        }
    }
}

/// A Speech Commands tree at `tree` ([`speech_tree`]) and its `--data`.
pub fn speech_commands(
    tree: &Path,
    words: &[&str],
    speakers: usize,
    clips_per_speaker: usize,
    seed: u64,
) -> String {
    speech_tree(
        tree,
        &SpeechTree {
            words,
            speakers,
            clips_per_speaker,
            seed,
        },
    );
    format!("speech-commands:{}", tree.display())
}
