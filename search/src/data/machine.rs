//! `machine-sounds:DIR`: the MIMII / DCASE 2020 Task 2 layout
//! (`DIR/<machine type>/train/normal_id_XX_*.wav`, `test/normal_id_XX_*.wav`
//! and `test/anomaly_id_XX_*.wav`; DIR may also be one machine type's
//! folder) as MicroNets' anomaly-detection task: self-supervised
//! classification of the machine id (every (type, id) of the training
//! clips is a class, sorted) on log-mel patches. Front-end: 1024-sample
//! frames every 512 (64 ms / 32 ms at 16 kHz), power spectrum, 64 mel
//! bands, `10 log10(mel + 1e-10)`; 64 frames make a 64×64 patch, one
//! every 20 frames, resized bilinearly to the network's input (32×32 in
//! the paper). Training is normal clips (10% of each id held out for
//! validation); test is `test/`, whose rows carry their clip and whether
//! it is an anomaly ([`super::Groups`]) for the ROC AUC of `mnet eval`.

use super::audio::{read_wav, Frontend, Spectral};
use super::{
    check_memory, image_shape, resize_bilinear, stratified, DataError, Dataset, Groups, Split,
};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

const SPEC: Spectral = Spectral {
    rate: 16_000,
    frame: 1024,
    stride: 512,
    fft: 1024,
    mels: 64,
    low: 0.0,
    high: 8000.0,
    power: 2,
};
/// Frames per patch and between patches.
const PATCH: usize = 64;
const PATCH_STRIDE: usize = 20;

#[derive(Clone, Debug)]
struct Clip {
    /// Relative to DIR.
    path: String,
    label: usize,
    anomaly: bool,
}

pub struct Machines {
    dir: PathBuf,
    /// (machine type, id) per class.
    classes: Vec<(String, String)>,
    rows: [Vec<Clip>; 3],
    frontend: Frontend,
    shape: (usize, usize),
}

/// A class's name: `TYPE/id_XX` (`id_XX` in one type's folder).
fn class_name(machine: &str, id: &str) -> String {
    if machine.is_empty() {
        format!("id_{id}")
    } else {
        format!("{machine}/id_{id}")
    }
}

/// `normal_id_00_00000012.wav` -> (false, "00").
fn parse_name(name: &str) -> Option<(bool, String)> {
    let (anomaly, rest) = if let Some(r) = name.strip_prefix("normal_id_") {
        (false, r)
    } else if let Some(r) = name.strip_prefix("anomaly_id_") {
        (true, r)
    } else {
        return None;
    };
    let id: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    (!id.is_empty()).then_some((anomaly, id))
}

/// The WAV files of `dir` (sorted), each with (anomaly, id).
fn clips_in(dir: &Path) -> Result<Vec<(String, bool, String)>, DataError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| DataError::read(dir, e))? {
        let p = e.map_err(|e| DataError::read(dir, e))?.path();
        if !p.is_file() || !p.extension().is_some_and(|x| x.eq_ignore_ascii_case("wav")) {
            continue;
        }
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let (anomaly, id) = parse_name(&name).ok_or_else(|| {
            DataError::bad(&p, "not named normal_id_XX_*.wav or anomaly_id_XX_*.wav")
        })?;
        out.push((name, anomaly, id));
    }
    out.sort();
    Ok(out)
}

impl Machines {
    pub fn open(
        dir: &Path,
        shape: &[usize],
        classes: usize,
        seed: u64,
    ) -> Result<Machines, DataError> {
        let (h, w, c) = image_shape("machine-sounds", shape)?;
        if c != 1 {
            return Err(DataError::Shape {
                kind: "machine-sounds",
                gives: "one-channel log-mel patch".into(),
                input: format!("{shape:?}"),
            });
        }
        if !dir.is_dir() {
            return Err(DataError::bad(dir, "no such folder"));
        }
        // One machine type's folder, or a folder of them.
        let types: Vec<String> = if dir.join("train").is_dir() {
            vec![String::new()]
        } else {
            let mut t: Vec<String> = std::fs::read_dir(dir)
                .map_err(|e| DataError::read(dir, e))?
                .filter_map(|e| e.ok())
                .filter(|e| e.path().join("train").is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            t.sort();
            t
        };
        if types.is_empty() {
            return Err(DataError::bad(dir, "no machine type folders with a train/ folder (DIR/<type>/train/normal_id_XX_*.wav)"));
        }
        let rel = |t: &str, split: &str, name: &str| {
            if t.is_empty() {
                format!("{split}/{name}")
            } else {
                format!("{t}/{split}/{name}")
            }
        };
        let mut names: Vec<(String, String)> = Vec::new();
        let mut train = Vec::new();
        let mut test = Vec::new();
        for t in &types {
            let tdir = dir.join(t);
            let found = clips_in(&tdir.join("train"))?;
            if found.is_empty() {
                return Err(DataError::bad(&tdir.join("train"), "no .wav files"));
            }
            for (name, anomaly, id) in found {
                if anomaly {
                    return Err(DataError::bad(
                        &tdir.join("train").join(&name),
                        "an anomaly among the training clips (train/ holds normal clips only)",
                    ));
                }
                if !names.contains(&(t.clone(), id.clone())) {
                    names.push((t.clone(), id.clone()));
                }
                train.push((t.clone(), id, rel(t, "train", &name), false));
            }
            if tdir.join("test").is_dir() {
                for (name, anomaly, id) in clips_in(&tdir.join("test"))? {
                    test.push((t.clone(), id, rel(t, "test", &name), anomaly));
                }
            }
        }
        names.sort();
        if names.len() != classes {
            return Err(DataError::Classes {
                path: dir.display().to_string(),
                found: names.len(),
                names: names
                    .iter()
                    .map(|(t, id)| class_name(t, id))
                    .collect::<Vec<_>>()
                    .join(", "),
                outputs: classes,
            });
        }
        let label = |t: &str, id: &str, path: &str| {
            names
                .iter()
                .position(|(a, b)| a == t && b == id)
                .ok_or_else(|| {
                    DataError::bad(
                        &dir.join(path),
                        format!("machine id {id} has no training clips"),
                    )
                })
        };
        let to_clips = |v: Vec<(String, String, String, bool)>| -> Result<Vec<Clip>, DataError> {
            v.into_iter()
                .map(|(t, id, path, anomaly)| {
                    Ok(Clip {
                        label: label(&t, &id, &path)?,
                        path,
                        anomaly,
                    })
                })
                .collect()
        };
        let train = to_clips(train)?;
        let test = to_clips(test)?;
        let labels: Vec<usize> = train.iter().map(|c| c.label).collect();
        let held = stratified(&labels, classes, 0.1, seed);
        let (mut t, mut v) = (Vec::new(), Vec::new());
        for (clip, h) in train.into_iter().zip(held) {
            if h {
                v.push(clip)
            } else {
                t.push(clip)
            }
        }
        Ok(Machines {
            dir: dir.to_path_buf(),
            classes: names,
            rows: [t, v, test],
            frontend: Frontend::new(SPEC),
            shape: (h, w),
        })
    }

    pub fn class_names(&self) -> Vec<String> {
        self.classes
            .iter()
            .map(|(t, id)| class_name(t, id))
            .collect()
    }

    /// The log-mel patches of one clip, each resized to the input.
    fn patches(&self, rel: &str) -> Result<Vec<Vec<f32>>, DataError> {
        let path = self.dir.join(rel);
        let raw = read_wav(&path, SPEC.rate).map_err(|m| DataError::bad(&path, m))?;
        let frames = SPEC.frames(raw.len());
        if frames < PATCH {
            return Err(DataError::bad(
                &path,
                format!(
                    "{} samples: shorter than one {PATCH}-frame patch ({} samples)",
                    raw.len(),
                    (PATCH - 1) * SPEC.stride + SPEC.frame
                ),
            ));
        }
        let x: Vec<f32> = raw.iter().map(|&v| v as f32 / 32768.0).collect();
        let mut s = self.frontend.scratch();
        let mut logmel = vec![0f32; frames * SPEC.mels];
        for (f, row) in logmel.chunks_exact_mut(SPEC.mels).enumerate() {
            self.frontend.mel_frame(&x[f * SPEC.stride..], &mut s, row);
            for v in row.iter_mut() {
                *v = 10.0 * (*v + 1e-10).log10();
            }
        }
        let (h, w) = self.shape;
        Ok((0..=(frames - PATCH) / PATCH_STRIDE)
            .map(|p| {
                let start = p * PATCH_STRIDE * SPEC.mels;
                resize_bilinear(
                    &logmel[start..start + PATCH * SPEC.mels],
                    (PATCH, SPEC.mels),
                    1,
                    (h, w),
                )
            })
            .collect())
    }

    pub fn split(&self, split: Split) -> Result<Dataset, DataError> {
        let rows = &self.rows[split as usize];
        if rows.is_empty() {
            return Err(DataError::NoSplit(format!(
                "machine-sounds:{}: no clips in the {} split{}",
                self.dir.display(),
                split.name(),
                if split == Split::Test {
                    " (DIR/<type>/test/)"
                } else {
                    ""
                }
            )));
        }
        let per_clip: Vec<Vec<Vec<f32>>> = rows
            .par_iter()
            .map(|c| self.patches(&c.path))
            .collect::<Result<_, _>>()?;
        let (h, w) = self.shape;
        let n: usize = per_clip.iter().map(|p| p.len()).sum();
        check_memory(|| format!("{n} log-mel patches"), (n * h * w * 4) as u128)?;
        let mut inputs = Vec::with_capacity(n * h * w);
        let (mut labels, mut sources, mut clip_of_row) = (Vec::new(), Vec::new(), Vec::new());
        for (k, (clip, patches)) in rows.iter().zip(per_clip).enumerate() {
            for (p, patch) in patches.into_iter().enumerate() {
                inputs.extend(patch);
                labels.push(clip.label);
                sources.push(format!("{}#patch{p}", clip.path));
                clip_of_row.push(k);
            }
        }
        Ok(Dataset {
            shape: vec![h, w, 1],
            classes: self.classes.len(),
            inputs,
            labels,
            sources,
            groups: Some(Groups {
                clip_of_row,
                anomalous: rows.iter().map(|c| c.anomaly).collect(),
                clips: rows.iter().map(|c| c.path.clone()).collect(),
            }),
        })
    }
}

/// ROC AUC of `scores` (higher: more anomalous) for the positives
/// `positive` against the rest: the Mann-Whitney statistic, ties counted
/// half. `None` without both kinds.
pub fn roc_auc(scores: &[f64], positive: &[bool]) -> Option<f64> {
    let pos: Vec<f64> = scores
        .iter()
        .zip(positive)
        .filter(|(_, &p)| p)
        .map(|(s, _)| *s)
        .collect();
    let neg: Vec<f64> = scores
        .iter()
        .zip(positive)
        .filter(|(_, &p)| !p)
        .map(|(s, _)| *s)
        .collect();
    if pos.is_empty() || neg.is_empty() {
        return None;
    }
    let mut wins = 0.0;
    for &p in &pos {
        for &n in &neg {
            wins += if p > n {
                1.0
            } else if p == n {
                0.5
            } else {
                0.0
            };
        }
    }
    Some(wins / (pos.len() * neg.len()) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roc_auc_counts_pairs_and_ties() {
        assert_eq!(
            roc_auc(&[0.9, 0.8, 0.1, 0.2], &[true, true, false, false]),
            Some(1.0)
        );
        assert_eq!(
            roc_auc(&[0.1, 0.2, 0.9, 0.8], &[true, true, false, false]),
            Some(0.0)
        );
        assert_eq!(roc_auc(&[0.5, 0.5], &[true, false]), Some(0.5));
        // 3 positives, 2 negatives: pairs won 1 + 2 + 1.5 of 6.
        let auc = roc_auc(
            &[0.3, 0.6, 0.4, 0.2, 0.4],
            &[true, true, true, false, false],
        )
        .unwrap();
        assert!((auc - 4.5 / 6.0).abs() < 1e-12, "{auc}");
        assert_eq!(roc_auc(&[0.3], &[true]), None);
    }

    #[test]
    fn names_give_the_id() {
        assert_eq!(
            parse_name("normal_id_00_00000012.wav"),
            Some((false, "00".into()))
        );
        assert_eq!(
            parse_name("anomaly_id_06_00000001.wav"),
            Some((true, "06".into()))
        );
        assert_eq!(parse_name("id_06.wav"), None);
    }
}
