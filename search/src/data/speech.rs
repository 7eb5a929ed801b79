//! `speech-commands:DIR`: the Speech Commands v2 layout (one folder per
//! word of 16 kHz mono 16-bit WAV clips, `validation_list.txt`,
//! `testing_list.txt`, `_background_noise_/`) as the 12-class problem of
//! TensorFlow's `speech_commands/input_data.py`: `_silence_` (label 0),
//! `_unknown_` (1) and the keywords (2...). Each split holds its keyword
//! clips, 10% as many `_unknown_` clips drawn from the other words of the
//! same split and 10% `_silence_` clips cut from the background-noise
//! files; the list files make the splits speaker-disjoint (without both,
//! the split is TensorFlow's hash of the file name without `_nohash_`).
//! Features: the 49×10 MFCCs of [`super::audio::Mfcc::kws`]; training may
//! augment (time shift, background noise, SpecAugment masks).

use super::audio::{read_wav, Mfcc};
use super::{check_memory, row_seed, Augment, DataError, Dataset, Options, Split};
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rayon::prelude::*;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

/// The keywords of the MicroNets/ML-zoo KWS task.
pub const KEYWORDS: [&str; 10] = [
    "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go",
];
const RATE: u32 = 16_000;
/// One clip: 1 s.
const CLIP: usize = 16_000;
const NOISE_DIR: &str = "_background_noise_";
const SILENCE: &str = "_silence_";
const UNKNOWN: &str = "_unknown_";

#[derive(Clone, Debug)]
enum Row {
    /// A clip (its path relative to DIR) and its label.
    Clip { path: String, label: usize },
    /// One second of a background-noise file, scaled.
    Silence {
        noise: usize,
        offset: usize,
        volume: f32,
    },
}

pub struct Speech {
    dir: PathBuf,
    words: Vec<String>,
    rows: [Vec<Row>; 3],
    /// The background-noise files (relative path, samples in [-1, 1)).
    noise: Vec<(String, Vec<f32>)>,
    mfcc: Mfcc,
    seed: u64,
}

/// `name/file.wav` entries of a list file, each with its line.
fn read_list(path: &Path) -> Result<Vec<(usize, String)>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::read(path, e))?;
    Ok(text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim().replace('\\', "/")))
        .filter(|(_, l)| !l.is_empty())
        .collect())
}

/// TensorFlow's `which_set` for a clip without list files: SHA-1 of the
/// file name with everything from `_nohash_` removed, into 10% validation,
/// 10% test.
fn hashed_split(path: &str) -> Split {
    let base = path.rsplit('/').next().unwrap_or(path);
    let name = match base.find("_nohash_") {
        Some(i) => &base[..i],
        None => base,
    };
    let digest = sha1_smol::Sha1::from(name).digest().bytes();
    let low = u32::from_be_bytes(digest[16..20].try_into().unwrap()) & ((1 << 27) - 1);
    let percent = low as f64 * (100.0 / ((1u64 << 27) - 1) as f64);
    if percent < 10.0 {
        Split::Val
    } else if percent < 20.0 {
        Split::Test
    } else {
        Split::Train
    }
}

fn to_f32(s: &[i16]) -> impl Iterator<Item = f32> + '_ {
    s.iter().map(|&v| v as f32 / 32768.0)
}

impl Speech {
    pub fn open(
        dir: &Path,
        shape: &[usize],
        classes: usize,
        opts: &Options,
    ) -> Result<Speech, DataError> {
        if !matches!(shape, [49, 10, 1] | [49, 10]) {
            return Err(DataError::Shape {
                kind: "speech-commands",
                gives: "[49, 10, 1] MFCC".into(),
                input: format!("{shape:?}"),
            });
        }
        if !dir.is_dir() {
            return Err(DataError::bad(dir, "no such folder"));
        }
        let words: Vec<String> = match &opts.words {
            Some(w) => w.clone(),
            None => KEYWORDS.iter().map(|s| s.to_string()).collect(),
        };
        let mut seen = HashSet::new();
        for w in &words {
            if w.is_empty() || w.starts_with('_') || w.contains('/') || !seen.insert(w) {
                return Err(DataError::NoSplit(format!(
                    "--words: `{w}` is not a word folder name (empty, starting with `_`, with a `/`, or twice)"
                )));
            }
        }
        if words.len() + 2 != classes {
            return Err(DataError::Classes {
                path: dir.display().to_string(),
                found: words.len() + 2,
                names: format!("{SILENCE}, {UNKNOWN}, {}", words.join(", ")),
                outputs: classes,
            });
        }
        // Every word folder's clips, by relative path.
        let mut clips: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for e in std::fs::read_dir(dir).map_err(|e| DataError::read(dir, e))? {
            let e = e.map_err(|e| DataError::read(dir, e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name == NOISE_DIR || name.starts_with('.') || !e.path().is_dir() {
                continue;
            }
            let mut files = Vec::new();
            for f in std::fs::read_dir(e.path()).map_err(|x| DataError::read(&e.path(), x))? {
                let p = f.map_err(|x| DataError::read(&e.path(), x))?.path();
                if p.is_file() && p.extension().is_some_and(|x| x.eq_ignore_ascii_case("wav")) {
                    files.push(format!(
                        "{name}/{}",
                        p.file_name().unwrap().to_string_lossy()
                    ));
                }
            }
            files.sort();
            clips.insert(name, files);
        }
        for w in &words {
            match clips.get(w) {
                None => return Err(DataError::bad(&dir.join(w), "no such folder (a keyword)")),
                Some(f) if f.is_empty() => {
                    return Err(DataError::bad(
                        &dir.join(w),
                        "no .wav files (an empty class folder)",
                    ))
                }
                _ => {}
            }
        }
        if !clips
            .iter()
            .any(|(w, f)| !words.contains(w) && !f.is_empty())
        {
            return Err(DataError::bad(
                dir,
                "no word folders with clips besides the keywords: the _unknown_ class is drawn from them",
            ));
        }
        // The split of every clip.
        let all: HashSet<&str> = clips.values().flatten().map(|s| s.as_str()).collect();
        let (val_list, test_list) = (
            dir.join("validation_list.txt"),
            dir.join("testing_list.txt"),
        );
        let mut listed: std::collections::HashMap<String, Split> = Default::default();
        let use_lists = val_list.is_file() && test_list.is_file();
        match (val_list.is_file(), test_list.is_file()) {
            (true, true) => {
                for (path, split) in [(&val_list, Split::Val), (&test_list, Split::Test)] {
                    for (line, entry) in read_list(path)? {
                        if !all.contains(entry.as_str()) {
                            return Err(DataError::bad(
                                path,
                                format!(
                                    "line {line} names {entry}, which is not a .wav file under {}",
                                    dir.display()
                                ),
                            ));
                        }
                        listed.insert(entry, split);
                    }
                }
            }
            (false, false) => {}
            (has_val, _) => {
                let missing = if has_val { &test_list } else { &val_list };
                return Err(DataError::bad(
                    missing,
                    "no such file (the split needs both validation_list.txt and testing_list.txt, or neither)",
                ));
            }
        }
        let split_of = |p: &str| {
            if use_lists {
                listed.get(p).copied().unwrap_or(Split::Train)
            } else {
                hashed_split(p)
            }
        };
        // Background noise, for the silence rows and augmentation.
        let noise_dir = dir.join(NOISE_DIR);
        let mut noise = Vec::new();
        if noise_dir.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&noise_dir)
                .map_err(|e| DataError::read(&noise_dir, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file() && p.extension().is_some_and(|x| x.eq_ignore_ascii_case("wav"))
                })
                .collect();
            files.sort();
            for p in files {
                let s = read_wav(&p, RATE).map_err(|m| DataError::bad(&p, m))?;
                if s.len() < CLIP {
                    return Err(DataError::bad(
                        &p,
                        format!(
                            "{} samples; background noise needs at least 1 s ({CLIP})",
                            s.len()
                        ),
                    ));
                }
                let rel = format!("{NOISE_DIR}/{}", p.file_name().unwrap().to_string_lossy());
                noise.push((rel, to_f32(&s).collect::<Vec<f32>>()));
            }
        }
        if noise.is_empty() {
            return Err(DataError::bad(
                &noise_dir,
                "no background-noise .wav files: the _silence_ class is cut from them",
            ));
        }
        let mut rows: [Vec<Row>; 3] = Default::default();
        for (si, split) in [Split::Train, Split::Val, Split::Test]
            .into_iter()
            .enumerate()
        {
            let mut known = Vec::new();
            let mut unknown = Vec::new();
            for (w, files) in &clips {
                let label = words.iter().position(|k| k == w);
                for f in files.iter().filter(|f| split_of(f) == split) {
                    match label {
                        Some(l) => known.push(Row::Clip {
                            path: f.clone(),
                            label: l + 2,
                        }),
                        None => unknown.push(Row::Clip {
                            path: f.clone(),
                            label: 1,
                        }),
                    }
                }
            }
            if known.is_empty() {
                return Err(DataError::NoSplit(format!(
                    "speech-commands:{}: no keyword clips in the {} split",
                    dir.display(),
                    split.name()
                )));
            }
            let mut rng =
                rand_chacha::ChaCha8Rng::seed_from_u64(row_seed(opts.seed ^ 0x59185, si as u64, 0));
            let extra = known.len().div_ceil(10);
            unknown.shuffle(&mut rng);
            unknown.truncate(extra);
            let mut all = known;
            all.extend(unknown);
            for _ in 0..extra {
                let n = rng.random_range(0..noise.len());
                let offset = rng.random_range(0..=noise[n].1.len() - CLIP);
                // Four decimals: the row's source names it exactly.
                let volume = (rng.random_range(0.0f32..1.0) * 1e4).round() / 1e4;
                all.push(Row::Silence {
                    noise: n,
                    offset,
                    volume,
                });
            }
            all.shuffle(&mut rng);
            rows[si] = all;
        }
        Ok(Speech {
            dir: dir.to_path_buf(),
            words,
            rows,
            noise,
            mfcc: Mfcc::kws(),
            seed: opts.seed,
        })
    }

    pub fn class_names(&self) -> Vec<String> {
        [SILENCE.to_string(), UNKNOWN.to_string()]
            .into_iter()
            .chain(self.words.iter().cloned())
            .collect()
    }

    /// One clip's samples, zero-padded or cut to 1 s (`decode_wav` with
    /// `desired_samples`).
    fn clip(&self, rel: &str) -> Result<Vec<i16>, DataError> {
        let path = self.dir.join(rel);
        let mut s = read_wav(&path, RATE).map_err(|m| DataError::bad(&path, m))?;
        s.resize(CLIP, 0);
        Ok(s)
    }

    fn silence(&self, noise: usize, offset: usize, volume: f32) -> Vec<f32> {
        self.noise[noise].1[offset..offset + CLIP]
            .iter()
            .map(|v| (v * volume).clamp(-1.0, 1.0))
            .collect()
    }

    fn dataset(&self, rows: &[Row], inputs: Vec<f32>) -> Dataset {
        Dataset {
            shape: vec![49, 10, 1],
            classes: self.words.len() + 2,
            inputs,
            labels: rows
                .iter()
                .map(|r| match r {
                    Row::Clip { label, .. } => *label,
                    Row::Silence { .. } => 0,
                })
                .collect(),
            sources: rows
                .iter()
                .map(|r| match r {
                    Row::Clip { path, .. } => path.clone(),
                    Row::Silence {
                        noise,
                        offset,
                        volume,
                    } => {
                        format!("{} at {offset} x {volume:.4}", self.noise[*noise].0)
                    }
                })
                .collect(),
            groups: None,
        }
    }

    fn feature_len(&self) -> usize {
        let (f, c) = self.mfcc.shape(CLIP);
        f * c
    }

    /// The MFCCs of a split (no augmentation), computed in parallel.
    pub fn split(&self, split: Split) -> Result<Dataset, DataError> {
        let rows = &self.rows[split as usize];
        let len = self.feature_len();
        check_memory(
            || format!("the MFCCs of {} clips", rows.len()),
            (rows.len() * len * 4) as u128,
        )?;
        let mut inputs = vec![0f32; rows.len() * len];
        inputs
            .par_chunks_mut(len)
            .zip(rows.par_iter())
            .try_for_each_init(
                || self.mfcc.frontend.scratch(),
                |scratch, (out, row)| {
                    let samples: Vec<f32> = match row {
                        Row::Clip { path, .. } => to_f32(&self.clip(path)?).collect(),
                        Row::Silence {
                            noise,
                            offset,
                            volume,
                        } => self.silence(*noise, *offset, *volume),
                    };
                    self.mfcc.compute(&samples, scratch, out);
                    Ok::<(), DataError>(())
                },
            )?;
        Ok(self.dataset(rows, inputs))
    }

    /// The training split's clips, read once for augmentation (silence
    /// rows are cut afresh every epoch and hold nothing).
    pub fn load_train_audio(&self) -> Result<Vec<i16>, DataError> {
        let rows = &self.rows[0];
        check_memory(
            || format!("the audio of {} training clips", rows.len()),
            (rows.len() * CLIP * 2) as u128,
        )?;
        let mut audio = vec![0i16; rows.len() * CLIP];
        audio
            .par_chunks_mut(CLIP)
            .zip(rows.par_iter())
            .try_for_each(|(out, row)| {
                if let Row::Clip { path, .. } = row {
                    out.copy_from_slice(&self.clip(path)?);
                }
                Ok::<(), DataError>(())
            })?;
        Ok(audio)
    }

    /// The training split's features of one epoch with augmentation, as
    /// TensorFlow's `get_data` in training mode: each clip shifted in time
    /// by up to `time_shift_ms`, background noise mixed in (always for a
    /// silence row, at a volume up to 1; otherwise with probability
    /// `background_frequency` up to `background_volume`), clipped to
    /// [-1, 1]; then the SpecAugment masks (zeros).
    pub fn augmented(&self, audio: &[i16], aug: &Augment, epoch: u64) -> Dataset {
        let rows = &self.rows[0];
        let len = self.feature_len();
        let (frames, coefficients) = self.mfcc.shape(CLIP);
        let shift = (aug.time_shift_ms * RATE as f32 / 1000.0) as i64;
        let mut inputs = vec![0f32; rows.len() * len];
        inputs
            .par_chunks_mut(len)
            .zip(rows.par_iter())
            .enumerate()
            .for_each_init(
                || self.mfcc.frontend.scratch(),
                |scratch, (i, (out, row))| {
                    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(row_seed(
                        self.seed ^ 0xa0d10,
                        epoch,
                        i as u64,
                    ));
                    let clip = &audio[i * CLIP..(i + 1) * CLIP];
                    let silence = matches!(row, Row::Silence { .. });
                    let s = if shift > 0 && !silence {
                        rng.random_range(-shift..=shift)
                    } else {
                        0
                    };
                    let mut x: Vec<f32> = (0..CLIP as i64)
                        .map(|n| {
                            let k = n - s;
                            if silence || k < 0 || k >= CLIP as i64 {
                                0.0
                            } else {
                                clip[k as usize] as f32 / 32768.0
                            }
                        })
                        .collect();
                    let volume = if silence {
                        rng.random_range(0.0f32..1.0)
                    } else if rng.random::<f32>() < aug.background_frequency {
                        rng.random_range(0.0..=aug.background_volume)
                    } else {
                        0.0
                    };
                    if volume > 0.0 {
                        let (_, noise) = &self.noise[rng.random_range(0..self.noise.len())];
                        let offset = rng.random_range(0..=noise.len() - CLIP);
                        for (v, b) in x.iter_mut().zip(&noise[offset..]) {
                            *v = (*v + b * volume).clamp(-1.0, 1.0);
                        }
                    }
                    self.mfcc.compute(&x, scratch, out);
                    for _ in 0..aug.time_masks {
                        let w = rng.random_range(0..=aug.time_mask_width.min(frames));
                        let start = rng.random_range(0..=frames - w);
                        out[start * coefficients..(start + w) * coefficients].fill(0.0);
                    }
                    for _ in 0..aug.freq_masks {
                        let w = rng.random_range(0..=aug.freq_mask_width.min(coefficients));
                        let start = rng.random_range(0..=coefficients - w);
                        for f in 0..frames {
                            out[f * coefficients + start..f * coefficients + start + w].fill(0.0);
                        }
                    }
                },
            );
        self.dataset(rows, inputs)
    }
}
