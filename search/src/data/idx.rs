//! `fashion-mnist:DIR`: the IDX files of Fashion-MNIST (and MNIST, which
//! shares the format), plain or gzipped (`flate2`): `train-*` for training
//! (10% of each class held out for validation by a seeded shuffle) and
//! `t10k-*` for test. Pixels are scaled to [0, 1] and resized bilinearly
//! to the network's input when it differs from 28×28 (grey replicated to
//! three channels for an RGB input).

use super::{
    check_memory, image_shape, resize_bilinear, split_off, stratified, DataError, Dataset, Split,
};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Fashion-MNIST's class names, by label.
pub const FASHION_CLASSES: [&str; 10] = [
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
];

/// The most bytes one decompressed IDX file may hold (a gzip bomb is an
/// error, not an allocation).
const MAX_FILE: u64 = 1 << 30;

#[derive(Clone, Debug)]
pub struct Fashion {
    dir: PathBuf,
    classes: usize,
}

/// One IDX file's path: `NAME` or `NAME.gz`.
fn find(dir: &Path, prefix: &str, what: &str) -> Result<PathBuf, DataError> {
    let name = format!("{prefix}-{what}");
    for candidate in [dir.join(&name), dir.join(format!("{name}.gz"))] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(DataError::bad(
        &dir.join(&name),
        "no such file (nor .gz); fashion-mnist:DIR needs train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte, plain or gzipped",
    ))
}

/// An IDX file of unsigned bytes: its dimensions and data.
fn read_idx(path: &Path, dims: usize) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let file = std::fs::File::open(path).map_err(|e| DataError::read(path, e))?;
    let mut bytes = Vec::new();
    let gz = path.extension().is_some_and(|e| e == "gz");
    let read = if gz {
        flate2::read::GzDecoder::new(file)
            .take(MAX_FILE + 1)
            .read_to_end(&mut bytes)
    } else {
        file.take(MAX_FILE + 1).read_to_end(&mut bytes)
    };
    read.map_err(|e| DataError::read(path, e))?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(DataError::bad(
            path,
            format!("larger than {MAX_FILE} bytes"),
        ));
    }
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(DataError::bad(
            path,
            "not an IDX file (its magic number is wrong)",
        ));
    }
    if bytes[2] != 0x08 {
        return Err(DataError::bad(
            path,
            format!(
                "IDX element type 0x{:02x}; expected unsigned bytes (0x08)",
                bytes[2]
            ),
        ));
    }
    if bytes[3] as usize != dims {
        return Err(DataError::bad(
            path,
            format!("{} dimensions; expected {dims}", bytes[3]),
        ));
    }
    let head = 4 + 4 * dims;
    if bytes.len() < head {
        return Err(DataError::bad(path, "truncated IDX header"));
    }
    let shape: Vec<usize> = (0..dims)
        .map(|d| u32::from_be_bytes(bytes[4 + 4 * d..8 + 4 * d].try_into().unwrap()) as usize)
        .collect();
    let want = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if want != Some(bytes.len() - head) {
        return Err(DataError::bad(
            path,
            format!(
                "the header says {shape:?} ({} bytes) but the file holds {} bytes of data",
                want.map_or("too many".to_string(), |w| w.to_string()),
                bytes.len() - head
            ),
        ));
    }
    bytes.drain(..head);
    Ok((shape, bytes))
}

impl Fashion {
    /// Check that the four files are there (their contents are read per
    /// split).
    pub fn open(dir: &Path, classes: usize) -> Result<Fashion, DataError> {
        if !dir.is_dir() {
            return Err(DataError::bad(dir, "no such folder"));
        }
        for prefix in ["train", "t10k"] {
            find(dir, prefix, "images-idx3-ubyte")?;
            find(dir, prefix, "labels-idx1-ubyte")?;
        }
        Ok(Fashion {
            dir: dir.to_path_buf(),
            classes,
        })
    }

    /// The images and labels of `train` or `t10k`, at the network's input.
    fn read(&self, prefix: &str, shape: &[usize]) -> Result<Dataset, DataError> {
        let (h, w, c) = image_shape("fashion-mnist", shape)?;
        let images = find(&self.dir, prefix, "images-idx3-ubyte")?;
        let labels_path = find(&self.dir, prefix, "labels-idx1-ubyte")?;
        let (ishape, pixels) = read_idx(&images, 3)?;
        let (lshape, labels) = read_idx(&labels_path, 1)?;
        let (n, ih, iw) = (ishape[0], ishape[1], ishape[2]);
        if lshape[0] != n {
            return Err(DataError::bad(
                &labels_path,
                format!(
                    "{} labels for the {n} images of {}",
                    lshape[0],
                    images.display()
                ),
            ));
        }
        if ih == 0 || iw == 0 {
            return Err(DataError::bad(&images, "images of zero size"));
        }
        let found = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
        if found > self.classes || (found < self.classes && prefix == "train") {
            return Err(DataError::Classes {
                path: labels_path.display().to_string(),
                found,
                names: format!("labels 0..={}", found.saturating_sub(1)),
                outputs: self.classes,
            });
        }
        check_memory(
            || format!("{n} images of {h}x{w}x{c}"),
            4 * (n * h * w * c) as u128,
        )?;
        let file = images
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut inputs = Vec::with_capacity(n * h * w * c);
        for img in pixels.chunks_exact(ih * iw) {
            let grey: Vec<f32> = img.iter().map(|&p| p as f32 / 255.0).collect();
            let sized = resize_bilinear(&grey, (ih, iw), 1, (h, w));
            for v in sized {
                inputs.extend(std::iter::repeat_n(v, c));
            }
        }
        Ok(Dataset {
            shape: shape.to_vec(),
            classes: self.classes,
            inputs,
            labels: labels.iter().map(|&l| l as usize).collect(),
            sources: (0..n).map(|i| format!("{file}#{i}")).collect(),
            groups: None,
        })
    }

    pub fn split(&self, split: Split, shape: &[usize], seed: u64) -> Result<Dataset, DataError> {
        if split == Split::Test {
            return self.read("t10k", shape);
        }
        let all = self.read("train", shape)?;
        let held = stratified(&all.labels, self.classes, 0.1, seed);
        let (train, val) = split_off(all, &held);
        Ok(if split == Split::Train { train } else { val })
    }
}
