//! Datasets: what `--data KIND:PATH` reads, split into training,
//! validation and test sets of the exact tensors the network sees.
//!
//! Kinds: the built-in synthetic tasks (`synthetic[:N]`,
//! `synthetic-NAME[:N]`), `.npy` pairs (`npy:DIR`), Fashion-MNIST's IDX
//! files (`fashion-mnist:DIR`), image folders (`image-folder:DIR`), the
//! Speech Commands layout (`speech-commands:DIR`, through the MFCC
//! front-end of [`audio`]) and the MIMII/DCASE machine sounds
//! (`machine-sounds:DIR`, log-mel patches). A kind that augments (audio, images) gives
//! fresh training features every epoch ([`TrainSet`]); validation and test
//! sets are never augmented.

pub mod audio;
mod idx;
mod images;
mod machine;
mod speech;
mod synthetic;

use mnet_compiler::npy;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use machine::roc_auc;
pub use speech::KEYWORDS;

/// How many training rows calibrate the int8 activation ranges (`mnet
/// search`, `mnet eval --int8`).
pub const CALIBRATION_ROWS: usize = 256;

/// Inputs (`len x input shape`, f32) and labels.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub shape: Vec<usize>,
    pub classes: usize,
    pub inputs: Vec<f32>,
    pub labels: Vec<usize>,
    /// Where each row came from (a file relative to the data folder, an
    /// index into a file, a noise cut), when the kind knows; empty for
    /// generated data.
    pub sources: Vec<String>,
    /// Rows that are parts of one clip (the patches of a machine sound),
    /// when the kind has them.
    pub groups: Option<Groups>,
}

/// Which clip each row belongs to, and per clip whether it is an anomaly
/// and its name: what a clip-level score (ROC AUC) needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Groups {
    pub clip_of_row: Vec<usize>,
    pub anomalous: Vec<bool>,
    pub clips: Vec<String>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn sample_len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Where row `i` came from (`row i` for generated data).
    pub fn source(&self, i: usize) -> String {
        self.sources
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("row {i}"))
    }

    /// The first `rows` inputs (all when fewer) as a float32 `.npy` file
    /// `[N, ...shape]`: what `mnet features` writes and calibration reads.
    pub fn inputs_npy(&self, rows: usize) -> Vec<u8> {
        let n = rows.min(self.len());
        let bytes: Vec<u8> = self.inputs[..n * self.sample_len()]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let mut shape = vec![n];
        shape.extend(&self.shape);
        npy::encode("<f4", &shape, &bytes)
    }

    /// The labels as an int64 `.npy` file `[N]`.
    pub fn labels_npy(&self) -> Vec<u8> {
        let bytes: Vec<u8> = self
            .labels
            .iter()
            .flat_map(|&l| (l as i64).to_le_bytes())
            .collect();
        npy::encode("<i8", &[self.len()], &bytes)
    }

    /// The rows `idx`, in that order.
    pub fn subset(&self, idx: &[usize]) -> Dataset {
        let len = self.sample_len();
        Dataset {
            shape: self.shape.clone(),
            classes: self.classes,
            inputs: idx
                .iter()
                .flat_map(|&i| self.inputs[i * len..(i + 1) * len].iter().copied())
                .collect(),
            labels: idx.iter().map(|&i| self.labels[i]).collect(),
            sources: if self.sources.is_empty() {
                Vec::new()
            } else {
                idx.iter().map(|&i| self.sources[i].clone()).collect()
            },
            // Rows picked out of clips are rows of their own.
            groups: None,
        }
    }
}

/// Which part of a data source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

impl std::str::FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> Result<Split, String> {
        match s {
            "train" => Ok(Split::Train),
            "val" | "validation" => Ok(Split::Val),
            "test" => Ok(Split::Test),
            _ => Err(format!("`{s}`: expected train, val or test")),
        }
    }
}

/// Training-time augmentation, all of it seeded by the data seed, the
/// epoch and the row. Audio: background noise mixed in with probability
/// `background_frequency` at a volume uniform in `[0,
/// background_volume]` (TensorFlow's speech-commands defaults), a random
/// time shift of up to `time_shift_ms`, SpecAugment masks of the features
/// (off by default). Images: a random horizontal flip, a random crop of
/// up to `crop` of each side.
#[derive(Clone, Debug, PartialEq)]
pub struct Augment {
    pub background_frequency: f32,
    pub background_volume: f32,
    pub time_shift_ms: f32,
    /// Time masks per clip and the largest width of one, in frames.
    pub time_masks: usize,
    pub time_mask_width: usize,
    /// Frequency masks per clip and the largest width of one, in features.
    pub freq_masks: usize,
    pub freq_mask_width: usize,
    pub flip: bool,
    pub crop: f32,
}

impl Default for Augment {
    fn default() -> Augment {
        Augment {
            background_frequency: 0.8,
            background_volume: 0.1,
            time_shift_ms: 100.0,
            time_masks: 0,
            time_mask_width: 10,
            freq_masks: 0,
            freq_mask_width: 3,
            flip: false,
            crop: 0.0,
        }
    }
}

impl Augment {
    /// Whether the settings change audio features.
    pub fn changes_audio(&self) -> bool {
        (self.background_frequency > 0.0 && self.background_volume > 0.0)
            || self.time_shift_ms > 0.0
            || (self.time_masks > 0 && self.time_mask_width > 0)
            || (self.freq_masks > 0 && self.freq_mask_width > 0)
    }

    /// Whether the settings change image features.
    pub fn changes_images(&self) -> bool {
        self.flip || self.crop > 0.0
    }

    /// Refuse settings out of range, naming the flag.
    pub fn check(&self) -> Result<(), String> {
        let unit = |v: f32, flag: &str| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!("--{flag} must be 0 to 1"))
            }
        };
        unit(self.background_frequency, "background-frequency")?;
        unit(self.background_volume, "background-volume")?;
        if !(0.0..=500.0).contains(&self.time_shift_ms) {
            return Err("--time-shift-ms must be 0 to 500".into());
        }
        if !(0.0..0.5).contains(&self.crop) {
            return Err("--crop must be at least 0 and below 0.5".into());
        }
        Ok(())
    }
}

/// How a source is read.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Seeds held-out splits, silence cuts and augmentation.
    pub seed: u64,
    /// The keywords of `speech-commands` (default [`KEYWORDS`]).
    pub words: Option<Vec<String>>,
    /// Training-time augmentation; `None` trains on fixed features.
    pub augment: Option<Augment>,
}

/// Why a `--data` source cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    #[error("unknown data kind; expected synthetic[:COUNT], synthetic-NAME[:COUNT], npy:DIR, fashion-mnist:DIR, image-folder:DIR, speech-commands:DIR or machine-sounds:DIR")]
    UnknownKind,
    #[error("`{0}` is not a sample count; write synthetic or synthetic:COUNT")]
    Count(String),
    #[error("the sample count must be 1..=1000000")]
    CountRange,
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    /// A file or folder of the set that is not what the kind needs.
    #[error("{path}: {message}")]
    Bad { path: String, message: String },
    /// A `.npy` file of the set (`x.npy`, `y.npy`).
    #[error("{file}: {error}")]
    Npy {
        file: &'static str,
        error: npy::NpyError,
    },
    #[error("{count} synthetic samples of {sample_len} values need {bytes} bytes, more than the {limit}-byte limit; ask for fewer")]
    TooLarge {
        count: usize,
        sample_len: usize,
        bytes: u128,
        limit: u128,
    },
    #[error("{what} need {bytes} bytes in memory, more than the {limit}-byte limit")]
    Memory {
        what: String,
        bytes: u128,
        limit: u128,
    },
    #[error("x.npy has {inputs} samples but y.npy {labels} labels")]
    Counts { inputs: usize, labels: usize },
    #[error("y.npy: label {label} at index {index} is not below the network's {classes} outputs")]
    Label {
        label: usize,
        index: usize,
        classes: usize,
    },
    #[error("{path}: {found} classes ({names}), but the network has {outputs} outputs")]
    Classes {
        path: String,
        found: usize,
        names: String,
        outputs: usize,
    },
    #[error("{kind} gives {gives} inputs, but the network's input is {input}")]
    Shape {
        kind: &'static str,
        gives: String,
        input: String,
    },
    #[error("{0}")]
    NoSplit(String),
}

impl DataError {
    fn bad(path: &Path, message: impl Into<String>) -> DataError {
        DataError::Bad {
            path: path.display().to_string(),
            message: message.into(),
        }
    }

    fn read(path: &Path, e: impl std::fmt::Display) -> DataError {
        DataError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        }
    }
}

/// Refuse an allocation past the engine's memory limit.
fn check_memory(what: impl FnOnce() -> String, bytes: u128) -> Result<(), DataError> {
    let limit = crate::engine::MEMORY_LIMIT;
    if bytes > limit {
        return Err(DataError::Memory {
            what: what(),
            bytes,
            limit,
        });
    }
    Ok(())
}

/// The network's input as an image: `[H, W, C]` or `[H, W]` (one
/// channel).
fn image_shape(kind: &'static str, shape: &[usize]) -> Result<(usize, usize, usize), DataError> {
    match *shape {
        [h, w, c] if c == 1 || c == 3 => Ok((h, w, c)),
        [h, w] => Ok((h, w, 1)),
        _ => Err(DataError::Shape {
            kind,
            gives: "[H, W, 1] or [H, W, 3] image".into(),
            input: format!("{shape:?}"),
        }),
    }
}

/// Bilinear resampling of an `h × w × c` map to `oh × ow`, with half-pixel
/// centres and no anti-aliasing (`tf.image.resize(..., "bilinear")`). A
/// map of the output's size is copied.
pub fn resize_bilinear(
    src: &[f32],
    (h, w): (usize, usize),
    c: usize,
    (oh, ow): (usize, usize),
) -> Vec<f32> {
    if (h, w) == (oh, ow) {
        return src[..h * w * c].to_vec();
    }
    let axis = |n: usize, on: usize| -> Vec<(usize, usize, f32)> {
        let scale = n as f32 / on as f32;
        (0..on)
            .map(|o| {
                let x = ((o as f32 + 0.5) * scale - 0.5).max(0.0);
                let lo = (x.floor() as usize).min(n - 1);
                let hi = (lo + 1).min(n - 1);
                (lo, hi, x - lo as f32)
            })
            .collect()
    };
    let (ys, xs) = (axis(h, oh), axis(w, ow));
    let mut out = Vec::with_capacity(oh * ow * c);
    for &(y0, y1, fy) in &ys {
        for &(x0, x1, fx) in &xs {
            for ch in 0..c {
                let at = |y: usize, x: usize| src[(y * w + x) * c + ch];
                let top = at(y0, x0) + (at(y0, x1) - at(y0, x0)) * fx;
                let bottom = at(y1, x0) + (at(y1, x1) - at(y1, x0)) * fx;
                out.push(top + (bottom - top) * fy);
            }
        }
    }
    out
}

/// Which rows of `labels` to hold out: `fraction` of each class (rounded),
/// chosen by a shuffle seeded with `seed` (a class-sorted file holds out
/// every class).
fn stratified(labels: &[usize], classes: usize, fraction: f64, seed: u64) -> Vec<bool> {
    let mut held = vec![false; labels.len()];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for class in 0..classes {
        let mut of: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        of.shuffle(&mut rng);
        let n = (of.len() as f64 * fraction).round() as usize;
        for &i in &of[..n] {
            held[i] = true;
        }
    }
    held
}

/// Split `data` by `held` into (kept, held).
fn split_off(data: Dataset, held: &[bool]) -> (Dataset, Dataset) {
    let pick =
        |keep: bool| -> Vec<usize> { (0..data.len()).filter(|&i| held[i] == keep).collect() };
    (data.subset(&pick(false)), data.subset(&pick(true)))
}

/// A seed for one row of one epoch (splitmix64 of the three).
fn row_seed(seed: u64, epoch: u64, row: u64) -> u64 {
    let mut z =
        seed ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ row.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The training set: the first epoch's features, and for a kind that
/// augments, the features of any later epoch.
pub struct TrainSet<'a> {
    pub data: Cow<'a, Dataset>,
    fresh: Option<Arc<dyn Fn(u64) -> Dataset + Send + Sync>>,
}

impl<'a> TrainSet<'a> {
    /// Fixed features, every epoch.
    pub fn fixed(data: &'a Dataset) -> TrainSet<'a> {
        TrainSet {
            data: Cow::Borrowed(data),
            fresh: None,
        }
    }

    /// Whether epochs differ.
    pub fn augments(&self) -> bool {
        self.fresh.is_some()
    }

    /// The function that makes an epoch's features, when epochs differ.
    pub fn fresh_fn(&self) -> Option<Arc<dyn Fn(u64) -> Dataset + Send + Sync>> {
        self.fresh.clone()
    }

    /// The features of epoch `epoch` (1-based; epoch 1 is `data`), or
    /// `None` when every epoch is `data`.
    pub fn epoch(&self, epoch: u64) -> Option<Dataset> {
        match &self.fresh {
            Some(f) if epoch > 1 => Some(f(epoch)),
            _ => None,
        }
    }
}

/// The first epoch's features.
impl std::ops::Deref for TrainSet<'_> {
    type Target = Dataset;
    fn deref(&self) -> &Dataset {
        &self.data
    }
}

enum Kind {
    Synthetic { task: Option<u64>, count: usize },
    Npy(PathBuf),
    Fashion(idx::Fashion),
    Images(images::Folder),
    Speech(Arc<speech::Speech>),
    Machines(machine::Machines),
}

/// An opened `--data` source for a network's input shape and outputs.
pub struct Source {
    kind: Kind,
    shape: Vec<usize>,
    classes: usize,
    opts: Options,
}

/// Open `spec` (`KIND:PATH`) for a network of input `shape` and `classes`
/// outputs: the files are listed and checked, the splits decided; the
/// features are computed by [`Source::split`] and [`Source::train`].
pub fn open(
    spec: &str,
    shape: &[usize],
    classes: usize,
    opts: &Options,
) -> Result<Source, DataError> {
    let kind = if let Some(rest) = spec.strip_prefix("synthetic") {
        // `synthetic-NAME[:COUNT]`: the motif-order task named NAME.
        let (task, rest) = match rest.strip_prefix('-') {
            Some(named) => {
                let name = named.split(':').next().unwrap_or("");
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(DataError::UnknownKind);
                }
                let hash = mnet_compiler::fnv1a(name.bytes());
                (Some(hash), &named[name.len()..])
            }
            None => (None, rest),
        };
        let count = match rest.strip_prefix(':') {
            Some(n) => n
                .parse::<usize>()
                .map_err(|_| DataError::Count(n.to_string()))?,
            None if rest.is_empty() => 2048,
            None => return Err(DataError::Count(rest.to_string())),
        };
        if !(1..=1_000_000).contains(&count) {
            return Err(DataError::CountRange);
        }
        // The training set and a quarter as many held out, f32.
        let sample_len = shape.iter().map(|&d| d as u128).product::<u128>();
        let bytes = 4 * sample_len * (count + (count / 4).max(classes)) as u128;
        if bytes > crate::engine::MEMORY_LIMIT {
            return Err(DataError::TooLarge {
                count,
                sample_len: sample_len as usize,
                bytes,
                limit: crate::engine::MEMORY_LIMIT,
            });
        }
        Kind::Synthetic { task, count }
    } else if let Some(dir) = spec.strip_prefix("npy:") {
        Kind::Npy(PathBuf::from(dir))
    } else if let Some(dir) = spec.strip_prefix("fashion-mnist:") {
        image_shape("fashion-mnist", shape)?;
        Kind::Fashion(idx::Fashion::open(Path::new(dir), classes)?)
    } else if let Some(dir) = spec.strip_prefix("image-folder:") {
        let (h, w, c) = image_shape("image-folder", shape)?;
        Kind::Images(images::Folder::open(
            Path::new(dir),
            (h, w, c),
            classes,
            opts.seed,
        )?)
    } else if let Some(dir) = spec.strip_prefix("machine-sounds:") {
        Kind::Machines(machine::Machines::open(
            Path::new(dir),
            shape,
            classes,
            opts.seed,
        )?)
    } else if let Some(dir) = spec.strip_prefix("speech-commands:") {
        Kind::Speech(Arc::new(speech::Speech::open(
            Path::new(dir),
            shape,
            classes,
            opts,
        )?))
    } else {
        return Err(DataError::UnknownKind);
    };
    Ok(Source {
        kind,
        shape: shape.to_vec(),
        classes,
        opts: opts.clone(),
    })
}

/// A kind's own input shape and class count, when it has them without a
/// network (the MFCCs of speech commands, Fashion-MNIST's images, the
/// class folders of an image folder): what `mnet features` uses without a
/// network.
pub fn native(spec: &str, opts: &Options) -> (Option<Vec<usize>>, Option<usize>) {
    if spec.starts_with("speech-commands:") {
        let words = opts.words.as_ref().map_or(KEYWORDS.len(), |w| w.len());
        (Some(vec![49, 10, 1]), Some(words + 2))
    } else if spec.starts_with("fashion-mnist:") {
        (Some(vec![28, 28, 1]), Some(idx::FASHION_CLASSES.len()))
    } else if let Some(dir) = spec.strip_prefix("image-folder:") {
        (None, images::class_count(Path::new(dir)))
    } else if let Some(dir) = spec.strip_prefix("machine-sounds:") {
        // Opening with an impossible class count reports the real one.
        let found = match machine::Machines::open(Path::new(dir), &[32, 32, 1], usize::MAX, 0) {
            Err(DataError::Classes { found, .. }) => Some(found),
            _ => None,
        };
        (Some(vec![32, 32, 1]), found)
    } else {
        (None, None)
    }
}

impl Source {
    /// The class names, when the kind has them (folder names, keywords).
    pub fn class_names(&self) -> Option<Vec<String>> {
        match &self.kind {
            Kind::Speech(s) => Some(s.class_names()),
            Kind::Images(f) => Some(f.class_names()),
            Kind::Machines(m) => Some(m.class_names()),
            Kind::Fashion(_) => Some(idx::FASHION_CLASSES.iter().map(|s| s.to_string()).collect()),
            _ => None,
        }
    }

    /// The features of one split, never augmented. `synthetic`: training
    /// `COUNT` samples, validation and test a quarter as many, each drawn
    /// separately. `npy:DIR`: `DIR/x.npy` (float32 `[N, ...input]`) and
    /// `DIR/y.npy` (int32 or int64 `[N]`); validation `DIR/val/` when it
    /// holds both files, otherwise 10% of each class of DIR held out by a
    /// seeded shuffle; test `DIR/test/`.
    pub fn split(&self, split: Split) -> Result<Dataset, DataError> {
        let (shape, classes, seed) = (&self.shape[..], self.classes, self.opts.seed);
        match &self.kind {
            Kind::Synthetic { task, count } => {
                let n = match split {
                    Split::Train => *count,
                    _ => (*count / 4).max(classes),
                };
                let draw = match split {
                    Split::Train => 1,
                    Split::Val => 2,
                    Split::Test => 3,
                };
                Ok(match task {
                    Some(t) => Dataset::motif_order(shape, classes, n, t ^ seed, draw),
                    None => Dataset::synthetic(shape, classes, n, seed, draw),
                })
            }
            Kind::Npy(dir) => {
                let own_val = has_npy(&dir.join("val"));
                match split {
                    Split::Test => {
                        let t = dir.join("test");
                        if !has_npy(&t) {
                            return Err(DataError::NoSplit(format!(
                                "npy:{} has no test split: put it in {}/x.npy and y.npy",
                                dir.display(),
                                t.display()
                            )));
                        }
                        read_npy(&t, shape, classes)
                    }
                    Split::Val if own_val => read_npy(&dir.join("val"), shape, classes),
                    Split::Train if own_val => read_npy(dir, shape, classes),
                    _ => {
                        let all = read_npy(dir, shape, classes)?;
                        let held = stratified(&all.labels, classes, 0.1, seed);
                        let (train, val) = split_off(all, &held);
                        Ok(if split == Split::Train { train } else { val })
                    }
                }
            }
            Kind::Fashion(f) => f.split(split, shape, seed),
            Kind::Images(f) => f.split(split, None).map(|d| self.reshaped(d)),
            Kind::Speech(s) => s.split(split).map(|d| self.reshaped(d)),
            Kind::Machines(m) => m.split(split).map(|d| self.reshaped(d)),
        }
    }

    /// A set in the network's own input shape (`[H, W]` for `[H, W, 1]`).
    fn reshaped(&self, mut d: Dataset) -> Dataset {
        debug_assert_eq!(d.sample_len(), self.shape.iter().product::<usize>());
        d.shape = self.shape.clone();
        d
    }

    /// A whole source as one validation set (`--val SPEC`): all of
    /// `npy:DIR` and the training draw of `synthetic`; a kind with its own
    /// splits gives its validation split.
    pub fn as_validation(&self) -> Result<Dataset, DataError> {
        match &self.kind {
            Kind::Synthetic { .. } => self.split(Split::Train),
            Kind::Npy(dir) => read_npy(dir, &self.shape, self.classes),
            _ => self.split(Split::Val),
        }
    }

    /// The training set, with fresh augmented features every epoch when
    /// the kind augments and [`Options::augment`] asks for it.
    pub fn train(&self) -> Result<TrainSet<'static>, DataError> {
        match (&self.kind, self.opts.augment.clone()) {
            (Kind::Speech(s), Some(a)) if a.changes_audio() => {
                let clips = Arc::new(s.load_train_audio()?);
                let s = s.clone();
                let first = self.reshaped(s.augmented(&clips, &a, 1));
                let shape = self.shape.clone();
                Ok(TrainSet {
                    data: Cow::Owned(first),
                    fresh: Some(Arc::new(move |e| {
                        let mut d = s.augmented(&clips, &a, e);
                        d.shape = shape.clone();
                        d
                    })),
                })
            }
            (Kind::Images(f), Some(a)) if a.changes_images() => {
                let f = Arc::new(f.clone());
                let first = self.reshaped(f.split(Split::Train, Some((&a, 1)))?);
                let shape = self.shape.clone();
                Ok(TrainSet {
                    data: Cow::Owned(first),
                    fresh: Some(Arc::new(move |e| {
                        let mut d = f
                            .split(Split::Train, Some((&a, e)))
                            .expect("the images were decoded for the first epoch");
                        d.shape = shape.clone();
                        d
                    })),
                })
            }
            _ => Ok(TrainSet {
                data: Cow::Owned(self.split(Split::Train)?),
                fresh: None,
            }),
        }
    }
}

fn has_npy(dir: &Path) -> bool {
    dir.join("x.npy").exists() && dir.join("y.npy").exists()
}

/// `DIR/x.npy` and `DIR/y.npy` as one set.
fn read_npy(dir: &Path, shape: &[usize], classes: usize) -> Result<Dataset, DataError> {
    let read = |f: &str| std::fs::read(dir.join(f)).map_err(|e| DataError::read(&dir.join(f), e));
    let xs = read("x.npy")?;
    let inputs = npy::parse(&xs)
        .and_then(|a| a.f32_samples(shape))
        .map_err(|error| DataError::Npy {
            file: "x.npy",
            error,
        })?;
    let ys = read("y.npy")?;
    let labels = npy::parse(&ys)
        .and_then(|a| a.labels())
        .map_err(|error| DataError::Npy {
            file: "y.npy",
            error,
        })?;
    if labels.len() != inputs.len() {
        return Err(DataError::Counts {
            inputs: inputs.len(),
            labels: labels.len(),
        });
    }
    if let Some((index, &label)) = labels.iter().enumerate().find(|(_, l)| **l >= classes) {
        return Err(DataError::Label {
            label,
            index,
            classes,
        });
    }
    Ok(Dataset {
        shape: shape.to_vec(),
        classes,
        inputs: inputs.into_iter().flatten().collect(),
        labels,
        sources: Vec::new(),
        groups: None,
    })
}

/// The training and validation sets of `mnet train` and `mnet search`:
/// `--data`'s training split, and `--val`'s set when given, else `--data`'s
/// validation split. The error names the flag.
pub fn train_val(
    data: &str,
    val: Option<&str>,
    shape: &[usize],
    classes: usize,
    opts: &Options,
) -> Result<(TrainSet<'static>, Dataset), String> {
    let source = open(data, shape, classes, opts).map_err(|e| format!("--data {data}: {e}"))?;
    let train = source.train().map_err(|e| format!("--data {data}: {e}"))?;
    let held = match val {
        Some(v) => {
            let vopts = Options {
                seed: opts.seed ^ 0x7a1,
                augment: None,
                ..opts.clone()
            };
            open(v, shape, classes, &vopts)
                .and_then(|s| s.as_validation())
                .map_err(|e| format!("--val {v}: {e}"))?
        }
        None => source
            .split(Split::Val)
            .map_err(|e| format!("--data {data}: {e}"))?,
    };
    Ok((train, held))
}
