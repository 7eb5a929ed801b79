//! Throughput of the KWS audio front-end (49×10 MFCCs of 1 s at 16 kHz):
//! the MFCCs alone on clips in memory, the reader's whole path on a
//! generated Speech Commands tree on disk (WAV decoding + MFCCs of a split),
//! and one augmented training epoch (shift, noise, MFCCs, masks), on 1 and
//! on all threads of rayon's pool (`RAYON_NUM_THREADS` caps it).
//!
//! usage: cargo run --release -p mnet-search --example frontend_throughput -- [--clips 4000]
//! Prints clips/s for each.

use mnet_search::data::audio::Mfcc;
use mnet_search::data::{self, Augment, Options, Split};
use rand::{RngExt, SeedableRng};
use rayon::prelude::*;
use std::time::Instant;

fn clips_arg() -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--clips")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("--clips takes a number"))
        .unwrap_or(4000)
}

fn write_wav(path: &std::path::Path, samples: &[i16]) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for &s in samples {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
}

/// Best of three runs of `f`, in clips per second.
fn rate(clips: usize, threads: usize, f: &(dyn Fn() + Sync)) -> f64 {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    (0..3)
        .map(|_| {
            let t = Instant::now();
            pool.install(f);
            clips as f64 / t.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
}

fn main() {
    let n = clips_arg();
    let all = rayon::current_num_threads();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let audio: Vec<Vec<f32>> = (0..n)
        .map(|_| {
            (0..16_000)
                .map(|_| rng.random_range(-0.3f32..0.3))
                .collect()
        })
        .collect();
    let mfcc = Mfcc::kws();
    let compute = || {
        audio.par_iter().for_each_init(
            || (mfcc.frontend.scratch(), vec![0f32; 490]),
            |(s, out), clip| mfcc.compute(clip, s, out),
        )
    };
    for threads in [1, all] {
        println!(
            "mfcc_in_memory threads={threads}: {:.0} clips/s",
            rate(n, threads, &compute)
        );
    }
    // A tree on disk: 10 keywords and two other words, 16-bit WAVs.
    let dir = std::env::temp_dir().join(format!("mnet-frontend-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let words = [
        "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "bed", "cat",
    ];
    for w in words {
        std::fs::create_dir_all(dir.join(w)).unwrap();
    }
    std::fs::create_dir_all(dir.join("_background_noise_")).unwrap();
    let noise: Vec<i16> = (0..160_000)
        .map(|_| rng.random_range(-8000i16..8000))
        .collect();
    write_wav(&dir.join("_background_noise_/noise.wav"), &noise);
    let per_word = n.div_ceil(words.len());
    for (i, clip) in audio.iter().enumerate().take(per_word * words.len().min(n)) {
        let w = words[i % words.len()];
        let s: Vec<i16> = clip.iter().map(|v| (v * 32767.0) as i16).collect();
        write_wav(&dir.join(format!("{w}/c{i}_nohash_0.wav")), &s);
    }
    let opts = Options {
        seed: 0,
        words: None,
        augment: Some(Augment {
            time_masks: 2,
            freq_masks: 2,
            ..Augment::default()
        }),
    };
    let spec = format!("speech-commands:{}", dir.display());
    let source = data::open(&spec, &[49, 10, 1], 12, &opts).expect("the generated tree");
    let rows = source.split(Split::Train).unwrap().len();
    for threads in [1, all] {
        let r = rate(rows, threads, &|| {
            source.split(Split::Train).unwrap();
        });
        println!("read_wav_and_mfcc threads={threads}: {r:.0} clips/s ({rows} clips, a split)");
    }
    let train = source.train().unwrap();
    for threads in [1, all] {
        let r = rate(rows, threads, &|| {
            train.epoch(2).unwrap();
        });
        println!("augmented_epoch threads={threads}: {r:.0} clips/s (shift, noise, 2+2 masks)");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
