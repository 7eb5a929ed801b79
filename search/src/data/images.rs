//! `image-folder:DIR`: one sub-folder per class (sorted names give the
//! label ids, as Keras' `image_dataset_from_directory`), JPEG and PNG
//! files (`image`), converted to grey (or RGB for a 3-channel input),
//! scaled to [0, 1] and resized bilinearly to the network's input.
//! `DIR/train/` and `DIR/val/` (and `DIR/test/`) when present, otherwise
//! the classes sit in DIR and 10% of each is held out by a seeded shuffle.
//! Augmentation: a random horizontal flip, a random crop.

use super::{
    check_memory, resize_bilinear, row_seed, stratified, Augment, DataError, Dataset, Split,
};
use rand::{RngExt, SeedableRng};
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// A decoded training image kept for augmentation: at most twice the
/// network's resolution, bytes.
#[derive(Debug)]
struct Stored {
    h: usize,
    w: usize,
    pixels: Vec<u8>,
}

#[derive(Clone, Debug)]
pub struct Folder {
    dir: PathBuf,
    names: Vec<String>,
    /// (path relative to DIR, label) per split.
    rows: [Vec<(String, usize)>; 3],
    has_test: bool,
    shape: (usize, usize, usize),
    seed: u64,
    cache: Arc<OnceLock<Vec<Stored>>>,
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

/// Sorted sub-folders (not hidden) of `dir`.
fn subfolders(dir: &Path) -> Result<Vec<String>, DataError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| DataError::read(dir, e))? {
        let e = e.map_err(|e| DataError::read(dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && e.path().is_dir() {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// The images of each class folder of `dir` (paths relative to `root`).
fn list(root: &Path, dir: &Path, names: &[String]) -> Result<Vec<(String, usize)>, DataError> {
    let mut rows = Vec::new();
    for (label, name) in names.iter().enumerate() {
        let folder = dir.join(name);
        if !folder.is_dir() {
            return Err(DataError::bad(
                &folder,
                "no such folder (every split needs the training split's classes)",
            ));
        }
        let mut files: Vec<String> = Vec::new();
        for e in std::fs::read_dir(&folder).map_err(|e| DataError::read(&folder, e))? {
            let p = e.map_err(|e| DataError::read(&folder, e))?.path();
            if p.is_file() && is_image(&p) {
                let rel = p.strip_prefix(root).unwrap_or(&p);
                files.push(rel.to_string_lossy().into_owned());
            }
        }
        if files.is_empty() {
            return Err(DataError::bad(
                &folder,
                "no .png, .jpg or .jpeg files (an empty class folder)",
            ));
        }
        files.sort();
        rows.extend(files.into_iter().map(|f| (f, label)));
    }
    Ok(rows)
}

/// Decode one image as grey or RGB bytes.
fn decode(path: &Path, c: usize) -> Result<(usize, usize, Vec<u8>), DataError> {
    let img = image::ImageReader::open(path)
        .map_err(|e| DataError::read(path, e))?
        .with_guessed_format()
        .map_err(|e| DataError::read(path, e))?
        .decode()
        .map_err(|e| DataError::bad(path, format!("not a readable image: {e}")))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let pixels = if c == 1 {
        img.into_luma8().into_raw()
    } else {
        img.into_rgb8().into_raw()
    };
    Ok((h, w, pixels))
}

fn to_f32(p: &[u8]) -> Vec<f32> {
    p.iter().map(|&v| v as f32 / 255.0).collect()
}

/// How many class folders an image folder has (`None` when it cannot
/// tell; [`Folder::open`] says why).
pub fn class_count(dir: &Path) -> Option<usize> {
    let train = dir.join("train");
    subfolders(if train.is_dir() { &train } else { dir })
        .ok()
        .filter(|n| !n.is_empty())
        .map(|n| n.len())
}

impl Folder {
    pub fn open(
        dir: &Path,
        shape: (usize, usize, usize),
        classes: usize,
        seed: u64,
    ) -> Result<Folder, DataError> {
        if !dir.is_dir() {
            return Err(DataError::bad(dir, "no such folder"));
        }
        let train_dir = dir.join("train");
        let split_dirs = train_dir.is_dir();
        let class_root = if split_dirs {
            train_dir.clone()
        } else {
            dir.to_path_buf()
        };
        let names = subfolders(&class_root)?;
        if names.is_empty() {
            return Err(DataError::bad(
                &class_root,
                "no class folders (one sub-folder per class)",
            ));
        }
        if names.len() != classes {
            return Err(DataError::Classes {
                path: class_root.display().to_string(),
                found: names.len(),
                names: names.join(", "),
                outputs: classes,
            });
        }
        let train = list(dir, &class_root, &names)?;
        let (train, val) = if split_dirs && dir.join("val").is_dir() {
            (train, list(dir, &dir.join("val"), &names)?)
        } else {
            let labels: Vec<usize> = train.iter().map(|r| r.1).collect();
            let held = stratified(&labels, classes, 0.1, seed);
            let (mut t, mut v) = (Vec::new(), Vec::new());
            for (row, h) in train.into_iter().zip(held) {
                if h {
                    v.push(row)
                } else {
                    t.push(row)
                }
            }
            (t, v)
        };
        let test_dir = dir.join("test");
        let has_test = split_dirs && test_dir.is_dir();
        let test = if has_test {
            list(dir, &test_dir, &names)?
        } else {
            Vec::new()
        };
        let (h, w, c) = shape;
        let most = train.len().max(val.len()).max(test.len());
        check_memory(
            || format!("{most} images of {h}x{w}x{c}"),
            4 * (most * h * w * c) as u128,
        )?;
        Ok(Folder {
            dir: dir.to_path_buf(),
            names,
            rows: [train, val, test],
            has_test,
            shape,
            seed,
            cache: Arc::new(OnceLock::new()),
        })
    }

    pub fn class_names(&self) -> Vec<String> {
        self.names.clone()
    }

    fn rows(&self, split: Split) -> &[(String, usize)] {
        &self.rows[split as usize]
    }

    /// The training images decoded once, at most twice the input's size.
    fn stored(&self) -> Result<&[Stored], DataError> {
        if let Some(s) = self.cache.get() {
            return Ok(s);
        }
        let (h, w, c) = self.shape;
        let rows = self.rows(Split::Train);
        check_memory(
            || {
                format!(
                    "{} training images at up to {}x{}x{c} for augmentation",
                    rows.len(),
                    2 * h,
                    2 * w
                )
            },
            (rows.len() * 4 * h * w * c) as u128,
        )?;
        let stored: Vec<Stored> = rows
            .par_iter()
            .map(|(rel, _)| {
                let (ih, iw, px) = decode(&self.dir.join(rel), c)?;
                let (sh, sw) = (ih.min(2 * h), iw.min(2 * w));
                let small = resize_bilinear(&to_f32(&px), (ih, iw), c, (sh, sw));
                Ok(Stored {
                    h: sh,
                    w: sw,
                    pixels: small
                        .iter()
                        .map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8)
                        .collect(),
                })
            })
            .collect::<Result<_, DataError>>()?;
        Ok(self.cache.get_or_init(|| stored))
    }

    /// The features of a split; with `augment`, the training split's
    /// features of one epoch.
    pub fn split(
        &self,
        split: Split,
        augment: Option<(&Augment, u64)>,
    ) -> Result<Dataset, DataError> {
        if split == Split::Test && !self.has_test {
            return Err(DataError::NoSplit(format!(
                "image-folder:{} has no test split: put one sub-folder per class in {}",
                self.dir.display(),
                self.dir.join("test").display()
            )));
        }
        let (h, w, c) = self.shape;
        let rows = self.rows(split);
        let len = h * w * c;
        let mut inputs = vec![0f32; rows.len() * len];
        match augment.filter(|_| split == Split::Train) {
            None => {
                inputs
                    .par_chunks_mut(len)
                    .zip(rows.par_iter())
                    .try_for_each(|(out, (rel, _))| {
                        let (ih, iw, px) = decode(&self.dir.join(rel), c)?;
                        out.copy_from_slice(&resize_bilinear(&to_f32(&px), (ih, iw), c, (h, w)));
                        Ok::<(), DataError>(())
                    })?;
            }
            Some((aug, epoch)) => {
                let stored = self.stored()?;
                inputs
                    .par_chunks_mut(len)
                    .zip(stored.par_iter())
                    .enumerate()
                    .for_each(|(i, (out, s))| {
                        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(row_seed(
                            self.seed ^ 0x1a6e,
                            epoch,
                            i as u64,
                        ));
                        let frac = if aug.crop > 0.0 {
                            rng.random_range(1.0 - aug.crop..=1.0)
                        } else {
                            1.0
                        };
                        let (ch, cw) = (
                            ((s.h as f32 * frac).round() as usize).max(1),
                            ((s.w as f32 * frac).round() as usize).max(1),
                        );
                        let (top, left) = (
                            rng.random_range(0..=s.h - ch),
                            rng.random_range(0..=s.w - cw),
                        );
                        let flip = aug.flip && rng.random::<bool>();
                        let mut window = Vec::with_capacity(ch * cw * c);
                        for y in top..top + ch {
                            for x in 0..cw {
                                let xx = if flip { left + cw - 1 - x } else { left + x };
                                for k in 0..c {
                                    window.push(s.pixels[(y * s.w + xx) * c + k] as f32 / 255.0);
                                }
                            }
                        }
                        out.copy_from_slice(&resize_bilinear(&window, (ch, cw), c, (h, w)));
                    });
            }
        }
        Ok(Dataset {
            shape: vec![h, w, c],
            classes: self.names.len(),
            inputs,
            labels: rows.iter().map(|r| r.1).collect(),
            sources: rows.iter().map(|r| r.0.clone()).collect(),
            groups: None,
        })
    }
}
